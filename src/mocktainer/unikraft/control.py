"""Graceful stop: ask a unikernel container's guest to power off through its VMM.

At create, a VMM backend that supports it gets a control socket in the
container's state directory (`vmm.Launch.control`), and the runtime records it
in the file `control` there: one line `<protocol> <socket name>`, e.g.
`qmp qmp.sock` (QEMU, see `qemu.qmp_args`) or `firecracker firecracker.sock`
(Firecracker's API socket, see `firecracker.api_args`).

`request_poweroff(container)` (what `runtime.kill` does for SIGTERM on a
running container with that file) connects and asks:

Each backend speaks its own protocol (`request_poweroff` of the backend whose
CONTROL_PROTOCOL the record names; this module holds what they share: connect,
lines, HTTP):

- qmp (qemu): read the greeting, `{"execute": "qmp_capabilities"}`, then
  `{"execute": "system_powerdown"}`: the ACPI power button (a Linux guest with
  ACPI powers off; QEMU then exits, -no-reboot);
- firecracker (firecracker): `PUT /actions {"action_type": "SendCtrlAltDel"}` over HTTP/1.1:
  a Ctrl+Alt+Del on the i8042 keyboard (Linux reboots, which ends Firecracker).

It returns True once the VMM has accepted the request (QMP's `return`, HTTP
204; or Firecracker's "i8042 internal buffer full", which means an earlier
Ctrl+Alt+Del is still waiting for the guest to read it). The guest may still
ignore it: the client kills the container after its grace period as usual.
False (the caller then sends the signal) when there is no socket, the VMM does
not answer within TIMEOUT seconds, or refuses.

Unix socket addresses hold at most 108 bytes, and containerd's state
directories (`/run/containerd/runc/<namespace>/<64-character id>`) plus a
socket name come close to it or beyond; the socket is therefore always reached
through `/proc/self/fd/<fd of the state directory>/<name>`, and the VMM binds it
the same way (the runtime passes it an fd of the directory).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Callable

    from _socket import socket as AnySocket

    from mocktainer.container import Container
    from mocktainer.unikraft.vmm import Backend

CONTROL_FILE = "control"
TIMEOUT = 3.0
# A VMM that was just exec'd may not listen yet: retry a refused or missing socket this long.
CONNECT_GRACE = 1.0


def record(protocol: str, socket_name: str) -> bytes:
    """The `control` file's content for a backend's Launch.control."""
    return ("%s %s\n" % (protocol, socket_name)).encode()


def read_record(state_dir: str) -> tuple[str, str] | None:
    """(protocol, socket name) from `state_dir/control`, or None."""
    try:
        with open(os.path.join(state_dir, CONTROL_FILE), "rb") as f:
            words = f.read(256).split()
    except OSError:
        return None
    if len(words) != 2:
        return None
    protocol, name = (w.decode("ascii", "replace") for w in words)
    if "/" in name or name in (".", ".."):
        return None
    return protocol, name


def request_poweroff(container: Container) -> bool:
    """Ask the guest of `container` (a running mocktainer Container) to power off; True when the
    VMM accepted the request, False when the caller should send the signal instead."""
    rec = read_record(container.dir)
    backend = _backend_for(rec[0]) if rec is not None else None
    if rec is None or backend is None:
        return False
    protocol, name = rec
    try:
        dirfd = os.open(container.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return backend.request_poweroff("/proc/self/fd/%d/%s" % (dirfd, name))
    except (OSError, ValueError) as e:
        _warn("graceful stop of container %r through %s failed (%s); sending the signal instead"
              % (container.id, name, e))
        return False
    finally:
        os.close(dirfd)


def _warn(msg: str) -> None:
    from mocktainer.error import warn

    warn(msg)


def connect(path: str) -> socket.socket:
    import socket
    import time

    deadline = time.monotonic() + CONNECT_GRACE
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(TIMEOUT)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
        except BaseException:
            s.close()
            raise


class Lines:
    """Line reader over a socket (QMP speaks one JSON object a line)."""

    def __init__(self, sock: AnySocket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ValueError("the VMM closed the connection")
            self.buf += chunk
            if len(self.buf) > 1 << 20:
                raise ValueError("the VMM's answer is too long")
        line, self.buf = self.buf.split(b"\n", 1)
        return line


def http_response(sock: AnySocket) -> tuple[int, bytes]:
    """(status code, body) of one HTTP/1.1 response (body by Content-Length, at most 64 KiB)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > 1 << 16:
            raise ValueError("no HTTP response from the VMM")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
        raise ValueError("the VMM answered %r" % lines[0][:200])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = min(int(value), 1 << 16)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(status[1]), body


def _backend_for(protocol: str) -> Backend | None:
    """The VMM backend whose control socket speaks `protocol` (its CONTROL_PROTOCOL), or None."""
    from mocktainer.unikraft import vmm

    for name in vmm.BACKENDS:
        module = vmm.backend(name)
        if getattr(module, "CONTROL_PROTOCOL", None) == protocol:
            return module
    return None


def request(sock: AnySocket, method: str, path: str, body: bytes,
            wait: Callable[[], object] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request with a JSON `body` (bytes) on `sock`; (status code, body) of the answer.
    `wait`, when given, is called before the answer is read (to wait for it without blocking on it)."""
    sock.sendall(b"%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (method.encode(), path.encode(), len(body), body))
    if wait is not None:
        wait()
    return http_response(sock)
