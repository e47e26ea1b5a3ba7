"""Shared fixtures: a child subreaper for container inits, and cleanup of what tests create."""

import os
import shutil
import signal
import subprocess
import sys
import uuid

import pytest


from mocktainer import system

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _install_test_launcher(name: str = "runu", call: str = "main()") -> str:
    """A `runu` for this checkout, first on PATH for the whole run.

    /usr/local/bin/runu points at whichever checkout ran scripts/setup.sh last;
    the tests must exercise this one. Same launcher as setup.sh writes (-I -S).
    """
    bindir = os.path.join(os.path.dirname(SRC), ".cache", "bin")
    os.makedirs(bindir, exist_ok=True)
    path = os.path.join(bindir, name)
    text = (f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {SRC!r})\n"
            f"from runu.main import main\nsys.exit({call})\n")
    try:
        with open(path) as f:
            current = f.read()
    except FileNotFoundError:
        current = ""
    if current != text:
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.rename(tmp, path)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    return path


RUNU = _install_test_launcher()
RUNU_LIBRARY = _install_test_launcher("runu-library", "main(delegate=False)")
"""runu without the delegate OCI runtime: plain bundles (CRI sandboxes) run through the library's own
plain-process path. For tests of the library's mechanisms (cgroups, faults, races) with a cheap process;
the product's `runu` hands such bundles to crun or runc."""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mknod, real inits)")


@pytest.fixture(scope="session", autouse=True)
def _subreaper():
    """Inits orphaned by a test (as after `runu create`) are re-parented here, not to PID 1 (which reaps nothing)."""
    system.set_child_subreaper()
    yield
    reap_zombies()


def _children(pid: int, zombies: bool) -> list[int]:
    """Children of `pid` that are zombies (or, with zombies=False, that are alive)."""
    out = []
    for p in system.all_pids():
        st = system.proc_stat(p)
        if st is not None and st[1] == pid and (st[0] == "Z") == zombies and st[0] != "X":
            out.append(p)
    return out


def reap_zombies() -> None:
    for pid in _children(os.getpid(), zombies=True):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


@pytest.fixture(autouse=True)
def _reap_after_test():
    yield
    reap_zombies()


def children_of(pid: int) -> list[int]:
    """Live (not zombie) children of `pid`."""
    return _children(pid, zombies=False)


def vmm_of(pid: int, timeout: float = 10.0) -> int:
    """The VMM of a unikernel container whose pid (its supervisor, see unikraft/supervisor.py) is `pid`: the
    supervisor's one child."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        kids = children_of(pid)
        if len(kids) == 1:
            return kids[0]
        assert time.monotonic() < deadline, f"container process {pid} has children {kids}, not one VMM"
        time.sleep(0.02)


def vmm_argv(pid: int) -> list[str]:
    """The command line of the VMM of the container whose pid is `pid` (see vmm_of)."""
    with open(f"/proc/{vmm_of(pid)}/cmdline", "rb") as f:
        return f.read().decode().split("\0")[:-1]


@pytest.fixture
def state_root(tmp_path):
    """A container root; every container left in it is killed and removed afterwards."""
    root = tmp_path / "root"
    yield str(root)
    kill_containers_in(str(root))


def kill_containers_in(root: str) -> None:
    import mocktainer

    if not os.path.isdir(root):
        return
    for cid in os.listdir(root):
        try:
            c = mocktainer.load(root, cid)
        except mocktainer.Error:
            shutil.rmtree(os.path.join(root, cid), ignore_errors=True)
            continue
        pid = c.state().init_process_pid
        if pid and c.status() != "stopped":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        c.destroy()


def base_env(**extra: str) -> dict[str, str]:
    """This environment without the runu knobs a developer may have set, plus `extra`."""
    env = dict(os.environ, RUNU_CONFIG="")
    for k in ("RUNU_VMM", "RUNU_ACCEL", "RUNU_FIRECRACKER_BINARY", "RUNU_QEMU_BINARY"):
        env.pop(k, None)
    env.update(extra)
    return env


@pytest.fixture
def root(tmp_path):
    """A runu --root; whatever is left in it is deleted with --force afterwards."""
    r = str(tmp_path / "root")
    yield r
    if os.path.isdir(r):
        delegated = os.path.join(r, "@delegate")  # runu.delegate.DELEGATE_DIR: the delegate runtime's containers
        ids = [c for c in os.listdir(r) if c != "@delegate"]
        ids += os.listdir(delegated) if os.path.isdir(delegated) else []
        for cid in ids:
            subprocess.run([RUNU, "--root", r, "delete", "--force", cid], capture_output=True, timeout=30,
                           env=base_env())


@pytest.fixture
def bundle(tmp_path):
    """A bundle directory with an empty rootfs."""
    b = tmp_path / "bundle"
    (b / "rootfs").mkdir(parents=True)
    return str(b)


@pytest.fixture
def netns():
    """Factory for named network namespaces (`ip netns add`), deleted afterwards."""
    made = []

    def make() -> str:
        name = f"mt-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], check=False)
