"""What a runu container runs: the decision taken at create time.

`plan(spec, rootfs, environ, state_dir)` looks at the OCI config and the bundle rootfs:

1. CRI sandbox (`annotations["io.kubernetes.cri.container-type"] == "sandbox"`,
   the pause container of a Kubernetes pod): `process.args` runs as a plain
   process. `args[0]` is resolved inside the rootfs (symlinks are followed as
   if the rootfs were `/`, so they cannot lead out of it; a name without a
   slash is looked up in the PATH of `process.env`), the result must be an
   executable regular file. Environment: `process.env`.

2. Unikernel (the rootfs holds `unikraft/bin/kernel`): the process is the VMM
   of the chosen backend (`mocktainer.unikraft.vmm`: QEMU by default, or
   Firecracker), with a clean environment (PATH only). The backend may also
   ask for files in the container's state directory (`Plan.files`).

   Guest command line, for Unikraft 0.16 and later (`[argv0] <library params> -- <app args>`;
   the rules, the rendering and the quoting are `unikraft.cmdline`'s):

   - The image entrypoint is dropped: kraftkit's images set the OCI
     `Entrypoint` to `/unikraft/bin/kernel` and `Cmd` to the application's
     arguments, so containerd and podman produce
     `process.args = ["/unikraft/bin/kernel", *cmd]`. `args[0]` is the
     entrypoint when it names the kernel (`/unikraft/bin/kernel`, with or
     without the leading slash or redundant `./` and `//`); otherwise every
     argument is the guest's.
   - If the remaining arguments contain `--`, those before the first `--` are
     Unikraft library parameters (e.g. `vfs.fstab=...`) and those after it the
     application's; without `--` all are the application's.
   - Each `process.env` entry `K=V` becomes a library parameter
     `env.vars=K=V` (posix-environ's `env.vars` array, one token per variable,
     so values may contain spaces, `[` or `]`), placed before the user's. More
     than ENV_MAX (8, Unikraft's default) is a warning naming the ones at risk.
   - An image with an initrd gets INITRD_FSTAB (kraftkit's root file system)
     unless the user gave a `vfs.fstab=` parameter.
   - A kernel without Unikraft's 9p file system (`kernel.has_9pfs`) gets no
     share at all, with a warning: Unikraft stops at boot on a `vfs.fstab`
     entry it cannot mount, and podman and the CRI plugin add /etc/hosts and
     friends to every container.
   - The spec's shared mounts (`mounts`) add their `vfs.fstab` entries: one
     list, the user's entries first, else the initrd's (unless a share sits
     on `/`), then the shares' (`mounts.merge_fstab`). They are among the
     parts `Plan.guest` keeps, so the network's re-rendering keeps them.
     Under Firecracker the mounts are copied into the initrd instead
     (`backend.give_mounts`, copies.py): its root entry goes first, before
     the user's entries (`mounts.initrd_root_fstab`).
   - argv[0] comes first where the VMM writes none (`backend.prepends_program`:
     QEMU's multiboot loader writes the kernel's path; PVH and Firecracker do
     not): the entrypoint as `args[0]` names it, else `/unikraft/bin/kernel`.
   - `Plan.guest` keeps the parts, the machine, the spec's hostname and the
     source of the /etc/resolv.conf mount, for the guest network to write the
     line again with its parameters when it attaches (at create, or at start
     for a late network; `unikraft.net`).

   A Linux kernel (`Kernel.linux`: a bzImage or an ELF vmlinux) gets the
   same words with Linux's rules instead (`linux_cmdline`): `process.env`
   entries become plain `K=V` kernel parameters (Linux hands the ones it does
   not know to /init's environment), the words before `--` are kernel
   parameters and those after it /init's arguments, a word with blanks is
   double-quoted (a `"` inside cannot be expressed), and the backend's
   parameters for Linux (`console=ttyS0 panic=-1` under QEMU,
   `console=ttyS0 reboot=k panic=1 pci=off` under Firecracker) come first,
   each unless the user gave a parameter of that name, then the shares'
   `runu.mount=`/`runu.root=` parameters (`mounts.Given.linux_params`, with
   `runu.disk=vda` first under Firecracker, whose copy is a read-only disk).

   Sizing, the same rules for every backend:

   - Memory: with a `linux.resources.memory.limit` of L bytes, the guest gets
     floor(L / 1 MiB) minus the backend's OVERHEAD_MIB (the VMM's own memory:
     64 MiB for QEMU, 16 MiB for Firecracker) and vmm.SUPERVISOR_MIB (8 MiB for
     the VMM's parent, the container's supervisor), so that guest, VMM and
     supervisor together stay within the limit (the container's cgroup); less than MIN_MEMORY_MIB
     (8) left for the guest is an error naming the smallest limit that works.
     Absent, zero or negative (-1 = unlimited) means DEFAULT_MEMORY_MIB (64;
     DEFAULT_LINUX_MEMORY_MIB, 256, for a Linux kernel)
     for the guest.
   - vCPUs: `linux.resources.cpu` quota/period rounded up, else the size of
     its `cpus` set, else 1; at most the host's CPU count.

3. Anything else is refused: runu runs unikernel bundles and CRI sandboxes.
"""

from __future__ import annotations

import os
import stat

from mocktainer.error import ConfigError
from mocktainer.init import DEFAULT_PATH
from mocktainer.unikraft import SANDBOX_ANNOTATION
from mocktainer.unikraft import cmdline as _cmdline
from mocktainer.unikraft import kernel as _kernel
from mocktainer.unikraft import mounts as _mounts
from mocktainer.unikraft import settings as _settings
from mocktainer.unikraft import vmm as _vmm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Sequence, TypedDict, TypeGuard

    from mocktainer.unikraft.vmm import Control, Knobs

    class Guest(TypedDict):
        """What the guest network needs to render the command line again (see Plan.guest)."""

        line: dict[str, Any]  # cmdline.Line.as_dict()
        machine: str
        hostname: str
        resolv_conf: str

DEFAULT_MEMORY_MIB = 64
# A distribution kernel resets while decompressing itself in 64 MiB (and a reset
# looks like a clean exit): Linux guests without a limit get more.
DEFAULT_LINUX_MEMORY_MIB = 256
MIN_MEMORY_MIB = 8
MIB = 1 << 20

VMM_ENV = ("PATH=" + DEFAULT_PATH,)

ENTRYPOINT = "/" + _kernel.KERNEL
ENV_PARAM = _cmdline.ENV_PARAM
SEPARATOR = _cmdline.SEPARATOR
# Unikraft's default CONFIG_LIBPOSIX_ENVIRON_LIBPARAM_MAXCOUNT: env.vars entries past it are dropped.
ENV_MAX = 8
FSTAB_PARAM = _mounts.FSTAB_PARAM
# kraftkit's root file system for an image with an initrd: extracted into a RAM file system.
INITRD_FSTAB = (FSTAB_PARAM + "[", "initrd0:/:extract::ramfs=1:", "]")
RESOLV_CONF = "/etc/resolv.conf"


class Plan:
    """What the container process is.

    `kind` is "unikernel" or "sandbox"; `args` the argv to exec (args[0] an
    absolute path); `env` the process environment as "K=V" strings; `files`
    {name: bytes} to write into the container's state directory before it
    starts (empty for most); `control` (protocol, socket name) of the VMM's
    control socket in the state directory, or None; `setup` what the backend's Session needs to
    prepare the VM (see vmm.Launch). For a unikernel also `guest`: what the guest network needs (at
    create or start) to render the command line again (`unikraft.net.instruction`), `vmm` (the backend's name),
    `kernel`, `cmdline`, `memory_mib`, `vcpus`, `accel` and `machine` (None
    for a sandbox; `machine` None under Firecracker).
    """

    __slots__ = ("kind", "args", "env", "kernel", "cmdline", "memory_mib", "vcpus", "accel",
                 "machine", "vmm", "files", "control", "setup", "guest", "fds")

    def __init__(self, kind: str, args: list[str], env: list[str], kernel: _kernel.Kernel | None = None,
                 cmdline: str | None = None, memory_mib: int | None = None, vcpus: int | None = None,
                 accel: str | None = None, machine: str | None = None, vmm: str | None = None,
                 files: dict[str, bytes] | None = None, control: Control | None = None,
                 setup: dict[str, Any] | None = None, guest: Guest | None = None) -> None:
        self.kind = kind
        self.args = args
        self.env = env
        self.kernel = kernel
        self.cmdline = cmdline
        self.memory_mib = memory_mib
        self.vcpus = vcpus
        self.accel = accel
        self.machine = machine
        self.vmm = vmm
        self.files = dict(files or {})
        self.control = control
        self.setup = dict(setup or {})
        self.guest = guest
        self.fds: list[int] = []  # files the VMM inherits at plan(fd_base=N)'s N, N+1, ... (the caller closes them)

    def __repr__(self) -> str:
        return "Plan(%s)" % ", ".join("%s=%r" % (a, getattr(self, a)) for a in self.__slots__)


def plan(spec: object, rootfs: str, environ: Mapping[str, str] | None, state_dir: str | None = None,
         control_dir: str | None = None, fd_base: int | None = None,
         load_settings: Callable[[Mapping[str, str]], Knobs] | None = None) -> Plan:
    """Decide what the container runs. Raises ConfigError with a user-facing message.

    `environ` is the caller's environment (PATH for the VMM lookup);
    `load_settings(environ)` gives the runtime-wide settings, called only for a
    unikernel (runu passes runu.settings.load: its RUNU_* variables and config
    file; default: the library's settings, none set); `state_dir` the container's directory under the runtime root,
    where `Plan.files` will be written (its base name is the container id);
    `control_dir` the short path by which the VMM will reach that directory
    (see vmm.VM), or None for a VMM without a control socket. With `fd_base`,
    the kernel and initrd that were checked stay open (`Plan.fds`) and the VMM
    boots them as the fds fd_base, fd_base+1 it will inherit (kernel.Kernel).
    """
    if not isinstance(spec, dict):
        raise ConfigError("the OCI config must be a JSON object")
    annotations = _dict(spec.get("annotations"), "annotations")
    process = _dict(spec.get("process"), "process")
    args = _strings(process.get("args"), "process.args")
    env = _strings(process.get("env"), "process.env")
    environ = environ if environ is not None else {}

    if annotations.get(SANDBOX_ANNOTATION) == "sandbox":
        if not args:
            raise ConfigError("sandbox container has an empty process.args: nothing to run")
        exe = resolve_executable(rootfs, args[0], env)
        return Plan("sandbox", [exe] + args[1:], list(env))

    kern = _kernel.find_kernel(rootfs, keep_open=fd_base is not None)
    try:
        return _unikernel_plan(kern, spec, rootfs, environ, args, env, annotations, state_dir, control_dir, fd_base,
                               load_settings or _no_settings)
    except BaseException:
        if kern is not None:
            kern.close()
        raise


def _no_settings(environ: Mapping[str, str]) -> Knobs:
    return _settings.Settings(environ=environ)


def _unikernel_plan(kern: _kernel.Kernel | None, spec: dict[str, Any], rootfs: str, environ: Mapping[str, str],
                    args: list[str], env: list[str], annotations: dict[str, Any], state_dir: str | None,
                    control_dir: str | None, fd_base: int | None,
                    load_settings: Callable[[Mapping[str, str]], Knobs]) -> Plan:
    if kern is None:
        raise ConfigError(
            "runu runs unikernel bundles (rootfs/%s) and CRI sandbox containers "
            "(annotation %s=sandbox); %s has neither"
            % (_kernel.KERNEL, SANDBOX_ANNOTATION, os.path.abspath(rootfs)))

    settings = load_settings(environ)
    name, _source = _vmm.choose(annotations, settings)
    backend = _vmm.backend(name)
    given = backend.give_mounts(_mounts.shares(spec, rootfs, annotations))
    if given.live and given.items and not kern.linux and not _kernel.has_9pfs(kern):
        from mocktainer.error import warn

        warn(_mounts.no_9pfs_warning(given.items))
        given = _mounts.Given([], live=True)
    shares = given.items
    if shares and not state_dir:
        raise ConfigError("mounts need the container's state directory")
    if kern.linux:
        line = linux_line(args, env, tuple(backend.linux_params(kern)), given.linux_params())
    else:
        program = None if backend.prepends_program(kern) else program_name(args)
        line = guest_line(args, env, program, bool(kern.initrd), given.fstab(), given.copied)
        at_risk = env_at_risk(line.params)
        if at_risk:
            from mocktainer.error import warn

            warn("the guest gets %d environment variables on its command line, but Unikraft takes only the "
                 "first %d unless built with a larger CONFIG_LIBPOSIX_ENVIRON_LIBPARAM_MAXCOUNT; at risk: %s"
                 % (ENV_MAX + len(at_risk), ENV_MAX, ", ".join(at_risk)))
    cmdline = _cmdline.render(line)
    resources = _dict(_dict(spec.get("linux"), "linux").get("resources"), "linux.resources")
    memory = memory_mib(resources, backend.OVERHEAD_MIB + _vmm.SUPERVISOR_MIB, name,
                        DEFAULT_LINUX_MEMORY_MIB if kern.linux else DEFAULT_MEMORY_MIB)
    vcpus = vcpu_count(resources)
    fds = kern.hand_over(fd_base) if fd_base is not None else []
    vm = _vmm.VM(kern, cmdline, memory, vcpus, annotations, settings, state_dir,
                 os.path.basename(state_dir) if state_dir else None, control_dir, shares)
    launch = backend.launch(vm)
    if shares and given.live:
        launch.setup["shares"] = {"state_dir": state_dir, "linux": bool(kern.linux),
                                  "items": [s.as_dict() for s in shares]}
    hostname = spec.get("hostname")
    guest: Guest = {"line": line.as_dict(), "machine": launch.machine or "",
                    "hostname": hostname if isinstance(hostname, str) else "",
                    "resolv_conf": resolv_conf_source(spec.get("mounts"))}
    out = Plan("unikernel", launch.args, list(VMM_ENV), kernel=kern, cmdline=cmdline,
               memory_mib=memory, vcpus=vcpus, accel=launch.accel, machine=launch.machine,
               vmm=name, files=launch.files, control=launch.control, setup=launch.setup, guest=guest)
    out.fds = fds
    return out


def program_name(args: list[str]) -> str:
    """argv[0] for a guest whose VMM writes none: the image entrypoint as `process.args` names it."""
    return args[0] if args and is_entrypoint(args[0]) else ENTRYPOINT


def resolv_conf_source(mounts: object) -> str:
    """The host file bind-mounted on /etc/resolv.conf (CRI and podman mount one), or "" (read when the guest
    network is attached: see unikraft.net)."""
    found = ""
    for m in mounts if isinstance(mounts, list) else ():
        if (isinstance(m, dict) and isinstance(m.get("destination"), str) and isinstance(m.get("source"), str)
                and os.path.normpath("/" + m["destination"].lstrip("/")) == RESOLV_CONF
                and os.path.isabs(m["source"])):
            found = m["source"]  # the last mount on a path is the one seen there
    return found


def _dict(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("%s in the OCI config must be an object" % what)
    return value


def _strings(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("%s in the OCI config must be a list of strings" % what)
    return value


# -- guest command line --------------------------------------------------------

def is_entrypoint(arg: str) -> bool:
    """True when `arg` names the bundle kernel (the image entrypoint)."""
    if not arg:
        return False
    # (normpath keeps a leading "//": POSIX lets it mean something else)
    return os.path.normpath("/" + arg.lstrip("/")) == ENTRYPOINT


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """`process.args` without the image entrypoint, split at the first `--` into
    (kernel or library parameters, application arguments)."""
    words = list(args)
    if words and is_entrypoint(words[0]):
        words = words[1:]
    if SEPARATOR in words:
        i = words.index(SEPARATOR)
        return words[:i], words[i + 1:]
    return [], words


def guest_line(args: list[str], env: "list[str] | tuple[str, ...]" = (), program: "str | None" = None,
               initrd: bool = False, fstab: "list[str] | tuple[str, ...]" = (),
               mounts_in_initrd: bool = False) -> _cmdline.Line:
    """The parts (a cmdline.Line) of the Unikraft command line for `process.args` and `process.env`
    (see module doc); `program` is argv[0] to write (None where the VMM writes one), `initrd` whether the
    image has an initrd (then `vfs.fstab` mounts it as the root file system unless the user gave one or a
    share sits on `/`), `fstab` the shares' entries, merged after the user's (mounts.merge_fstab);
    `mounts_in_initrd`: the mounts were copied into the initrd (Firecracker), so its root entry goes first
    whatever the user gave (mounts.initrd_root_fstab)."""
    params, app = split_args(args)
    env_params = []
    for entry in env:
        if "=" not in entry or entry.startswith("=") or entry.startswith("["):
            raise ConfigError("process.env entry %r is not of the form NAME=value" % (entry,))
        env_params.append(ENV_PARAM + entry)
    params = env_params + params
    if mounts_in_initrd:
        params = _mounts.initrd_root_fstab(params, INITRD_FSTAB[1])
    elif fstab:
        params = _mounts.merge_fstab(params, list(fstab), INITRD_FSTAB[1] if initrd else None)
    elif initrd and not any(p.startswith(FSTAB_PARAM) for p in params):
        params += list(INITRD_FSTAB)
    return _cmdline.Line(program, params, app)


def guest_cmdline(args: list[str], env: "list[str] | tuple[str, ...]" = (), program: "str | None" = None,
                  initrd: bool = False, fstab: "list[str] | tuple[str, ...]" = ()) -> str:
    """The Unikraft command line for `process.args` and `process.env` (see module doc)."""
    return _cmdline.render(guest_line(args, env, program, initrd, fstab))


def env_at_risk(params: list[str]) -> list[str]:
    """The names of the environment variables past the first ENV_MAX `env.vars` entries of `params`:
    a Unikraft guest built with the default configuration drops them silently."""
    names, in_list = [], False
    for p in params:
        if in_list:
            value = p[:-1] if p.endswith("]") else p
            in_list = not p.endswith("]")
        elif p.startswith(ENV_PARAM):
            value = p[len(ENV_PARAM):]
            if value.startswith("["):
                value, in_list = value[1:], True
                if value.endswith("]"):
                    value, in_list = value[:-1], False
        else:
            continue
        if value:
            names.append(value.split("=", 1)[0])
    return names[ENV_MAX:]


def linux_line(args: list[str], env: "list[str] | tuple[str, ...]" = (),
               defaults: "tuple[str, ...] | list[str]" = (),
               shares: "tuple[str, ...] | list[str]" = ()) -> _cmdline.Line:
    """The parts (a cmdline.Line) of a Linux kernel command line (see module doc).

    `defaults` are "name=value" parameters added first unless a kernel parameter
    (a word before `--`, or an env entry) of that name is given; `shares` (the
    mounts' `runu.mount=` words and their kind) follow them whatever the user gave:
    they name devices the VM has, and a user's own `runu.mount=` adds to them.
    """
    params, app = split_args(args)
    for entry in env:
        if "=" not in entry or entry.startswith("="):
            raise ConfigError("process.env entry %r is not of the form NAME=value" % (entry,))
    params = list(env) + params
    given = {p.split("=", 1)[0] for p in params}
    params = [d for d in defaults if d.split("=", 1)[0] not in given] + list(shares) + params
    return _cmdline.Line(None, params, app, linux=True)


def linux_cmdline(args: list[str], env: list[str] | tuple[str, ...] = (),
                  defaults: tuple[str, ...] | list[str] = (), shares: tuple[str, ...] | list[str] = ()) -> str:
    """The Linux kernel command line for `process.args` and `process.env` (see module doc, `linux_line`)."""
    return _cmdline.render(linux_line(args, env, defaults, shares))


quote = _cmdline.quote
linux_quote = _cmdline.linux_quote


# -- resources -------------------------------------------------------------------

def memory_mib(resources: dict[str, Any], overhead_mib: int = 0, vmm: str = "the VMM",
               default: int = DEFAULT_MEMORY_MIB) -> int:
    """Guest memory in MiB from `linux.resources`, leaving `overhead_mib` of the limit to
    `vmm` itself; `default` without a limit (see module doc)."""
    limit = _dict(resources.get("memory"), "linux.resources.memory").get("limit")
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ConfigError("linux.resources.memory.limit must be a whole number of bytes, not %r"
                          % (limit,))
    if limit <= 0:
        return default
    if limit >= 1 << 63:
        raise ConfigError("linux.resources.memory.limit %d is out of range: the kernel takes limits below 2^63"
                          % limit)
    mib = limit // MIB - overhead_mib
    host = host_memory_mib()
    if host and mib > host:
        raise ConfigError(
            "memory limit of %d bytes would give the %s guest %d MiB, more than this host's %d MiB of memory "
            "and swap, which %s cannot allocate; lower linux.resources.memory.limit" % (limit, vmm, mib, host, vmm))
    if mib < MIN_MEMORY_MIB:
        need = MIN_MEMORY_MIB + overhead_mib
        raise ConfigError(
            "memory limit of %d bytes is too small for a %s VM: runu keeps %d MiB of it for %s itself "
            "and the guest needs at least %d MiB, so the limit must be at least %d MiB (%d bytes); "
            "raise linux.resources.memory.limit"
            % (limit, vmm, overhead_mib, vmm, MIN_MEMORY_MIB, need, need * MIB))
    return mib


def host_memory_mib(meminfo: str = "/proc/meminfo") -> int:
    """MemTotal + SwapTotal in MiB (the most a VMM can allocate for its guest), or 0 when unknown."""
    total = 0
    try:
        with open(meminfo, "rb") as f:
            for line in f:
                if line.startswith((b"MemTotal:", b"SwapTotal:")):
                    total += int(line.split()[1])  # kB
    except (OSError, ValueError, IndexError):
        return 0
    return total // 1024


def vcpu_count(resources: dict[str, Any]) -> int:
    """vCPUs from `linux.resources.cpu` (see module doc)."""
    cpu = _dict(resources.get("cpu"), "linux.resources.cpu")
    host = os.cpu_count() or 1
    quota, period = cpu.get("quota"), cpu.get("period")
    n = 0
    if _positive_int(quota) and _positive_int(period):
        n = -(-quota // period)
    elif isinstance(cpu.get("cpus"), str) and cpu["cpus"].strip():
        n = _cpuset_size(cpu["cpus"])
    return max(1, min(n or 1, host))


def _positive_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


MAX_CPU = 1 << 16  # above any machine's CPU numbers (the kernel's NR_CPUS is at most 8192)


def _cpuset_size(text: str) -> int:
    """How many CPUs the list `text` (e.g. 0-3,8) names, counted from its ranges (never expanded)."""
    ranges = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            first, _, last = part.partition("-")
            lo = int(first)
            hi = int(last) if last else lo
            if lo < 0 or hi < lo:
                raise ValueError(part)
            ranges.append((lo, hi))
    except ValueError:
        raise ConfigError("linux.resources.cpu.cpus %r is not a CPU list like 0-1,3"
                          % (text[:100],)) from None
    top = max((hi for _lo, hi in ranges), default=0)
    if top >= MAX_CPU:
        raise ConfigError("linux.resources.cpu.cpus names CPU %d; no machine has a CPU numbered %d or more"
                          % (top, MAX_CPU))
    count, end = 0, -1
    for lo, hi in sorted(ranges):
        if hi > end:
            count += hi - max(lo, end + 1) + 1
            end = hi
    return count


# -- sandbox executable --------------------------------------------------------

def resolve_executable(rootfs: str, name: str, env: Sequence[str] = ()) -> str:
    """Absolute host path of `name` inside `rootfs`, never outside it.

    A name with a slash is a path inside the rootfs; a bare name is searched in
    the PATH of `env` (default DEFAULT_PATH), like execvp in the container.
    """
    root = os.path.abspath(rootfs)
    if not os.path.isdir(root):
        raise ConfigError("bundle rootfs %s is not a directory" % root)
    if "/" in name:
        candidates = [name]
    else:
        path = DEFAULT_PATH
        for entry in env:
            if entry.startswith("PATH="):
                path = entry[5:]
        candidates = [d + "/" + name for d in path.split(":") if d]
    from mocktainer.unikraft.host import is_executable

    for c in candidates:
        host = secure_join(root, c)
        if is_executable(host):
            return host
    if "/" in name:
        host = secure_join(root, name)
        if os.path.exists(host):
            raise ConfigError("sandbox process.args[0] %r (%s in the bundle rootfs) is not an "
                              "executable file" % (name, host))
        raise ConfigError("sandbox process.args[0] %r does not exist in the bundle rootfs %s"
                          % (name, root))
    raise ConfigError("sandbox process.args[0] %r not found in the bundle rootfs %s (PATH %s)"
                      % (name, root, path))


def secure_join(root: str, unsafe: str, max_links: int = 255) -> str:
    """Join `unsafe` to `root`, resolving symlinks as if `root` were `/`.

    The result is `root` or below it; components that do not exist are kept as
    they are. Too many links raise ConfigError.
    """
    root = os.path.abspath(root)
    pending = [p for p in unsafe.split("/") if p not in ("", ".")]
    pending.reverse()
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(host)
        except OSError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > max_links:
            raise ConfigError("too many levels of symbolic links resolving %r in %s"
                              % (unsafe, root))
        target = os.readlink(host)
        if target.startswith("/"):
            resolved = []
        more = target.split("/")
        more.reverse()
        pending.extend(more)
    return os.path.join(root, *resolved)
