"""What state.json holds, and the status a container is in.

Status is never stored: it is derived each time from the init's pid, its start
time in /proc, whether `created` is set yet and whether exec.fifo still exists,
so a crash can't leave it stale.
"""

from __future__ import annotations

import os
import time

from . import fastjson
from .configs import Config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "state.json"
# A second record of what `delete --force` must find (the init, its cgroups) when state.json is unreadable:
# written once, when the init and its cgroup are first recorded.
RECOVERY_FILE = "recovery.json"
EXEC_FIFO = "exec.fifo"


class Status(str):
    """creating, created, running or stopped; compares and prints as its name."""

    CREATING: "Status"
    CREATED: "Status"
    RUNNING: "Status"
    STOPPED: "Status"

    def __repr__(self) -> str:
        return f"Status.{self.upper()}"


Status.CREATING = Status("creating")
Status.CREATED = Status("created")
Status.RUNNING = Status("running")
Status.STOPPED = Status("stopped")


def now_rfc3339() -> str:
    """UTC time with nanoseconds, like Go's time.RFC3339Nano (datetime costs 4 ms to import)."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


class BaseState:
    """The part of the state every container has once its init exists."""

    __slots__ = ("id", "init_process_pid", "init_process_start", "created", "config")
    _names: tuple[str, ...] = __slots__

    def __init__(self, id: str, init_process_pid: int = 0, init_process_start: int = 0,
                 created: str = "", config: Config | None = None) -> None:
        self.id = id
        self.init_process_pid = init_process_pid
        self.init_process_start = init_process_start
        self.created = created
        self.config = config if config is not None else Config()

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for name in self._names:
            v = getattr(self, name)
            out[name] = v.to_dict() if isinstance(v, Config) else v
        return out

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self._names) + ")"


class State(BaseState):
    """Serialised as state.json in the container's directory.

    `cgroup_paths`: the container's cgroup directory in each hierarchy it joined, keyed like runc's
    state.json (v1 controller names such as "memory" or "name=systemd"; "" for cgroup v2).
    """

    __slots__ = ("namespace_paths", "cgroup_paths")
    _names: tuple[str, ...] = BaseState._names + __slots__

    def __init__(self, id: str, init_process_pid: int = 0, init_process_start: int = 0, created: str = "",
                 config: Config | None = None, namespace_paths: dict[str, str] | None = None,
                 cgroup_paths: dict[str, str] | None = None) -> None:
        super().__init__(id, init_process_pid, init_process_start, created, config)
        self.namespace_paths = dict(namespace_paths or {})
        self.cgroup_paths = dict(cgroup_paths or {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "State":
        return cls(
            id=d["id"],
            init_process_pid=int(d.get("init_process_pid") or 0),
            init_process_start=int(d.get("init_process_start") or 0),
            created=d.get("created") or "",
            config=Config.from_dict(d.get("config") or {}),
            namespace_paths=d.get("namespace_paths") or {},
            cgroup_paths=d.get("cgroup_paths") or {},
        )


def save(container_dir: str, state: State, name: str = STATE_FILE) -> None:
    """Write state.json atomically: readers see the old file or the new one, never a torn one.

    A full disk or a read-only root leaves the old file (or none) and raises StateError.
    """
    from .system import atomic_write

    try:
        atomic_write(os.path.join(container_dir, name), fastjson.dumps(state.to_dict()).encode())
    except OSError as e:
        raise _save_error(state, container_dir, e) from None


def _save_error(state: State, container_dir: str, e: OSError) -> Exception:
    from .error import StateError

    return StateError(f"cannot save the state of container {state.id!r} in {container_dir}: "
                      f"{e.strerror or e}")


MAX_STATE_BYTES = 64 << 20  # state.json holds the config: a few KiB; bounded so that no file can exhaust memory


def read(container_dir: str, name: str = STATE_FILE) -> State:
    """The saved state; ValueError (with what is wrong) when state.json is not one runu wrote, e.g. a FIFO,
    a directory, too large, not JSON or not a state object. OSError (FileNotFoundError) as open(2) says."""
    from .system import read_regular

    d = fastjson.loads(read_regular(os.path.join(container_dir, name), MAX_STATE_BYTES, follow=False))
    if not isinstance(d, dict) or not isinstance(d.get("id"), str):
        raise ValueError(f"it holds {'an object without an id' if isinstance(d, dict) else fastjson.dumps(d)[:20]}"
                         f", not a container's state")
    try:
        st = State.from_dict(d)
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as e:
        raise ValueError(f"a field has the wrong type ({type(e).__name__}: {e})") from None
    for paths in (st.namespace_paths, st.cgroup_paths):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in paths.items()):
            raise ValueError("a path is not a string")
    if not isinstance(st.created, str):
        raise ValueError("created is not a string")
    return st
