"""`kill`: what signalling a container means (runc's `kill`, youki's container_kill.rs).

On the path of every containerd call: imports only what `state` imports (the runtime
module is not loaded; runtime.kill is this).
"""

from __future__ import annotations

import os

from . import factory
from .container import Container
from .state import Status

GRACEFUL_SIGNALS = (15,)  # SIGTERM


def kill(root: str, id: str, sig: int, all: bool = False) -> None:
    """Signal the container's init (with `all`, every process in it; a stopped container is then fine)."""
    with factory.lock(root, id):
        signal(factory.load(root, id), sig, all)  # under the lock: the pid and its start time are current


def signal(c: Container, sig: int, all: bool = False) -> None:
    """SIGTERM to a running unikernel whose VMM has a control socket asks the guest to power off instead
    (graceful stop, see unikraft/control.py); when the VMM cannot be asked, the signal is sent as usual."""
    if not all and sig in GRACEFUL_SIGNALS and request_poweroff(c):
        return
    c.signal(sig, all=all)


def request_poweroff(c: Container) -> bool:
    """True when the guest was asked to power off through its VMM's control socket."""
    if not os.path.exists(os.path.join(c.dir, "control")):  # unikraft.control.CONTROL_FILE
        return False  # a sandbox, or a VMM without a control socket: no need to import anything
    if c.status() != Status.RUNNING:
        return False  # created: the init is not the VMM yet; stopped: signal() says so
    from .unikraft.control import request_poweroff as ask

    return bool(ask(c))
