"""Mounts, directories and cgroups a test run leaves behind, and how to remove them."""

from __future__ import annotations

import errno
import os
import re
import shutil
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


def remove_cgroups(relative: str) -> list[str]:
    """rmdir ``/sys/fs/cgroup[/<controller>]/<relative>`` bottom-up (empty cgroups only).

    Returns the cgroup directories that could not be removed (still have tasks).
    """
    relative = relative.strip("/")
    if not relative or ".." in relative.split("/"):
        raise ValueError(f"bad cgroup path {relative!r}")
    roots = ["/sys/fs/cgroup"]
    try:
        roots += [os.path.join("/sys/fs/cgroup", d) for d in os.listdir("/sys/fs/cgroup")]
    except OSError:
        return []
    left = []
    for root in roots:
        top = os.path.join(root, relative)
        if not os.path.isdir(top) or os.path.islink(root):
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    left.append(dirpath)
    return left
