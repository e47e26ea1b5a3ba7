"""`runu run`: create + start, then (unless detached) forward signals, wait and delete.

runu's own, not the library's: it installs process-wide signal handlers and turns a
death by signal into the shell's 128+n.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run(root: str, id: str, bundle: str, *, detach: bool = False, **kw: Any) -> int:
    """The container's exit status (0 when detached)."""
    import signal

    from mocktainer import runtime
    from mocktainer.kill import GRACEFUL_SIGNALS, request_poweroff
    from mocktainer.process import kill_quietly

    c = runtime.create(root, id, bundle, **kw)
    pid = c.state().init_process_pid
    try:
        c.exec()
    except BaseException:
        runtime.delete(root, id, force=True, cgroup_parent=kw.get("cgroup_parent", ""))
        raise
    if detach:
        return 0

    def forward(signum: int, _frame: object) -> None:
        # TERM asks a guest to power off, as `runu kill ID TERM` does (graceful stop)
        if signum in GRACEFUL_SIGNALS and request_poweroff(c):
            return
        kill_quietly(pid, signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    runtime.delete(root, id, force=True, cgroup_parent=kw.get("cgroup_parent", ""))
    return code if code >= 0 else 128 - code
