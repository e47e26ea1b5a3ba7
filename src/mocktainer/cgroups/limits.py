"""linux.resources as the files of each cgroup version (see the table in mocktainer.cgroups)."""

from __future__ import annotations


from ..error import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
