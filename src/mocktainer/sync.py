"""The parent <-> init conversation over the init socket, after the bootstrap message.

One JSON object per line: {"type": ..., "arg": ...}. The pairs are

    init                      parent
    procHooks     -->   run prestart + createRuntime hooks
                  <--   procResume
    procReady     -->   record created time, write state.json
                  <--   procRun
    procError     -->   (arg: {"message": text}) raise it in the caller

and the init closing its end means it is waiting on exec.fifo.
Works on raw file descriptors so the init needs neither `socket` nor `json`.
"""

from __future__ import annotations

import os

from . import fastjson, system
from .error import InitError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROC_ERROR = "procError"
PROC_READY = "procReady"
PROC_RUN = "procRun"
PROC_HOOKS = "procHooks"
PROC_RESUME = "procResume"


class SyncPipe:
    """Line-framed JSON messages on one end of the init socket."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""

    def fileno(self) -> int:
        return self.fd

    def write_raw(self, data: bytes) -> None:
        system.write_all(self.fd, data)

    def read_exact(self, n: int) -> bytes:
        """Read exactly n bytes (the bootstrap message is not line-framed)."""
        out = self._buf[:n]
        self._buf = self._buf[n:]
        while len(out) < n:
            chunk = os.read(self.fd, n - len(out))
            if not chunk:
                raise EOFError("init socket closed early")
            out += chunk
        return out

    def buffered(self) -> bool:
        """True when a whole message already waits in the buffer (poll would not say so)."""
        return b"\n" in self._buf

    def send(self, type: str, arg: Any = None) -> None:
        msg: dict[str, Any] = {"type": type}
        if arg is not None:
            msg["arg"] = arg
        self.write_raw(fastjson.dumps(msg).encode() + b"\n")

    def send_error(self, message: str) -> None:
        self.send(PROC_ERROR, {"message": message})

    def recv_json(self) -> Any:
        """The next line as JSON, or None at end of stream."""
        while b"\n" not in self._buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                if self._buf.strip():
                    raise EOFError("init socket closed in the middle of a message")
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return fastjson.loads(line)

    def recv(self) -> tuple[str, Any] | None:
        """The next (type, arg); a procError becomes InitError; None at end of stream."""
        msg = self.recv_json()
        if msg is None:
            return None
        if msg.get("type") == PROC_ERROR:
            raise InitError((msg.get("arg") or {}).get("message") or "container init failed")
        return msg["type"], msg.get("arg")

    def expect(self, wanted: str) -> Any:
        got = self.recv()
        if got is None:
            raise EOFError(f"init socket closed while waiting for {wanted}")
        if got[0] != wanted:
            raise InitError(f"unexpected synchronisation message {got[0]!r}, wanted {wanted!r}")
        return got[1]
