"""Graceful stop: `runu kill ID TERM` asks the guest to power off through the VMM's control socket
(QEMU: QMP `system_powerdown`, the ACPI power button; Firecracker: `PUT /actions SendCtrlAltDel`);
`KILL` still kills at once; a container that is only created, or whose VMM does not answer, gets the
signal. The socket lives in the state directory and is reached through `/proc/self/fd/N/`, so it
works for 64-character ids under long state roots (a unix socket path holds at most 108 bytes).

The tiny kernel (tests/guest) ignores the power button (`idle` keeps it up): the request is
delivered and the VM keeps running until KILL. The Linux test guest (busybox /init with acpid)
powers off cleanly under QEMU (TCG), printing `power button: powering off`.

The container inits are orphaned to this test process (a subreaper, see conftest), so their exit
status is read with waitpid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RUNU, base_env, needs_root, vmm_argv
from harness.runu import runu, BACKENDS, alive, kill_and_reap, wait_exit

from harness.images import KEEP, unikernel_bundle
from guest.build import build_tiny

HERE = Path(__file__).resolve().parent

VMM = "org.unikraft.runu.vmm"
MIB = 1 << 20
LINUX_MARK = "runu-linux-guest: "

pytestmark = [needs_root, pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed")]
SOCKET = {"qemu": "qmp.sock", "firecracker": "firecracker.sock"}
LONG_ID = "g" * 64


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return build_tiny(str(tmp_path_factory.mktemp("kernels")), "pvh")


@pytest.fixture(scope="module")
def linux_guest(tmp_path_factory):
    try:
        from guest import linux
    except ImportError:
        pytest.skip("tests/guest/linux.py is not there")
    try:
        return linux.build_linux_guest(str(tmp_path_factory.mktemp("linux")))
    except linux.GuestMissing as e:
        pytest.skip(str(e))


def make_bundle(tmp_path: Path, kernel: str, args=(), annotations=None, initrd=None, memory_mib=None) -> str:
    resources = {"memory": {"limit": memory_mib * MIB}} if memory_mib else KEEP
    return unikernel_bundle(tmp_path / "bundle", kernel, args, initrd=initrd, annotations=annotations,
                                    resources=resources)


def create(root: str, bundle: str, cid: str, log: Path) -> int:
    """`runu create` with the container's stdio on a file; the init's pid."""
    with open(log, "w") as out:
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", bundle, "--pid-file",
                            f"{bundle}/pid", cid], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                           timeout=30, env=base_env())
    assert r.returncode == 0, log.read_text()
    return int(Path(bundle, "pid").read_text())


def wait_text(log: Path, text: str, pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert alive(pid), f"the VMM exited before {text!r}:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)


def started_tiny(tmp_path: Path, root: str, kernel: str, backend: str, cid: str) -> tuple[int, Path]:
    b = make_bundle(tmp_path, kernel, args=["idle", "--"], annotations={VMM: backend})
    log = tmp_path / "console.log"
    return start_and_wait(root, b, cid, log, "idling", 30)


def started_linux(tmp_path: Path, root: str, linux_guest: tuple[str, str], cid: str) -> tuple[int, Path]:
    """The Linux guest created and started, its power button watched (`idle` said)."""
    kernel, initrd = linux_guest
    b = make_bundle(tmp_path, kernel, args=["idle"], initrd=initrd, memory_mib=320)
    log = tmp_path / "console.log"
    return start_and_wait(root, b, cid, log, LINUX_MARK + "idle", 90)


def start_and_wait(root: str, bundle: str, cid: str, log: Path, text: str, timeout: float) -> tuple[int, Path]:
    """create + start, then wait for `text` on the console; the init is reaped if that fails."""
    pid = create(root, bundle, cid, log)
    try:
        assert runu(root, "start", cid).returncode == 0
        wait_text(log, text, pid, timeout=timeout)
    except BaseException:
        kill_and_reap(pid)
        raise
    return pid, log


def status(root: str, cid: str) -> str:
    r = runu(root, "state", cid)
    assert r.returncode == 0, r
    return json.loads(r.stdout)["status"]


# ---------------------------------------------------------------------------------------------
# the tiny kernel: it ignores the request


@pytest.mark.parametrize("backend", BACKENDS)
def test_term_is_delivered_and_kill_still_kills(tmp_path, root, kernel, backend):
    cid = f"gs-{backend}"
    pid, log = started_tiny(tmp_path, root, kernel, backend, cid)
    state_dir = Path(root, cid)
    assert (state_dir / "control").read_text() == {"qemu": "qmp qmp.sock\n",
                                                   "firecracker": "firecracker firecracker.sock\n"}[backend]
    assert (state_dir / SOCKET[backend]).is_socket()
    argv = vmm_argv(pid)
    if backend == "firecracker":
        assert "--no-api" not in argv and "--api-sock" in argv
    else:
        assert "-qmp" in argv
    try:
        t = time.monotonic()
        r = runu(root, "kill", cid, "TERM")
        took = time.monotonic() - t
        assert r.returncode == 0 and r.stderr == "", r  # delivered (QMP return / HTTP 204): no fallback warning
        time.sleep(0.5)
        assert alive(pid) and status(root, cid) == "running"  # the tiny kernel ignores it
        assert took < 2.0
        for _ in range(4):  # repeated requests stay requests (Firecracker's i8042 buffer fills up)
            r = runu(root, "kill", cid, "SIGTERM")
            assert r.returncode == 0 and r.stderr == "", r
        time.sleep(0.3)
        assert alive(pid) and status(root, cid) == "running"
        r = runu(root, "kill", cid, "KILL")
        assert r.returncode == 0, r
        st = wait_exit(pid, 10)
        assert st is not None and os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
        assert status(root, cid) == "stopped"
        assert runu(root, "delete", cid).returncode == 0
        assert not state_dir.exists()
    finally:
        kill_and_reap(pid)


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_id_under_a_long_root(tmp_path, kernel, backend):
    root = str(tmp_path / ("r" * 100))
    socket_path = os.path.join(root, LONG_ID, SOCKET[backend])
    assert len(socket_path.encode()) > 108
    try:
        pid, _log = started_tiny(tmp_path, root, kernel, backend, LONG_ID)
        try:
            assert os.path.exists(socket_path)
            r = runu(root, "kill", LONG_ID, "TERM")
            assert r.returncode == 0 and r.stderr == "", r
            time.sleep(0.3)
            assert alive(pid)
            assert runu(root, "kill", LONG_ID, "SIGKILL").returncode == 0
            wait_exit(pid, 10)
            assert runu(root, "delete", LONG_ID).returncode == 0
            assert os.listdir(root) == []  # no socket (nor anything else) left behind
        finally:
            kill_and_reap(pid)
    finally:
        for cid in os.listdir(root) if os.path.isdir(root) else ():
            runu(root, "delete", "--force", cid)


def test_term_on_a_created_container_is_the_signal(tmp_path, root, kernel):
    b = make_bundle(tmp_path, kernel, args=["idle", "--"])
    log = tmp_path / "console.log"
    pid = create(root, b, "gs-created", log)
    try:
        r = runu(root, "kill", "gs-created", "TERM")
        assert r.returncode == 0 and r.stderr == "", r
        st = wait_exit(pid, 10)
        assert st is not None and os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGTERM
        assert status(root, "gs-created") == "stopped"
        assert runu(root, "delete", "gs-created").returncode == 0
    finally:
        kill_and_reap(pid)


def test_unresponsive_socket_falls_back_to_the_signal(tmp_path, root, kernel):
    pid, _log = started_tiny(tmp_path, root, kernel, "qemu", "gs-gone")
    try:
        os.unlink(Path(root, "gs-gone", "qmp.sock"))  # as if QEMU's QMP server were gone
        t = time.monotonic()
        r = runu(root, "kill", "gs-gone", "TERM")
        assert r.returncode == 0, r
        assert "graceful stop" in r.stderr and "sending the signal instead" in r.stderr, r
        st = wait_exit(pid, 10)
        assert time.monotonic() - t < 5
        # QEMU ends on SIGTERM ("terminating on signal 15") with status 0
        assert st is not None and (os.WIFEXITED(st) or os.WTERMSIG(st) == signal.SIGTERM), st
    finally:
        kill_and_reap(pid)


def test_sigint_is_a_signal(tmp_path, root, kernel):
    pid, _log = started_tiny(tmp_path, root, kernel, "qemu", "gs-int")
    try:
        assert runu(root, "kill", "gs-int", "INT").returncode == 0
        wait_exit(pid, 10)
        assert status(root, "gs-int") == "stopped"
    finally:
        kill_and_reap(pid)


# ---------------------------------------------------------------------------------------------
# the Linux guest: a clean ACPI power-off


def test_linux_guest_powers_off_on_term(tmp_path, root, linux_guest):
    pid, log = started_linux(tmp_path, root, linux_guest, "gs-linux")
    try:
        t = time.monotonic()
        r = runu(root, "kill", "gs-linux", "TERM")
        assert r.returncode == 0 and r.stderr == "", r
        st = wait_exit(pid, 30)
        took = time.monotonic() - t
        out = log.read_text(errors="replace")
        assert LINUX_MARK + "power button: powering off" in out, out[-3000:]
        assert st is not None and os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, (st, out[-3000:])
        assert took < 20, took
        assert status(root, "gs-linux") == "stopped"
        assert runu(root, "delete", "gs-linux").returncode == 0
        assert os.listdir(root) == []
    finally:
        kill_and_reap(pid)


def test_runu_run_in_the_foreground_turns_term_into_a_power_off(tmp_path, root, linux_guest):
    """`runu run` forwards signals to the container; TERM takes the graceful path like `runu kill`."""
    kernel, initrd = linux_guest
    b = make_bundle(tmp_path, kernel, args=["idle"], initrd=initrd, memory_mib=320)
    log = tmp_path / "console.log"
    with open(log, "w") as out:
        run = subprocess.Popen([RUNU, "--root", root, "run", "--bundle", b, "gs-run"], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=out, env=base_env())
    try:
        wait_text(log, LINUX_MARK + "idle", run.pid, timeout=90)
        run.send_signal(signal.SIGTERM)
        code = run.wait(30)
        out = log.read_text(errors="replace")
        assert LINUX_MARK + "power button: powering off" in out, out[-3000:]
        assert code == 0, (code, out[-3000:])  # the guest's clean power-off, not 143
        assert os.listdir(root) == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        runu(root, "delete", "--force", "gs-run")  # the VMM outlives a killed `runu run`


def test_linux_guest_kill_is_immediate(tmp_path, root, linux_guest):
    pid, log = started_linux(tmp_path, root, linux_guest, "gs-linux-kill")
    try:
        assert runu(root, "kill", "gs-linux-kill", "KILL").returncode == 0
        st = wait_exit(pid, 10)
        assert st is not None and os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
        assert "powering off" not in log.read_text(errors="replace")
    finally:
        kill_and_reap(pid)


# ---------------------------------------------------------------------------------------------
# the protocol side, against fake VMMs (no VM needed)


class FakeContainer:
    def __init__(self, d: str) -> None:
        self.dir = d
        self.id = "fake"


def fake_vmm(tmp_path: Path, protocol: str, name: str, answers):
    """A control socket in tmp_path served by a thread: `answers(conn)` talks to runu's client; returns
    (container, thread, what the client sent)."""
    import socket
    import threading

    from mocktainer.unikraft import control

    (tmp_path / "control").write_bytes(control.record(protocol, name))
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(tmp_path / name))
    srv.listen(1)
    got: list[bytes] = []

    def serve():
        conn, _ = srv.accept()
        with conn, srv:
            answers(conn, got)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return FakeContainer(str(tmp_path)), t, got


def recv_line(conn) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


@pytest.mark.parametrize("error", [False, True])
def test_qmp_client(tmp_path, error):
    from mocktainer.unikraft import control

    def answers(conn, got):
        conn.sendall(b'{"QMP": {"version": {}, "capabilities": ["oob"]}}\r\n')
        got.append(recv_line(conn))
        conn.sendall(b'{"return": {}}\r\n')
        got.append(recv_line(conn))
        if error:
            conn.sendall(b'{"error": {"class": "GenericError", "desc": "nope"}}\r\n')
        else:  # the event may come before the answer
            conn.sendall(b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}\r\n'
                         b'{"return": {}}\r\n')

    c, t, got = fake_vmm(tmp_path, "qmp", "qmp.sock", answers)
    warnings: list[str] = []
    import mocktainer.error as merr

    old, merr.warning_sink = merr.warning_sink, warnings.append
    try:
        assert control.request_poweroff(c) is (not error)
    finally:
        merr.warning_sink = old
    t.join(5)
    assert [json.loads(g) for g in got] == [{"execute": "qmp_capabilities"}, {"execute": "system_powerdown"}]
    assert bool(warnings) is error and (not error or "nope" in warnings[0])


FULL = b'{"fault_message":"Internal VMM error: I8042 error: i8042 internal buffer full."}'


@pytest.mark.parametrize("status, body, accepted", [
    (b"204 ", b"", True),
    (b"400 ", FULL, True),  # an earlier Ctrl+Alt+Del is still pending: that is a delivered request
    (b"400 Bad Request", b'{"fault_message":"nope"}', False),
])
def test_firecracker_client(tmp_path, status, body, accepted):
    from mocktainer.unikraft import control

    def answers(conn, got):
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        head, _, request = data.partition(b"\r\n\r\n")
        length = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
        while len(request) < length:
            request += conn.recv(4096)
        got.append(head.split(b"\r\n")[0])
        got.append(request)
        conn.sendall(b"HTTP/1.1 " + status + b"\r\nServer: Firecracker API\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)

    c, t, got = fake_vmm(tmp_path, "firecracker", "firecracker.sock", answers)
    import mocktainer.error as merr

    old, merr.warning_sink = merr.warning_sink, lambda m: None
    try:
        assert control.request_poweroff(c) is accepted
    finally:
        merr.warning_sink = old
    t.join(5)
    assert got[0] == b"PUT /actions HTTP/1.1"
    assert json.loads(got[1]) == {"action_type": "SendCtrlAltDel"}


def test_no_control_record(tmp_path):
    from mocktainer.unikraft import control

    assert control.request_poweroff(FakeContainer(str(tmp_path))) is False
    (tmp_path / "control").write_text("qmp ../../etc/x\n")
    assert control.read_record(str(tmp_path)) is None
