"""The warm-up helper of `create`: starts the kernel's slow first cgroup move early (see warm_up)."""

from __future__ import annotations

import os

from .mounts import UNIFIED, parse_proc_cgroup

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

def warm_up() -> int:
    """Fork a child that moves itself into the cgroup it is already in; its pid (0: not forked).

    The first write to a cgroup.procs file after a quiet spell waits for an RCU grace period (the kernel
    takes cgroup_threadgroup_rwsem for writing): 6-15 ms on these 2-vCPU machines, paid by runc and crun
    too. A no-op move made by a helper at the very start of `create` starts that wait while the caller
    parses, plans and forks the init, whose own placement then finds the lock cheap again. Only from a
    single-threaded caller (a fork is unsafe otherwise); failures are ignored: it only saves time.
    """
    from .. import system

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
