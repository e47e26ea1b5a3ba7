"""Mounts, directories and cgroups a test run leaves behind, and how to remove them."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import time

from mocktainer import system

from .procs import HarnessError

MNT_DETACH = 2

# ---------------------------------------------------------------------------------------------
# mounts, directories, cgroups


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def mounts_under(path: str | os.PathLike) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = _unescape_mount(line.split()[4])
            if mnt == base or mnt.startswith(base + "/"):
                found.append(mnt)
    return sorted(set(found), key=len, reverse=True)


def unmount_under(path: str | os.PathLike) -> list[str]:
    """Lazily unmount everything at or below ``path``; return what could not be unmounted."""
    for _ in range(10):
        left = mounts_under(path)
        if not left:
            return []
        for mnt in left:
            try:
                system.umount2(mnt, MNT_DETACH)
            except OSError:
                pass
    return mounts_under(path)


def remove_tree(path: str | os.PathLike) -> None:
    """Unmount anything below ``path`` and delete it; refuse to delete across a mount."""
    if not os.path.lexists(path):
        return
    left = unmount_under(path)
    if left:
        raise HarnessError(f"cannot unmount {left}; not removing {path}")
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        # chattr or busy files; try once more after a moment
        time.sleep(0.2)
        shutil.rmtree(path)


def cgroup_hierarchies() -> list[str]:
    """The mount point of every cgroup (v1) and cgroup2 hierarchy in this mount namespace, from
    /proc/self/mountinfo: on a hybrid host a test's cgroup may be in any of them, not only the
    ones runu joins (runc and crun make theirs in every v1 hierarchy)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                found.append(_unescape_mount(fields[4]))
    return list(dict.fromkeys(found))


def _cgroup_tops(relative: str) -> list[str]:
    """``<hierarchy>/<relative>`` in every hierarchy where it is a directory."""
    relative = relative.strip("/")
    if not relative or ".." in relative.split("/"):
        raise ValueError(f"bad cgroup path {relative!r}")
    return [top for top in (os.path.join(h, relative) for h in cgroup_hierarchies()) if os.path.isdir(top)]


def cgroups_below(relative: str) -> list[str]:
    """The cgroup directories ``relative`` (a path below the hierarchies' roots) and everything below it
    in every mounted hierarchy."""
    found = []
    for top in _cgroup_tops(relative):
        found += [dirpath for dirpath, _dirs, _files in os.walk(top)]
    return sorted(found)


def _cgroup_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def remove_cgroups(relative: str, *, kill: bool = False, timeout: float = 2.0) -> list[str]:
    """rmdir the cgroup ``relative`` and everything below it, bottom-up, in every mounted hierarchy
    (see remove_cgroup_dirs). Returns the cgroup directories that could not be removed."""
    return remove_cgroup_dirs(_cgroup_tops(relative), kill=kill, timeout=timeout)


def remove_cgroup_dirs(tops: list[str], *, kill: bool = False, timeout: float = 2.0) -> list[str]:
    """rmdir each cgroup directory in ``tops`` and everything below it, bottom-up.

    A cgroup still busy (tasks exiting after a SIGKILL) is retried until ``timeout``; with ``kill``,
    the processes in them are SIGKILLed first (a test's own, say a delegate's init it left).
    Returns the cgroup directories that could not be removed.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for top in tops:
            for dirpath, _dirs, _files in os.walk(top, topdown=False):
                if kill:
                    for pid in _cgroup_pids(dirpath):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                try:
                    os.rmdir(dirpath)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        left.append(dirpath)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
