"""Processes and commands for tests: run a client with a timeout, find, reap and kill what it left."""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import signal
import subprocess
from typing import Any, Callable, Iterable, Mapping, Sequence

from mocktainer import system

from .wait import wait_empty, wait_for

DEFAULT_TIMEOUT = 60.0
"""Seconds any single client command may take before it is killed."""

CONTAINERD_START_TIMEOUT = 30.0


# ---------------------------------------------------------------------------------------------
# errors


class HarnessError(RuntimeError):
    """The harness itself could not do what was asked (a daemon did not start, cleanup failed)."""


class CommandError(subprocess.CalledProcessError):
    """A client command exited non-zero; ``str()`` shows its stderr and stdout."""

    def __str__(self) -> str:
        text = super().__str__()
        for name, value in (("stderr", self.stderr), ("stdout", self.output)):
            if value:
                if isinstance(value, bytes):
                    value = value.decode(errors="replace")
                text += f"\n--- {name} ---\n{value[-4000:]}"
        return text


# ---------------------------------------------------------------------------------------------
# process plumbing



def become_subreaper() -> None:
    """Make this process a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER, 1)``).

    Shims and conmon double-fork; their orphans re-parent to the nearest subreaper.  PID 1 on
    these machines does not reap, so without this they would stay zombies forever.  Call
    :func:`reap_zombies` after each client run (the context managers do it when they stop).
    """
    system.set_child_subreaper()


def read_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[1])


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def processes_mentioning(*markers: str, names: Sequence[str] = ()) -> list[int]:
    """Live processes (not this one) with an argument, or an open file, containing one of ``markers`` and,
    when ``names`` is given, a program (argv[0]'s base name) starting with one of them. (A VMM names its
    kernel /proc/self/fd/N: the bundle's path is that of a file it holds open.)"""
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        argv = cmdline(pid)
        if not argv or (names and not os.path.basename(argv[0]).startswith(tuple(names))):
            continue
        words = argv + _open_files(pid)
        if any(m in a for a in words for m in markers) and (st := read_stat(pid)) and st[0] not in "ZX":
            found.append(pid)
    return found


def _open_files(pid: int) -> list[str]:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    out = []
    for fd in fds:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        st = read_stat(pid)
        if st is not None:
            children.setdefault(st[1], []).append(pid)
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first, then grandchildren ...)."""
    children = _children_map()
    out: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _popen_pids() -> set[int]:
    """Pids owned by live, not yet waited-for ``subprocess.Popen`` objects in this process."""
    pids = set()
    for obj in gc.get_objects():
        if isinstance(obj, subprocess.Popen) and obj.returncode is None:
            pids.add(obj.pid)
    return pids


def reap_zombies() -> list[int]:
    """Reap zombie children that nobody else will wait for (adopted orphans); return their pids.

    Zombies that belong to a live ``subprocess.Popen`` object are left alone so that its
    ``wait()`` still sees the real exit status.
    """
    me = os.getpid()
    zombies = []
    for pid in all_pids():
        st = read_stat(pid)
        if st is not None and st[1] == me and st[0] in "ZX":
            zombies.append(pid)
    if not zombies:
        return []
    owned = _popen_pids()
    reaped = []
    for pid in zombies:
        if pid in owned:
            continue
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got:
            reaped.append(pid)
    return reaped


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every pid is gone or a zombie (reaping ours); return those still alive."""
    pids = list(pids)

    def alive() -> list[int]:
        return [p for p in pids if (st := read_stat(p)) is not None and st[0] not in "ZX"]

    try:
        wait_for(lambda: not alive(), "processes to exit", timeout, 0.05, step=reap_zombies)
    except AssertionError:
        return alive()
    return []


def eventually(what: str, probe: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll ``probe()`` (reaping zombies) until it returns nothing; AssertionError with ``what`` and what is
    still left after ``timeout`` seconds."""
    wait_empty(what, probe, timeout, interval, step=reap_zombies)


def kill_tree(pid: int, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
    """Send ``sig`` to ``pid`` and every descendant (leaves first), then wait for them to go."""
    victims = descendants(pid)[::-1] + [pid]
    for p in victims:
        _signal(p, sig)
    wait_gone(victims, timeout)


def run_cmd(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = False,
            input: str | bytes | None = None, env: Mapping[str, str] | None = None,
            cwd: str | os.PathLike | None = None, text: bool = True) -> subprocess.CompletedProcess:
    """Run a command with captured output and a hard timeout.

    The command runs in its own session; on timeout the whole process group is SIGKILLed and
    ``subprocess.TimeoutExpired`` (with the output so far) is raised.  ``check=True`` raises
    :class:`CommandError` on a non-zero exit.
    """
    argv = [os.fspath(a) for a in argv]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env) if env is not None else None,
        cwd=cwd, start_new_session=True, text=text)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild outside the group holds the pipes
            proc.kill()
            for stream in (proc.stdout, proc.stderr):
                stream.close()
            proc.wait()
            out, err = "", ""
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    res = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and res.returncode != 0:
        raise CommandError(res.returncode, argv, out, err)
    return res


def ip(*args: str, timeout: float = 30) -> str:
    """`ip ARGS` (iproute2); its stdout. CalledProcessError when it fails."""
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=timeout).stdout


def missing_binaries(*names: str) -> list[str]:
    """The names (commands or absolute paths) that are not executable here."""
    missing = []
    for name in names:
        if os.path.isabs(name):
            if not os.access(name, os.X_OK):
                missing.append(name)
        elif shutil.which(name) is None:
            missing.append(name)
    return missing


APT_PACKAGES = {
    "containerd": "containerd", "ctr": "containerd", "containerd-shim-runc-v2": "containerd",
    "podman": "podman", "conmon": "conmon", "umoci": "umoci", "busybox": "busybox-static",
    "/bin/busybox": "busybox-static", "/usr/sbin/runc": "runc", "/usr/bin/crun": "crun", "gcc": "gcc",
    "ld": "binutils", "objcopy": "binutils", "qemu-system-x86_64": "qemu-system-x86", "nsenter": "util-linux",
    "ip": "iproute2",
}
"""The Debian package that provides a binary the tests need (scripts/setup.sh installs them all)."""


def require(*binaries: str) -> None:
    """Skip the calling test, naming what to apt-get install, unless every binary is there."""
    missing = missing_binaries(*binaries)
    if missing:
        import pytest

        pkgs = sorted({"containernetworking-plugins" if m.startswith("/usr/lib/cni/") else APT_PACKAGES.get(m, m)
                       for m in missing})
        pytest.skip(f"missing {', '.join(missing)} (apt-get install {' '.join(pkgs)})")


def unique_id(prefix: str = "c") -> str:
    """A container id that will not collide with a concurrent test run."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"



# ---------------------------------------------------------------------------------------------
# host checks


def crun_cgroup_problem() -> str | None:
    """Why crun 1.8 cannot run containers on this host, or None.

    On a hybrid cgroup host crun refuses ("cgroups in hybrid mode not supported, drop all
    controllers from cgroupv2") while any controller is left on the v2 hierarchy; here that is
    hugetlb.  Fix: give each such controller a v1 hierarchy, e.g.
    ``mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb``.
    """
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # pure cgroup v2: fine
        return None
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
            left = f.read().split()
    except OSError:
        return None
    if not left:
        return None
    fixes = "; ".join(f"mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
                      for c in left)
    return f"hybrid cgroups with controllers {left} on cgroup v2 (crun refuses); fix: {fixes}"
