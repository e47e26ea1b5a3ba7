"""The container init: the child side of the create flow.

Runs in a fork of the caller or a fresh interpreter started by `process.InitProcess.spawn`
with `-I -S`, so it imports only the standard library's cheapest modules and this
package's small ones. It joins or creates the namespaces the bootstrap message names,
sets up the network namespace, lets the parent run its hooks, then blocks on exec.fifo
until `start`, and finally execs the container's process in place of itself.

With a `Supervisor` plug-in (runu's unikernels: mocktainer.unikraft.supervisor) it
instead prepares the process as its child at create, before it reports ready, resumes
it at start, and stays its parent until it ends: the container's pid is the init's.
"""

import os
import struct
import sys

from . import fastjson, system
from .message import NS_CLONE_FLAGS, parse_bootstrap
from .sync import PROC_HOOKS, PROC_READY, PROC_RESUME, PROC_RUN, SyncPipe

ENV_INITPIPE = "_MOCKTAINER_INITPIPE"
ENV_LOGPIPE = "_MOCKTAINER_LOGPIPE"
ENV_FIFOFD = "_MOCKTAINER_FIFOFD"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40}


class _Log:
    """JSON log lines on the log pipe; the parent hands them to `logging`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.level = LEVELS["info"]

    def __call__(self, level: str, msg: str) -> None:
        if self.fd < 0 or LEVELS[level] < self.level:
            return
        from .state import now_rfc3339

        line = fastjson.dumps({"level": level, "msg": msg, "time": now_rfc3339()}).encode() + b"\n"
        try:
            os.write(self.fd, line)
        except OSError:
            self.fd = -1


def main() -> None:
    """Entry point of the init interpreter (fds named by the environment); never returns."""
    run(int(os.environ[ENV_INITPIPE]), int(os.environ[ENV_LOGPIPE]), int(os.environ[ENV_FIFOFD]))


def run(init_fd: int, log_fd: int, fifo_fd: int) -> None:
    """The init proper, in a fresh interpreter or a fork of a single-threaded caller; never returns."""
    import _signal

    system.set_comm(system.INIT_COMM)
    # A signal to a created container ends it, as it would end the process it will become:
    # no Python handler inherited from a forking caller, no KeyboardInterrupt.
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
        _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
    sync = SyncPipe(init_fd)
    log = _Log(log_fd)
    try:
        launch = _setup(sync, log, fifo_fd)
    except BaseException as e:  # everything must reach the parent as text
        try:
            sync.send_error(_describe(e))
        except OSError:
            pass
        os._exit(1)
    _wait_and_exec(sync.fd, log, fifo_fd, launch)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    return str(e) or type(e).__name__


class _Launch:
    """What the init still needs once setup is over: the program, its startContainer hooks, and the
    supervisor plug-in (see `Supervisor`) when the container's process is supervised rather than exec'd."""

    def __init__(self, path: str, args: list[str], env: dict[str, str], hooks: dict, state: dict,
                 no_new_privs: bool = False, config: dict | None = None, fd_base: int = 3) -> None:
        self.path, self.args, self.env, self.hooks, self.state = path, args, env, hooks, state
        self.no_new_privs = no_new_privs
        self.config = config or {}
        self.fd_base = fd_base  # the first fd after stdio and the extra files: where `spawn` puts its `fds`
        self.supervisor: Supervisor | None = None

    def spawn(self, args: list[str], fds: list[int], stderr: int = -1) -> int:
        """Fork a child that execs `args` (path resolved like the process' args[0]) with the container's
        stdio (stderr replaced by `stderr` when given), extra files, and `fds` at fd_base, fd_base+1, ...;
        it dies with the init (SIGKILL). Returns its pid."""
        import fcntl

        system.load_libc()
        path = _look_path(args[0], self.env)
        parent = os.getpid()
        # Above every target first, so that no dup2 below clobbers a source.
        high = max([self.fd_base + len(fds), 3] + fds + [stderr]) + 1
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high) for fd in fds]
        err = fcntl.fcntl(stderr, fcntl.F_DUPFD_CLOEXEC, high) if stderr >= 0 else -1
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    system.die_with_parent(parent)
                    if err >= 0:
                        os.dup2(err, 2)
                    for i, fd in enumerate(moved):
                        os.dup2(fd, self.fd_base + i)
                    os.closerange(self.fd_base + len(fds), 1 << 20)
                    _exec(path, args, self.env, self.config, self.no_new_privs)
                finally:
                    os._exit(127)
        finally:
            for fd in moved + ([err] if err >= 0 else []):
                os.close(fd)
        return pid


class Supervisor:
    """A plug-in that keeps the init alive as the parent of the container's real process (a VMM), named
    by the init configuration's `supervisor` ({"module": ..., ...}): the module's `prepare(params, launch)`
    returns one, at create, once the container is set up (the init is in its namespaces and cgroup, the
    createContainer hooks have run), with the process started but not yet running the container's work;
    `ready()`, while the parent records the container, waits until it is ready (a failure fails create).
    Then: `start()` after `start` released exec.fifo, the startContainer hooks, `resume()`, and
    `supervise()`, which never returns (the init exits with the container's status). `fds()` are the
    descriptors it keeps; `alive()` whether the process still runs; `abort()` ends it (a failure)."""

    def ready(self) -> None:
        raise NotImplementedError

    def fds(self) -> set[int]:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    def supervise(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class _ProcessEnded(Exception):
    """The supervised process ended while the container waited for `start`."""


def _setup(sync: SyncPipe, log: _Log, fifo_fd: int) -> _Launch:
    header = sync.read_exact(16)
    (length,) = struct.unpack_from("=I", header)
    clone_flags, ns_paths = parse_bootstrap(header + sync.read_exact(length - 16))
    _join_namespaces(ns_paths, clone_flags, log)

    init = sync.recv_json()
    if init is None:
        raise EOFError("parent closed the init socket before sending the configuration")
    log.level = LEVELS.get(init.get("log_level") or "info", 20)
    config = init["config"]
    state = init["state"]
    os.chdir(config["rootfs"])
    state["pid"] = os.getpid()

    if config.get("parent_death_signal"):
        system.set_pdeathsig(config["parent_death_signal"])
        if os.getppid() != init["parent_pid"]:
            raise RuntimeError("parent process died during container setup")

    # A session of its own, as runc gives every container: signals meant for the
    # caller's process group (a shim's, a shell's) do not reach the VMM.
    os.setsid()
    if init.get("terminal"):
        system.set_controlling_tty(0)
    args = init["args"]
    env = _environ(init["env"])
    if not args:
        raise ValueError("the process has no args: nothing to execute")

    if not config.get("no_new_keyring"):
        try:
            system.join_session_keyring(system.keyring_name(init["id"]))
        except OSError as e:
            if e.errno != 38:  # ENOSYS: the kernel has no keyrings; nothing to join
                raise OSError(e.errno, f"unable to join session keyring: {e.strerror}") from None

    for net in config.get("networks") or []:
        if net.get("type") == "loopback":
            system.link_up("lo")
            log("debug", "brought up lo")

    hooks = config.get("hooks") or {}
    state["status"] = "creating"
    if hooks.get("prestart") or hooks.get("createRuntime"):
        sync.send(PROC_HOOKS)
        sync.expect(PROC_RESUME)
    _run_hooks(hooks, "createContainer", state)

    n_keep = 3 + int(init.get("extra_files") or 0)
    launch = _Launch(_look_path(args[0], env), args, env, hooks, state, bool(init.get("no_new_privs")), config,
                     n_keep)
    keep = set(range(n_keep)) | {sync.fd, log.fd, fifo_fd}
    plugin = init.get("supervisor")
    if plugin:
        module = plugin["module"]
        __import__(module)  # (importlib would cost the import of `warnings`)
        launch.supervisor = sys.modules[module].prepare(plugin, launch)

    try:
        sync.send(PROC_READY)
        sync.expect(PROC_RUN)
        if launch.supervisor is not None:
            # The parent wrote state.json meanwhile; it takes a failure from here as create's still (it waits
            # until this socket closes), and removes the container.
            launch.supervisor.ready()
            keep |= launch.supervisor.fds()
        else:
            _apply_security(config)
        _close_leaked_fds(keep)
        if config.get("parent_death_signal") and os.getppid() != init["parent_pid"]:
            raise RuntimeError("parent process died during container setup")
    except BaseException:
        if launch.supervisor is not None:
            launch.supervisor.abort()
        raise
    state["status"] = "created"
    return launch


def _join_namespaces(ns_paths: dict[str, str], clone_flags: int, log: _Log) -> None:
    for kind, path in ns_paths.items():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, f"cannot open {kind} namespace {path}: {e.strerror}") from None
        try:
            system.setns(fd, NS_CLONE_FLAGS[kind])
        except OSError as e:
            raise OSError(e.errno, f"cannot join {kind} namespace {path}: {e.strerror}") from None
        finally:
            os.close(fd)
        log("debug", f"joined {kind} namespace {path}")
    if clone_flags:
        system.unshare(clone_flags)
        log("debug", f"unshared namespaces (flags {clone_flags:#x})")


def _environ(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items or []:
        if "\0" in item:
            raise ValueError(f"invalid environment variable {item!r}: contains a NUL byte")
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"invalid environment variable {item!r}: expected KEY=value")
        env[key] = value
    return env


def _run_hooks(hooks: dict, name: str, state: dict) -> None:
    items = hooks.get(name) or []
    if not items:
        return
    from .configs import Hooks

    Hooks.from_dict({name: items}).run(name, state)


def _apply_security(config: dict) -> None:
    profile = config.get("apparmor_profile")
    if profile:
        try:
            with open("/sys/module/apparmor/parameters/enabled") as f:
                enabled = f.read().strip() == "Y"
        except OSError:
            enabled = False
        if not enabled:
            raise RuntimeError(f"apparmor profile {profile!r} is set but AppArmor is not enabled on this host")
        _write_attr(["/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"], f"exec {profile}")
    label = config.get("process_label")
    if label and os.path.isdir("/sys/fs/selinux") and os.listdir("/sys/fs/selinux"):
        _write_attr(["/proc/self/attr/exec"], label)


def _write_attr(paths: list[str], value: str) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
        return
    raise RuntimeError(f"cannot apply security attribute {value!r}: no attribute file")


def _close_leaked_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _look_path(name: str, env: dict[str, str]) -> str:
    if "/" in name:
        if os.access(name, os.X_OK) and not os.path.isdir(name):
            return name
        raise FileNotFoundError(f'exec: "{name}": no such executable file')
    for d in env.get("PATH", DEFAULT_PATH).split(":"):
        candidate = os.path.join(d or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f'exec: "{name}": executable file not found in $PATH')


def _exec(path: str, args: list[str], env: dict[str, str], config: dict, no_new_privs: bool) -> None:
    """Become the container's process (the init itself, or a supervised child of it)."""
    import _signal

    _apply_security(config)
    # Python ignores these at start-up; ignored signals survive exec.
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
    if no_new_privs:
        system.set_no_new_privs()
    os.execve(path, args, env)


def _on_child_exit(_signum: int, _frame: object) -> None:
    raise _ProcessEnded()


def _open_fifo(fifo_fd: int, sup: Supervisor | None) -> int:
    """Open exec.fifo for writing: this blocks until `start` opens it for reading. A supervised process
    that ends meanwhile ends the wait (the container is then stopped, not created)."""
    import _signal

    if sup is None:
        return os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    _signal.signal(_signal.SIGCHLD, _on_child_exit)
    try:
        if not sup.alive():
            raise _ProcessEnded()
        return os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    finally:
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)


def _wait_and_exec(sync_fd: int, log: _Log, fifo_fd: int, launch: _Launch) -> None:
    log("debug", "waiting on exec.fifo for start")
    for fd in (sync_fd, log.fd):
        if fd >= 0:
            os.close(fd)
    sup = launch.supervisor
    wfd = -1
    try:
        # Opening for writing blocks until `start` opens the fifo for reading. The write end
        # stays open (close-on-exec) so `start` sees end-of-file exactly when the exec happened
        # (or, supervised, when the process was resumed); anything written after the "0" is an
        # error for `start` to report.
        wfd = _open_fifo(fifo_fd, sup)
        os.write(wfd, b"0")
        if sup is not None:
            sup.start()
        os.close(fifo_fd)
        _run_hooks(launch.hooks, "startContainer", launch.state)
        if sup is None:
            _exec(launch.path, launch.args, launch.env, launch.config, launch.no_new_privs)
        else:
            sup.resume()
            system.set_comm(system.SUPERVISOR_COMM)
            os.close(wfd)
            wfd = -1
            sup.supervise()
    except _ProcessEnded:
        assert sup is not None
        sup.supervise()  # it exits with the process' status
    except BaseException as e:
        if sup is not None:
            try:
                sup.abort()
            except Exception:
                pass  # the error to report is `e`
        text = _describe(e).encode(errors="replace")[:4000]
        try:
            os.write(wfd if wfd >= 0 else 2, text if wfd >= 0 else b"container init: " + text + b"\n")
        except OSError:
            pass
    os._exit(127)


if __name__ == "__main__":
    main()
    sys.exit(1)
