"""VMM backends: the interface, the registry and the choice of one.

A backend is one module of this package (`qemu`, `firecracker`) that turns
"boot this kernel with this command line, this much memory and these vCPUs"
into the container's process: its argv, and the files it needs in the
container's state directory. The module provides:

    NAME            the name users select it by
    OVERHEAD_MIB    memory the VMM process needs beside the guest's RAM: the
                    headroom taken off linux.resources.memory.limit (see
                    bundle.memory_mib)
    linux_params(kernel)
                    kernel parameters a Linux guest needs under this VMM
                    (serial console, what ends the VMM on panic/reboot); each is
                    added unless the user gave one with the same name
    nic_cmdline(guest)
                    (parameters runu adds to the guest's command line so that it
                    finds its NIC, whether the VMM appends a parameter of its
                    own) for the guest network's `guest` description (net.py)
    give_mounts(items)
                    how the guest gets the spec's mounts (mounts.Share): a
                    mounts.Given, shared while the VM runs or copied at create;
                    ConfigError for a mount the backend cannot give
    prepends_program(kernel)
                    whether the VMM itself puts a program name (argv[0]) in front of
                    the guest command line of `kernel` (see cmdline)
    exit_status(status, reason=None)
                    (container exit code, message or None) for the VMM's raw wait
                    status and, when known, the last reason the VMM gave for
                    stopping (QEMU: a QMP SHUTDOWN reason or run state); see the
                    backends and docs/bundles.md#exit-status for the mapping
    find(settings, arch)
                    absolute path of the VMM binary for guests of `arch`, or
                    None when this machine has none (`runu features`)
    launch(vm)      -> Launch: ConfigError with a user-facing message when the
                    backend cannot run `vm` (missing binary, no KVM, a kernel
                    format it cannot boot, an invalid annotation)

`vm` is a `VM`: the bundle's kernel (and initrd), what the spec asks for
(guest command line, memory, vCPUs, annotations), the runtime-wide settings
and the container's state directory. A `Launch` is the VMM's argv
(argv[0] absolute) and `files`, {file name: bytes}, that the runtime writes
into the state directory after creating it and before starting the container;
they go away with the directory at delete.

Choice (`choose`): annotation `org.unikraft.runu.vmm` of the container, else
`vmm` of the runtime-wide settings (runu: the environment variable RUNU_VMM,
else its config file; see `settings`), else `qemu`. An unknown name is an error.

Backends are imported only by `runu create` (and `runu features`).
"""

from __future__ import annotations

from mocktainer.error import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping, Protocol

    from mocktainer.unikraft.kernel import Kernel
    from mocktainer.unikraft.mounts import Given, Share

    class Knobs(Protocol):
        """The runtime-wide settings a backend reads (settings.Settings, as a tool such as runu
        names them): `get(key)` is (value, where it came from) or (None, None)."""

        environ: Mapping[str, str]

        def get(self, key: str, use_env: bool = True) -> tuple[Any, str | None]: ...

        def describe(self, key: str) -> str: ...

    # A VMM's control socket: (protocol, socket file name in the state directory).
    Control = tuple[str, str]

    from mocktainer.init import _Launch
    from mocktainer.unikraft.net import Nic
    from mocktainer.unikraft.vmmproc import Child

    class Session(Protocol):
        """A backend's prepared VMM, driven by the container's supervisor (see supervisor.py and
        vmmproc.Session, which the backends' Sessions extend)."""

        child: Child | None

        @property
        def vmm(self) -> Child: ...
        @property
        def control_fd(self) -> int: ...
        def fds(self) -> set[int]: ...
        def spawn(self, nic: Nic | None = None) -> None: ...
        def ready(self) -> None: ...
        def attach(self, nic: Nic) -> None: ...
        def resume(self) -> None: ...
        def on_control(self) -> bool: ...
        def abort(self) -> None: ...

    class Backend(Protocol):
        """A backend module (see the module doc)."""

        NAME: str
        OVERHEAD_MIB: int
        NIC_DEVICE: str
        CONTROL_PROTOCOL: str

        def Session(self, launch: _Launch, linux: bool, setup: dict[str, Any]) -> Session: ...  # noqa: N802
        def linux_params(self, kernel: Kernel) -> tuple[str, ...]: ...
        def prepends_program(self, kernel: Kernel) -> bool: ...
        def give_mounts(self, items: list[Share]) -> Given: ...
        def nic_cmdline(self, guest: Mapping[str, Any]) -> tuple[list[str], bool]: ...
        def exit_status(self, status: int, reason: str | None = None) -> tuple[int, str | None]: ...
        def find(self, settings: Knobs, arch: str) -> str | None: ...
        def launch(self, vm: VM) -> Launch: ...
        def features(self) -> dict[str, str]: ...
        def request_poweroff(self, path: str) -> bool: ...

    # (mypy checks here that each backend module has the interface)
    from mocktainer.unikraft import firecracker as _firecracker
    from mocktainer.unikraft import qemu as _qemu

    _BACKENDS: tuple[Backend, ...] = (_qemu, _firecracker)

VMM_ANNOTATION = "org.unikraft.runu.vmm"
# The accelerator knob, the same for every backend (each says which values it can honour).
ACCEL_ANNOTATION = "org.unikraft.runu.accel"
ACCEL_VALUES = ("kvm", "tcg", "auto")
DEFAULT_VMM = "qemu"
# Memory the container's supervisor (the VMM's parent, supervisor.py: a small Python process) needs in the
# container's cgroup beside the VMM: taken off linux.resources.memory.limit with the backend's OVERHEAD_MIB.
SUPERVISOR_MIB = 8
# name -> module under mocktainer.unikraft
BACKENDS = {"qemu": "qemu", "firecracker": "firecracker"}


class VM:
    """What a backend is asked to boot (see module doc).

    `kernel` a kernel.Kernel; `cmdline` the guest command line; `memory_mib`
    and `vcpus` the sizes (after the backend's headroom); `annotations` the
    OCI annotations; `settings` a settings.Settings; `state_dir` the
    container's directory (None when the caller has none: then a backend that
    needs files refuses); `container_id` its id (or None); `control_dir` a
    short path by which the VMM process reaches the state directory (the
    runtime passes it an fd of the directory: `/proc/self/fd/N`), where the
    backend puts its control socket (see `control`), or None for no socket.
    """

    __slots__ = ("kernel", "cmdline", "memory_mib", "vcpus", "annotations", "settings", "state_dir",
                 "container_id", "control_dir", "shares")

    def __init__(self, kernel: Kernel, cmdline: str, memory_mib: int, vcpus: int, annotations: dict[str, str],
                 settings: Knobs, state_dir: str | None = None, container_id: str | None = None,
                 control_dir: str | None = None, shares: list[Any] | None = None) -> None:
        self.kernel = kernel
        self.cmdline = cmdline
        self.memory_mib = memory_mib
        self.vcpus = vcpus
        self.annotations = annotations
        self.settings = settings
        self.state_dir = state_dir
        self.container_id = container_id
        self.control_dir = control_dir
        self.shares = list(shares or [])  # mounts.Share: host directories for the guest


class Launch:
    """A backend's answer: `args` (argv, args[0] absolute), `files` ({name: bytes} for the
    state directory), for the record `accel` ("kvm"/"tcg") and `machine` (or None),
    `control`: (protocol, socket name in the state directory) of the VMM's control socket
    (see `control`), or None, and `setup`: what the backend's Session needs beside the argv
    to prepare the VM in the container's supervisor (JSON-able; see supervisor.py)."""

    __slots__ = ("args", "files", "accel", "machine", "control", "setup")

    def __init__(self, args: list[str], files: dict[str, bytes] | None = None, accel: str | None = None,
                 machine: str | None = None, control: Control | None = None,
                 setup: dict[str, Any] | None = None) -> None:
        self.args = args
        self.files = dict(files or {})
        self.accel = accel
        self.machine = machine
        self.control = control
        self.setup = dict(setup or {})

    def __repr__(self) -> str:
        return "Launch(args=%r, files=%r, accel=%r, machine=%r, control=%r, setup=%r)" % (
            self.args, sorted(self.files), self.accel, self.machine, self.control, self.setup)


def accel_wanted(annotations: Mapping[str, str] | None, settings: Knobs) -> tuple[str, str | None]:
    """(kvm | tcg | auto, where it came from) of the accelerator knob: the annotation, then `accel` of
    `settings` (the environment, then the config file), else auto. ConfigError for a value that is none of
    these; each backend decides which it can honour."""
    value = (annotations or {}).get(ACCEL_ANNOTATION)
    source: str | None = "annotation %s" % ACCEL_ANNOTATION
    if value is None or value == "":
        value, source = settings.get("accel")
    if value is None or value == "":
        return "auto", None
    if not isinstance(value, str) or value.strip().lower() not in ACCEL_VALUES:
        raise ConfigError("%s=%r is not a valid accelerator: use kvm, tcg or auto" % (source, value))
    return value.strip().lower(), source


def choose(annotations: Mapping[str, str] | None, settings: Knobs) -> tuple[str, str | None]:
    """(backend name, where the choice came from) for a container."""
    value = (annotations or {}).get(VMM_ANNOTATION)
    source: str | None = "annotation %s" % VMM_ANNOTATION
    if value is None or value == "":
        value, source = settings.get("vmm")
    if value is None or value == "":
        return DEFAULT_VMM, "default"
    name = value.strip().lower() if isinstance(value, str) else value
    if name not in BACKENDS:
        raise ConfigError("%s=%r is not a VMM runu knows: use %s"
                          % (source, value, " or ".join(BACKENDS)))
    return name, source


def backend(name: str) -> Backend:
    """The backend module called `name`."""
    import sys

    try:
        module = "mocktainer.unikraft." + BACKENDS[name]
    except KeyError:
        raise ConfigError("no VMM backend called %r (known: %s)" % (name, ", ".join(BACKENDS))) from None
    __import__(module)  # (importlib itself would cost the import of `warnings`)
    found: Backend = sys.modules[module]  # type: ignore[assignment]  # a backend module: see Backend
    return found


def available(settings: Knobs, arch: str | None = None) -> list[tuple[str, str]]:
    """[(name, binary path)] of the backends whose VMM this machine has, for `arch`
    (default: the host's)."""
    from mocktainer.unikraft.host import host_arch

    arch = arch or host_arch()
    found = []
    for name in BACKENDS:
        path = backend(name).find(settings, arch)
        if path:
            found.append((name, path))
    return found


def feature_annotations(current: Knobs) -> dict[str, str]:
    """The annotations a `features` command lists for the VMM knobs, with the backends found here:
    `org.unikraft.runu.vmm.available` (comma-separated names) and `org.unikraft.runu.vmm.default`
    (the backend a container without the annotation gets)."""
    try:
        default = choose({}, current)[0]
    except ConfigError:
        default = "invalid"
    out = {
        VMM_ANNOTATION: "%s: the VMM (default %s; runtime-wide: %s)"
                        % (" | ".join(BACKENDS), DEFAULT_VMM, current.describe("vmm")),
        VMM_ANNOTATION + ".available": ",".join(name for name, _path in available(current)),
        VMM_ANNOTATION + ".default": default,
        ACCEL_ANNOTATION: "kvm | tcg | auto: the accelerator (firecracker: kvm only)",
    }
    for name in BACKENDS:
        out.update(backend(name).features())
    return out
