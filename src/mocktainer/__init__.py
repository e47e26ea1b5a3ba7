"""mocktainer: a stripped-down libcontainer that runs a VMM as an OCI container's process.

Names are loaded on first use, so that `import mocktainer` (done by the
container init and by every runu call) costs next to nothing.
"""

from __future__ import annotations

from .error import (
    CgroupError,
    ConfigError,
    Error,
    ExistsError,
    HookError,
    InitError,
    InvalidIDError,
    NotExistError,
    NotRunningError,
    RunningError,
    StateError,
    CorruptStateError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "create", "load", "init", "Container", "Process", "Status", "State", "BaseState",
    "Error", "ExistsError", "InvalidIDError", "NotExistError", "RunningError", "NotRunningError",
    "CgroupError", "ConfigError", "HookError", "InitError", "StateError", "CorruptStateError",
    "INIT_MSG", "CLONE_FLAGS_ATTR", "NS_PATHS_ATTR",
]

_LAZY = {
    "create": "factory", "load": "factory", "Container": "container", "Process": "process",
    "Status": "state", "State": "state", "BaseState": "state",
    "INIT_MSG": "message", "CLONE_FLAGS_ATTR": "message", "NS_PATHS_ATTR": "message",
}


def init() -> None:
    """The container-init entry point (runs in the child; never returns)."""
    from .init import main

    main()


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'mocktainer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
