"""The VMM is ready at create, start only resumes it (unikraft/supervisor.py).

The container's process is a supervisor, the parent of the VMM: `create` builds the VM (QEMU paused with
`-S`, Firecracker configured through its API) and waits until it answers, so a VMM that cannot come up fails
`create` with its own words and leaves nothing; `start` resumes it; the supervisor then forwards signals,
watches QEMU's events and exits with the backend's `exit_status` of the VMM's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RUNU, base_env, children_of, needs_root, vmm_of

from harness.images import unikernel_bundle
from harness.procs import processes_mentioning
from guest.build import build_tiny
from harness.runu import runu, BACKENDS, alive, kill_and_reap, wait_exit

from mocktainer.unikraft import firecracker, qemu

HERE = Path(__file__).resolve().parent

GREETING = "Hello from the runu test kernel"
VMM = "org.unikraft.runu.vmm"
TCG = {"org.unikraft.runu.accel": "tcg"}
MIB = 1 << 20



def integration(test):
    """Real QEMU, as root."""
    no_qemu = shutil.which("qemu-system-x86_64") is None
    for mark in (needs_root, pytest.mark.integration,
                 pytest.mark.skipif(no_qemu, reason="qemu-system-x86 is not installed")):
        test = mark(test)
    return test


# -- exit status: pure --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, reason, code, says", [
    (0, None, 0, None),                          # power-off, quit, QEMU's own end on a signal it handled
    (qemu.UNIKRAFT_HALT_STATUS, None, 0, None),  # Unikraft's halt through isa-debug-exit
    (qemu.UNIKRAFT_CRASH_STATUS, None, 1, "the guest crashed"),
    ((5 << 1) | 1, None, 11, None),              # another isa-debug-exit value passes as it is
    (1, None, 1, "QEMU exited with status 1"),   # a QEMU error, a Linux panic through pvpanic
    (0, "guest-reset", 1, qemu.FAILURES["guest-reset"]),
    (0, "internal-error", 1, qemu.FAILURES["internal-error"]),
    (1, "guest-panicked", 1, qemu.FAILURES["guest-panicked"]),
    (qemu.UNIKRAFT_HALT_STATUS, "guest-reset", 1, qemu.FAILURES["guest-reset"]),
])
def test_qemu_exit_status(raw, reason, code, says):
    """exit_status takes the raw wait status (os.waitpid's): QEMU exited with `raw`."""
    got, message = qemu.exit_status(raw << 8, reason)
    assert got == code
    assert message is None if says is None else says in message


def test_qemu_exit_status_of_a_killed_vmm():
    """Killed: 128 + N (the supervisor then dies of the same signal itself)."""
    assert qemu.exit_status(signal.SIGKILL) == (128 + signal.SIGKILL, None)


def test_firecracker_exit_status_is_its_own():
    assert firecracker.exit_status(0) == (0, None) and firecracker.exit_status(1 << 8)[0] == 1


class _Child:
    status = None

    def exited(self):
        return False


def test_qemu_events_end_a_stopped_guest():
    """STOP -> query-status; a status of internal-error (KVM) or guest-panicked -> quit, and the reason is
    kept for exit_status; a guest-reset SHUTDOWN is kept without a command (-no-reboot ends QEMU)."""
    mine, theirs = socket.socketpair()
    s = qemu.Session(None, False)
    s.sock, s.child = mine, _Child()
    try:
        def feed(*msgs):
            theirs.sendall(b"".join(json.dumps(m).encode() + b"\r\n" for m in msgs))
            assert s.on_control()

        def sent():
            theirs.settimeout(0.2)
            out = b""
            try:
                while True:
                    out += theirs.recv(4096)
            except socket.timeout:
                pass
            return [json.loads(line)["execute"] for line in out.splitlines() if line.strip()]

        feed({"event": "RESUME"}, {"event": "STOP"})
        assert sent() == ["query-status"] and s.reason is None
        feed({"return": {"status": "internal-error", "running": False}})
        assert sent() == ["quit"] and s.reason == "internal-error"
        s.reason = None
        feed({"event": "GUEST_PANICKED", "data": {"action": "pause"}})
        assert sent() == ["quit"] and s.reason == "guest-panicked"
        s.reason = None
        feed({"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"}})
        assert sent() == [] and s.reason == "guest-reset"
        s.reason = None
        feed({"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-shutdown"}},
             {"return": {"status": "running"}})
        assert s.reason is None
    finally:
        mine.close()
        theirs.close()


# -- end to end ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return build_tiny(str(tmp_path_factory.mktemp("kernels")), "pvh")


def bundle(tmp_path: Path, kernel: str, args=(), annotations=None, resources=None, hooks=None) -> str:
    b = unikernel_bundle(tmp_path / "bundle", kernel, args, annotations=annotations,
                                 resources=resources or {})
    if hooks:
        cfg = json.loads(Path(b, "config.json").read_text())
        cfg["hooks"] = hooks
        Path(b, "config.json").write_text(json.dumps(cfg))
    return b


def create(root: str, b: str, cid: str, log: Path, argv0=()) -> subprocess.CompletedProcess:
    with open(log, "w") as out:
        return subprocess.run([*argv0, RUNU, "--root", root, "create", "--bundle", b, "--pid-file", f"{b}/pid", cid],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60, env=base_env())


def created_idle(tmp_path: Path, root: str, kernel: str, cid: str) -> tuple[int, Path]:
    """An idling tiny guest (TCG) created: (its pid, its console log)."""
    b = bundle(tmp_path, kernel, ["idle"], annotations=TCG)
    log = tmp_path / "console.log"
    assert create(root, b, cid, log).returncode == 0, log.read_text()
    return int(Path(b, "pid").read_text()), log


def status(root: str, cid: str) -> str:
    return json.loads(runu(root, "state", cid).stdout)["status"]


def mentioning(text: str) -> list[int]:
    return processes_mentioning(text, names=[])


def qmp(state_dir: str, command: str) -> dict:
    """One QMP command on the container's qmp.sock (the one `runu kill` uses for graceful stop)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    dirfd = os.open(state_dir, os.O_PATH)
    try:
        s.connect(f"/proc/self/fd/{dirfd}/qmp.sock")
        f = s.makefile("rwb")
        json.loads(f.readline())
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            while "return" not in (reply := json.loads(f.readline())):
                pass
        return reply["return"]
    finally:
        os.close(dirfd)
        s.close()


@integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_created_vm_is_ready_and_start_resumes_it(tmp_path, root, kernel, backend):
    b = bundle(tmp_path, kernel, ["idle"], annotations={VMM: backend})
    log = tmp_path / "console.log"
    assert create(root, b, "ready", log).returncode == 0, log.read_text()
    pid = int(Path(b, "pid").read_text())
    try:
        vmm = vmm_of(pid)
        assert status(root, "ready") == "created"
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "mocktainer-init"
        if backend == "qemu":
            assert qmp(os.path.join(root, "ready"), "query-status")["status"] == "prelaunch"  # built, paused
        time.sleep(0.3)
        assert GREETING not in log.read_text()  # the guest has not run
        r = runu(root, "start", "ready")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while "idling" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        st = json.loads(runu(root, "state", "ready").stdout)
        assert st["status"] == "running" and st["pid"] == pid and vmm_of(pid) == vmm
        assert json.loads(runu(root, "ps", "--format", "json", "ready").stdout) == [pid, vmm]
        assert runu(root, "kill", "ready", "KILL").returncode == 0
        st = wait_exit(pid, 10)
        assert st is not None and os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
        deadline = time.monotonic() + 10
        while alive(vmm):  # PR_SET_PDEATHSIG
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert runu(root, "delete", "ready").returncode == 0
    finally:
        kill_and_reap(pid)


BAD = {
    # QEMU's own errors at create, in QEMU's own words; memory beyond the host's RAM and swap is refused by
    # runu's own check before QEMU starts (bundle.memory_mib, issue 12), still at create
    "memory the host refuses": ({}, {"memory": {"limit": 1 << 42}}, "more than this host's"),
    "an option QEMU rejects": ({"org.unikraft.runu.qemu.cpu": "nosuchcpu"}, {}, "unable to find CPU model"),
    "KVM unusable": ({"org.unikraft.runu.accel": "kvm"}, {}, "kvm"),
}


@integration
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_vmm_configuration_fails_create(tmp_path, root, kernel, case):
    """Each fails `create` (not `start`), with QEMU's message, and leaves no directory and no process. KVM
    unusable: runu's own check passes, then a createRuntime hook hides /dev/kvm (a bind mount in a private
    mount namespace) before QEMU starts."""
    if case == "KVM unusable":
        from mocktainer.unikraft import host

        if not host.kvm_usable():
            pytest.skip("needs a usable /dev/kvm for runu's own check to pass")
    annotations, resources, words = BAD[case]
    argv0: tuple[str, ...] = ()
    hooks = None
    if case == "KVM unusable":
        hooks = {"createRuntime": [{"path": "/bin/mount", "args": ["mount", "--bind", "/dev/null", "/dev/kvm"]}]}
        argv0 = ("unshare", "-m", "--propagation", "private")
    b = bundle(tmp_path, kernel, ["idle"], annotations={**TCG, **annotations}, resources=resources, hooks=hooks)
    log = tmp_path / "create.log"
    r = create(root, b, "bad", log, argv0)
    out = log.read_text()
    assert r.returncode == 1, out
    lines = [line for line in out.splitlines() if line.startswith("runu: ")]
    assert len(lines) == 1, out
    if case != "memory the host refuses":
        assert "qemu-system-x86_64 exited with status 1 before it could start" in lines[0], out
    assert words.lower() in lines[0].lower(), out
    assert not os.path.exists(os.path.join(root, "bad"))
    assert mentioning(b) == []


@integration
def test_start_of_a_container_whose_vmm_died_fails_clearly(tmp_path, root, kernel):
    pid, _log = created_idle(tmp_path, root, kernel, "died")
    try:
        os.kill(vmm_of(pid), signal.SIGKILL)
        st = wait_exit(pid, 10)  # the supervisor follows its VMM
        assert st is not None and os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
        assert status(root, "died") == "stopped"
        r = runu(root, "start", "died")
        assert r.returncode == 1 and "has stopped" in r.stderr, r
        assert runu(root, "delete", "died").returncode == 0
    finally:
        kill_and_reap(pid)


@integration
@pytest.mark.parametrize("args, code, line", [
    (["exit=41"], 0, None),                            # isa-debug-exit 83: Unikraft's clean halt
    (["exit=42"], 1, "runu: the guest crashed"),      # 85: its crash
    (["exit=5"], 11, None),                            # other values pass as they are
    (["reset"], 1, "runu: " + qemu.FAILURES["guest-reset"]),  # microvm has no i8042: a triple fault
])
def test_exit_status_of_runu_run(tmp_path, root, kernel, args, code, line):
    b = bundle(tmp_path, kernel, args, annotations=TCG)
    r = runu(root, "run", "--bundle", b, "ex")
    assert GREETING in r.stdout, r
    assert r.returncode == code, r
    assert (line in r.stderr) if line else "runu:" not in r.stderr, r.stderr
    assert os.listdir(root) == []


@integration
def test_signals_reach_the_vmm_through_the_supervisor(tmp_path, root, kernel):
    """INT to the container's pid goes on to QEMU, which ends (status 0: QEMU's own end on a signal)."""
    pid, log = created_idle(tmp_path, root, kernel, "sig")
    try:
        assert runu(root, "start", "sig").returncode == 0
        vmm = vmm_of(pid)
        deadline = time.monotonic() + 20
        while "idling" not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(pid, signal.SIGINT)
        st = wait_exit(pid, 10)
        assert st is not None and os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, st
        assert not alive(vmm) and children_of(pid) == []
        assert "terminating on signal 2" in log.read_text()
    finally:
        kill_and_reap(pid)


def test_firecracker_is_listed_only_where_kvm_works(tmp_path, monkeypatch):
    """`runu features` lists a backend when `find` says it can run here: Firecracker needs its binary and
    a KVM that works (host.kvm_usable), QEMU only its binary."""
    from mocktainer.unikraft import host, settings, vmm

    for name in ("firecracker", "qemu-system-x86_64"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    current = settings.Settings(environ={"PATH": str(tmp_path)})
    monkeypatch.setattr(host, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(host, "kvm_usable", lambda device=host.KVM_DEVICE: True)
    assert [n for n, _ in vmm.available(current, "x86_64")] == ["qemu", "firecracker"]
    monkeypatch.setattr(host, "kvm_usable", lambda device=host.KVM_DEVICE: False)
    assert [n for n, _ in vmm.available(current, "x86_64")] == ["qemu"]
