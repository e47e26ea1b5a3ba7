"""Control groups: where a container's cgroup is, creating it, its limits, its pids, removing it.

Standard library only, and imported only by code that needs a cgroup (create,
delete, `ps` and `kill --all` of a container that has one): `runu state` never
loads it.

Where (`linux.cgroupsPath`, as runc's cgroupfs and systemd drivers read it):
- cgroupfs (the default driver): `/a/b` is below the root of every hierarchy
  (`/sys/fs/cgroup/memory/a/b`, ...); a relative `a/b` is below this process'
  own cgroup in each hierarchy (runc's behaviour; on a pure cgroup v2 host below
  the *parent* of our own cgroup, which is what runc does too: a cgroup that
  holds processes cannot give controllers to its children). The path is
  cleaned lexically (`..` cannot climb above the root). Empty means
  DEFAULT_PARENT/<name>, i.e. `/runu/<id>-<checksum of the root>` (see default_name;
  runc's default is `<id>` relative to its own cgroup; a fixed, absolute place is
  easier to find and to clean).
  A path that is the root itself, or that looks like systemd's
  `slice:prefix:name` form while --systemd-cgroup is not given, is refused.
- systemd (`--systemd-cgroup`): `slice:prefix:name`, e.g.
  `system.slice:runu:ID` is `/system.slice/runu-ID.scope`; a dashed slice
  nests (`a-b.slice` is `/a.slice/a-b.slice`), `-.slice` is the root, an empty
  slice is `system.slice`; a name ending in `.slice` is used as is, otherwise
  the unit is `<prefix>-<name>.scope` (`<name>.scope` for an empty prefix).
  Empty means `system.slice:runu:<id>`. runu never talks to systemd (no D-Bus,
  and these machines run no systemd): it makes those directories itself in
  every hierarchy, as if systemd had made the scope. On a host that does run
  systemd, systemd does not know the scope, so its properties and
  `systemctl` do not apply to it.

Which hierarchies (detected from /proc/self/mountinfo, nothing assumed): the v1
hierarchies holding cpu, cpuacct, cpuset, memory, pids and `name=systemd`
(co-mounted ones once), and the cgroup v2 hierarchy when one is mounted
(`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a hybrid
one). state.json's `cgroup_paths` maps each to the directory, keyed like runc:
the v1 controller names and "" for the v2 hierarchy.

Limits, from `linux.resources` (other fields are ignored), each written to the
hierarchy that holds the controller (v1 if it is mounted there, else v2 when
the v2 root offers it; on v2 the controller is enabled in the ancestors'
`cgroup.subtree_control` first):

    OCI                  v1 file                        v2 file
    memory.limit         memory.limit_in_bytes          memory.max (-1: max)
    memory.reservation   memory.soft_limit_in_bytes     memory.low
    memory.swap          memory.memsw.limit_in_bytes    memory.swap.max (swap - limit)
    cpu.shares           cpu.shares                     cpu.weight (converted as runc does)
    cpu.quota, period    cpu.cfs_quota_us, _period_us   cpu.max "QUOTA|max PERIOD" (period 100000)
    cpu.cpus, mems       cpuset.cpus, cpuset.mems       cpuset.cpus, cpuset.mems
    pids.limit           pids.max (<0: max)             pids.max

Zero means "not set" for every one of them (as in runc). On v1 a new cpuset
cgroup first gets its parent's cpus and mems (the kernel refuses tasks in an
empty cpuset), all before the process is moved in.

What fails and what only warns (on the `mocktainer` logger):
- errors: an invalid cgroupsPath or resource value (ConfigError, before any
  directory exists); an existing cgroup at that path that already holds
  processes or has cgroups below it; a given cgroupsPath that could not be created in any hierarchy.
  Whatever was made is removed again.
- warnings: a hierarchy where the directory cannot be made or the process
  cannot be moved (read-only, no permission): the container is not confined
  by that controller; a limit file that is missing or refuses the value; a
  limit whose controller is not mounted; the default path on a host without
  any writable cgroup hierarchy (the container then runs in runu's cgroup).

Removal (`remove`) deletes only the leaf in each hierarchy (like runc; a parent
such as `/kubepods/...` or a slice is not ours to remove) plus, for the default
path, the `/runu` parent when it is left empty. It kills nothing: a cgroup
still holding processes is retried briefly (EBUSY while tasks finish exiting),
then reported as an error naming them.
"""

from __future__ import annotations

import os

from .error import CgroupError, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

UNIFIED = ""  # the cgroup v2 hierarchy's key in cgroup_paths (runc's "")
DEFAULT_PARENT = "runu"  # cgroupfs default: /runu/<default_name>
DEFAULT_SLICE = "system.slice"
DEFAULT_SCOPE_PREFIX = "runu"  # systemd default: system.slice:runu:<id>

# The v1 hierarchies a container joins: the ones that confine a VMM, and systemd's named one.
V1_JOIN = ("cpu", "cpuacct", "cpuset", "memory", "pids", "name=systemd")
_V1_CONTROLLERS = frozenset((
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio", "perf_event", "net_prio",
    "hugetlb", "pids", "rdma", "misc",
))


def _warn(msg: str) -> None:
    from .error import warn

    warn(f"cgroup: {msg}")


# ---- what is mounted where ---------------------------------------------------------------

class Mount:
    """One cgroup mount: v1 (with its controllers) or v2."""

    __slots__ = ("mountpoint", "root", "version", "controllers")

    def __init__(self, mountpoint: str, root: str, version: int, controllers: Iterable[str] = ()) -> None:
        self.mountpoint = mountpoint
        self.root = root
        self.version = version
        self.controllers = frozenset(controllers)

    def __repr__(self) -> str:
        return f"Mount({self.mountpoint!r}, root={self.root!r}, v{self.version}, {sorted(self.controllers)})"


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 4 <= len(field) and all(d in "01234567" for d in field[i + 1:i + 4]):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of a /proc/<pid>/mountinfo text, in mount order."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        if tail[0] == "cgroup2":
            mounts.append(Mount(_unescape(fields[4]), _unescape(fields[3]), 2))
        elif tail[0] == "cgroup":
            opts = tail[2].split(",") if len(tail) > 2 else []
            ctrls = [o for o in opts if o in _V1_CONTROLLERS or o.startswith("name=")]
            mounts.append(Mount(_unescape(fields[4]), _unescape(fields[3]), 1, ctrls))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup -> {controller or "name=x" or "" (v2): path}."""
    out = {}
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        ctrls, sep, path = rest.partition(":")
        if not sep:
            continue
        if hid == "0" and not ctrls:
            out[UNIFIED] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def cgroup_mode(mounts: list[Mount]) -> str:
    """"v1" (legacy), "hybrid" (v1 controllers plus a v2 hierarchy), "v2" (unified) or "none"."""
    v1 = any(m.version == 1 for m in mounts)
    v2 = any(m.version == 2 for m in mounts)
    return "hybrid" if v1 and v2 else "v1" if v1 else "v2" if v2 else "none"


class Host:
    """The cgroup hierarchies as this process sees them, and its own place in them."""

    def __init__(self, mounts: list[Mount], own: dict[str, str] | None = None,
                 unified_controllers: Iterable[str] | None = None) -> None:
        self.mounts = mounts
        self.own = dict(own or {})
        self.mode = cgroup_mode(mounts)
        self.v1: dict[str, Mount] = {}
        for m in mounts:
            if m.version == 1:
                for c in m.controllers:
                    self.v1.setdefault(c, m)
        v2 = [m for m in mounts if m.version == 2]
        preferred = [m for m in v2 if m.mountpoint in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")]
        self.unified: Mount | None = (preferred + v2)[0] if v2 else None
        if unified_controllers is None and self.unified is not None:
            unified_controllers = _read(os.path.join(self.unified.mountpoint, "cgroup.controllers")).split()
        self.unified_controllers = frozenset(unified_controllers or ())

    @classmethod
    def current(cls) -> "Host":
        return cls(parse_mountinfo(_read("/proc/self/mountinfo")), parse_proc_cgroup(_read("/proc/self/cgroup")))

    def hierarchies(self) -> dict[str, Mount]:
        """{key: mount} of every hierarchy a container joins."""
        out = {c: self.v1[c] for c in V1_JOIN if c in self.v1}
        if self.unified is not None:
            out[UNIFIED] = self.unified
        return out

    def where(self, controller: str) -> str | None:
        """The key of the hierarchy that holds `controller`, or None."""
        if controller in self.v1:
            return controller
        if self.unified is not None and controller in self.unified_controllers:
            return UNIFIED
        return None

    def path(self, key: str, inner: str) -> str:
        """The directory of cgroup `inner` (absolute, or relative to our own cgroup) in hierarchy `key`."""
        mount = self.hierarchies()[key]
        if not inner.startswith("/"):
            own = self.own.get(key)
            if own is None:
                raise CgroupError(f"cannot place the relative cgroup path {inner!r}: this process' own cgroup in "
                                  f"the {key or 'v2'} hierarchy is unknown")
            if key == UNIFIED and self.mode == "v2":
                own = os.path.dirname(own)  # runc: our own cgroup has processes, so use its parent
            root = mount.root.rstrip("/")
            if own != root and not own.startswith(root + "/"):
                raise CgroupError(f"cannot place the relative cgroup path {inner!r}: this process' cgroup {own} is "
                                  f"outside the {mount.mountpoint} mount (root {mount.root})")
            inner = own[len(root):] + "/" + inner
        return _join(mount.mountpoint, inner)


def _join(mountpoint: str, inner: str) -> str:
    parts = [p for p in inner.split("/") if p and p != "."]
    return os.path.join(mountpoint, *parts) if parts else mountpoint


# ---- cgroupsPath -------------------------------------------------------------------------

def clean_path(path: str) -> str:
    """Lexically clean a cgroupfs path, keeping it absolute or relative; `..` never climbs out."""
    absolute = path.startswith("/")
    parts: list[str] = []
    for p in path.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    inner = "/".join(parts)
    return "/" + inner if absolute else inner


def expand_slice(slice: str) -> str:
    """systemd's slice nesting: `a-b.slice` -> `/a.slice/a-b.slice`; `-.slice` -> `/`."""
    suffix = ".slice"
    if not slice.endswith(suffix) or len(slice) <= len(suffix) or "/" in slice:
        raise ConfigError(f"invalid systemd slice {slice!r}: a slice name ends in .slice and has no '/'")
    name = slice[:-len(suffix)]
    if name == "-":
        return "/"
    path, prefix = "", ""
    for component in name.split("-"):
        if not component:
            raise ConfigError(f"invalid systemd slice {slice!r}: empty component (leading, trailing or double '-')")
        path += "/" + prefix + component + suffix
        prefix += component + "-"
    return path


def systemd_path(cgroups_path: str) -> str:
    """`slice:prefix:name` -> `/<expanded slice>/<unit>`."""
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise ConfigError(f"cgroupsPath {cgroups_path!r}: with --systemd-cgroup it must have the form "
                          f"slice:prefix:name (e.g. system.slice:runu:ID)")
    slice, prefix, name = parts
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"cgroupsPath {cgroups_path!r}: the unit name (after the second ':') must be a non-empty "
                          f"name without '/'")
    if "/" in prefix:
        raise ConfigError(f"cgroupsPath {cgroups_path!r}: the prefix must not contain '/'")
    if name.endswith(".slice"):
        unit = name
    else:
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return expand_slice(slice or DEFAULT_SLICE).rstrip("/") + "/" + unit


def _looks_systemd(path: str) -> bool:
    parts = path.split(":")
    return len(parts) == 3 and "/" not in path and (parts[0].endswith(".slice") or parts[0] == "")


def inner_path(cgroups_path: str, id: str, systemd: bool = False) -> str:
    """The container's cgroup below each hierarchy: absolute (`/a/b`) or relative to our own cgroup (`a/b`)."""
    if not isinstance(cgroups_path, str):
        raise ConfigError(f"linux.cgroupsPath must be a string, got {cgroups_path!r}")
    if "\0" in cgroups_path:
        raise ConfigError("linux.cgroupsPath must not contain a NUL byte")
    if systemd:
        return systemd_path(cgroups_path or f"{DEFAULT_SLICE}:{DEFAULT_SCOPE_PREFIX}:{id}")
    if not cgroups_path:
        return f"/{DEFAULT_PARENT}/{id}"
    if _looks_systemd(cgroups_path):
        raise ConfigError(f"cgroupsPath {cgroups_path!r} has systemd's slice:prefix:name form: pass "
                          f"--systemd-cgroup (runu --systemd-cgroup create ...) or give a cgroupfs path such as /a/b")
    inner = clean_path(cgroups_path)
    if inner in ("", "/"):
        raise ConfigError(f"cgroupsPath {cgroups_path!r} names the root (or this process' own cgroup), not a cgroup "
                          f"of the container's own")
    return inner


# ---- limits ------------------------------------------------------------------------------

def _get(resources: dict[str, Any], section: str, key: str, kind: type) -> Any:
    sect = resources.get(section)
    if sect is None:
        return None
    if not isinstance(sect, dict):
        raise ConfigError(f"linux.resources.{section} must be an object, got {sect!r}")
    v = sect.get(key)
    if v is None:
        return None
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(f"linux.resources.{section}.{key} must be an integer, got {v!r}")
    if kind is int and not -(1 << 63) <= v < 1 << 63:
        # (the kernel reads these as signed 64-bit numbers: 2^64 would wrap to 0)
        raise ConfigError(f"linux.resources.{section}.{key} {v} is out of range: the kernel takes values below 2^63")
    if kind is str and not isinstance(v, str):
        raise ConfigError(f"linux.resources.{section}.{key} must be a string, got {v!r}")
    return v


class Limits:
    """The cgroup-relevant part of `linux.resources`, checked (zero and absent mean "not set")."""

    __slots__ = ("memory", "reservation", "swap", "shares", "quota", "period", "cpus", "mems", "pids")

    def __init__(self, resources: dict[str, Any] | None) -> None:
        r = resources or {}
        if not isinstance(r, dict):
            raise ConfigError(f"linux.resources must be an object, got {r!r}")
        self.memory = _get(r, "memory", "limit", int) or 0
        self.reservation = _get(r, "memory", "reservation", int) or 0
        self.swap = _get(r, "memory", "swap", int) or 0
        self.shares = _get(r, "cpu", "shares", int) or 0
        self.quota = _get(r, "cpu", "quota", int) or 0
        self.period = _get(r, "cpu", "period", int) or 0
        self.cpus = _get(r, "cpu", "cpus", str) or ""
        self.mems = _get(r, "cpu", "mems", str) or ""
        self.pids = _get(r, "pids", "limit", int) or 0
        for name in ("shares", "period"):
            if getattr(self, name) < 0:
                raise ConfigError(f"linux.resources.cpu.{name} must not be negative, got {getattr(self, name)}")
        if self.swap > 0 and self.memory > 0 and self.swap < self.memory:
            raise ConfigError(f"linux.resources.memory.swap ({self.swap}) is memory+swap: it must not be below "
                              f"memory.limit ({self.memory})")

    def v1(self) -> dict[str, list[tuple[str, str]]]:
        """{controller: [(file, value), ...]} for cgroup v1, in writing order."""
        out: dict[str, list[tuple[str, str]]] = {}
        mem = []
        if self.memory:
            mem.append(("memory.limit_in_bytes", str(self.memory)))
        if self.swap:
            mem.append(("memory.memsw.limit_in_bytes", str(self.swap)))
        if self.reservation:
            mem.append(("memory.soft_limit_in_bytes", str(self.reservation)))
        cpu = []
        if self.shares:
            cpu.append(("cpu.shares", str(self.shares)))
        if self.period:
            cpu.append(("cpu.cfs_period_us", str(self.period)))
        if self.quota:
            cpu.append(("cpu.cfs_quota_us", str(self.quota)))
        cpuset = []
        if self.cpus:
            cpuset.append(("cpuset.cpus", self.cpus))
        if self.mems:
            cpuset.append(("cpuset.mems", self.mems))
        pids = [("pids.max", str(self.pids) if self.pids > 0 else "max")] if self.pids else []
        for name, files in (("memory", mem), ("cpu", cpu), ("cpuset", cpuset), ("pids", pids)):
            if files:
                out[name] = files
        return out

    def v2(self) -> dict[str, list[tuple[str, str]]]:
        """{controller: [(file, value), ...]} for cgroup v2, in writing order."""
        out: dict[str, list[tuple[str, str]]] = {}
        mem = []
        if self.memory:
            mem.append(("memory.max", _max(self.memory)))
        if self.swap:
            mem.append(("memory.swap.max", _max(swap_v2(self.swap, self.memory))))
        if self.reservation:
            mem.append(("memory.low", _max(self.reservation)))
        cpu = []
        if self.shares:
            cpu.append(("cpu.weight", str(shares_to_weight(self.shares))))
        if self.quota or self.period:
            cpu.append(("cpu.max", f"{self.quota if self.quota > 0 else 'max'} {self.period or 100000}"))
        cpuset = []
        if self.cpus:
            cpuset.append(("cpuset.cpus", self.cpus))
        if self.mems:
            cpuset.append(("cpuset.mems", self.mems))
        pids = [("pids.max", _max(self.pids))] if self.pids else []
        for name, files in (("memory", mem), ("cpu", cpu), ("cpuset", cpuset), ("pids", pids)):
            if files:
                out[name] = files
        return out


def _max(v: int) -> str:
    return str(v) if v > 0 else "max"


def swap_v2(swap: int, memory: int) -> int:
    """OCI memory.swap is memory+swap; v2's memory.swap.max is swap alone (runc's conversion)."""
    if swap <= 0 or memory <= 0:
        return swap  # -1 stays "max"; without a memory limit the value is taken as is
    return swap - memory


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] (default 1024) -> v2 cpu.weight [1, 10000] (default 100).

    runc's conversion: a quadratic in log2(shares) through (2, 1), (1024, 100) and (262144, 10000).
    """
    if shares <= 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    import math

    x = math.log2(shares)
    exponent = (x * x + 125 * x) / 612.0 - 7.0 / 34.0
    return int(math.ceil(10 ** exponent))


def check_resources(resources: Any) -> None:
    """Raise ConfigError if `linux.resources` has a cgroup value of the wrong type."""
    Limits(resources)


# ---- files -------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_pids(path: str) -> list[int]:
    """The processes in one cgroup directory (its cgroup.procs)."""
    with open(os.path.join(path, "cgroup.procs"), "rb") as f:
        return [int(x) for x in f.read().split()]


def _mkdirs(mountpoint: str, path: str, made: list[str]) -> None:
    """mkdir each level below `mountpoint` down to `path`, recording the ones made here."""
    rel = os.path.relpath(path, mountpoint)
    current = mountpoint
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        for _ in range(3):
            try:
                os.mkdir(current, 0o755)
                made.append(current)
            except FileExistsError:
                pass
            except FileNotFoundError:
                # A parent vanished under us (another container's delete pruned an empty default parent).
                _mkdirs(mountpoint, os.path.dirname(current), made)
                continue
            break


def _cpuset_fill(mountpoint: str, path: str) -> None:
    """Give every level from the mount's first child to `path` its parent's cpus and mems when empty (v1)."""
    levels = []
    p = path
    while p != mountpoint and p.startswith(mountpoint + "/"):
        levels.append(p)
        p = os.path.dirname(p)
    for level in reversed(levels):
        parent = os.path.dirname(level)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not _read(os.path.join(level, name)).strip():
                _write(os.path.join(level, name), _read(os.path.join(parent, name)).strip() or "\n")


def _enable_v2(mountpoint: str, path: str, controllers: list[str]) -> list[str]:
    """Enable `controllers` in cgroup.subtree_control from the mount root down to `path`'s parent.

    Returns the controllers that could not be enabled (each with the first error's text).
    """
    failed = []
    ancestors = []
    p = os.path.dirname(path)
    while True:
        ancestors.append(p)
        if p == mountpoint or not p.startswith(mountpoint + "/"):
            break
        p = os.path.dirname(p)
    for c in controllers:
        for a in reversed(ancestors):
            try:
                if c in _read(os.path.join(a, "cgroup.subtree_control")).split():
                    continue
                _write(os.path.join(a, "cgroup.subtree_control"), "+" + c)
            except OSError as e:
                failed.append(f"{c} ({a}/cgroup.subtree_control: {e.strerror})")
                break
    return failed


def _write_limits(path: str, files: list[tuple[str, str]], what: str) -> None:
    """Write limit files in order; one that fails with EINVAL is retried after the others (cfs period before
    quota, memory limit and memsw depend on each other's current values); what still fails is a warning."""
    import errno

    retry = []
    for name, value in files:
        try:
            _write(os.path.join(path, name), value)
        except OSError as e:
            if e.errno == errno.EINVAL and len(files) > 1:
                retry.append((name, value))
            else:
                _warn(f"{what}: cannot set {name} to {value!r} in {path}: {e.strerror}")
    for name, value in retry:
        try:
            _write(os.path.join(path, name), value)
        except OSError as e:
            _warn(f"{what}: cannot set {name} to {value!r} in {path}: {e.strerror}")


def _add_pid(path: str, pid: int) -> None:
    import errno
    import time

    for attempt in range(5):
        try:
            _write(os.path.join(path, "cgroup.procs"), str(pid))
            return
        except OSError as e:
            # EINVAL: the task is still being created (runc retries too)
            if e.errno != errno.EINVAL or attempt == 4:
                raise
            time.sleep(0.01)


# ---- create, remove, list ----------------------------------------------------------------

def warm_up() -> int:
    """Fork a child that moves itself into the cgroup it is already in; its pid (0: not forked).

    The first write to a cgroup.procs file after a quiet spell waits for an RCU grace period (the kernel
    takes cgroup_threadgroup_rwsem for writing): 6-15 ms on these 2-vCPU machines, paid by runc and crun
    too. A no-op move made by a helper at the very start of `create` starts that wait while the caller
    parses, plans and forks the init, whose own placement then finds the lock cheap again. Only from a
    single-threaded caller (a fork is unsafe otherwise); failures are ignored: it only saves time.
    """
    from . import system

    if not system.single_threaded():
        return 0
    try:
        pid = os.fork()
    except OSError:
        return 0
    if pid:
        return pid
    try:
        for path in _own_procs_files():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.write(fd, b"0")  # "0": the writer itself
                break
            except OSError:
                continue
            finally:
                os.close(fd)
    finally:
        os._exit(0)


def _own_procs_files() -> list[str]:
    """Where this process' cgroup.procs files usually are (no mountinfo parsing: this must be quick)."""
    with open("/proc/self/cgroup") as f:
        own = parse_proc_cgroup(f.read())
    out = []
    for key, path in own.items():
        path = path.rstrip("/")
        if key == UNIFIED:
            out += [f"/sys/fs/cgroup/unified{path}/cgroup.procs", f"/sys/fs/cgroup{path}/cgroup.procs"]
        else:
            out.append(f"/sys/fs/cgroup/{key.removeprefix('name=')}{path}/cgroup.procs")
    return out


def reap_warm_up(pid: int) -> None:
    if pid:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def default_name(root: str, id: str) -> str:
    """The name the default cgroup (`/runu/<name>`, systemd's `runu-<name>.scope`) uses for container `id` of
    state root `root`: the id and a checksum of the root's real path, so that the same id in two roots
    never shares a cgroup. (An id too long for that is cut, with checksums of the whole id.)"""
    from binascii import crc32  # (hashlib would load OpenSSL, ~4 ms, on every create)

    real = os.path.realpath(root).encode()
    name = f"{id}-{crc32(real):08x}"
    if len(name) > 200:  # a unit name is at most 255 bytes with its prefix and suffix
        name = f"{id[:100]}-{crc32(real):08x}-{crc32(id.encode()):08x}{crc32(id.encode()[::-1]):08x}"
    return name


def paths_of(id: str, cgroups_path: str, systemd: bool, host: Host | None = None) -> dict[str, str]:
    """{key: directory} of the container's cgroup in every mounted hierarchy."""
    inner = inner_path(cgroups_path, id, systemd)
    host = host or Host.current()
    return {key: host.path(key, inner) for key in host.hierarchies()}


def plan(id: str, cgroups_path: str, systemd: bool, host: Host | None = None) -> dict[str, str]:
    """{key: directory} create() would make in every mounted hierarchy (recorded before it makes any,
    so that a create killed half-way leaves nothing `delete` cannot find).

    Like runc, a cgroup that already exists and holds processes is refused; so is one that already has
    cgroups below it (an ancestor of someone else's cgroups): its limits would land on them, and removing
    it at delete would mean removing them."""
    paths = paths_of(id, cgroups_path, systemd, host)
    for path in dict.fromkeys(paths.values()):
        try:
            busy = read_pids(path)
            below = [e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        if busy:  # before anything is recorded or made: a cgroup of someone else's is never the container's
            raise CgroupError(f"cgroup {path} already exists and holds processes "
                              f"{' '.join(map(str, busy[:10]))}: it belongs to something else")
        if below:
            raise CgroupError(f"cgroup {path} already exists and has cgroups below it ({', '.join(below[:5])}): "
                              f"it belongs to something else; give linux.cgroupsPath a cgroup of the container's own")
    return paths


def create(id: str, cgroups_path: str, systemd: bool, resources: dict[str, Any] | None, pid: int,
           host: Host | None = None, planned: dict[str, str] | None = None) -> dict[str, str]:
    """Create the container's cgroup in every hierarchy, apply its limits, move `pid` in; {key: directory}.

    `planned` is what plan() answered for the same arguments (it is worked out here otherwise).
    On an error nothing is left behind; see the module doc for what only warns.
    """
    inner = inner_path(cgroups_path, id, systemd)
    limits = Limits(resources)
    host = host or Host.current()
    if planned is None:
        planned = plan(id, cgroups_path, systemd, host)
    hierarchies = host.hierarchies()
    required = bool(cgroups_path)
    if not hierarchies:
        if required:
            raise CgroupError(f"cannot create cgroup {inner}: no cgroup hierarchy is mounted "
                              f"(/proc/self/mountinfo has neither cgroup nor cgroup2)")
        _warn(f"no cgroup hierarchy is mounted: the container is not confined ({inner} not created)")
        return {}

    paths: dict[str, str] = {}  # joined so far
    made: list[str] = []  # directories made here, parents first
    problems: list[str] = []
    try:
        by_path: dict[str, list[str]] = {}
        for key, path in planned.items():
            by_path.setdefault(path, []).append(key)
        for path, keys in by_path.items():
            mount = hierarchies[keys[0]]
            label = ",".join(k or "v2" for k in keys)
            mine: list[str] = []
            try:
                _mkdirs(mount.mountpoint, path, mine)
                made.extend(mine)
                if mount.version == 1 and "cpuset" in mount.controllers:
                    _cpuset_fill(mount.mountpoint, path)
            except OSError as e:
                problems.append(f"{label}: {e.strerror}")
                _warn(f"cannot create {path} ({label} hierarchy): {e.strerror}; the container is not confined "
                      f"by it")
                _rmdirs(reversed(mine))
                made[:] = [d for d in made if d not in mine]
                continue
            for k in keys:
                paths[k] = path

        _apply(host, paths, limits)

        for path in dict.fromkeys(paths.values()):
            try:
                _add_pid(path, pid)
            except OSError as e:
                keys = [k for k, p in paths.items() if p == path]
                label = ",".join(k or "v2" for k in keys)
                problems.append(f"{label}: {e.strerror}")
                _warn(f"cannot move process {pid} into {path} ({label} hierarchy): {e.strerror}; the container "
                      f"is not confined by it")
                for k in keys:
                    del paths[k]
        if not paths:
            if required:
                raise CgroupError(f"cannot create cgroup {inner} in any hierarchy ({'; '.join(problems)})")
            _warn(f"no writable cgroup hierarchy: the container is not confined ({inner} not created)")
    except BaseException:
        _rmdirs(reversed(made))
        raise
    # Only the leaves we joined are recorded; anything else we made (an unjoined leaf) goes now.
    _rmdirs(d for d in reversed(made) if d not in paths.values() and not _is_ancestor_of_any(d, paths.values()))
    return paths


def _is_ancestor_of_any(d: str, paths: Iterable[str]) -> bool:
    return any(p == d or p.startswith(d + "/") for p in paths)


def _apply(host: Host, paths: dict[str, str], limits: Limits) -> None:
    v1, v2 = limits.v1(), limits.v2()
    wanted = list(dict.fromkeys(list(v1) + list(v2)))
    v2_needed = [c for c in wanted if host.where(c) == UNIFIED and UNIFIED in paths]
    if v2_needed:
        unified = host.hierarchies()[UNIFIED]
        for why in _enable_v2(unified.mountpoint, paths[UNIFIED], v2_needed):
            _warn(f"cannot enable controller {why}; its limits may not apply")
    for controller in wanted:
        key = host.where(controller)
        if key is None:
            _warn(f"{controller} limits not applied: no {controller} controller is mounted")
            continue
        if key not in paths:
            _warn(f"{controller} limits not applied: the container is not in a {controller} cgroup")
            continue
        files = v2[controller] if key == UNIFIED else v1[controller]
        _write_limits(paths[key], files, f"{controller} limit")


def _rmdirs(dirs: Iterable[str]) -> None:
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            pass


def remove(paths: dict[str, str], prune_parent: str | None = None) -> None:
    """Remove the container's cgroup directories (the leaves in `paths`); kills nothing.

    A cgroup with sub-cgroups loses those first; EBUSY (tasks still exiting) is retried for about
    0.7 s; a cgroup that still holds processes then raises CgroupError. Other failures warn.
    `prune_parent`: a parent directory name (the default's `runu`) to rmdir too when it is left empty.
    """
    import errno
    import time

    left = []
    for p in dict.fromkeys(paths.values()):
        if not p or not os.path.isabs(p) or os.path.ismount(p):
            _warn(f"not removing {p!r}: not a container's cgroup directory")  # a hierarchy's root, say
        else:
            left.append(p)
    delay = 0.001
    for attempt in range(11):
        busy = []
        for path in left:
            try:
                _remove_tree(path)
            except OSError as e:
                if e.errno == errno.EBUSY:
                    busy.append(path)
                else:
                    _warn(f"cannot remove {path}: {e.strerror}")
        left = busy
        if not left or attempt == 10:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    if prune_parent:
        for path in dict.fromkeys(paths.values()):
            parent = os.path.dirname(path)
            if path not in left and os.path.basename(parent) == prune_parent:
                try:
                    os.rmdir(parent)
                except OSError:
                    pass  # another container is still in it, or it was never ours
    if left:
        pids_in: list[int] = []
        for path in left:
            try:
                pids_in += [p for p in read_pids(path) if p not in pids_in]
            except OSError:
                pass
        more = f" (and {len(left) - 1} more hierarch{'y' if len(left) == 2 else 'ies'})" if len(left) > 1 else ""
        held = f"processes {' '.join(map(str, pids_in[:20]))} are still in it" if pids_in else "it is still busy"
        raise CgroupError(f"cannot remove cgroup {left[0]}{more}: {held}")


def _remove_tree(path: str) -> None:
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        try:
            subdirs = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return
        if not subdirs:
            raise
    for sub in subdirs:
        _remove_tree(sub)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def pids(paths: dict[str, str]) -> list[int] | None:
    """The processes in the container's cgroup in any of its hierarchies (sorted), or None if none is readable.

    Those of cgroups below it too (as runc's): a process moved into a sub-cgroup is still the container's,
    and one left there would keep delete from removing the cgroup for ever."""
    found: set[int] | None = None
    for path in dict.fromkeys(paths.values()):
        try:
            got = read_pids(path)
        except (OSError, ValueError):
            continue
        found = (found or set()) | set(got)
        for sub, _dirs, _files in os.walk(path):
            if sub != path:
                try:
                    found.update(read_pids(sub))
                except (OSError, ValueError):
                    pass
    return None if found is None else sorted(found)
