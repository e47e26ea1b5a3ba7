"""Faults: `runu create` and `runu start` killed at every phase, the init and the VMM dying, full and
read-only state roots.

Issue 6, "Faults". A real SIGKILL lands at each named point of the flows (mocktainer.failpoint: the process
kills itself when MOCKTAINER_FAILPOINT names the point it reached), inside each kind of hook, and at random
moments of `create`. Afterwards `runu state` must answer (a status, or "does not exist") and `runu delete
--force` must leave no process, state directory, fifo, cgroup, mount, network device or device node.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import RUNU_LIBRARY as RUNU, base_env, children_of, needs_root, reap_zombies, vmm_of

from harness.images import unikernel_bundle
from harness.procs import ip, processes_mentioning
from harness.runu import runu as runu_binary, alive, spec, write_bundle

from mocktainer import failpoint, system

runu = functools.partial(runu_binary, binary=RUNU)  # runu-library: no delegate

pytestmark = [needs_root]

QEMU = shutil.which("qemu-system-x86_64")
TCG = {"org.unikraft.runu.accel": "tcg"}
CREATE_POINTS = [p for p in failpoint.POINTS if p.startswith("create:")]
START_POINTS = [p for p in failpoint.POINTS if p.startswith("start:")]


# ---- helpers ------------------------------------------------------------------------------------------

def create(root: str, bundle: str, cid: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`runu create` with its output in a file: the container process inherits stdio, so never a pipe."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out:
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", bundle, *extra, cid], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=out, env=env or base_env(), timeout=60)
        out.seek(0)
        r.stderr = out.read()
    return r


def popen_runu(root: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A runu whose stdio is /dev/null (a container process inherits it: never a pipe we would wait on)."""
    return subprocess.Popen([RUNU, "--root", root, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env or base_env())


def failing_at(point: str) -> dict:
    assert point in failpoint.POINTS
    return base_env(MOCKTAINER_FAILPOINT=point)


def state_of(root: str, cid: str) -> str | None:
    """The status `runu state` reports, None for "does not exist"; anything else fails the test."""
    r = runu(root, "state", cid)
    if r.returncode == 1:
        assert r.stderr.count("\n") == 1 and "does not exist" in r.stderr, r
        return None
    assert r.returncode == 0, r
    st = json.loads(r.stdout)
    assert st["id"] == cid
    assert st["status"] in ("creating", "created", "running", "stopped"), st
    assert (st["pid"] == 0) == (st["status"] == "stopped"), st
    return st["status"]


class Scene:
    """One test's root, cgroup parent and markers, and the no-leak check after `delete --force`."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = str(tmp_path / "root")
        self.cgroup_parent = f"runu-faults-{uuid.uuid4().hex[:8]}"
        self.marker = f"faultmark{uuid.uuid4().hex[:8]}"
        os.makedirs(self.root, exist_ok=True)
        self.children = set(children_of(os.getpid()))

    def cgroups_path(self, cid: str) -> str:
        return f"/{self.cgroup_parent}/{cid}"

    def cgroup_dirs(self) -> list[str]:
        return sorted(glob.glob(f"/sys/fs/cgroup/*/{self.cgroup_parent}/*/")
                      + glob.glob(f"/sys/fs/cgroup/{self.cgroup_parent}/*/"))

    def sandbox(self, name: str = "b", hooks: dict | None = None) -> str:
        """A CRI sandbox bundle whose process (busybox sleep) names this scene's marker."""
        # not the shell's last command: it stays, with the marker in its argv, waiting for sleep
        cfg = spec(["/bin/busybox", "sh", "-c", f"sleep 1000; : {self.marker}"], hooks=hooks)
        cfg["linux"]["cgroupsPath"] = self.cgroups_path("CID")
        return write_bundle(str(self.tmp / name), cfg)

    def set_cgroup(self, bundle: str, cid: str) -> None:
        path = os.path.join(bundle, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["linux"]["cgroupsPath"] = self.cgroups_path(cid)
        with open(path, "w") as f:
            json.dump(cfg, f)

    def delete_force_leaves_nothing(self, cid: str, extra_check=None) -> None:
        r = runu(self.root, "delete", "--force", cid)
        assert r.returncode == 0, r
        reap_zombies()
        deadline = time.monotonic() + 5
        while True:
            leaks = self.leaks(cid)
            if extra_check is not None:
                leaks.update(extra_check())
            leaks = {k: v for k, v in leaks.items() if v}
            if not leaks or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # an orphaned hook or init may still be on its way out
            reap_zombies()
        assert not leaks, leaks
        assert state_of(self.root, cid) is None

    def leaks(self, cid: str) -> dict[str, object]:
        with open("/proc/self/mountinfo") as f:
            text = f.read()
        return {
            "state directory": os.path.exists(os.path.join(self.root, cid)),
            "processes": processes_mentioning(self.marker, self.root),
            "new children": sorted(set(children_of(os.getpid())) - self.children),
            "cgroups": self.cgroup_dirs(),
            "mounts": [line for line in text.splitlines() if str(self.tmp) in line],
        }

    def cleanup(self) -> None:
        for cid in os.listdir(self.root) if os.path.isdir(self.root) else []:
            runu(self.root, "delete", "--force", cid)
        # after a failure, what delete could not find: processes of this scene, then its cgroups
        name = self.cgroup_parent
        victims = set(processes_mentioning(self.marker))
        for leaf in self.cgroup_dirs():
            try:
                victims.update(int(p) for p in open(os.path.join(leaf, "cgroup.procs")).read().split())
            except OSError:
                pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while any(alive(p) for p in victims) and time.monotonic() < deadline:
            reap_zombies()
            time.sleep(0.02)
        for d in glob.glob(f"/sys/fs/cgroup/*/{name}") + glob.glob(f"/sys/fs/cgroup/{name}"):
            for leaf in glob.glob(os.path.join(d, "*/")):
                try:
                    os.rmdir(leaf)
                except OSError:
                    pass
            try:
                os.rmdir(d)
            except OSError:
                pass


@pytest.fixture
def scene(tmp_path):
    s = Scene(tmp_path)
    yield s
    s.cleanup()
    reap_zombies()


def killed_create(scene: Scene, bundle: str, cid: str, point: str) -> None:
    scene.set_cgroup(bundle, cid)
    r = create(scene.root, bundle, cid, "--pid-file", str(scene.tmp / f"{cid}.pid"), env=failing_at(point))
    assert r.returncode == -signal.SIGKILL, r


# ---- create killed at each point ----------------------------------------------------------------------

EXPECTED_AFTER = {
    # point: statuses `runu state` may answer right after the kill (None: "does not exist")
    "create:dir": {None},
    "create:init": {None},
    "create:bootstrap": {None},
    "create:creating": {"creating", "stopped"},  # the orphaned init sees end-of-file and exits
    "create:cgroup": {"creating", "stopped"},
    "create:state": {"created", "stopped"},  # it was never told to go on: it exits
    "create:ready": {"created"},  # the init waits on exec.fifo, as after a successful create
}


@pytest.mark.parametrize("point", CREATE_POINTS)
def test_create_killed_at_each_point_then_delete_force_leaves_nothing(scene, point):
    b = scene.sandbox()
    cid = f"c-{point.split(':')[1]}"
    killed_create(scene, b, cid, point)
    assert state_of(scene.root, cid) in EXPECTED_AFTER[point]
    if point in ("create:creating", "create:cgroup", "create:state"):
        # nothing holds such an init up: it ends by itself, and the container is then stopped
        deadline = time.monotonic() + 5
        while state_of(scene.root, cid) != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    if point == "create:ready":
        # a usable created container: start works, as after a create whose client died
        r = runu(scene.root, "start", cid)
        assert r.returncode == 0, r
        assert state_of(scene.root, cid) == "running"
        r = runu(scene.root, "delete", cid)
        assert r.returncode == 1 and "use --force" in r.stderr, r
    scene.delete_force_leaves_nothing(cid)
    # and the id can be used again
    scene.set_cgroup(b, cid)
    r = create(scene.root, b, cid)
    assert r.returncode == 0, r
    scene.delete_force_leaves_nothing(cid)


def test_start_on_a_creating_container_is_refused(scene):
    """A create stuck in a createContainer hook (the init runs those): `state` says creating, `start` refuses
    with a message, `delete` without --force refuses, `kill` reaches the init."""
    ready = scene.tmp / "ready"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"touch {ready}; exec sleep 1000 # {scene.marker}"],
            "timeout": 300}
    b = scene.sandbox(hooks={"createContainer": [hook]})
    cid = "stuck"
    scene.set_cgroup(b, cid)
    creator = popen_runu(scene.root, "create", "--bundle", b, cid)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline and creator.poll() is None
            time.sleep(0.01)
        assert state_of(scene.root, cid) == "creating"
        r = runu(scene.root, "start", cid)
        assert r.returncode == 1 and "still being created" in r.stderr, r
        r = runu(scene.root, "delete", cid)
        assert r.returncode == 1 and "creating" in r.stderr and "--force" in r.stderr, r
        assert os.path.isdir(os.path.join(scene.root, cid))
    finally:
        creator.kill()
        creator.wait()
    scene.delete_force_leaves_nothing(cid)


# ---- create killed inside each kind of hook -----------------------------------------------------------

@pytest.mark.parametrize("hook", ["prestart", "createRuntime", "createContainer"])
def test_create_killed_during_a_hook_leaves_nothing(scene, hook):
    """The hook records its pid and sleeps; `runu create` is killed meanwhile. The hook must not outlive
    the operation: one run by runu dies with it, one run by the init dies with the init at delete."""
    pidfile = scene.tmp / "hook.pid"
    cmd = {"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; "
                                       f"exec sleep 1000 # {scene.marker}"], "timeout": 600}
    b = scene.sandbox(hooks={hook: [cmd]})
    cid = f"h-{hook}"
    scene.set_cgroup(b, cid)
    creator = popen_runu(scene.root, "create", "--bundle", b, cid)
    deadline = time.monotonic() + 10
    while not pidfile.exists():
        assert time.monotonic() < deadline and creator.poll() is None, "the hook never ran"
        time.sleep(0.01)
    hook_pid = int(pidfile.read_text())
    assert alive(hook_pid)
    creator.kill()
    assert creator.wait() == -signal.SIGKILL
    if hook != "createContainer":
        # its parent is gone: PR_SET_PDEATHSIG ends it at once, long before its 600 s timeout
        deadline = time.monotonic() + 3
        while alive(hook_pid):
            assert time.monotonic() < deadline, f"{hook} hook outlived runu create"
            time.sleep(0.02)
    assert state_of(scene.root, cid) in ({"creating", "stopped"} if hook != "createContainer" else {"creating"})
    scene.delete_force_leaves_nothing(cid)
    assert not alive(hook_pid)


# ---- create killed at random moments ------------------------------------------------------------------

SWEEP = 30


def test_create_killed_at_random_moments_leaves_nothing(scene):
    """SIGKILL from outside after 0-60 ms, whatever `create` is doing then (seeded, so a failure replays)."""
    rng = random.Random(6)
    b = scene.sandbox()
    outcomes: dict[str | None, int] = {}
    for i in range(SWEEP):
        cid = f"r{i}"
        scene.set_cgroup(b, cid)
        creator = popen_runu(scene.root, "create", "--bundle", b, cid)
        time.sleep(rng.uniform(0, 0.06))
        creator.kill()
        creator.wait()
        status = state_of(scene.root, cid)
        outcomes[status] = outcomes.get(status, 0) + 1
        scene.delete_force_leaves_nothing(cid)
    print(f"{SWEEP} creates killed at random moments; state afterwards: {outcomes}")
    assert len(outcomes) >= 2, outcomes  # the sweep did land in different phases


# ---- start killed mid-way, with a guest network to undo ------------------------------------------------

def net_view(ns: str) -> tuple[list[str], list[str]]:
    links = sorted(li["ifname"] for li in json.loads(ip("-j", "-n", ns, "link", "show")))
    addrs = sorted(f"{a['local']}/{a['prefixlen']}" for i in json.loads(ip("-j", "-n", ns, "-4", "addr", "show"))
                   for a in i.get("addr_info", []))
    return links, addrs


@pytest.fixture
def tiny_kernel(tmp_path_factory):
    if QEMU is None:
        pytest.skip("qemu-system-x86 is not installed")
    from guest.build import build_tiny

    return build_tiny(str(tmp_path_factory.mktemp("tiny")), "pvh")


@pytest.mark.integration
@pytest.mark.parametrize("point", START_POINTS)
def test_start_killed_mid_way_with_a_guest_network(scene, netns, tiny_kernel, point):
    """A tiny guest in a pod netns (veth, address, default route): `create` makes a macvtap and takes the
    address (the network exists already), `start` resumes the VMM. Killed mid-way, the container is
    created, running or stopped, never stuck; delete --force
    removes the VMM and the macvtap and gives the address back."""
    peer, pod = netns(), netns()
    ip("link", "add", "vpeer", "netns", peer, "type", "veth", "peer", "name", "eth0", "netns", pod)
    ip("-n", pod, "addr", "add", "10.77.0.2/24", "dev", "eth0")
    ip("-n", pod, "link", "set", "eth0", "up")
    ip("-n", peer, "link", "set", "vpeer", "up")
    ip("-n", pod, "route", "add", "default", "via", "10.77.0.1")
    before = net_view(pod)
    # "idle" is a kernel word: the network's parameters are merged in before the "--", not before "idle"
    b = unikernel_bundle(scene.tmp / "u", tiny_kernel, ["idle", "--"], annotations=TCG,
                                 netns=f"/run/netns/{pod}")
    cid = f"s-{point.split(':')[1]}"
    scene.set_cgroup(b, cid)
    r = create(scene.root, b, cid)
    assert r.returncode == 0, r
    r = runu(scene.root, "start", cid, env=failing_at(point))
    assert r.returncode == -signal.SIGKILL, r
    time.sleep(0.5)  # what the init does without its `start` (net setup, exec) is over by now
    status = state_of(scene.root, cid)
    assert status in ({"created", "running", "stopped"} if point == "start:fifo" else {"running", "stopped"}), status
    if status == "running":
        st = json.loads(runu(scene.root, "state", cid).stdout)
        vmm = vmm_of(st["pid"])  # the container's pid is the VMM's supervisor
        assert os.path.basename(os.readlink(f"/proc/{vmm}/exe")).startswith("qemu-system"), st
        links, _ = net_view(pod)
        assert set(links) - set(before[0]), links  # the guest's macvtap
        r = runu(scene.root, "start", cid)
        assert r.returncode == 1 and "already running" in r.stderr, r
    if status == "created":
        r = runu(scene.root, "start", cid)  # a second start completes the first one's work
        assert r.returncode == 0, r
    scene.delete_force_leaves_nothing(cid, extra_check=lambda: {"network": net_view(pod) != before})


# ---- the init and the VMM dying -----------------------------------------------------------------------

def test_init_killed_before_start_is_stopped_and_its_status_stays_with_the_reaper(scene):
    """Whoever reaps the container's process (the shim; here the test, our subreaper) gets its status:
    runu never reaps a process it did not fork, and `state`/`delete` work on the dead init."""
    b = scene.sandbox()
    cid = "dead-init"
    scene.set_cgroup(b, cid)
    pidfile = scene.tmp / "pid"
    r = create(scene.root, b, cid, "--pid-file", str(pidfile))
    assert r.returncode == 0, r
    pid = int(pidfile.read_text())
    assert system.proc_stat(pid)[1] == os.getpid()  # orphaned to us, as it is to a shim
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while system.proc_stat(pid)[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert state_of(scene.root, cid) == "stopped"  # a zombie is stopped, and nobody reaped it for us
    r = runu(scene.root, "start", cid)
    assert r.returncode == 1 and "stopped" in r.stderr, r
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    r = runu(scene.root, "delete", cid)  # stopped: no --force needed
    assert r.returncode == 0, r
    scene.delete_force_leaves_nothing(cid)


@pytest.mark.integration
def test_vmm_dying_at_boot_fails_create_and_leaves_nothing(scene, tiny_kernel):
    """QEMU refusing the kernel: the VMM is built at create (unikraft/supervisor.py), so it is `create` that
    fails, in QEMU's own words, and nothing is left (no state, process or cgroup)."""
    from guest.build import broken_pvh

    bad = broken_pvh(str(scene.tmp / "k"))
    b = unikernel_bundle(scene.tmp / "u", bad, annotations=TCG)
    cid = "vmm-dies"
    scene.set_cgroup(b, cid)
    pidfile = scene.tmp / "pid"
    with open(scene.tmp / "console", "w") as out:
        r = subprocess.run([RUNU, "--root", scene.root, "create", "--bundle", b, "--pid-file", str(pidfile), cid],
                           stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=base_env(), timeout=60)
    assert r.returncode == 1, (scene.tmp / "console").read_text()
    assert "Error while loading elf kernel" in (scene.tmp / "console").read_text()
    assert not pidfile.exists()
    assert not os.path.exists(os.path.join(scene.root, cid))
    scene.delete_force_leaves_nothing(cid)


# ---- a full or read-only state root -------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "tiny-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Fill the filesystem at `path` up to its last page."""
    for name in ("filler", "filler2"):  # the second catches what the first's last page left
        fd = os.open(path / name, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)


def test_state_save_on_a_full_disk_keeps_the_old_file(small_tmpfs):
    from mocktainer import state as statefile
    from mocktainer.configs import Config
    from mocktainer.error import StateError

    d = small_tmpfs / "c"
    d.mkdir()
    old = statefile.State(id="c", init_process_pid=1, init_process_start=2, created="then", config=Config())
    statefile.save(str(d), old)
    before = (d / "state.json").read_bytes()
    fill(small_tmpfs)
    new = statefile.State(id="c", init_process_pid=3, init_process_start=4, created="now" * 3000, config=Config())
    with pytest.raises(StateError, match=r"cannot save the state of container 'c' in .*: No space left on device"):
        statefile.save(str(d), new)
    assert (d / "state.json").read_bytes() == before  # the old file, whole
    assert sorted(os.listdir(d)) == ["state.json"]  # no temporary file left


def test_create_on_a_full_root_fails_cleanly(scene, small_tmpfs):
    root = str(small_tmpfs / "root")
    b = scene.sandbox()
    cid = "full"
    scene.set_cgroup(b, cid)
    os.makedirs(root)
    fill(small_tmpfs)
    log = scene.tmp / "log.json"
    r = subprocess.run([RUNU, "--root", root, "--log", str(log), "--log-format", "json", "create", "--bundle", b,
                        cid], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=base_env(), timeout=60)
    assert r.returncode == 1, r
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "No space left on device" in r.stderr and repr(cid) in r.stderr, r.stderr
    assert json.loads(log.read_text().splitlines()[-1])["level"] == "error"
    assert os.listdir(root) == []  # no directory, no half-written state.json
    assert not processes_mentioning(scene.marker) and not scene.cgroup_dirs()


def test_create_on_a_read_only_root_fails_cleanly(scene, small_tmpfs):
    root = small_tmpfs / "root"
    root.mkdir()
    root.chmod(0o700)  # (a root of another mode is made 0700 first, which a read-only file system refuses)
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    b = scene.sandbox()
    cid = "ro"
    scene.set_cgroup(b, cid)
    r = subprocess.run([RUNU, "--root", str(root), "create", "--bundle", b, cid], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, env=base_env(), timeout=60)
    assert r.returncode == 1, r
    assert r.stderr == f"runu: cannot create the directory of container {cid!r} in {root}: Read-only file system\n"
    assert os.listdir(root) == []
    assert not processes_mentioning(scene.marker) and not scene.cgroup_dirs()


def test_state_written_in_the_root_is_never_torn(scene):
    """Readers racing a create always parse state.json (it is only ever replaced by rename)."""
    b = scene.sandbox()
    seen = 0
    for i in range(10):
        cid = f"t{i}"
        scene.set_cgroup(b, cid)
        creator = popen_runu(scene.root, "create", "--bundle", b, cid)
        path = os.path.join(scene.root, cid, "state.json")
        while creator.poll() is None:
            try:
                with open(path, "rb") as f:
                    json.loads(f.read())
                seen += 1
            except FileNotFoundError:
                pass
        assert creator.returncode == 0
        runu(scene.root, "delete", "--force", cid)
    assert seen > 0
