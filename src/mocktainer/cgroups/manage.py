"""A container's cgroup: its name, plan, create (with limits), remove, pids."""

from __future__ import annotations

import os

from ..error import CgroupError
from .files import _add_pid, _warn, _cpuset_fill, _enable_v2, _mkdirs, _write_limits, read_pids
from .limits import Limits
from .mounts import UNIFIED, Host
from .paths import inner_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

def default_name(root: str, id: str) -> str:
    """The name the default cgroup (`/<parent>/<name>`, systemd's `<parent>-<name>.scope`) uses for container `id` of
    state root `root`: the id and a checksum of the root's real path, so that the same id in two roots
    never shares a cgroup. (An id too long for that is cut, with checksums of the whole id.)"""
    from binascii import crc32  # (hashlib would load OpenSSL, ~4 ms, on every create)

    real = os.path.realpath(root).encode()
    name = f"{id}-{crc32(real):08x}"
    if len(name) > 200:  # a unit name is at most 255 bytes with its prefix and suffix
        name = f"{id[:100]}-{crc32(real):08x}-{crc32(id.encode()):08x}{crc32(id.encode()[::-1]):08x}"
    return name


def paths_of(id: str, cgroups_path: str, systemd: bool, host: Host | None = None, parent: str = "") -> dict[str, str]:
    """{key: directory} of the container's cgroup in every mounted hierarchy (`parent`: see inner_path)."""
    inner = inner_path(cgroups_path, id, systemd, parent)
    host = host or Host.current()
    return {key: host.path(key, inner) for key in host.hierarchies()}


def plan(id: str, cgroups_path: str, systemd: bool, host: Host | None = None, parent: str = "") -> dict[str, str]:
    """{key: directory} create() would make in every mounted hierarchy (recorded before it makes any,
    so that a create killed half-way leaves nothing `delete` cannot find).

    Like runc, a cgroup that already exists and holds processes is refused; so is one that already has
    cgroups below it (an ancestor of someone else's cgroups): its limits would land on them, and removing
    it at delete would mean removing them."""
    paths = paths_of(id, cgroups_path, systemd, host, parent)
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
           host: Host | None = None, planned: dict[str, str] | None = None, parent: str = "") -> dict[str, str]:
    """Create the container's cgroup in every hierarchy, apply its limits, move `pid` in; {key: directory}.

    `planned` is what plan() answered for the same arguments (it is worked out here otherwise).
    On an error nothing is left behind; see the module doc for what only warns.
    """
    inner = inner_path(cgroups_path, id, systemd, parent)
    limits = Limits(resources)
    host = host or Host.current()
    if planned is None:
        planned = plan(id, cgroups_path, systemd, host, parent)
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
    `prune_parent`: a parent directory name (the default's: runu's `runu`) to rmdir too when it is left empty.
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
