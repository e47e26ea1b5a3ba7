"""The container init: the child side of the create flow.

Runs in a fresh interpreter started by `process.spawn_init` with `-I -S`, so it
imports only the standard library's cheapest modules and this package's small
ones. It joins or creates the namespaces the bootstrap message names, sets up the
network namespace, lets the parent run its hooks, then blocks on exec.fifo until
`start`, and finally execs the container's process in place of itself.
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

TIOCSCTTY = 0x540E
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
    """What the init still needs once setup is over: the program and its startContainer hooks."""

    def __init__(self, path: str, args: list[str], env: dict[str, str], hooks: dict, state: dict,
                 guest_network: dict | None = None, no_new_privs: bool = False) -> None:
        self.path, self.args, self.env, self.hooks, self.state = path, args, env, hooks, state
        self.guest_network = guest_network
        self.no_new_privs = no_new_privs


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
        import fcntl

        fcntl.ioctl(0, TIOCSCTTY, 0)
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
    if config.get("routes"):
        from .network import add_routes

        add_routes(config["routes"])
        log("debug", f"added {len(config['routes'])} route(s)")

    hooks = config.get("hooks") or {}
    state["status"] = "creating"
    if hooks.get("prestart") or hooks.get("createRuntime"):
        sync.send(PROC_HOOKS)
        sync.expect(PROC_RESUME)
    _run_hooks(hooks, "createContainer", state)

    sync.send(PROC_READY)
    sync.expect(PROC_RUN)

    _apply_security(config)
    keep = set(range(3 + int(init.get("extra_files") or 0))) | {sync.fd, log.fd, fifo_fd}
    _close_leaked_fds(keep)
    if config.get("parent_death_signal") and os.getppid() != init["parent_pid"]:
        raise RuntimeError("parent process died during container setup")
    path = _look_path(args[0], env)
    state["status"] = "created"
    return _Launch(path, args, env, hooks, state, init.get("guest_network"), bool(init.get("no_new_privs")))


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


def _wait_and_exec(sync_fd: int, log: _Log, fifo_fd: int, launch: _Launch) -> None:
    import _signal

    log("debug", "waiting on exec.fifo for start")
    for fd in (sync_fd, log.fd):
        if fd >= 0:
            os.close(fd)
    wfd = -1
    try:
        # Opening for writing blocks until `start` opens the fifo for reading. The write end
        # stays open (close-on-exec) so `start` sees end-of-file exactly when the exec happened;
        # anything written after the "0" is an error for `start` to report.
        wfd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(wfd, b"0")
        if launch.guest_network:
            # Unikernels: the netns' network goes to the guest, now that CNI has configured it.
            from .unikraft import net

            launch.args = net.setup(launch.guest_network, launch.args)
        os.close(fifo_fd)
        _run_hooks(launch.hooks, "startContainer", launch.state)
        # Python ignores these at start-up; ignored signals survive exec.
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
        if launch.no_new_privs:
            system.set_no_new_privs()
        os.execve(launch.path, launch.args, launch.env)
    except BaseException as e:
        text = _describe(e).encode(errors="replace")[:4000]
        try:
            os.write(wfd if wfd >= 0 else 2, text if wfd >= 0 else b"container init: " + text + b"\n")
        except OSError:
            pass
    os._exit(127)


if __name__ == "__main__":
    main()
    sys.exit(1)
