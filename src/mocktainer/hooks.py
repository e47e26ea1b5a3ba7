"""Running one OCI hook: the state JSON on stdin, its own args and env, killed at its timeout.

Output goes to temporary files rather than pipes, so a hook that leaves a
daemon holding its stdout cannot keep us waiting past the hook's own exit.
A hook dies with its caller: a `runu create` killed during a hook leaves no
hook running with nobody left to enforce its timeout (daemons it forked are
its own business, as with runc).
"""

from __future__ import annotations

import os

from . import fastjson
from .error import HookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run_command(cmd: Any, state: dict[str, Any]) -> None:
    import subprocess
    import tempfile

    from . import system

    data = fastjson.dumps(state).encode()
    # A pre-exec function is unsafe in a threaded caller: there the hook may outlive us.
    preexec = _dies_with_us() if system.single_threaded() else None
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                cmd.args or [cmd.path],
                executable=cmd.path,
                env=_env(cmd.env),
                cwd=cmd.dir or None,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                close_fds=True,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as e:
            raise HookError(f"cannot run {cmd.path}: {e.strerror}") from None
        try:
            assert proc.stdin is not None
            proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            pass  # a hook may ignore its stdin
        finally:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            code = proc.wait(timeout=cmd.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            raise HookError(f"ran past its timeout of {cmd.timeout:g}s and was killed") from None
        if code != 0:
            out.seek(0)
            text = out.read(4096).decode(errors="replace").strip()
            how = f"exit status {code}" if code > 0 else f"signal {-code}"
            raise HookError(f"{how}" + (f": {text}" if text else ""))


def _dies_with_us() -> Any:
    from . import system

    system.load_libc()  # here, not between fork and exec
    parent = os.getpid()
    return lambda: system.die_with_parent(parent)


def _env(env: list[str]) -> dict[str, str]:
    out = {}
    for item in env or []:
        k, sep, v = item.partition("=")
        if sep:
            out[k] = v
    return out


def _kill_group(pid: int) -> None:
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
