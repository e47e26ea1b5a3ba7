"""`delete`: what removing a container means (runc's `delete`, youki's container_delete.rs).

The status is worked out once; whatever of the container still runs is stopped in one
place (stop_leftovers); Container.destroy then removes cgroups and the directory.
"""

from __future__ import annotations

import os

from . import factory
from .container import Container
from .error import CorruptStateError, NotExistError, RunningError
from .process import kill_quietly, reap
from .state import Status


def delete(root: str, id: str, force: bool = False, cgroup_parent: str = "") -> None:
    """Remove a stopped container; with `force`, kill a created or running one first. `cgroup_parent`
    (the one create was given) finds the default cgroup of a container whose state is lost."""
    try:
        lock = factory.lock(root, id)
    except NotExistError:
        if force:
            return
        raise
    with lock:
        _delete(root, id, force, cgroup_parent)


def _delete(root: str, id: str, force: bool, cgroup_parent: str) -> None:
    try:
        c = factory.load(root, id)
    except (NotExistError, CorruptStateError) as e:
        # An aborted create can leave the directory without state.json; a damaged state.json is no record.
        path = os.path.join(os.path.abspath(root), id)
        if os.path.isdir(path) and not os.path.islink(path):
            if isinstance(e, CorruptStateError) and not force:
                raise CorruptStateError(f"{e}; 'delete --force' stops what is left of it and removes it") from None
            _delete_without_state(root, id, path, cgroup_parent)
            return
        if force:
            return
        raise
    status = c.status()
    if status != Status.STOPPED and not force:
        raise RunningError(f"container {id!r} is {status}, not stopped; use --force to delete it")
    remove(c, status)


def remove(c: Container, status: Status) -> None:
    """Stop what is left of `c` (in `status`), undo its guest network, destroy it."""
    stop_leftovers(c, status)
    cleanup_guest_network(c)
    c.destroy(Status.STOPPED)


def stop_leftovers(c: Container, status: Status) -> None:
    """SIGKILL every process of the container, the init last, and wait for the init.

    Processes left in a stopped container's cgroup would keep it from being removed; like runc (whose
    containers share the host's pid namespace here too), delete kills them."""
    for pid in reversed(c.pids(stopped_too=True, status=status)):
        kill_quietly(pid)
    if status != Status.STOPPED:
        st = c.state()
        kill_quietly(st.init_process_pid)  # without a cgroup, pids() may not have found it
        reap(st.init_process_pid, st.init_process_start)


def cleanup_guest_network(c: Container) -> None:
    """What the guest network left in a netns that outlives the container (see unikraft/net.py)."""
    if not os.path.exists(os.path.join(c.dir, "guestnet.json")):  # unikraft.net.RECORD
        return
    from .error import warn
    from .unikraft import net

    for problem in net.cleanup(c.dir):
        warn(problem)


def _delete_without_state(root: str, id: str, path: str, cgroup_parent: str) -> None:
    """Stop and remove a container whose state.json is missing or unreadable: through its second record
    (state.RECOVERY_FILE: the init and its cgroups), else through its default cgroup, which root and id
    name (cgroups.default_name)."""
    from . import state as statefile
    from .container import _remove_dir

    try:
        st = statefile.read(path, statefile.RECOVERY_FILE)
    except (OSError, ValueError):
        st = None
    if st is not None and st.id == id:
        c = Container(os.path.abspath(root), id, st.config, st)
        remove(c, c.status())
        return
    from . import cgroups

    parent = cgroup_parent or cgroups.DEFAULT_PARENT
    paths = cgroups.paths_of(cgroups.default_name(root, id), "", False, parent=parent)
    for _ in range(10):  # processes forking while we kill them: a few rounds
        left = cgroups.pids(paths) or []
        if not left:
            break
        for pid in left:
            kill_quietly(pid)
        for pid in left:
            reap(pid, timeout=5)
    if cgroups.pids(paths) is not None:
        cgroups.remove(paths, parent)
    _remove_dir(path)
