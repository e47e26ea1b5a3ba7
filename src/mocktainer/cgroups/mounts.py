"""What is mounted where: the cgroup hierarchies of this host, and our own cgroup in each."""

from __future__ import annotations

import os

from ..error import CgroupError
from .files import _read

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable

UNIFIED = ""  # the cgroup v2 hierarchy's key in cgroup_paths (runc's "")

# The v1 hierarchies a container joins: the ones that confine a VMM, and systemd's named one.
V1_JOIN = ("cpu", "cpuacct", "cpuset", "memory", "pids", "name=systemd")
_V1_CONTROLLERS = frozenset((
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio", "perf_event", "net_prio",
    "hugetlb", "pids", "rdma", "misc",
))


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
