"""QEMU as the container's process: binary lookup, accelerator, command line.

Accelerator knob (documented for users):

- annotation `org.unikraft.runu.accel` in the OCI config (set it with
  `ctr run --annotation`, `podman run --annotation`, or a Kubernetes pod
  annotation passed through by the CRI runtime), else
- `accel` of the runtime-wide settings (runu: the environment variable
  `RUNU_ACCEL` of the `runu` process, e.g. in the shim's environment or
  containerd's runtime options, else its config file),
- values `kvm`, `tcg` or `auto` (the default). The annotation wins.

`auto` picks KVM when `/dev/kvm` opens read-write and answers
KVM_GET_API_VERSION with 12, the guest architecture is the host's and, on x86,
the host CPU flags show hardware virtualisation (vmx/svm); otherwise TCG. A
paravirtual KVM without those flags runs only the simplest guests: Linux
guests crash under it, and so do real Unikraft builds (0.16.3 and 0.17.0 stop
with a KVM emulation failure as soon as they set up SSE; our tiny test kernel,
which does not, runs). Forcing `kvm` is honoured for a unikernel on such a host
(the user knows the image) and refused for a Linux guest; forcing it where KVM
cannot work at all is an error rather than a silent fallback.

Machine knob: annotation `org.unikraft.runu.machine` (`microvm`, `pc` or
`q35` for x86_64 kernels, `virt` for ARM) overrides the default of
`machine_for()`: `microvm` for PVH kernels, `pc` for multiboot and bzImage.

The command line (see `qemu_args`) keeps the guest's serial console on the
VMM's stdio and nothing else there: no monitor, no graphics, no default
devices (runu's own QMP socket, `qmp_args`, lives in the state directory);
a guest reset ends QEMU (`-no-reboot`) and on x86 the guest can pick
QEMU's exit status through `isa-debug-exit` (status = (value << 1) | 1): a Unikraft guest at port 0x501
(83 for a clean halt, 85 for a crash; `exit_status` turns them into the container's), runu's test
kernels at 0xf4. Under
TCG the translation cache is bounded (`tb-size`, TCG_TB_SIZE_MIB) so that
QEMU's own memory stays within OVERHEAD_MIB.

This is the `qemu` VMM backend (see `vmm`): `launch(vm)` also honours

- annotation `org.unikraft.runu.qemu.cpu`, else `qemu_cpu` in the config file:
  the `-cpu` model, checked by `check_cpu_model` (a model name and
  `,[+-]feature[=value]` items made of letters, digits, `.`, `_`, `-`);
- annotation `org.unikraft.runu.qemu.extra-args` (a JSON list of strings, or
  words separated by blanks), after `qemu_extra_args` of the config file:
  extra QEMU options, each checked against the allow-list EXTRA_OPTIONS by
  `check_extra_args`. Nothing that names a host path, a character device, a
  monitor, a drive, a kernel, a network back-end or a migration stream can pass.
- `qemu_binary` of the settings (runu: RUNU_QEMU_BINARY or its config file): the QEMU to
  run instead of the one found on PATH; `{arch}` in it is replaced by the
  guest's architecture (x86_64, aarch64, arm).
"""

from __future__ import annotations

import os
import struct

from mocktainer.error import ConfigError
from mocktainer.unikraft import vmmproc
from mocktainer.unikraft.host import find_binary, hardware_virtualization, kvm_obstacle, kvm_usable
from mocktainer.unikraft.vmm import ACCEL_ANNOTATION, Launch, accel_wanted  # noqa: F401  (ACCEL_ANNOTATION re-exported)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Mapping, Sequence

    from mocktainer.init import _Launch
    from mocktainer.unikraft.kernel import Kernel
    from mocktainer.unikraft.mounts import Given, Share
    from mocktainer.unikraft.net import Nic
    from mocktainer.unikraft.vmm import VM, Knobs

    # an allowed property of an extra option: its values, or a check of the value
    PropertyCheck = tuple[str, ...] | Callable[[str], bool]

NAME = "qemu"
# Memory QEMU needs beside the guest's RAM (see bundle.memory_mib): measured here
# 40-53 MiB resident for a tiny guest (half of it shared libraries), up to ~60 MiB
# under TCG for a Linux guest with the translation cache bounded to TCG_TB_SIZE_MIB.
OVERHEAD_MIB = 64
TCG_TB_SIZE_MIB = 32


# arch -> (QEMU binary, Debian package providing it)
QEMU_BINARIES = {
    "x86_64": ("qemu-system-x86_64", "qemu-system-x86"),
    "aarch64": ("qemu-system-aarch64", "qemu-system-arm"),
    "arm": ("qemu-system-arm", "qemu-system-arm"),
}

# isa-debug-exit devices a guest writes its status N to (QEMU then exits with (N << 1) | 1): Unikraft's
# (QEMU's default port, written with a 16-bit `out`: 41 for a clean halt, 42 for a crash), and the one at
# 0xf4 that runu's own test kernels have used (any value).
UNIKRAFT_EXIT_IOBASE = 0x501
UNIKRAFT_EXIT_IOSIZE = 2
DEBUG_EXIT_IOBASE = 0xF4
DEBUG_EXIT_IOSIZE = 4
# QEMU's exit status for Unikraft's clean halt and crash (see exit_status).
UNIKRAFT_HALT_STATUS = (41 << 1) | 1
UNIKRAFT_CRASH_STATUS = (42 << 1) | 1

CONSOLE_ID = "console0"

# Machine override knob, and the machines it may name per architecture.
MACHINE_ANNOTATION = "org.unikraft.runu.machine"
MACHINES = {"x86_64": ("microvm", "pc", "q35"), "aarch64": ("virt",), "arm": ("virt",)}


def qemu_binary(arch: str, path_env: str | None = None, configured: str | None = None,
                source: str | None = None) -> str:
    """Absolute path of the QEMU system emulator for `arch`.

    `path_env` defaults to this process' PATH. `configured` (from `source`, the
    qemu_binary setting) replaces the default name; `{arch}` in it becomes
    `arch`. Raises ConfigError naming the Debian package to install, or the
    setting to fix, when it is missing.
    """
    try:
        name, package = QEMU_BINARIES[arch]
    except KeyError:
        raise ConfigError("no QEMU system emulator known for architecture %r" % (arch,)) from None
    if path_env is None:
        path_env = os.environ.get("PATH")
    if configured:
        wanted = configured.replace("{arch}", arch)
        try:
            return find_binary(wanted, path_env)
        except ConfigError as e:
            raise ConfigError("%s names QEMU %r, which cannot be used: %s" % (source, configured, e)) from None
    try:
        return find_binary(name, path_env)
    except ConfigError as e:
        raise ConfigError("%s is needed to run this %s unikernel: %s; install the Debian package %s"
                          " (apt-get install %s) or set qemu_binary in the runu config file"
                          % (name, arch, e, package, package)) from None


def find(settings: Knobs, arch: str) -> str | None:
    """The QEMU binary for `arch` guests on this machine, or None (for `runu features`)."""
    configured, source = settings.get("qemu_binary")
    try:
        return qemu_binary(arch, settings.environ.get("PATH"), configured, source)
    except ConfigError:
        return None


def choose_accel(annotations: Mapping[str, str] | None, settings: Knobs, kernel: Kernel, *,
                 kvm_check: Callable[[], bool] = kvm_usable,
                 hwvirt_check: Callable[[], bool] = hardware_virtualization) -> str:
    """Return "kvm" or "tcg" for `kernel`, honouring the annotation, then `accel` of `settings`."""
    value, source = accel_wanted(annotations, settings)
    if value == "tcg":
        return "tcg"
    if value == "kvm":
        obstacle = kvm_obstacle(kernel, kvm_check, hwvirt_check)
        if obstacle:
            raise ConfigError("%s asks for kvm but %s; use tcg or auto" % (source, obstacle))
        return "kvm"
    if not hwvirt_check():  # auto: only a KVM with vmx/svm (see module doc)
        return "tcg"
    return "tcg" if kvm_obstacle(kernel, kvm_check, lambda: True) else "kvm"


def machine_for(kernel: Kernel, override: str | None = None) -> str:
    """QEMU machine type for `kernel` (ConfigError when QEMU cannot boot it).

    PVH unikernels boot on `microvm` (no firmware to run: fastest); multiboot
    kernels (Unikraft's x86_64 QEMU builds) on `pc`, which has the legacy PCI
    bus Unikraft drivers probe; Linux kernels (bzImage, or a PVH vmlinux) on
    `pc` too: its ACPI PM timer lets Linux calibrate the TSC, which on
    `microvm` under TCG sometimes hangs the boot; ARM kernels on `virt`.
    `override` (the `org.unikraft.runu.machine` annotation) picks another of
    MACHINES.
    """
    if kernel.arch == "x86_64" and kernel.boot_protocol not in ("pvh", "multiboot", "linux"):
        if kernel.linux:
            raise ConfigError(
                "Linux kernel %s is an ELF vmlinux without a PVH entry note (CONFIG_PVH), which QEMU "
                "cannot boot with -kernel; use the bzImage (vmlinuz), a vmlinux built with CONFIG_PVH=y, "
                "or the firecracker VMM (annotation org.unikraft.runu.vmm=firecracker)" % kernel.path)
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
        return "microvm" if kernel.boot_protocol == "pvh" and not kernel.linux else "pc"
    return "virt"


def cpu_for(arch: str, accel: str) -> str:
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


# QEMU's seccomp filter: no obsolete system calls, no setuid/setgid and friends, no fork or
# exec, no changes of scheduling, affinity or resource limits. On from the first instruction
# the guest runs; runu hands QEMU every fd it needs (tap/macvtap, the QMP directory) before.
SANDBOX_ARGS = ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]


def has_seccomp(binary: str) -> bool:
    """Whether the QEMU `binary` was built with its seccomp sandbox (`-sandbox`).

    QEMU has the sandbox exactly when it is linked with libseccomp, so this reads the ELF
    dynamic section's DT_NEEDED entries (a few KiB of reads, no process started; asking
    `qemu -sandbox help` would cost a QEMU start-up on every create). A statically linked
    or unreadable binary, or one that is not a 64-bit little-endian ELF, counts as "no":
    QEMU then runs without the sandbox, as it did before.
    """
    try:
        with open(binary, "rb") as f:
            return any(name.startswith(b"libseccomp.so") for name in _needed(f))
    except (OSError, ValueError, struct.error):
        return False


def _needed(f: IO[bytes]) -> list[bytes]:
    from mocktainer.unikraft.kernel import program_headers, program_table

    head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return []
    phoff, phentsize, phnum = program_table(head, "<", 64)
    if phnum > 256:
        return []
    loads, dynamic = [], None
    for p_type, offset, vaddr, filesz, _align in program_headers(f.fileno(), "<", 64, phoff, phentsize, phnum):
        if p_type == 1:  # PT_LOAD
            loads.append((vaddr, offset, filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (offset, min(filesz, 64 * 1024))
    if dynamic is None:
        return []
    f.seek(dynamic[0])
    raw = f.read(dynamic[1])
    needed, strtab, strsz = [], None, 0
    for off in range(0, len(raw) - 15, 16):
        tag, val = struct.unpack_from("<qQ", raw, off)
        if tag == 0:  # DT_NULL
            break
        if tag == 1:  # DT_NEEDED
            needed.append(val)
        elif tag == 5:  # DT_STRTAB (an address)
            strtab = val
        elif tag == 10:  # DT_STRSZ
            strsz = val
    where = next((offset + strtab - vaddr for vaddr, offset, size in loads
                  if strtab is not None and vaddr <= strtab < vaddr + size), None)
    if where is None or not 0 < strsz <= 1024 * 1024:
        return []
    f.seek(where)
    strings = f.read(strsz)
    ends = [(i, strings.find(b"\0", i)) for i in needed if i < len(strings)]
    return [strings[i:end] for i, end in ends if end >= 0]


def qemu_args(binary: str, kernel: Kernel, *, memory_mib: int, cmdline: str, accel: str, smp: int = 1,
              machine: str | None = None, nic_fds: Sequence[tuple[int, str]] | None = None, cpu: str | None = None,
              extra_args: Sequence[str] = (), sandbox: bool = False) -> list[str]:
    """The VMM's argv (argv[0] = `binary`) to boot `kernel`.

    `cmdline` is the guest command line (no -append when empty), `accel` "kvm"
    or "tcg", `smp` the vCPU count, `machine` an override of `machine_for`,
    `cpu` an override of `cpu_for` (checked), `extra_args` more options
    (checked against EXTRA_OPTIONS), placed before the kernel's.
    `nic_fds` is the network hook: a sequence of (fd, mac) for tap/macvtap fds
    the VMM inherits (see `nic_args`). `sandbox` adds QEMU's seccomp sandbox
    (SANDBOX_ARGS; see `has_seccomp`).
    """
    if accel not in ("kvm", "tcg"):
        raise ConfigError("accelerator %r is not kvm or tcg" % (accel,))
    memory_mib = int(memory_mib)
    if memory_mib <= 0:
        raise ConfigError("guest memory must be positive, got %d MiB" % memory_mib)
    machine = machine_for(kernel, machine)
    cpu = check_cpu_model(cpu, "the CPU model") if cpu else cpu_for(kernel.arch, accel)
    extra_args = check_extra_args(extra_args, "the extra QEMU arguments")
    args = [
        binary,
        "-M", machine,
        "-accel", accel if accel == "kvm" else "tcg,tb-size=%d" % TCG_TB_SIZE_MIB,
        "-cpu", cpu,
        "-smp", str(int(smp)),
        "-m", "%dM" % memory_mib,
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-monitor", "none",
        "-chardev", "stdio,id=%s" % CONSOLE_ID,
        "-serial", "chardev:%s" % CONSOLE_ID,
        "-no-reboot",
    ]
    if sandbox:
        args += SANDBOX_ARGS
    if kernel.arch == "x86_64":
        args += ["-device", "isa-debug-exit,iobase=%#x,iosize=%d"
                 % (DEBUG_EXIT_IOBASE, DEBUG_EXIT_IOSIZE)]
        if not kernel.linux:
            args += ["-device", "isa-debug-exit,iobase=%#x,iosize=%d"
                     % (UNIKRAFT_EXIT_IOBASE, UNIKRAFT_EXIT_IOSIZE)]
        if kernel.linux:
            # panic=-1 makes a panicking kernel reset, which -no-reboot turns into exit status 0;
            # through pvpanic the container ends with a failure instead.
            args += ["-device", "pvpanic", "-action", "panic=exit-failure"]
    args += extra_args
    # boot_path/boot_initrd: /proc/self/fd/N when runu hands over the checked files (kernel.Kernel), so no
    # bundle path meets QEMU's option syntax (a multiboot -initrd is a module list split at ',' and ' ').
    args += ["-kernel", kernel.boot_path]
    if kernel.initrd and kernel.boot_initrd:
        multiboot = kernel.boot_protocol == "multiboot"
        args += ["-initrd", _module_path(kernel.boot_initrd) if multiboot else kernel.boot_initrd]
    if cmdline:
        args += ["-append", cmdline]
    if nic_fds:
        args += nic_args(args, nic_fds)
    return args


def _module_path(path: str) -> str:
    """`path` as one multiboot module: a path with `,` or a blank (the module list's separators) is refused
    (create hands QEMU the initrd as /proc/self/fd/N, which never has them)."""
    if "," in path or any(c.isspace() for c in path):
        raise ConfigError("path %r has a ',' or a blank, which QEMU would read as option syntax" % path)
    return path


def nic_args(args: Sequence[str], nics: Sequence[tuple[int, str]], start: int = 0) -> list[str]:
    """QEMU arguments for network devices on fds the VMM inherits.

    `args` is the VMM argv the devices are for (its `-M` decides virtio-mmio on
    microvm or virtio-pci elsewhere), `nics` a sequence of (fd, mac). Returns
    the arguments to append; the caller passes the fds to the VMM.
    """
    machine = ""
    for i, a in enumerate(args[:-1]):
        if a in ("-M", "-machine") and not machine:
            first = args[i + 1].split(",", 1)[0]
            if "=" not in first:  # not extra properties merged into the machine
                machine = first
    device = "virtio-net-device" if machine == "microvm" else "virtio-net-pci"
    out = []
    for n, (fd, mac) in enumerate(nics, start):
        out += ["-netdev", "tap,id=net%d,fd=%d" % (n, int(fd)),
                "-device", "%s,netdev=net%d,mac=%s" % (device, n, mac)]
    return out


# -- the backend interface (see vmm) -----------------------------------------------

CPU_ANNOTATION = "org.unikraft.runu.qemu.cpu"
EXTRA_ARGS_ANNOTATION = "org.unikraft.runu.qemu.extra-args"
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_MAX_CPU_MODEL = 256


def _is_name(text: str) -> bool:
    return bool(text) and text[0].isalnum() and text.isascii() and _NAME_CHARS.issuperset(text)


def check_cpu_model(value: object, source: str | None) -> str:
    """`value` when it is a safe -cpu argument: `model[,[+-]feature[=value]...]`."""
    if not isinstance(value, str) or not value or len(value) > _MAX_CPU_MODEL:
        raise ConfigError("%s=%r is not a CPU model" % (source, value))
    model, *features = value.split(",")
    ok = _is_name(model)
    for item in features:
        name, eq, val = item.lstrip("+-").partition("=")
        ok = ok and _is_name(name) and (not eq or _is_name(val))
    if "help" in [model] + [item.lstrip("+-").partition("=")[0] for item in features]:
        # QEMU answers a help request by printing the list and exiting 0: the container would "succeed"
        raise ConfigError("%s=%r asks QEMU for help instead of naming a CPU model" % (source, value))
    if not ok:
        raise ConfigError("%s=%r is not a CPU model: use a QEMU model name and ,[+-]feature[=value] "
                          "items made of letters, digits, '.', '_' and '-' (e.g. max or "
                          "host,-arch-capabilities)" % (source, value))
    return value


_ON_OFF = ("on", "off")
_ON_OFF_AUTO = ("on", "off", "auto")


def _number(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 12


def _identifier(value: str) -> bool:
    return _is_name(value) and len(value) <= 64


# The only options extra arguments may use: option -> {property: allowed values
# (a tuple) or a predicate}. "-device" also needs its driver in EXTRA_DEVICES.
# Every property takes a plain word, so no option can name a host path, a
# character device, a monitor, a drive, a file descriptor or a network back-end.
EXTRA_OPTIONS: dict[str, dict[str, PropertyCheck]] = {
    "-rtc": {"base": ("utc", "localtime"), "clock": ("host", "rt", "vm"), "driftfix": ("none", "slew")},
    "-machine": {k: _ON_OFF_AUTO for k in (
        "acpi", "pit", "pic", "rtc", "hpet", "pcie", "isa-serial", "x-option-roms", "auto-kernel-cmdline",
        "smm", "vmport", "usb", "sata", "i8042", "mem-merge", "graphics", "suppress-vmdesc")},
    # (not mem-lock: QEMU's mlockall makes every mapping it ever makes resident at once, its reserved areas
    # and thread stacks too, far beyond OVERHEAD_MIB: under the container's memory limit the kernel OOM-kills
    # QEMU before the guest runs)
    "-overcommit": {"cpu-pm": _ON_OFF},
    "-msg": {"timestamp": _ON_OFF, "guest-name": _ON_OFF},
    "-icount": {"shift": lambda v: v == "auto" or (_number(v) and int(v) <= 10), "align": _ON_OFF,
                "sleep": _ON_OFF},
    "-device": {"id": _identifier, "max-bytes": _number, "period": _number},
}
EXTRA_ALIASES = {"-M": "-machine"}
# -device drivers extra arguments may add (entropy and panic notification; an
# i8042 lets a microvm guest reset itself).
EXTRA_DEVICES = {
    "virtio-rng-pci": ("id", "max-bytes", "period"),
    "virtio-rng-device": ("id", "max-bytes", "period"),
    "pvpanic": ("id",),
    "i8042": ("id",),
}


def parse_extra_args(value: object, source: str | None) -> list[str]:
    """The words of an extra-arguments setting: a list of strings, or a string holding a JSON
    list of strings or blank-separated words."""
    words: object
    if isinstance(value, list):
        words = value
    elif isinstance(value, str) and value.lstrip().startswith("["):
        from mocktainer import fastjson

        try:
            words = fastjson.loads(value)
        except ValueError as e:
            raise ConfigError("%s is not a valid JSON list: %s" % (source, e)) from None
    elif isinstance(value, str):
        words = value.split()
    else:
        words = None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ConfigError("%s must be a list of strings (JSON) or blank-separated words, not %r"
                          % (source, value))
    return words


def check_extra_args(words: Sequence[str], source: str | None) -> list[str]:
    """`words` (a list) when every option is on the allow-list (see EXTRA_OPTIONS)."""
    words = list(words)
    allowed = ", ".join(sorted(EXTRA_OPTIONS))
    i = 0
    while i < len(words):
        word = words[i]
        option = word[1:] if word.startswith("--") else word
        option = EXTRA_ALIASES.get(option, option)
        props = EXTRA_OPTIONS.get(option)
        if props is None:
            raise ConfigError("%s: QEMU option %r is not allowed; runu accepts only %s (with the values "
                              "documented in docs/bundles.md)" % (source, word, allowed))
        if i + 1 >= len(words):
            raise ConfigError("%s: QEMU option %r needs a value" % (source, word))
        value = words[i + 1]
        items = value.split(",")
        if option == "-device":
            driver, items = items[0], items[1:]
            if driver not in EXTRA_DEVICES:
                raise ConfigError("%s: -device %r is not allowed; runu accepts the devices %s"
                                  % (source, driver, ", ".join(sorted(EXTRA_DEVICES))))
            props = {k: v for k, v in props.items() if k in EXTRA_DEVICES[driver]}
        for item in items:
            key, eq, val = item.partition("=")
            check = props.get(key)
            ok = bool(eq) and check is not None and (val in check if isinstance(check, tuple) else check(val))
            if not ok:
                choices = ", ".join("%s=%s" % (k, "|".join(v) if isinstance(v, tuple) else "...")
                                    for k, v in props.items())
                raise ConfigError("%s: %r in %s %r is not allowed; use %s"
                                  % (source, item, word, value, choices or "no properties"))
        i += 2
    return words


def features() -> dict[str, str]:
    """The annotations `runu features` lists for this backend's knobs."""
    from mocktainer.unikraft.mounts import ROOTFS_ANNOTATION

    return {
        MACHINE_ANNOTATION: "microvm | pc | q35 | virt: the QEMU machine type",
        CPU_ANNOTATION: "a QEMU -cpu model, e.g. max or host,-arch-capabilities",
        EXTRA_ARGS_ANNOTATION: "extra QEMU options from an allow-list (%s), as a JSON list or words"
                               % " ".join(sorted(EXTRA_OPTIONS)),
        ROOTFS_ANNOTATION: "true | false: share the bundle's rootfs as the guest's root file "
                           "system (9p, or virtio-fs for a Linux guest)",
    }


def linux_params(kernel: Kernel) -> tuple[str, ...]:
    """Kernel parameters for a Linux guest: the serial console; a panic reboots at once,
    which with -no-reboot ends QEMU (a power-off ends it too)."""
    console = "ttyS0" if kernel.arch == "x86_64" else "ttyAMA0"
    return ("console=" + console, "panic=-1")


def give_mounts(items: list[Share]) -> Given:
    """The shares as QEMU gets them: all of them, shared live (virtio-9p, virtio-fs: see mounts)."""
    from mocktainer.unikraft.mounts import Given

    return Given(items, live=True)


def prepends_program(kernel: "Kernel") -> bool:
    """Whether QEMU puts a program name (the kernel's path) in front of the guest command line: its
    multiboot loader does, its PVH and Linux loaders do not."""
    return kernel.boot_protocol == "multiboot"


# QMP's reasons (SHUTDOWN events, or the run state a STOP left: see Session) that mean the guest failed.
FAILURES = {
    "guest-reset": "the guest reset itself (a triple fault, or a reboot that -no-reboot turned into an exit)",
    "guest-panic": "the guest panicked",
    "guest-panicked": "the guest panicked",
    "internal-error": "the VM stopped on a KVM internal error",
    "io-error": "the VM stopped on an I/O error",
}


def exit_status(status: int, reason: "str | None" = None) -> "tuple[int, str | None]":
    """(container exit code, message or None) for QEMU's raw wait `status` (as os.waitpid gives it) and
    `reason`, the last QMP SHUTDOWN reason or stopped run state when known.

    - 83 (Unikraft's clean halt through isa-debug-exit at 0x501): 0, unless `reason` says the guest
      failed first (then as for 0 below).
    - 85 (Unikraft's crash): 1, "the guest crashed".
    - 0 (ACPI power-off, which is how a Unikraft guest halts on `pc` when the ACPI write wins the race
      with isa-debug-exit, or QEMU quit on request): 0, unless `reason` says the guest failed (a reset,
      which -no-reboot turns into an exit: a triple fault; a panic; a KVM internal error): then 1 and why.
    - 1: QEMU's own failure, or `-action panic=exit-failure` (Linux guests with pvpanic): 1 and a message.
    - any other exit code: unchanged (runu's own test kernels write N to 0xf4 and QEMU exits (N << 1) | 1).
    - killed by signal N: 128 + N, as a shell reports it.
    """
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    failed = FAILURES.get(reason or "")
    if code == UNIKRAFT_HALT_STATUS:
        return (1, failed) if failed else (0, None)
    if code == UNIKRAFT_CRASH_STATUS:
        return 1, "the guest crashed (Unikraft reported a crash through isa-debug-exit: QEMU status 85)"
    if code == 0:
        return (1, failed) if failed else (0, None)
    if code == 1:
        return 1, failed or "QEMU exited with status 1: it failed (see its messages) or the guest panicked"
    return code, None


def launch(vm: VM) -> Launch:
    """The QEMU backend: argv for `vm` (see vmm.VM); QEMU needs no files. With
    `vm.control_dir`, a QMP socket for graceful stop (`qmp_args`)."""
    kernel, ann, settings = vm.kernel, vm.annotations, vm.settings
    accel = choose_accel(ann, settings, kernel)
    machine = machine_for(kernel, ann.get(MACHINE_ANNOTATION) or None)
    configured, source = settings.get("qemu_binary")
    binary = qemu_binary(kernel.arch, settings.environ.get("PATH"), configured, source)
    cpu_source: str | None
    cpu, cpu_source = ann.get(CPU_ANNOTATION), "annotation %s" % CPU_ANNOTATION
    if not cpu:
        cpu, cpu_source = settings.get("qemu_cpu")
    if cpu:
        check_cpu_model(cpu, cpu_source)
    extra = []
    for value, where in (settings.get("qemu_extra_args"),
                         (ann.get(EXTRA_ARGS_ANNOTATION), "annotation %s" % EXTRA_ARGS_ANNOTATION)):
        if value:
            extra += check_extra_args(parse_extra_args(value, where), where)
    args = qemu_args(binary, kernel, memory_mib=vm.memory_mib, cmdline=vm.cmdline, accel=accel,
                     smp=vm.vcpus, machine=machine, cpu=cpu, extra_args=extra, sandbox=has_seccomp(binary))
    if vm.shares:
        from mocktainer.unikraft import mounts

        if not vm.state_dir:
            raise ConfigError("mounts need the container's state directory")

        args += mounts.qemu_args(vm.shares, vm.state_dir, machine_for(kernel, machine), kernel.linux,
                                 vm.memory_mib, vm.control_dir)
    control = None
    if vm.control_dir:
        args += qmp_args(vm.control_dir)
        control = (CONTROL_PROTOCOL, QMP_SOCKET)
    return Launch(args, accel=accel, machine=machine, control=control)


# -- graceful stop (see mocktainer.unikraft.control) ---------------------------------

CONTROL_PROTOCOL = "qmp"
QMP_SOCKET = "qmp.sock"


def request_poweroff(path: str) -> bool:
    """Graceful stop (see control): `system_powerdown`, the ACPI power button, through the QMP socket at
    `path`; True once QEMU accepted it. OSError or ValueError when it cannot be asked."""
    from mocktainer import fastjson
    from mocktainer.unikraft.control import Lines, connect

    sock = connect(path)
    try:
        lines = Lines(sock)
        greeting = fastjson.loads(lines.line())
        if not isinstance(greeting, dict) or "QMP" not in greeting:
            raise ValueError("no QMP greeting")
        for command in ("qmp_capabilities", "system_powerdown"):
            sock.sendall(b'{"execute": "%s"}\n' % command.encode())
            while True:
                reply = fastjson.loads(lines.line())
                if not isinstance(reply, dict) or "event" in reply:
                    continue  # asynchronous events (POWERDOWN) come before or after the answer
                if "return" in reply:
                    break
                raise ValueError("QMP %s: %s" % (command, (reply.get("error") or {}).get("desc", reply)))
        return True
    finally:
        sock.close()


def qmp_args(control_dir: str) -> list[str]:
    """A private QMP server on `<control_dir>/qmp.sock`: runu's graceful stop sends
    `system_powerdown` (the ACPI power button) through it. `control_dir` is a short path to
    the container's state directory (`/proc/self/fd/N`, N an fd QEMU inherits), so the
    socket path stays within the 108 bytes of a unix socket address whatever the state
    directory's own path is."""
    return ["-qmp", "unix:%s/%s,server=on,wait=off" % (control_dir, QMP_SOCKET)]


# -- the prepared VMM (run by the container's supervisor, see supervisor.py) --------------

# The network device the guest network (net.py) makes for QEMU: a macvtap whose fd QEMU gets.
NIC_DEVICE = "macvtap"
# microvm without ACPI: 8 virtio-mmio transports of 512 bytes from 0xfeb00000 on IRQs 5-12, the first device
# plugged into the last one.
MICROVM_MMIO_BASE, MICROVM_MMIO_SIZE, MICROVM_TRANSPORTS, MICROVM_IRQ_BASE = 0xFEB00000, 512, 8, 5
MICROVM_NIC_PARAM = "virtio_mmio.device=%d@%#x:%d" % (
    MICROVM_MMIO_SIZE, MICROVM_MMIO_BASE + (MICROVM_TRANSPORTS - 1) * MICROVM_MMIO_SIZE,
    MICROVM_IRQ_BASE + MICROVM_TRANSPORTS - 1)
MICROVM_NO_ACPI = "acpi=off,auto-kernel-cmdline=off"


def nic_cmdline(guest: Mapping[str, Any]) -> tuple[list[str], bool]:
    """(the parameters runu puts on the guest's command line for its NIC, whether QEMU appends one of its own).

    A Unikraft guest on microvm finds virtio-mmio devices only through `virtio_mmio.device`, so runu
    announces the NIC itself: QEMU then runs the machine without ACPI (whose second IOAPIC would put the
    device on an IRQ past 23) and without its own parameter, which it would put after the `--` (`with_nic`).
    Elsewhere the guest finds the NIC on a bus and nothing is added."""
    if guest.get("machine") == "microvm" and not (guest.get("line") or {}).get("linux"):
        return [MICROVM_NIC_PARAM], False
    return [], False


# The monitor on which the supervisor drives the paused QEMU (`Session`).
SUPERVISOR_MONITOR = "runu-sv"


def with_nic(args: Sequence[str], nic: Nic, fd: int) -> list[str]:
    """QEMU's argv with the guest network: its -append replaced by the command line rendered again with the
    network's parameters (`nic.cmdline`, net.guest_cmdline), microvm without ACPI when the NIC is announced on
    that line (`nic.mmio`, `nic_cmdline`), and the NIC on `fd` (the macvtap's fd number in QEMU); `nic`
    is a net.Nic."""
    args = list(args)
    if "-append" in args[:-1]:
        args[args.index("-append") + 1] = nic.cmdline
    else:
        args += ["-append", nic.cmdline]
    if nic.mmio:
        args += ["-machine", MICROVM_NO_ACPI]
    return args + nic_args(args, [(fd, nic.mac)])


class Session(vmmproc.Session):
    """QEMU built paused (-S) at create and resumed (QMP `cont`) at start, watched through a private QMP
    monitor on a socketpair (the `qmp.sock` of graceful stop stays free for `runu kill`).

    `launch` is the init's (init._Launch: `args`, `spawn`, `fd_base`), `linux` whether the guest is Linux;
    QEMU needs no `setup` beside its argv.
    """

    def __init__(self, launch: _Launch, linux: bool, setup: dict[str, Any] | None = None) -> None:
        self.launch = launch
        self.linux = linux
        self.child = None
        self.sock = None
        self.buf = b""
        self.reason: str | None = None

    @property
    def control_fd(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1


    def spawn(self, nic: Nic | None = None) -> None:
        """Start QEMU paused (-S), with the NIC of `nic` (a net.Nic) when given; `ready` waits for it."""
        import _socket

        from mocktainer.unikraft.vmmproc import Child

        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        base = self.launch.fd_base
        args = list(self.launch.args) + [
            "-S", "-chardev", "socket,id=%s,fd=%d" % (SUPERVISOR_MONITOR, base),
            "-mon", "chardev=%s,mode=control" % SUPERVISOR_MONITOR]
        fds = [theirs.fileno()]
        if nic is not None:
            args = with_nic(args, nic, base + 1)
            fds.append(nic.fd)
        try:
            self.child = Child(self.launch.spawn, args, fds, os.path.basename(args[0]))
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.sock, self.buf = mine, b""

    def ready(self) -> None:
        """Wait until QEMU's monitor answers (its machine is built); VMMError (QEMU's own words) otherwise."""
        import time

        from mocktainer.unikraft.vmmproc import READY_TIMEOUT

        deadline = time.monotonic() + READY_TIMEOUT
        greeting = self._message(deadline, "start")
        if "QMP" not in greeting:
            self.vmm.kill()
            raise self._error("QEMU's monitor did not greet: %r" % (greeting,))
        self._command("qmp_capabilities", deadline, "start")
        self.vmm.start_relaying()

    def attach(self, nic: Nic) -> None:
        """A network that appeared after create: QEMU cannot take new kernel parameters once its machine is
        built (the guest's address is on the command line), so the paused QEMU is replaced by one with the
        NIC, before the guest ever ran. The container's pid (the supervisor's) does not change."""
        self.abort()
        self.spawn(nic)
        self.ready()

    def resume(self) -> None:
        import time

        from mocktainer.unikraft.vmmproc import READY_TIMEOUT, VMMError

        try:
            self._command("cont", time.monotonic() + READY_TIMEOUT, "resume")
        except (OSError, VMMError):
            if not self.vmm.exited():
                raise
            # The guest ran and QEMU ended before its answer came (a guest that exits at once): the
            # container started; the supervisor reports how it ended.

    def on_control(self) -> bool:
        """Read what QEMU said (events); False once the monitor is closed (QEMU is ending)."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            return False
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self._handle(_json(line))
        return True

    def _handle(self, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        data = msg.get("data") or {}
        if event == "SHUTDOWN" and data.get("reason") in ("guest-reset", "guest-panic"):
            self.reason = self.reason or ("guest-reset" if data["reason"] == "guest-reset" else "guest-panicked")
        elif event == "GUEST_PANICKED":
            self.reason = self.reason or "guest-panicked"
            self._send("quit")
        elif event == "STOP":
            self._send("query-status")  # why: the answer comes as a "return" below
        elif isinstance(msg.get("return"), dict) and msg["return"].get("status") in FAILURES:
            self.reason = self.reason or msg["return"]["status"]
            self._send("quit")

    def _send(self, command: str) -> None:
        try:
            self.sock.sendall(b'{"execute": "%s"}\n' % command.encode())
        except OSError:
            pass  # QEMU is going away

    def _message(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\n" not in self.buf:
            self.vmm.wait_readable(self.sock.fileno(), deadline, what)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:  # QEMU closed its monitor: it is ending
                raise self._error(self.vmm.failure(what))
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return _json(line)

    def _command(self, command: str, deadline: float, what: str) -> Any:
        self._send(command)
        while True:
            reply = self._message(deadline, what)
            if "event" in reply:
                self._handle(reply)
            elif "return" in reply:
                return reply["return"]
            elif "error" in reply:
                self.vmm.kill()
                raise self._error("QEMU refused %s: %s" % (command, (reply.get("error") or {}).get("desc", reply)))

    def _error(self, msg: str) -> vmmproc.VMMError:
        from mocktainer.unikraft.vmmproc import VMMError

        return VMMError(msg)


def _json(line: bytes) -> dict[str, Any]:
    from mocktainer import fastjson

    try:
        msg = fastjson.loads(line)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}
