"""Concurrency: one container raced on from many runu processes, many lifecycles at once, a big root.

Issue 6, "Concurrency": operations on one container serialise (mocktainer.factory.Lock), racing
kill / delete --force / state / start never corrupt state or signal a reused pid, parallel lifecycles
leak nothing, and `runu list` stays correct and fast with 1,000 containers.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import RUNU_LIBRARY as RUNU, base_env, children_of, needs_root, reap_zombies

from harness.images import unikernel_bundle
from harness.procs import processes_mentioning
from harness.runu import runu as runu_binary, spec, write_bundle

runu = functools.partial(runu_binary, binary=RUNU)  # runu-library: no delegate

pytestmark = [needs_root]


def create(root: str, bundle: str, cid: str) -> int:
    """`runu create`, the container's stdio on /dev/null; the init's pid."""
    pid_file = os.path.join(os.path.dirname(root), f"{cid}.pid")
    with tempfile.TemporaryFile() as err:  # not a pipe: the container process inherits it
        rc = subprocess.run([RUNU, "--root", root, "create", "--bundle", bundle, "--pid-file", pid_file, cid],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60,
                            env=base_env()).returncode
        err.seek(0)
        assert rc == 0, err.read()
    with open(pid_file) as f:
        return int(f.read())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return False


def assert_clean_result(r: subprocess.CompletedProcess) -> None:
    """Exit status 0, or 1 with a one-line error; never a traceback."""
    assert r.returncode in (0, 1), r
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode == 1:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


class StateReader(threading.Thread):
    """Reads every state.json under a root in a loop; counts reads and unparsable files."""

    def __init__(self, root: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.paths = [os.path.join(root, cid, "state.json") for cid in ids]
        self.stop = threading.Event()
        self.reads = 0
        self.bad: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for p in self.paths:
                try:
                    with open(p, "rb") as f:
                        data = f.read()
                except (FileNotFoundError, NotADirectoryError):
                    continue
                self.reads += 1
                try:
                    json.loads(data)
                except ValueError:
                    self.bad.append(data.decode(errors="replace")[:200])


OPS = [("start",), ("kill", "KILL"), ("kill", "TERM"), ("delete", "--force"), ("state",), ("kill", "--all", "KILL")]


def _argv(op: tuple[str, ...], cid: str) -> list[str]:
    return [*op[:-1], cid, op[-1]] if op[0] == "kill" else [*op, cid]


def race(root: str, ids: list[str], per_container: int, seed: int) -> list[subprocess.CompletedProcess]:
    """`per_container` runu processes on each container at once, mixing start/kill/delete --force/state."""
    rnd = random.Random(seed)
    jobs = []
    for cid in ids:
        ops = [rnd.choice(OPS) for _ in range(per_container - 2)] + [("delete", "--force"), ("start",)]
        rnd.shuffle(ops)
        jobs += [(op, cid) for op in ops]
    rnd.shuffle(jobs)
    procs = [subprocess.Popen([RUNU, "--root", root, *_argv(op, cid)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=base_env()) for op, cid in jobs]
    out = []
    for p in procs:
        o, e = p.communicate(timeout=60)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


@pytest.mark.parametrize("containers,per_container,rounds", [(1, 20, 5), (4, 12, 3)])
def test_racing_commands_never_corrupt_or_leak(tmp_path, root, containers, per_container, rounds):
    b = write_bundle(str(tmp_path / "bundle"), spec(["/bin/busybox", "sleep", "60"]))
    for rnd in range(rounds):
        ids = [f"race{rnd}-{i}" for i in range(containers)]
        pids = [create(root, b, cid) for cid in ids]
        if rnd % 2:
            for cid in ids:
                assert runu(root, "start", cid).returncode == 0
        reader = StateReader(root, ids)
        reader.start()
        try:
            results = race(root, ids, per_container, seed=rnd)
        finally:
            reader.stop.set()
            reader.join()
        for r in results:
            assert_clean_result(r)
        assert reader.bad == [], reader.bad[:3]
        # every container ends deleted (each got at least one delete --force), its process gone
        for cid, pid in zip(ids, pids, strict=True):
            assert not os.path.exists(os.path.join(root, cid)), cid
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                reap_zombies()
                time.sleep(0.01)
            assert not alive(pid), pid
            r = runu(root, "state", cid)
            assert r.returncode == 1 and "does not exist" in r.stderr, r
    assert os.listdir(root) == []


def test_kill_does_not_signal_a_reused_pid(tmp_path, root):
    """state.json names a pid that now belongs to another process (start time differs): kill refuses."""
    b = write_bundle(str(tmp_path / "bundle"), spec(["/bin/busybox", "sleep", "60"]))
    create(root, b, "reuse")
    assert runu(root, "start", "reuse").returncode == 0
    victim = subprocess.Popen(["sleep", "60"])
    try:
        path = os.path.join(root, "reuse", "state.json")
        with open(path) as f:
            st = json.load(f)
        real = st["init_process_pid"]
        st["init_process_pid"] = victim.pid  # as if the init had died and its pid been reused
        with open(path + ".tmp", "w") as f:
            json.dump(st, f)
        os.rename(path + ".tmp", path)
        for sig in ("KILL", "TERM"):
            r = runu(root, "kill", "reuse", sig)
            assert r.returncode == 1 and "not running" in r.stderr, r
        assert victim.poll() is None
        assert json.loads(runu(root, "state", "reuse").stdout)["status"] == "stopped"
        os.kill(real, 9)
    finally:
        victim.kill()
        victim.wait()


# ---- many lifecycles at once ---------------------------------------------------------------------

def _count_leaks(root: str) -> dict[str, object]:
    qemus = processes_mentioning(root)  # (by argument or open file: a VMM holds its state directory)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    with open("/proc/self/mountinfo") as f:
        mounts = len(f.read().splitlines())
    return {
        "processes": sorted(children_of(os.getpid())),
        "processes naming the root": qemus,
        "fds": len(os.listdir("/proc/self/fd")),
        "directories": sorted(os.listdir(root)) if os.path.isdir(root) else [],
        "mounts": mounts,
        "links": len(links.splitlines()),
        "cgroups": sorted(glob.glob("/sys/fs/cgroup/*/runu/*/") + glob.glob("/sys/fs/cgroup/runu/*/")),
    }


LIFECYCLES = 50
AT_ONCE = 10


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed")
def test_parallel_tiny_guest_lifecycles_leak_nothing(tmp_path, root):
    from guest.build import build_tiny

    kernel = build_tiny(str(tmp_path / "k"), "pvh")
    # "idle" must be a kernel word, not an application argument after "--": no environment
    b = unikernel_bundle(tmp_path / "bundle", kernel, ["idle"], annotations={"org.unikraft.runu.accel": "tcg"})
    os.makedirs(root, exist_ok=True)
    before = _count_leaks(root)

    def lifecycle(i: int) -> float:
        t0 = time.monotonic()
        cid = f"life{i}"
        pid = create(root, str(b), cid)
        for args in (("start", cid), ("kill", cid, "KILL")):
            r = runu(root, *args)
            assert r.returncode == 0, r
        deadline = time.monotonic() + 20
        while json.loads(runu(root, "state", cid).stdout)["status"] != "stopped":
            assert time.monotonic() < deadline, f"{cid} did not stop"
            time.sleep(0.02)
        r = runu(root, "delete", cid)
        assert r.returncode == 0, r
        assert not alive(pid)
        return time.monotonic() - t0

    t0 = time.monotonic()
    with ThreadPoolExecutor(AT_ONCE) as pool:
        times = list(pool.map(lifecycle, range(LIFECYCLES)))
    elapsed = time.monotonic() - t0
    reap_zombies()
    after = _count_leaks(root)
    assert after == before, (before, after)
    print(f"{LIFECYCLES} lifecycles, {AT_ONCE} at once: {elapsed:.1f} s "
          f"(median {sorted(times)[len(times) // 2]:.2f} s each)")
    assert elapsed < 60, elapsed


# ---- runu list over a big root ------------------------------------------------------------------

def fabricate(root: str, n: int, template: dict) -> None:
    """`n` containers whose inits are long gone (a reaped child's pid with another start time): stopped."""
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        st = dict(template, id=f"many{i:04d}")
        d = os.path.join(root, st["id"])
        os.mkdir(d, 0o711)
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump(st, f)


def test_list_of_a_thousand_containers(tmp_path, root):
    b = write_bundle(str(tmp_path / "bundle"), spec(["/bin/busybox", "sleep", "60"]))
    pid = create(root, b, "live")
    with open(os.path.join(root, "live", "state.json")) as f:
        template = json.load(f)
    dead = subprocess.Popen(["true"])
    dead.wait()
    template.update(init_process_pid=dead.pid, init_process_start=1)
    fabricate(root, 1000, template)
    try:
        _check_list(root, b, pid)
    finally:  # quicker than the fixture's 1,001 `runu delete --force`
        for i in range(1000):
            shutil.rmtree(os.path.join(root, f"many{i:04d}"), ignore_errors=True)


def _check_list(root: str, b: str, pid: int) -> None:
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        r = runu(root, "list", "--format", "json")
        times.append(time.monotonic() - t0)
        assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert len(listed) == 1001
    by_id = {c["id"]: c for c in listed}
    assert by_id["live"]["status"] == "created" and by_id["live"]["pid"] == pid
    assert sorted(by_id) == sorted(["live"] + [f"many{i:04d}" for i in range(1000)])
    for i in (0, 500, 999):
        c = by_id[f"many{i:04d}"]
        assert c["status"] == "stopped" and c["pid"] == 0 and c["bundle"] == b, c
    q = runu(root, "list", "--quiet")
    assert q.stdout.split() == sorted(by_id)
    print(f"runu list over 1001 containers: median {sorted(times)[1] * 1000:.0f} ms")
    assert sorted(times)[1] < 3, times


def test_operations_wait_for_the_container_lock_and_state_does_not(tmp_path, root):
    """While another holder has the container's lock, start/kill/delete wait for it; state answers at once;
    a waiter that gets the lock after the container was deleted says it does not exist."""
    from mocktainer import factory

    b = write_bundle(str(tmp_path / "bundle"), spec(["/bin/busybox", "sleep", "60"]))
    pid = create(root, b, "locked")
    lock = factory.lock(root, "locked")
    try:
        waiters = [subprocess.Popen([RUNU, "--root", root, *args], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base_env())
                   for args in (["start", "locked"], ["kill", "locked", "KILL"], ["delete", "--force", "locked"])]
        time.sleep(0.5)
        assert [w.poll() for w in waiters] == [None, None, None]
        assert alive(pid)
        r = runu(root, "state", "locked", timeout=5)
        assert r.returncode == 0 and json.loads(r.stdout)["status"] == "created", r
    finally:
        lock.release()
    outputs = [w.communicate(timeout=30) for w in waiters]
    results = [subprocess.CompletedProcess(w.args, w.returncode, *o) for w, o in zip(waiters, outputs, strict=True)]
    for r in results:
        assert_clean_result(r)
    assert not os.path.exists(os.path.join(root, "locked"))
    assert any(r.returncode == 0 and r.args[-2:] == ["--force", "locked"] for r in results), results
    reap_zombies()
    assert not alive(pid)
