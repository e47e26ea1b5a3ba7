"""The OCI runtime operations over bundles and container ids.

This is what a runc-compatible command line does once its flags are parsed:
runu's commands call these and only print the results. Kept free of heavy
imports: `state` and `kill` run on every containerd call.
"""

from __future__ import annotations

import os

from . import factory
from .container import Container
from .error import ConfigError, CorruptStateError, Error
from .process import Process
from .state import Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

    from .unikraft.vmm import Knobs

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.1.0"
MAX_CONFIG_BYTES = 16 << 20  # config.json: what containerd writes is a few KiB


# ---- bundles ---------------------------------------------------------------------------

def load_spec(bundle: str) -> dict[str, Any]:
    """Read `bundle/config.json`, with an error that says what is wrong with it."""
    from . import fastjson

    from .system import read_regular

    path = os.path.join(bundle, "config.json")
    if not os.path.isdir(bundle):
        raise ConfigError(f"bundle {bundle} does not exist or is not a directory")
    try:
        data = read_regular(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"bundle {bundle} has no config.json") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{path} {e}") from None
    try:
        spec = fastjson.loads(data)
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return spec


def supported_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with the namespaces a VMM has no use for dropped (like the seed, they are ignored)."""
    from .specconv import OCI_NAMESPACES, known_namespaces

    linux = spec.get("linux")
    if not isinstance(linux, dict) or not isinstance(linux.get("namespaces"), list):
        return spec
    for ns in linux["namespaces"]:
        if isinstance(ns, dict) and isinstance(ns.get("type"), str) and ns["type"] not in OCI_NAMESPACES:
            raise ConfigError(f"linux.namespaces: {ns['type'][:50]!r} is not a namespace type of the runtime spec "
                              f"({', '.join(OCI_NAMESPACES)})")
    known = set(known_namespaces())
    # Entries that are not well-formed stay, so that specconv names what is wrong with them.
    kept = [ns for ns in linux["namespaces"]
            if not isinstance(ns, dict) or not isinstance(ns.get("type"), str) or ns["type"] in known]
    for ns in linux["namespaces"]:
        if ns not in kept and ns.get("path") not in (None, ""):
            # ignored, but a path given for it must still be a namespace of its type (config-linux)
            path = ns["path"]
            if not isinstance(path, str) or not os.path.isabs(path):
                raise ConfigError(f"{ns['type']} namespace path {path!r} must be an absolute path")
            factory.check_namespace_path(ns["type"], path)
    return {**spec, "linux": {**linux, "namespaces": kept}}


def check_preserved_fds(n: int) -> None:
    """fds 3 .. 3+n-1 must be the caller's, open before we open anything.

    Otherwise our own descriptors (the init's socket, log pipe, exec.fifo) would
    land on those numbers and be handed to the container: the init would then
    hold our end of its own socket, and create would wait for it forever.
    """
    for fd in range(3, 3 + n):
        try:
            os.fstat(fd)
        except OSError:
            raise ConfigError(f"--preserve-fds {n}: file descriptor {fd} is not open; the caller must pass fds "
                              f"3 to {2 + n}") from None


def write_pid_file(path: str, pid: int) -> None:
    """Atomically, so a client polling the file never reads a partial number."""
    from .system import atomic_write

    try:
        atomic_write(path, str(pid).encode(), 0o644)
    except OSError as e:
        raise Error(f"cannot write pid file {path}: {e.strerror}") from None


def write_files(directory: str, files: dict[str, bytes]) -> None:
    """The VMM's files (e.g. its configuration) into the container's directory, mode 0600."""
    from .state import EXEC_FIFO, STATE_FILE
    from .system import write_all

    for name, data in files.items():
        if not name or "/" in name or name in (".", "..", EXEC_FIFO, STATE_FILE):
            raise ConfigError(f"invalid VMM file name {name!r}")
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as e:
            raise Error(f"cannot write {path}: {e.strerror}") from None


# ---- lifecycle -------------------------------------------------------------------------

def create(
    root: str,
    id: str,
    bundle: str,
    *,
    pid_file: str | None = None,
    console_socket: str | None = None,
    preserve_fds: int = 0,
    no_new_keyring: bool = False,
    environ: dict[str, str] | None = None,
    log_level: str | None = None,
    systemd_cgroup: bool = False,
    load_settings: Callable[[Mapping[str, str]], Knobs] | None = None,
    cgroup_parent: str = "",
) -> Container:
    """Create a container from a bundle; on return its init waits for `start`.

    `load_settings(environ)` gives a unikernel's runtime-wide settings (see unikraft/bundle.plan);
    `cgroup_parent` names the default cgroup's parent (configs.Config.cgroup_parent).

    The container process inherits this process' stdio (the client's pipes)
    unless the spec asks for a terminal, which is then sent to `console_socket`.
    On any failure nothing is left: no directory, no process.
    """
    from .cgroups import reap_warm_up, warm_up

    helper = warm_up()  # first thing: the kernel's slow start of cgroup moves overlaps all that follows
    try:
        return _create(root, id, bundle, pid_file=pid_file, console_socket=console_socket, preserve_fds=preserve_fds,
                       no_new_keyring=no_new_keyring, environ=environ, log_level=log_level,
                       systemd_cgroup=systemd_cgroup, load_settings=load_settings, cgroup_parent=cgroup_parent)
    finally:
        reap_warm_up(helper)


def _create(root: str, id: str, bundle: str, *, pid_file: str | None, console_socket: str | None,
            preserve_fds: int, no_new_keyring: bool, environ: dict[str, str] | None, log_level: str | None,
            systemd_cgroup: bool, load_settings: Callable[[Mapping[str, str]], Knobs] | None,
            cgroup_parent: str) -> Container:
    from . import specconv
    from .unikraft.bundle import plan

    factory.validate_id(id)
    check_preserved_fds(preserve_fds)
    bundle = os.path.abspath(bundle)
    spec = load_spec(bundle)
    config = specconv.create_config(supported_spec(spec), bundle)
    config.no_new_keyring = no_new_keyring
    config.systemd_cgroup = systemd_cgroup  # linux.cgroupsPath is slice:prefix:name (see mocktainer.cgroups)
    config.cgroup_parent = cgroup_parent
    state_dir = os.path.join(os.path.abspath(root), id)
    # The VMM gets an fd of the state directory right after the preserved fds, and binds its control
    # socket through it (a unix socket path must fit in 108 bytes; see unikraft/control.py).
    control_fd = 3 + preserve_fds
    # The kernel and initrd checked by plan() stay open and follow the state directory's fd (see
    # unikraft/kernel.Kernel): the VMM boots those very files as /proc/self/fd/N, whatever the bundle
    # becomes after create.
    what = plan(spec, config.rootfs, dict(os.environ) if environ is None else environ, state_dir,
                control_dir=f"/proc/self/fd/{control_fd}", fd_base=control_fd + 1, load_settings=load_settings)
    try:
        return _create_container(root, id, config, spec, what, pid_file, console_socket, preserve_fds, log_level)
    finally:
        for fd in what.fds:
            os.close(fd)


def _create_container(root: str, id: str, config: Any, spec: dict[str, Any], what: Any, pid_file: str | None,
                      console_socket: str | None, preserve_fds: int, log_level: str | None) -> Container:
    from . import failpoint

    terminal = bool((spec.get("process") or {}).get("terminal"))
    if terminal and not console_socket:
        raise ConfigError("process.terminal is true but no --console-socket was given to send the terminal to")

    container = factory.create(root, id, config)
    master = slave = dirfd = -1
    lock: factory.Lock | None = None
    try:
        # The directory phase holds the container's lock; it is let go before the init is forked (a forked
        # init would otherwise share it, and keep it if this process died), and the init is not startable,
        # killable or deletable as such before state.json exists anyway.
        lock = factory.lock(root, id)
        files = dict(what.files)
        if what.control:
            from .unikraft import control

            files[control.CONTROL_FILE] = control.record(*what.control)
        write_files(container.dir, files)
        extra_files = list(range(3, 3 + preserve_fds))
        if what.control or what.fds:
            dirfd = os.open(container.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            extra_files.append(dirfd)  # becomes control_fd in the VMM
        extra_files += what.fds  # control_fd + 1, ...
        stdio: list[Any] = [0, 1, 2]
        if terminal:
            from .console import open_pty, send_console

            master, slave = open_pty()
            stdio = [slave, slave, slave]
        process = Process(args=what.args, env=what.env, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                          extra_files=extra_files, terminal=terminal, log_level=log_level)
        if what.kind == "unikernel":
            from .unikraft import supervisor

            # The init supervises the VMM instead of becoming it: built at create, resumed at start.
            process.supervisor = supervisor.params(what.vmm, bool(what.kernel.linux), what.setup,
                                                   _guest_network(config, what, container.dir))
            process.no_new_privs = True  # a VMM never needs to gain privileges by exec
        lock.release()
        failpoint.hit("create:dir")
        container.start(process)
        failpoint.hit("create:ready")
        if terminal:
            send_console(console_socket, master)  # type: ignore[arg-type]
        if pid_file:
            write_pid_file(pid_file, process.pid())
    except BaseException:
        container.destroy()  # poststop hooks ran already if start itself failed
        raise
    finally:
        if lock is not None:
            lock.release()
        for fd in (master, slave, dirfd):
            if fd >= 0:
                os.close(fd)
    return container


def _guest_network(config: Any, what: Any, state_dir: str) -> dict[str, Any] | None:
    """The supervisor's guest network instruction (mocktainer.unikraft.net): only in a network namespace of the
    container's own or joined by path, never in runu's (the host's) one, whose address it would take."""
    from .configs import NamespaceType
    from .unikraft.net import instruction
    from .unikraft.vmm import backend

    if not config.namespaces.contains(NamespaceType.NEWNET):
        return None
    netns = config.namespaces.path_of(NamespaceType.NEWNET)
    if netns:
        try:
            a, b = os.stat(netns), os.stat("/proc/self/ns/net")
        except OSError:
            return None  # the init fails to join it anyway
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            return None
    return instruction(what.vmm, backend(what.vmm).NIC_DEVICE, bool(what.kernel.linux), state_dir, netns,
                       what.guest)


def start(root: str, id: str) -> None:
    with factory.lock(root, id):
        _start(root, id)


def _start(root: str, id: str) -> None:
    c = factory.load(root, id)
    status = c.status()
    if status == Status.RUNNING:
        raise Error(f"container {id!r} is already running")
    if status == Status.STOPPED:
        raise Error(f"container {id!r} has stopped; it cannot be started again (delete it and create it anew)")
    if status == Status.CREATING:
        raise Error(f"container {id!r} is still being created; start it once 'create' has returned")
    c.exec()


def state(root: str, id: str) -> dict[str, Any]:
    c = factory.load(root, id)
    return describe(c)


def describe(c: Container) -> dict[str, Any]:
    """The runtime-spec state, plus what `runc state` adds (rootfs, created, owner)."""
    st = c.oci_state()
    st["rootfs"] = c.config.rootfs
    st["created"] = c.state().created
    st["owner"] = ""
    return st


def kill(root: str, id: str, sig: int, all: bool = False) -> None:
    """See mocktainer.kill (runu calls it directly: `kill` need not load this module)."""
    from .kill import kill as _kill

    _kill(root, id, sig, all)


def delete(root: str, id: str, force: bool = False, cgroup_parent: str = "") -> None:
    """See mocktainer.delete."""
    from .delete import delete as _delete

    _delete(root, id, force, cgroup_parent)


def ps(root: str, id: str) -> list[int]:
    return factory.load(root, id).pids()


def list_containers(root: str) -> list[dict[str, Any]]:
    out = []
    for cid in factory.list_ids(root):
        try:
            out.append(describe(factory.load(root, cid)))
        except CorruptStateError as e:
            from .error import warn

            warn(str(e))  # listed, with what is known: its id
            out.append({"ociVersion": "", "id": cid, "status": "unknown", "pid": 0, "bundle": "", "rootfs": "",
                        "created": "", "owner": "", "annotations": {}})
        except Error:
            continue  # removed while we looked
    return out


def features(settings: Knobs | None = None) -> dict[str, Any]:
    """runtime-spec features.json: what this runtime honours, with the VMMs `settings` find."""
    from .configs import HOOK_NAMES
    from .specconv import known_namespaces
    from .unikraft import vmm

    if settings is None:
        from .unikraft.settings import Settings

        settings = Settings(environ=dict(os.environ))

    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOK_NAMES),
        "mountOptions": [],
        "linux": {
            "namespaces": known_namespaces(),
            "capabilities": [],
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": False},
            "apparmor": {"enabled": _apparmor_enabled()},
            "selinux": {"enabled": os.path.isdir("/sys/fs/selinux") and bool(os.listdir("/sys/fs/selinux"))},
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features.runtime": "runu",
            **vmm.feature_annotations(settings),
            "io.kubernetes.cri.container-type": "sandbox: run process.args from the rootfs (the pod's pause container)",
        },
    }


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def spec_template(args: list[str] | None = None) -> dict[str, Any]:
    """A config.json for a unikernel bundle (`rootfs/unikraft/bin/kernel`), as `runu spec` writes it."""
    from .init import DEFAULT_PATH
    from .unikraft.bundle import ENTRYPOINT

    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [ENTRYPOINT] + list(args or []),
            "env": ["PATH=" + DEFAULT_PATH],
            "cwd": "/",
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runu",
        "annotations": {},
        "linux": {
            "namespaces": [{"type": "network"}],
            # 64 MiB for the guest after QEMU's own 64 MiB and its supervisor's 8 (see unikraft/bundle.py)
            "resources": {"memory": {"limit": 136 * 1024 * 1024}},
        },
    }
