"""A child on a pseudo-terminal, for clients run with ``-t`` (the guest's console is the tty)."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from typing import Mapping, Sequence

from .procs import DEFAULT_TIMEOUT

# ---------------------------------------------------------------------------------------------
# terminals


class PtyProcess:
    """A command whose stdin/stdout/stderr are the slave side of a fresh pty (its controlling tty).

    ``read_until()`` reads the master with a deadline, ``send()`` types into it, ``wait()`` keeps
    draining output while waiting so the child never blocks on a full terminal buffer.
    ``close()`` kills the whole process group if it is still running.
    """

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None, rows: int = 24, cols: int = 80):
        self.argv = [os.fspath(a) for a in argv]
        self.output = b""
        self.eof = False
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=slave, stdout=slave, stderr=slave, env=dict(env) if env else None,
                cwd=cwd, start_new_session=True, preexec_fn=_make_controlling_tty)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        os.set_blocking(master, False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def text(self) -> str:
        """Everything read so far, decoded, with terminal line ends (``\\r\\n``, and the
        ``\\r\\r\\n`` two stacked ptys give) turned into ``\\n``."""
        return re.sub(r"\r+\n", "\n", self.output.decode(errors="replace"))

    def _read_some(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False at EOF."""
        if self.eof:
            return False
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except BlockingIOError:
            return True
        except OSError as e:  # EIO: every slave fd is closed
            if e.errno != errno.EIO:
                raise
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.output += chunk
        return True

    def read_until(self, pattern: str | bytes | re.Pattern, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Read until ``pattern`` (substring or compiled regex on bytes) appears in the output.

        Returns the output so far; raises ``TimeoutError`` (with the output) if it does not
        appear in time or the terminal closes first.
        """
        if isinstance(pattern, str):
            pattern = pattern.encode()
        deadline = time.monotonic() + timeout

        def found() -> bool:
            if isinstance(pattern, re.Pattern):
                return pattern.search(self.output) is not None
            return pattern in self.output

        while not found():
            left = deadline - time.monotonic()
            if left <= 0 or not self._read_some(min(left, 0.2)):
                if found():
                    break
                why = "timed out" if left <= 0 else "terminal closed"
                raise TimeoutError(f"{why} waiting for {pattern!r} from {self.argv}; output so far:\n"
                                   f"{self.output.decode(errors='replace')[-4000:]}")
        return self.output

    def send(self, data: str | bytes) -> None:
        """Type ``data`` into the terminal."""
        if isinstance(data, str):
            data = data.encode()
        while data:
            try:
                n = os.write(self.master, data)
            except BlockingIOError:
                select.select([], [self.master], [], 1.0)
                continue
            data = data[n:]

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the command to exit (reading its output meanwhile); return its exit status."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.argv, timeout, output=self.output)
            if not self._read_some(min(left, 0.1)):
                time.sleep(0.01)
        # drain what is left in the terminal buffer
        end = time.monotonic() + 1.0
        while time.monotonic() < end and self._read_some(0.05):
            pass
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> "PtyProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_controlling_tty() -> None:  # runs in the child, after setsid() and the stdio dup2s
    try:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    except OSError:
        pass
