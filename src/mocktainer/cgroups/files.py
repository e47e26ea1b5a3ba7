"""The files of a cgroup directory: read, write, make, fill, enable, join."""

from __future__ import annotations

import os


TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

def _warn(msg: str) -> None:
    from ..error import warn

    warn(f"cgroup: {msg}")


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
