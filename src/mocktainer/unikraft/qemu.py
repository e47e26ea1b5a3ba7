"""QEMU as the container's process: binary lookup, accelerator, command line.

Accelerator knob (documented for users):

- annotation `org.unikraft.runu.accel` in the OCI config (set it with
  `ctr run --annotation`, `podman run --annotation`, or a Kubernetes pod
  annotation passed through by the CRI runtime), else
- environment variable `RUNU_ACCEL` of the `runu` process (e.g. in the shim's
  environment or containerd's runtime options),
- values `kvm`, `tcg` or `auto` (the default). The annotation wins.

`auto` picks KVM when `/dev/kvm` opens read-write and answers
KVM_GET_API_VERSION with 12 and the guest architecture is the host's; for a
Linux (bzImage) guest on x86 it additionally needs hardware virtualisation in
the host CPU flags (vmx/svm), because a paravirtual KVM without them runs
unikernels but crashes Linux guests. Otherwise TCG. Forcing `kvm` where KVM
cannot work is an error rather than a silent fallback.

Machine knob: annotation `org.unikraft.runu.machine` (`microvm`, `pc` or
`q35` for x86_64 kernels, `virt` for ARM) overrides the default of
`machine_for()`: `microvm` for PVH kernels, `pc` for multiboot and bzImage.

The command line (see `qemu_args`) keeps the guest's serial console on the
VMM's stdio and nothing else there: no monitor, no QMP, no graphics, no default
devices; a guest reset ends QEMU (`-no-reboot`) and on x86 the guest can pick
QEMU's exit status through `isa-debug-exit` (status = (value << 1) | 1).
"""

import os

from mocktainer.error import ConfigError

ACCEL_ANNOTATION = "org.unikraft.runu.accel"
ACCEL_ENV = "RUNU_ACCEL"
ACCEL_VALUES = ("kvm", "tcg", "auto")

# Shims start runu with a tiny environment: look here after PATH.
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

KVM_DEVICE = "/dev/kvm"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12

# arch -> (QEMU binary, Debian package providing it)
QEMU_BINARIES = {
    "x86_64": ("qemu-system-x86_64", "qemu-system-x86"),
    "aarch64": ("qemu-system-aarch64", "qemu-system-arm"),
    "arm": ("qemu-system-arm", "qemu-system-arm"),
}

# Port and width of the isa-debug-exit device the guest writes its status to.
DEBUG_EXIT_IOBASE = 0xF4
DEBUG_EXIT_IOSIZE = 4

CONSOLE_ID = "console0"

# Machine override knob, and the machines it may name per architecture.
MACHINE_ANNOTATION = "org.unikraft.runu.machine"
MACHINES = {"x86_64": ("microvm", "pc", "q35"), "aarch64": ("virt",), "arm": ("virt",)}


def find_binary(name, path_env):
    """Absolute path of executable `name`, searched in `path_env` then SYSTEM_DIRS.

    A `name` with a slash is taken as a path. Empty PATH entries (which a shell
    would read as the current directory) are skipped. Raises ConfigError when
    nothing executable is found.
    """
    if "/" in name:
        if _is_executable(name):
            return os.path.abspath(name)
        raise ConfigError("%s is not an executable file" % name)
    dirs = []
    for d in (path_env or "").split(":") + list(SYSTEM_DIRS):
        if d and d not in dirs:
            dirs.append(d)
    for d in dirs:
        candidate = os.path.join(d, name)
        if _is_executable(candidate):
            return os.path.abspath(candidate)
    raise ConfigError("%s not found in PATH (%s) nor in %s"
                      % (name, path_env or "unset", " ".join(SYSTEM_DIRS)))


def _is_executable(path):
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o100000 and os.access(path, os.X_OK)


def qemu_binary(arch, path_env=None):
    """Absolute path of the QEMU system emulator for `arch`.

    `path_env` defaults to this process' PATH. Raises ConfigError naming the
    Debian package to install when it is missing.
    """
    try:
        name, package = QEMU_BINARIES[arch]
    except KeyError:
        raise ConfigError("no QEMU system emulator known for architecture %r" % (arch,)) from None
    if path_env is None:
        path_env = os.environ.get("PATH")
    try:
        return find_binary(name, path_env)
    except ConfigError as e:
        raise ConfigError("%s is needed to run this %s unikernel: %s; install the Debian package %s"
                          " (apt-get install %s)" % (name, arch, e, package, package)) from None


def kvm_usable(device=KVM_DEVICE):
    """True when `device` opens read-write and speaks KVM API version 12."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        import fcntl
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def host_arch():
    """The host's architecture in QEMU's naming (x86_64, aarch64, arm)."""
    m = os.uname().machine
    if m in ("x86_64", "amd64", "i686", "i386"):
        return "x86_64"
    if m in ("aarch64", "arm64"):
        return "aarch64"
    if m.startswith("arm"):
        return "arm"
    return m


def _hardware_virtualization(cpuinfo="/proc/cpuinfo"):
    """True when the host CPU advertises vmx or svm (x86) or is not x86."""
    if host_arch() != "x86_64":
        return True
    try:
        with open(cpuinfo, "rb") as f:
            for line in f:
                if line.startswith(b"flags"):
                    flags = line.split(b":", 1)[-1].split()
                    return b"vmx" in flags or b"svm" in flags
    except OSError:
        pass
    return False


def _kvm_obstacle(kernel, kvm_check, hwvirt_check):
    """Why KVM cannot run `kernel` here, or None when it can."""
    host = host_arch()
    if kernel.arch != host:
        return "a %s guest cannot use KVM on this %s host" % (kernel.arch, host)
    if not kvm_check():
        return "%s is missing or not usable (it must open read-write and answer " \
               "KVM_GET_API_VERSION with %d)" % (KVM_DEVICE, KVM_API_VERSION)
    if kernel.boot_protocol == "linux" and not hwvirt_check():
        return "this host's KVM has no hardware virtualisation (no vmx/svm CPU flag) " \
               "and Linux guests crash under it"
    return None


def choose_accel(annotations, environ, kernel, *, kvm_check=kvm_usable,
                 hwvirt_check=_hardware_virtualization):
    """Return "kvm" or "tcg" for `kernel`, honouring the annotation, then RUNU_ACCEL."""
    value = (annotations or {}).get(ACCEL_ANNOTATION)
    source = "annotation %s" % ACCEL_ANNOTATION
    if value is None or value == "":
        value = (environ or {}).get(ACCEL_ENV)
        source = "environment variable %s" % ACCEL_ENV
    if value is None or value == "":
        value, source = "auto", None
    if not isinstance(value, str) or value.strip().lower() not in ACCEL_VALUES:
        raise ConfigError("%s=%r is not a valid accelerator: use kvm, tcg or auto"
                          % (source, value))
    value = value.strip().lower()
    if value == "tcg":
        return "tcg"
    obstacle = _kvm_obstacle(kernel, kvm_check, hwvirt_check)
    if value == "kvm":
        if obstacle:
            raise ConfigError("%s asks for kvm but %s; use tcg or auto" % (source, obstacle))
        return "kvm"
    return "tcg" if obstacle else "kvm"


def machine_for(kernel, override=None):
    """QEMU machine type for `kernel` (ConfigError when QEMU cannot boot it).

    PVH kernels boot on `microvm` (no firmware to run: fastest); multiboot
    kernels (Unikraft's x86_64 QEMU builds) and bzImages on `pc`, which has the
    legacy PCI bus Unikraft drivers probe; ARM kernels on `virt`. `override`
    (the `org.unikraft.runu.machine` annotation) picks another of MACHINES.
    """
    if kernel.arch == "x86_64" and kernel.boot_protocol not in ("pvh", "multiboot", "linux"):
        raise ConfigError(
            "x86_64 kernel %s has neither a PVH ELF note nor a multiboot header, so QEMU "
            "cannot boot it with -kernel; build it for Unikraft's QEMU/KVM platform" % kernel.path)
    allowed = MACHINES.get(kernel.arch, ())
    if override:
        if override not in allowed:
            raise ConfigError("annotation %s=%r is not a machine for a %s kernel: use %s"
                              % (MACHINE_ANNOTATION, override, kernel.arch, " or ".join(allowed)))
        return override
    if kernel.arch == "x86_64":
        return "microvm" if kernel.boot_protocol == "pvh" else "pc"
    return "virt"


def cpu_for(arch, accel):
    """The -cpu model: what the guest needs, without features KVM here rejects."""
    if arch == "x86_64":
        # KVM: the host's features, minus the arch-capabilities MSR that a
        # paravirtual KVM refuses to set (plain `-cpu host` and `max` abort
        # there; the default qemu64 model warns about SSE3). TCG: everything
        # TCG emulates, 1 GiB pages (pdpe1gb, used by Unikraft) included.
        return "max" if accel == "tcg" else "host,-arch-capabilities"
    if arch == "aarch64":
        return "host" if accel == "kvm" else "cortex-a57"
    if arch == "arm":
        return "host" if accel == "kvm" else "cortex-a15"
    raise ConfigError("no QEMU CPU model known for architecture %r" % (arch,))


def qemu_args(binary, kernel, *, memory_mib, cmdline, accel, smp=1, machine=None,
              nic_fds=None):
    """The VMM's argv (argv[0] = `binary`) to boot `kernel`.

    `cmdline` is the guest command line (no -append when empty), `accel` "kvm"
    or "tcg", `smp` the vCPU count, `machine` an override of `machine_for`.
    `nic_fds` is the network hook: a sequence of (fd, mac) for tap/macvtap fds
    the VMM inherits (see `nic_args`).
    """
    if accel not in ("kvm", "tcg"):
        raise ConfigError("accelerator %r is not kvm or tcg" % (accel,))
    memory_mib = int(memory_mib)
    if memory_mib <= 0:
        raise ConfigError("guest memory must be positive, got %d MiB" % memory_mib)
    machine = machine_for(kernel, machine)
    args = [
        binary,
        "-M", machine,
        "-accel", accel,
        "-cpu", cpu_for(kernel.arch, accel),
        "-smp", str(int(smp)),
        "-m", "%dM" % memory_mib,
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-monitor", "none",
        "-chardev", "stdio,id=%s" % CONSOLE_ID,
        "-serial", "chardev:%s" % CONSOLE_ID,
        "-no-reboot",
    ]
    if kernel.arch == "x86_64":
        args += ["-device", "isa-debug-exit,iobase=%#x,iosize=%d"
                 % (DEBUG_EXIT_IOBASE, DEBUG_EXIT_IOSIZE)]
    args += ["-kernel", kernel.path]
    if kernel.initrd:
        args += ["-initrd", kernel.initrd]
    if cmdline:
        args += ["-append", cmdline]
    if nic_fds:
        args += nic_args(args, nic_fds)
    return args


def nic_args(args, nics, start=0):
    """QEMU arguments for network devices on fds the VMM inherits.

    `args` is the VMM argv the devices are for (its `-M` decides virtio-mmio on
    microvm or virtio-pci elsewhere), `nics` a sequence of (fd, mac). Returns
    the arguments to append; the caller passes the fds to the VMM.
    """
    machine = ""
    for i, a in enumerate(args[:-1]):
        if a in ("-M", "-machine"):
            machine = args[i + 1].split(",", 1)[0]
    device = "virtio-net-device" if machine == "microvm" else "virtio-net-pci"
    out = []
    for n, (fd, mac) in enumerate(nics, start):
        out += ["-netdev", "tap,id=net%d,fd=%d" % (n, int(fd)),
                "-device", "%s,netdev=net%d,mac=%s" % (device, n, mac)]
    return out
