"""The container's process, and the parent's side of the init's start-up.

The init is a fork of the caller when the caller has a single thread (runu
has): that saves a whole interpreter start-up on every create. A caller with
threads gets a fresh interpreter (`python -I -S`) through posix_spawn instead,
because forking a threaded process can deadlock the child. Either way the init
gets exactly the descriptors it needs, at fixed numbers.
"""

from __future__ import annotations

import os
import sys
import time

from . import system
from .error import Error, InitError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .sync import SyncPipe

# How the init starts: "fork" (fast: the caller's interpreter is reused), "spawn"
# (a fresh `python -I -S`: safe whatever the caller does) or "auto" (fork when this
# process has a single thread, as runu has; spawn otherwise).
INIT_MODE = "auto"

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INIT_CODE = f"import sys;sys.path.insert(0,{_PKG_PARENT!r});from mocktainer.init import main;main()"


class Process:
    """What to run as the container's process, and a handle on it once it runs.

    stdin/stdout/stderr take a file object, a descriptor number or None
    (/dev/null); `extra_files` are handed to the process as fds 3, 4, ...
    With `terminal`, the process gets a new session whose controlling
    terminal is its stdin (a pty slave).
    """

    def __init__(
        self,
        args: list[str],
        env: list[str] | None = None,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        extra_files: list[Any] | None = None,
        apparmor_profile: str = "",
        label: str = "",
        log_level: str | None = None,
        init: bool = True,
        terminal: bool = False,
    ) -> None:
        self.args = list(args)
        self.env = list(env or [])
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.extra_files = list(extra_files or [])
        self.apparmor_profile = apparmor_profile
        self.label = label
        self.log_level = log_level
        self.init = init
        self.terminal = terminal  # stdin is a pty slave that becomes the controlling terminal
        self.no_new_privs = False  # set PR_SET_NO_NEW_PRIVS right before the exec
        # {"module": name, ...}: the init supervises the process through that module instead of
        # exec'ing it (see init.Supervisor); the rest of the dict is the module's.
        self.supervisor: dict[str, Any] | None = None
        self._pid: int | None = None
        self._returncode: int | None = None

    def pid(self) -> int:
        if self._pid is None:
            raise Error("process not started")
        return self._pid

    def wait(self) -> int | None:
        """Wait for the process to end; its exit code (negative: killed by that signal).

        None when the process is not our child (we can see it end but not its status).
        """
        pid = self.pid()
        if self._returncode is not None:
            return self._returncode
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            wait_gone(pid)
            return None
        self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    def signal(self, sig: int) -> None:
        os.kill(self.pid(), sig)


def alive(pid: int, start_time: int | None = None) -> bool:
    """True while `pid` runs (not a zombie) and, if given, is still the process started at `start_time`."""
    st = system.proc_start_time(pid)
    return st is not None and st[0] not in "ZX" and (start_time is None or st[1] == start_time)


def kill_quietly(pid: int, sig: int = 9) -> None:
    """Signal `pid`; one that is gone already is no error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def reap(pid: int, start_time: int | None = None, timeout: float | None = None) -> None:
    """Wait until `pid` has ended: reaped when it is our child, else watched until it is gone (or `timeout`)."""
    try:
        os.waitpid(pid, 0)
        return
    except ChildProcessError:
        pass
    wait_gone(pid, start_time, timeout)


def wait_gone(pid: int, start_time: int | None = None, timeout: float | None = None) -> bool:
    """Wait for a process that is not our child to end; False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.001
    while alive(pid, start_time):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def _fd_of(stream: Any, mode: int) -> tuple[int, bool]:
    """(fd, opened here) for a Process stream."""
    if stream is None:
        return os.open(os.devnull, mode | os.O_CLOEXEC), True
    if isinstance(stream, int):
        return stream, False
    return stream.fileno(), False


def _use_fork() -> bool:
    if INIT_MODE != "auto":
        return INIT_MODE == "fork"
    return system.single_threaded()


def _fork_init(highs: list[int], init_fd: int, log_fd: int, fifo_fd: int) -> int:
    """Fork the init from this (single-threaded) interpreter; the child never returns."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # or the child would write our buffered output again
        except (OSError, ValueError, AttributeError):
            pass
    pid = os.fork()
    if pid:
        return pid
    try:
        for target, high in enumerate(highs):
            os.dup2(high, target)
        for name in os.listdir("/proc/self/fd"):
            if int(name) >= len(highs):
                try:
                    os.close(int(name))
                except OSError:
                    pass
        from .init import run

        run(init_fd, log_fd, fifo_fd)
    finally:
        os._exit(1)
    return 0  # not reached


class InitProcess:
    """Spawns the init and holds the parent's end of the conversation with it."""

    def __init__(self, process: Process, fifo_path: str) -> None:
        self.process = process
        self.fifo_path = fifo_path
        self.pid = 0
        self.start_time = 0
        self.sync: SyncPipe | None = None
        self.log_fd = -1

    def spawn(self) -> None:
        import _socket
        import fcntl

        proc = self.process
        opened: list[int] = []
        sources: list[int] = []
        for stream, mode in ((proc.stdin, os.O_RDONLY), (proc.stdout, os.O_WRONLY), (proc.stderr, os.O_WRONLY)):
            fd, mine = _fd_of(stream, mode)
            sources.append(fd)
            if mine:
                opened.append(fd)
        sources += [f if isinstance(f, int) else f.fileno() for f in proc.extra_files]

        parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        parent_fd, child_fd = parent_sock.detach(), child_sock.detach()
        log_r, log_w = os.pipe()
        fifo_fd = os.open(self.fifo_path, os.O_PATH | os.O_CLOEXEC)
        opened += [child_fd, log_w, fifo_fd]
        n_extra = len(proc.extra_files)
        init_fd, log_fd, fifo_target = 3 + n_extra, 4 + n_extra, 5 + n_extra
        sources += [child_fd, log_w, fifo_fd]
        # Move every source above the target range first, so no dup2 clobbers a later source.
        highs = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, len(sources)) for fd in sources]
        try:
            if _use_fork():
                self.pid = _fork_init(highs, init_fd, log_fd, fifo_target)
            else:
                from .init import ENV_FIFOFD, ENV_INITPIPE, ENV_LOGPIPE

                env = {ENV_INITPIPE: str(init_fd), ENV_LOGPIPE: str(log_fd), ENV_FIFOFD: str(fifo_target)}
                actions = [(os.POSIX_SPAWN_DUP2, high, target) for target, high in enumerate(highs)]
                self.pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", _INIT_CODE], env,
                                          file_actions=actions)
        except OSError:
            os.close(parent_fd)
            os.close(log_r)
            raise
        finally:
            for fd in highs + opened:
                os.close(fd)
        from .sync import SyncPipe

        st = system.proc_start_time(self.pid)
        self.start_time = st[1] if st else 0
        self.sync = SyncPipe(parent_fd)
        self.log_fd = log_r
        proc._pid = self.pid

    def bootstrap(self, clone_flags: int, ns_paths: dict[str, str]) -> None:
        """The bootstrap message: the init joins and creates namespaces, then waits for its configuration."""
        from .message import bootstrap_data

        assert self.sync is not None
        self.sync.write_raw(bootstrap_data(clone_flags, ns_paths))

    def send_config(self, init_config: dict[str, Any]) -> None:
        from . import fastjson

        assert self.sync is not None
        self.sync.write_raw(fastjson.dumps(init_config).encode() + b"\n")

    def converse(self, on_hooks: Callable[[], None], on_ready: Callable[[], None]) -> None:
        """Answer the init until it closes the socket (it then waits on exec.fifo)."""
        import select

        from .sync import PROC_HOOKS, PROC_READY, PROC_RESUME, PROC_RUN

        sync = self.sync
        assert sync is not None
        poller = select.poll()
        poller.register(sync.fd, select.POLLIN)
        poller.register(self.log_fd, select.POLLIN)
        forwarder = _LogForwarder()
        ready = False
        sync_open = log_open = True
        while sync_open or log_open:
            for fd, _ev in poller.poll():
                if fd == self.log_fd:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        forwarder.feed(chunk)
                    else:
                        log_open = False
                        poller.unregister(fd)
                    continue
                while True:
                    msg = sync.recv()
                    if msg is None:
                        sync_open = False
                        poller.unregister(fd)
                        break
                    kind, _arg = msg
                    if kind == PROC_HOOKS:
                        on_hooks()
                        sync.send(PROC_RESUME)
                    elif kind == PROC_READY:
                        on_ready()
                        ready = True
                        sync.send(PROC_RUN)
                    else:
                        raise InitError(f"unexpected message {kind!r} from the container init")
                    if not sync.buffered():
                        break
            if not sync_open and log_open:
                # The init is past the socket; take its last log lines without blocking on it.
                if not poller.poll(0):
                    break
        forwarder.flush()
        if not ready:
            raise InitError("container init exited before the container was ready")

    def close(self) -> None:
        if self.sync is not None:
            os.close(self.sync.fd)
            self.sync = None
        if self.log_fd >= 0:
            os.close(self.log_fd)
            self.log_fd = -1

    def kill(self) -> None:
        """SIGKILL the init and reap it (it is our child here)."""
        if not self.pid:
            return
        kill_quietly(self.pid)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


class _LogForwarder:
    """Turns the init's JSON log lines into records on the `mocktainer.init` logger."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self._emit(line)

    def flush(self) -> None:
        if self.buf.strip():
            self._emit(self.buf)
        self.buf = b""

    @staticmethod
    def _emit(line: bytes) -> None:
        if not line.strip():
            return
        from . import error, fastjson

        try:
            rec = fastjson.loads(line)
            level, msg = rec.get("level", "info"), rec.get("msg", "")  # type: ignore[attr-defined]
        except Exception:
            level, msg = "info", line.decode(errors="replace")
        level = str(level).lower()
        if error.log_sink is not None:
            error.log_sink(level, str(msg))
            return
        import logging

        from .init import LEVELS  # loaded already: this process spawned the init

        logging.getLogger("mocktainer.init").log(LEVELS.get(level, 20), msg)


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it, parents first (from /proc; no cgroup needed)."""
    children: dict[int, list[int]] = {}
    for p in system.all_pids():
        st = system.proc_stat(p)
        if st is not None and st[0] not in "ZX":
            children.setdefault(st[1], []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(sorted(children.get(p, ())))
    return out
