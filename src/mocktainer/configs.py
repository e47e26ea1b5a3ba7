"""The container configuration: what `specconv` makes of an OCI spec and what state.json keeps.

Field names match libmocktainer's JSON (`parent_death_signal`, `rootfs`, ...), so
a state directory reads the same whichever side wrote it. Plain classes, not
dataclasses: importing `dataclasses` costs ~17 ms, paid on every runu call.
"""

from __future__ import annotations

from .system import CLONE_NEWNET

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Record:
    """A small record with defaults, equality and a JSON shape."""

    # (json/attribute name, default or zero-argument factory)
    _fields: tuple[tuple[str, Any], ...] = ()
    __slots__: tuple[str, ...] = ()

    def __init__(self, **kw: Any) -> None:
        for name, default in self._fields:
            if name in kw:
                value = kw.pop(name)
            else:
                value = default() if callable(default) else default
            setattr(self, name, value)
        if kw:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(sorted(kw))}")

    def to_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name, _ in self._fields}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        known = {name for name, _ in cls._fields}
        return cls(**{k: v for k, v in (d or {}).items() if k in known and v is not None})

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name, _ in self._fields)
        return f"{type(self).__name__}({inner})"


def _plain(value: Any) -> Any:
    if isinstance(value, _Record) or isinstance(value, Hooks):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class NamespaceType:
    """Namespace kinds by libcontainer's names; only the network namespace matters to a VMM."""

    NEWNET = "NEWNET"

    # libcontainer name -> (OCI spec name, /proc/<pid>/ns file, clone flag)
    INFO = {NEWNET: ("network", "net", CLONE_NEWNET)}

    @classmethod
    def from_oci(cls, oci_name: str) -> str | None:
        for t, (oci, _, _) in cls.INFO.items():
            if oci == oci_name:
                return t
        return None


class Namespace(_Record):
    type: str
    path: str
    __slots__ = ("type", "path")
    _fields = (("type", ""), ("path", ""))

    def proc_file(self) -> str:
        return NamespaceType.INFO[self.type][1]

    def get_path(self, pid: int) -> str:
        return f"/proc/{pid}/ns/{self.proc_file()}"


class Namespaces(list):
    """The namespaces a container has; one entry per type, a path means "join"."""

    def contains(self, t: str) -> bool:
        return any(ns.type == t for ns in self)

    def path_of(self, t: str) -> str:
        for ns in self:
            if ns.type == t:
                return ns.path
        return ""

    def clone_flags(self) -> int:
        """Flags to unshare: the namespaces that are new rather than joined."""
        flags = 0
        for ns in self:
            if not ns.path:
                flags |= NamespaceType.INFO[ns.type][2]
        return flags

    def to_dict(self) -> list[dict[str, Any]]:
        return [ns.to_dict() for ns in self]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]] | None) -> "Namespaces":
        return cls(Namespace.from_dict(d) for d in items or [])


class Network(_Record):
    """An interface the init sets up in a new network namespace: only "loopback" (lo brought up); a
    guest's NIC is the unikernel code's (unikraft/net.py). libcontainer's other fields (bridge, veth
    addresses, ...) had no user: a state.json that has them still loads (unknown keys are ignored)."""

    __slots__ = ("type",)
    _fields = (("type", ""),)


class Command(_Record):
    """A program to run as a hook; `timeout` is in seconds (None: no limit)."""

    path: str
    args: list[str]
    env: list[str]
    dir: str
    timeout: float | None

    __slots__ = ("path", "args", "env", "dir", "timeout")
    _fields = (("path", ""), ("args", list), ("env", list), ("dir", ""), ("timeout", None))


class CommandHook(Command):
    __slots__ = ()

    def run(self, state: dict[str, Any]) -> None:
        """Run with the OCI state on stdin; raises HookError on failure or timeout."""
        from . import hooks

        hooks.run_command(self, state)


HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class Hooks(dict):
    """{hook name: [CommandHook, ...]} for the six OCI lifecycle points."""

    def run(self, name: str, state: dict[str, Any]) -> None:
        for i, hook in enumerate(self.get(name, ())):
            try:
                hook.run(state)
            except Exception as e:
                from .error import HookError

                raise HookError(f"{name} hook #{i} ({hook.path}) failed: {e}") from None

    def run_warn(self, name: str, state: dict[str, Any]) -> None:
        """Run every hook, turning each failure into a warning (poststart, poststop)."""
        for i, hook in enumerate(self.get(name, ())):
            try:
                hook.run(state)
            except Exception as e:
                from .error import warn

                warn(f"{name} hook #{i} ({hook.path}) failed: {e}")

    def to_dict(self) -> dict[str, Any]:
        return {name: [h.to_dict() for h in self.get(name, [])] for name in HOOK_NAMES}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Hooks":
        hooks = cls()
        for name, items in (d or {}).items():
            if items:
                hooks[name] = [CommandHook.from_dict(h) for h in items]
        return hooks


class Config(_Record):
    """Everything the init and the parent need to set up one container."""

    parent_death_signal: int
    rootfs: str
    namespaces: Namespaces
    networks: list[Network]
    apparmor_profile: str
    process_label: str
    hooks: Hooks
    version: str
    labels: list[str]
    no_new_keyring: bool
    # The container's cgroup (see mocktainer.cgroups): OCI linux.cgroupsPath ("" = the default), the OCI
    # linux.resources object as given (its cgroup part is applied), and whether cgroups_path has systemd's
    # slice:prefix:name form (runu --systemd-cgroup); without cgroups_path, the parent directory (and systemd
    # scope prefix) of the default cgroup, which the tool names ("" = cgroups.DEFAULT_PARENT; runu: "runu").
    cgroups_path: str
    resources: dict[str, Any]
    systemd_cgroup: bool
    cgroup_parent: str

    __slots__ = (
        "parent_death_signal", "rootfs", "namespaces", "networks", "apparmor_profile",
        "process_label", "hooks", "version", "labels", "no_new_keyring", "cgroups_path", "resources",
        "systemd_cgroup", "cgroup_parent",
    )
    _fields = (
        ("parent_death_signal", 0), ("rootfs", ""), ("namespaces", Namespaces), ("networks", list),
        ("apparmor_profile", ""), ("process_label", ""), ("hooks", Hooks),
        ("version", ""), ("labels", list), ("no_new_keyring", False), ("cgroups_path", ""), ("resources", dict),
        ("systemd_cgroup", False), ("cgroup_parent", ""),
    )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        d = dict(d or {})
        d["namespaces"] = Namespaces.from_list(d.get("namespaces"))
        d["networks"] = [Network.from_dict(n) for n in d.get("networks") or []]
        d["hooks"] = Hooks.from_dict(d.get("hooks") or d.get("Hooks"))
        d.pop("Hooks", None)
        return super().from_dict(d)

    def label(self, key: str) -> str | None:
        """The value of a `key=value` label (annotations and `bundle` are kept as labels)."""
        prefix = key + "="
        for lab in self.labels:
            if lab.startswith(prefix):
                return lab[len(prefix):]
        return None

    def annotations(self) -> dict[str, str]:
        out = {}
        for lab in self.labels:
            k, _, v = lab.partition("=")
            if k != "bundle":
                out[k] = v
        return out
