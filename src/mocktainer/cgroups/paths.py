"""linux.cgroupsPath: cleaned, expanded (systemd's slice:prefix:name) and checked."""

from __future__ import annotations


from ..error import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

# The default cgroup of a container without linux.cgroupsPath is /<parent>/<default_name> (cgroupfs) or
# system.slice:<parent>:<default_name> (systemd); the tool names the parent (Config.cgroup_parent: runu
# passes "runu"), this one is for callers that name none.
DEFAULT_PARENT = "mocktainer"
DEFAULT_SLICE = "system.slice"


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


def inner_path(cgroups_path: str, id: str, systemd: bool = False, parent: str = "") -> str:
    """The container's cgroup below each hierarchy: absolute (`/a/b`) or relative to our own cgroup (`a/b`);
    without `cgroups_path`, `id` below `parent` (default DEFAULT_PARENT)."""
    parent = parent or DEFAULT_PARENT
    if not isinstance(cgroups_path, str):
        raise ConfigError(f"linux.cgroupsPath must be a string, got {cgroups_path!r}")
    if "\0" in cgroups_path:
        raise ConfigError("linux.cgroupsPath must not contain a NUL byte")
    if systemd:
        return systemd_path(cgroups_path or f"{DEFAULT_SLICE}:{parent}:{id}")
    if not cgroups_path:
        return f"/{parent}/{id}"
    if _looks_systemd(cgroups_path):
        raise ConfigError(f"cgroupsPath {cgroups_path!r} has systemd's slice:prefix:name form: pass "
                          f"--systemd-cgroup (runu --systemd-cgroup create ...) or give a cgroupfs path such as /a/b")
    inner = clean_path(cgroups_path)
    if inner in ("", "/"):
        raise ConfigError(f"cgroupsPath {cgroups_path!r} names the root (or this process' own cgroup), not a cgroup "
                          f"of the container's own")
    return inner
