"""Terminals for `process.terminal: true`: a pty whose master goes to the client's console socket.

containerd's shim and conmon listen on a unix socket and wait, with no timeout,
for the pty master to arrive as SCM_RIGHTS ancillary data.
"""

from __future__ import annotations

import os


def open_pty() -> tuple[int, int]:
    """(master, slave), both close-on-exec in this process."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    return master, slave


def send_console(socket_path: str, master: int) -> None:
    """Hand the pty master to whoever listens on `socket_path`."""
    import array
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(socket_path)
        except OSError as e:
            from .error import Error

            raise Error(f"cannot connect to console socket {socket_path}: {e.strerror}") from None
        # The payload names the pty, as runc does; receivers only need the descriptor.
        name = os.ttyname(master) if os.isatty(master) else "/dev/ptmx"
        s.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
