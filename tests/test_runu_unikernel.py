"""Unikernels booted through the runu command line: real QEMU, the tiny test kernel."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import needs_root, vmm_argv, vmm_of

from harness.images import KEEP, unikernel_bundle
from guest.build import build_tiny
from mocktainer.unikraft.host import hardware_virtualization, kvm_usable

pytestmark = [needs_root, pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed")]

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNU = shutil.which("runu") or os.path.join(TOP, ".venv/bin/runu")
GREETING = "Hello from the runu test kernel"


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels")
    return {fmt: build_tiny(str(out), fmt) for fmt in ("pvh", "multiboot")}


def make_bundle(tmp_path, kernel, args=(), env=(), annotations=None, memory=None, name="bundle"):
    return unikernel_bundle(tmp_path / name, kernel, args, env=env, annotations=annotations,
                                    resources=KEEP if memory is None else {"memory": {"limit": memory}})


def runu(root, *args, timeout=60, env=None, **kw):
    return subprocess.run([RUNU, "--root", root, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, **kw)


@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
def test_run_boots_both_formats_and_returns_guest_status(tmp_path, root, kernels, fmt):
    b = make_bundle(tmp_path, kernels[fmt], args=["exit=5", "--", "hello", "world"],
                    annotations={"org.unikraft.runu.accel": "tcg"})
    r = runu(root, "run", "--bundle", b, f"u-{fmt}")
    assert GREETING in r.stdout, r.stdout + r.stderr
    assert "arg: hello" in r.stdout and "arg: world" in r.stdout
    assert r.returncode == (5 << 1) | 1  # the VMM's status: isa-debug-exit maps guest code N to (N<<1)|1
    assert os.listdir(root) == []  # run deletes the container once it exits


def test_env_reaches_guest_command_line(tmp_path, root, kernels):
    b = make_bundle(tmp_path, kernels["pvh"], args=["--", "x y"], env=["GREETING=hi there"],
                    annotations={"org.unikraft.runu.accel": "tcg"})
    r = runu(root, "run", "--bundle", b, "u-env")
    assert r.returncode == 1, r.stderr  # guest exit code 0 through isa-debug-exit
    cmdline = next(line for line in r.stdout.splitlines() if line.startswith("cmdline:"))
    # argv[0] first (a PVH boot passes the line as is), quoted for Unikraft's argument splitter, which the
    # tiny kernel implements
    assert cmdline == "cmdline: /unikraft/bin/kernel 'env.vars=GREETING=hi there' -- 'x y'"
    assert "uk: env GREETING=hi there\narg: x y\n" in r.stdout


@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
def test_more_than_8_env_vars_warn_and_the_guest_keeps_8(tmp_path, root, kernels, fmt):
    """Unikraft takes 8 env.vars from the command line by default: runu says which ones are at risk, on
    stderr and in --log, and the guest (which keeps 8, like Unikraft) shows the ninth and tenth gone."""
    env = ["V%d=%d" % (i, i) for i in range(10)]
    b = make_bundle(tmp_path, kernels[fmt], args=["halt", "--", "a"], env=env,
                    annotations={"org.unikraft.runu.accel": "tcg"})
    log = tmp_path / "runu.log"
    r = runu(root, "--log", str(log), "--log-format", "json", "run", "--bundle", b, "u-env8")
    assert "runu: warning: " in r.stderr and "at risk: V8, V9" in r.stderr, r.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(rec.get("level") == "warning" and "at risk: V8, V9" in rec.get("msg", "") for rec in records), records
    got = [ln[len("uk: env "):] for ln in r.stdout.splitlines() if ln.startswith("uk: env ")]
    assert got == env[:8], r.stdout
    assert r.returncode == 0  # Unikraft's clean halt through isa-debug-exit at 0x501 (QEMU 83): exit_status


def test_lifecycle_of_an_idling_guest(tmp_path, root, kernels):
    b = make_bundle(tmp_path, kernels["pvh"], args=["idle"], memory=160 * 1024 * 1024,
                    annotations={"org.unikraft.runu.accel": "tcg"})
    log = tmp_path / "out.log"
    with open(log, "w") as out:
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", b, "--pid-file", f"{b}/pid", "idle1"],
                           stdout=out, stderr=out, timeout=30)
    assert r.returncode == 0, log.read_text()
    pid = int(open(f"{b}/pid").read())
    st = json.loads(runu(root, "state", "idle1").stdout)
    assert st["status"] == "created" and st["pid"] == pid
    assert runu(root, "start", "idle1").returncode == 0
    deadline = time.time() + 20
    while GREETING not in log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    assert "idling" in log.read_text() or GREETING in log.read_text()
    assert open(f"/proc/{pid}/comm").read().strip() == "mocktainer-sv"  # the supervisor of the VMM
    argv = vmm_argv(pid)
    assert os.path.basename(argv[0]) == "qemu-system-x86_64"
    # the guest gets the limit minus QEMU's own 64 MiB and its supervisor's 8 (docs/bundles.md)
    assert argv[argv.index("-m") + 1] == "88M" and "tcg" in argv[argv.index("-accel") + 1]
    assert "-monitor" in argv and argv[argv.index("-monitor") + 1] == "none"
    assert json.loads(runu(root, "state", "idle1").stdout)["status"] == "running"
    assert json.loads(runu(root, "ps", "--format", "json", "idle1").stdout) == [pid, vmm_of(pid)]
    assert runu(root, "kill", "idle1", "KILL").returncode == 0
    deadline = time.time() + 10
    while json.loads(runu(root, "state", "idle1").stdout)["status"] != "stopped" and time.time() < deadline:
        time.sleep(0.05)
    assert json.loads(runu(root, "state", "idle1").stdout)["status"] == "stopped"
    assert runu(root, "delete", "idle1").returncode == 0
    assert not os.path.exists(os.path.join(root, "idle1"))


def test_accel_env_knob_forces_tcg(tmp_path, root, kernels):
    b = make_bundle(tmp_path, kernels["pvh"], args=["idle"])
    env = dict(os.environ, RUNU_ACCEL="tcg")
    # The container inherits create's stdio: hand it files, not pipes a reader would wait on.
    with open(tmp_path / "out.log", "w") as out:
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", b, "k1"], env=env, stdin=subprocess.DEVNULL,
                           stdout=out, stderr=out, timeout=30)
    assert r.returncode == 0, (tmp_path / "out.log").read_text()
    assert runu(root, "start", "k1").returncode == 0
    pid = json.loads(runu(root, "state", "k1").stdout)["pid"]
    argv = vmm_argv(pid)
    assert argv[argv.index("-accel") + 1].startswith("tcg")
    assert runu(root, "delete", "--force", "k1").returncode == 0


def _created_accel(tmp_path, root, kernels, cid, env):
    b = make_bundle(tmp_path / cid, kernels["pvh"], args=["idle"])
    with open(tmp_path / f"{cid}.log", "w") as out:
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", b, cid], env=dict(os.environ, **env),
                           stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30)
    try:
        assert r.returncode == 0, (tmp_path / f"{cid}.log").read_text()
        argv = vmm_argv(json.loads(runu(root, "state", cid).stdout)["pid"])
        return argv[argv.index("-accel") + 1]
    finally:
        runu(root, "delete", "--force", cid)


@pytest.mark.skipif(hardware_virtualization() or not kvm_usable(),
                    reason="needs a /dev/kvm without vmx/svm in the CPU flags (a paravirtual KVM, as here)")
def test_auto_takes_tcg_on_a_kvm_without_hardware_virtualisation(tmp_path, root, kernels):
    """Real Unikraft builds crash under such a KVM (a KVM emulation failure when they set up SSE): `auto`
    must not pick it even for a unikernel; asked for by name, it is the user's call and honoured."""
    assert _created_accel(tmp_path, root, kernels, "auto1", {"RUNU_ACCEL": ""}).startswith("tcg")
    assert _created_accel(tmp_path, root, kernels, "kvm1", {"RUNU_ACCEL": "kvm"}) == "kvm"


def test_bad_accel_value_is_refused_and_leaves_nothing(tmp_path, root, kernels):
    b = make_bundle(tmp_path, kernels["pvh"], annotations={"org.unikraft.runu.accel": "warp"})
    r = runu(root, "create", "--bundle", b, "bad1")
    assert r.returncode == 1
    assert "org.unikraft.runu.accel" in r.stderr and "warp" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(root, "bad1"))


def test_signals_to_runu_run_reach_the_vmm(tmp_path, root, kernels):
    """`runu run` forwards signals: TERM as a power-button request (the tiny kernel ignores it and keeps
    running, see test_graceful_stop.py), INT as the signal, which ends the VMM."""
    b = make_bundle(tmp_path, kernels["pvh"], args=["idle"], annotations={"org.unikraft.runu.accel": "tcg"})
    log = tmp_path / "out"
    with open(log, "w") as f:
        p = subprocess.Popen([RUNU, "--root", root, "run", "--bundle", b, "t1"], stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while "idling" not in log.read_text() and time.time() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert p.poll() is None  # asked, not killed
        p.send_signal(signal.SIGINT)
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert GREETING in log.read_text()
    assert os.listdir(root) == []


def test_the_readme_demo_boots_a_unikernel_and_exits_0(tmp_path):
    """`bash scripts/demo.sh` (the README's first command, here on an already set-up machine): the guest
    greets, reads its arguments, halts the Unikraft way, and the demo reports and returns status 0."""
    res = subprocess.run(["bash", os.path.join(TOP, "scripts", "demo.sh")], capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL, env=dict(os.environ, RUNU_DEMO_DIR=str(tmp_path)))
    assert res.returncode == 0, res
    out = res.stdout.splitlines()
    assert GREETING in out and "arg: unikernel" in out and "bye halt" in out, res.stdout
    assert out[-1] == "+ the unikernel exited with status 0", res.stdout
