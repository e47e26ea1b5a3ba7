"""The VMM as a child of the container's supervisor: start it, watch it start, reap it.

Used in the container init (standard library only, no socket module: `_socket` and
`select.poll`). The VMM's stderr is a pipe the supervisor reads: while the VMM starts, what
it says is kept, so that a VMM that cannot come up fails `create` with its own words; once
it is ready, its stderr is copied to the container's.
"""

from __future__ import annotations

import os

from mocktainer.system import write_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

# How long a VMM may take to come up (answer on its control channel) at create.
READY_TIMEOUT = 60.0
_KEEP_STDERR = 16 * 1024


class VMMError(RuntimeError):
    """The VMM could not be prepared or driven; the message is for the user (create or start fails)."""


class Child:
    """A VMM process forked by `spawn` (the init's: it execs `args` with `fds` after the container's own fds,
    dying with the supervisor), its stderr on a pipe and a pidfd to see it end."""

    def __init__(self, spawn: Callable[[list[str], list[int], int], int], args: list[str], fds: list[int],
                 name: str) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            self.pid = spawn(args, fds, w)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self.name = name
        self.err_fd = r
        self.pidfd = os.pidfd_open(self.pid)
        self.relay = False  # once ready: copy stderr to the container's
        self.captured = b""
        self.status: int | None = None

    def pump(self) -> bool:
        """Take what the VMM wrote on stderr; False at end-of-file."""
        try:
            data = os.read(self.err_fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        if self.relay:
            to_stderr(data)
        else:
            self.captured = (self.captured + data)[-_KEEP_STDERR:]
        return True

    def start_relaying(self) -> None:
        """The VMM is up: what it said so far (warnings) and says from now on goes to the container's stderr."""
        self.relay = True
        if self.captured:
            to_stderr(self.captured)
            self.captured = b""

    def wait_readable(self, fd: int, deadline: float, what: str) -> None:
        """Block until `fd` has data; VMMError with the VMM's stderr when it exits first or `deadline`
        (time.monotonic) passes."""
        import select
        import time

        poller = select.poll()
        for f in (fd, self.err_fd, self.pidfd):
            poller.register(f, select.POLLIN)
        err_open = True
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise VMMError(f"{self.name} did not {what} within {READY_TIMEOUT:.0f} s{self._said()}")
            events = dict(poller.poll(left * 1000))
            if fd in events:
                return
            if self.err_fd in events and err_open and not self.pump():
                err_open = False
                poller.unregister(self.err_fd)
            if self.pidfd in events:
                raise VMMError(self.failure(what))

    def failure(self, what: str) -> str:
        """The message for a VMM that ended before it could `what` (it is reaped here)."""
        status = self.reap()
        while self.pump():
            pass
        how = (f"exited with status {os.waitstatus_to_exitcode(status)}" if os.WIFEXITED(status)
               else f"was killed by signal {os.WTERMSIG(status)}")
        return f"{self.name} {how} before it could {what}{self._said()}"

    def _said(self) -> str:
        text = self.captured.decode(errors="replace").strip()
        return f": {' '.join(text.split())}" if text else ""

    def reap(self) -> int:
        """The VMM's wait status (it must have ended or be ending)."""
        if self.status is None:
            while True:
                try:
                    _, self.status = os.waitpid(self.pid, 0)
                    break
                except ChildProcessError:
                    self.status = 0
                    break
        return self.status

    def exited(self) -> bool:
        if self.status is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid:
            self.status = status
        return bool(pid)

    def signal(self, sig: int) -> None:
        import _signal

        if self.status is None:
            try:
                _signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.signal(9)
        self.reap()

    def close(self) -> None:
        for fd in (self.err_fd, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass


class Session:
    """What a backend's Session (see supervisor.py) shares: the VMM `child` and the socket `sock` to its
    control channel, both None until prepared."""

    child: Child | None = None
    sock: Any = None

    @property
    def vmm(self) -> Child:
        """`child` once spawned; VMMError when a step runs before `spawn` (a Session used out of order)."""
        if self.child is None:
            raise VMMError("the VMM has not been started")
        return self.child

    def fds(self) -> set[int]:
        """The descriptors the supervisor must keep open."""
        return {self.sock.fileno()} if self.sock is not None else set()

    def abort(self) -> None:
        """End the VMM (a failed create or start, or before it is replaced)."""
        if self.child is not None:
            self.child.kill()
            self.child.close()
            self.child = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def to_stderr(data: bytes) -> None:
    """Write `data` to the container's stderr, which nobody may read any more: then it is dropped."""
    try:
        write_all(2, data)
    except OSError:
        pass
