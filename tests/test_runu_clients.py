"""runu driven by real clients, no mocks: containerd + ctr (runc shim v2) and podman + conmon.

The guest is the tiny test kernel (tests/guest): it prints ``Hello from the runu test kernel``,
its command line, how it parsed it (``uk: ...`` lines, read the way Unikraft 0.16 does) and an
``arg: WORD`` line per application argument, then exits through QEMU's
isa-debug-exit (``exit=N``: QEMU's, and so the container's, exit status is ``(N << 1) | 1``) or
idles (``idle``).  The images are built offline (umoci) with Entrypoint ``/unikraft/bin/kernel``,
so the image's Cmd / the client's extra args become the guest command line.  Both clients always
add environment variables (PATH, TERM, ...), which runu turns into ``env.vars=`` library parameters
before a ``--``; so the mode words (``idle``, ``exit=N``) must stand before an explicit ``--`` in
the args, or the guest takes them for application arguments.

Accelerator: PVH kernels run with runu's default (``auto``: KVM here, ~0.1 s); multiboot kernels
boot through SeaBIOS on ``-M pc``, which takes ~3.5 s under this host's paravirtual KVM, so those
containers get the annotation ``org.unikraft.runu.accel=tcg`` (which also proves the annotation
travels from the client to runu).

runu is reached through a launcher written per test session that runs this checkout's
``src/runu`` with the interpreter running the tests (the same launcher scripts/setup.sh installs
as /usr/local/bin/runu).  After every test nothing may be left: no QEMU of ours, no shim, no
conmon, no runu state directory (see ``assert_no_leaks``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

from harness.containerd import (Containerd, CtrIds, container_rm, ctr_run, task_delete, task_kill, task_ls,
    task_ps, wait_task_status)
from harness.images import build_image, busybox_rootfs, import_image, unikraft_rootfs
from harness.podman import Podman
from harness.procs import (become_subreaper, cmdline as proc_cmdline, eventually, processes_mentioning,
    read_stat, reap_zombies, require, run_cmd)
from harness.wait import wait_for
from conftest import vmm_of

from mocktainer import system

HERE = Path(__file__).resolve().parent

pytestmark = [
    pytest.mark.clients,
    pytest.mark.skipif(os.geteuid() != 0, reason="real container clients need root"),
]

SRC = HERE.parent / "src"
GREETING = "Hello from the runu test kernel"
ACCEL_ANNOTATION = "org.unikraft.runu.accel"
CREATE_FAILED = "OCI runtime create failed"
# an image without a kernel goes to the delegate OCI runtime (crun here), whose own error reaches the user
NO_KERNEL_MSG = "/unikraft/bin/kernel"
PODMAN_RUNU_ROOT = Path("/run/runu")  # podman passes no --root: runu's default is used
FORMATS = ("pvh", "multiboot")
# multiboot boots through SeaBIOS: ~3.5 s under this host's paravirtual KVM, ~0.1 s under TCG
ANNOTATIONS = {"pvh": {}, "multiboot": {ACCEL_ANNOTATION: "tcg"}}
IMAGE_CMD = ["exit=3", "--", "hello", "from-cmd"]
TIMEOUT = 30  # per client command; every run here takes well under a second or two
TTY_TIMEOUT = 10  # a tty run that ignores --console-socket hangs: fail fast


def exit_status(n: int) -> int:
    """The container's exit status when the guest asks isa-debug-exit for ``n``."""
    return (n << 1) | 1


def _load_guest_build():
    # by path: a plain "import build" could pick up PyPA's "build" package
    spec = importlib.util.spec_from_file_location("runu_tests_guest_build", HERE / "guest" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# fixtures: runu, kernels, images, clients


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()
    yield
    reap_zombies()


@pytest.fixture(scope="module")
def runu(tmp_path_factory) -> Path:
    """A launcher for this checkout's runu (what scripts/setup.sh puts in /usr/local/bin)."""
    path = tmp_path_factory.mktemp("runu-bin") / "runu"
    path.write_text(f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(SRC)!r})\n"
                    "from runu.main import main\nsys.exit(main())\n")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, tuple[str, Path]]:
    """{name: (ref, OCI archive)}: "pvh" and "multiboot" (the tiny kernel, Cmd IMAGE_CMD) and
    "nokernel" (a rootfs without unikraft/bin/kernel, same entrypoint) and "busybox" (a plain image, which runu
    hands to its delegate OCI runtime)."""
    require("umoci", "gcc", "ld", "objcopy", "qemu-system-x86_64")
    tmp = tmp_path_factory.mktemp("runu-images")
    build = _load_guest_build()
    out = {}
    for fmt in FORMATS:
        kernel = build.build_tiny(str(tmp / "kernels"), fmt)
        rootfs = unikraft_rootfs(tmp / f"rootfs-{fmt}", kernel)
        ref = f"localhost/runu-tests/tiny-{fmt}:latest"
        out[fmt] = (ref, build_image(rootfs, ref, entrypoint=["/unikraft/bin/kernel"],
                                             cmd=IMAGE_CMD, dest=tmp / f"tiny-{fmt}.oci.tar"))
    # a PVH kernel whose loadable segment claims more file than there is: runu accepts it, QEMU dies at boot
    kernel = build.broken_pvh(str(tmp / "kernels"))
    rootfs = unikraft_rootfs(tmp / "rootfs-broken", kernel)
    ref = "localhost/runu-tests/broken:latest"
    out["broken"] = (ref, build_image(rootfs, ref, entrypoint=["/unikraft/bin/kernel"],
                                              dest=tmp / "broken.oci.tar"))
    rootfs = tmp / "rootfs-nokernel"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("no kernel here\n")
    ref = "localhost/runu-tests/nokernel:latest"
    out["nokernel"] = (ref, build_image(rootfs, ref, entrypoint=["/unikraft/bin/kernel"],
                                                dest=tmp / "nokernel.oci.tar"))
    rootfs = busybox_rootfs(tmp / "rootfs-busybox")
    ref = "localhost/runu-tests/busybox:latest"
    out["busybox"] = (ref, build_image(rootfs, ref, cmd=["/bin/sh"], dest=tmp / "busybox.oci.tar"))
    return out


@pytest.fixture(scope="module")
def containerd(images):
    require("containerd", "ctr", "containerd-shim-runc-v2")
    with Containerd(cri=False) as cd:
        cd.images = {name: import_image(cd, tar, ref) for name, (ref, tar) in images.items()}
        yield cd


@pytest.fixture(scope="module")
def podman(images, runu):
    require("podman", "conmon")
    with Podman({"runu": runu}) as pm:
        pm.images = {name: pm.load(tar, ref) for name, (ref, tar) in images.items()
                     if name in ("pvh", "nokernel", "busybox")}
        yield pm
    assert not pm.base.exists()
    assert not pm.conmon_pids()


# ---------------------------------------------------------------------------------------------
# leak checks


def our_qemus(base: Path) -> list[int]:
    """Live QEMU processes booting a kernel below ``base`` (a client's private directory)."""
    return processes_mentioning(str(base) + "/", names=["qemu-system"])


def assert_no_leaks_podman(pm: Podman, cids: list[str]) -> None:
    eventually("podman containers left", lambda: pm.podman("ps", "-aq", check=True).stdout.split())
    eventually("conmon processes left", pm.conmon_pids)
    eventually("QEMU processes left", lambda: our_qemus(pm.base))
    eventually(f"runu state left in {PODMAN_RUNU_ROOT}",
                       lambda: [c for c in cids if (PODMAN_RUNU_ROOT / c).exists()])


@pytest.fixture
def ctr_ids(containerd):
    """Container ids a test hands out; afterwards cleaned up, then checked for leaks."""
    ids = CtrIds(containerd)
    yield ids
    ids.finish()


@pytest.fixture
def podman_cids(podman, tmp_path):
    """Container ids podman gave (read from --cidfile); afterwards checked for leaks."""
    files: list[Path] = []

    def cidfile() -> list[str]:
        files.append(tmp_path / f"cid-{len(files)}")
        return ["--cidfile", str(files[-1])]

    def read() -> list[str]:
        return [f.read_text().strip() for f in files if f.exists()]

    cidfile.read = read
    yield cidfile
    cids = read()
    if cids:
        podman.podman("rm", "--force", "--time", "0", *cids, timeout=TIMEOUT)
    assert_no_leaks_podman(podman, cids)


def vmm_fds(pid: int) -> dict[int, str]:
    """{fd: target} of a process."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            pass
    return out


def control_sockets(pid: int) -> set[str]:
    """`socket:[inode]` of the VMM's own control-socket listeners (graceful stop: QMP, Firecracker's API)."""
    out = set()
    with open(f"/proc/{pid}/net/unix") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if len(cols) >= 8 and cols[7].endswith(("/qmp.sock", "/firecracker.sock")):
                out.add(f"socket:[{cols[6]}]")
    return out


def supervisor_channel(pid: int) -> set[str]:
    """`socket:[inode]` of the VMM's end of its supervisor's private monitor (a socketpair whose other end
    the VMM's parent, the container's supervisor, holds; see unikraft/supervisor.py)."""
    import re
    import subprocess

    parent = system.proc_stat(pid)[1]
    peers, holders = {}, {}
    ss = ["nsenter", f"--net=/proc/{pid}/ns/net", "ss", "-xpn"]  # unix sockets are listed per network namespace
    for line in subprocess.run(ss, capture_output=True, text=True).stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8 or not cols[5].isdigit() or not cols[7].isdigit():
            continue
        peers[cols[5]] = cols[7]
        holders[cols[5]] = {int(p) for p in re.findall(r"pid=(\d+)", line)}
    return {f"socket:[{inode}]" for inode, peer in peers.items()
            if pid in holders.get(inode, ()) and parent in holders.get(peer, ())}


def assert_no_runtime_fds(pid: int, runu_root_dir: Path, cid: str) -> None:
    """The VMM inherited none of runu's descriptors: no pty master, no init socket, no exec fifo. It has
    the ones runu means it to have: its state directory (fd 3), where it binds its control socket, and
    its supervisor's monitor."""
    fds = vmm_fds(pid)
    ours = str(runu_root_dir) + "/"
    own = control_sockets(pid) | supervisor_channel(pid)
    leaked = {fd: t for fd, t in fds.items()
              if t in ("/dev/ptmx", "/dev/pts/ptmx") or (t.startswith("socket:") and t not in own)
              or (t.startswith(ours) and not (fd == 3 and t == ours + cid))}
    assert not leaked, fds
    assert fds.get(3) == ours + cid, fds


def guest_lines(text: str) -> list[str]:
    """The guest's lines, without the `uk: ` lines that say how it parsed its command line."""
    return [ln for ln in text.replace("\r", "").split("\n") if ln and not ln.startswith("uk: ")]


# ---------------------------------------------------------------------------------------------
# containerd + ctr


@pytest.mark.parametrize("fmt", FORMATS)
def test_ctr_run_rm_shows_guest_and_exit_status(containerd, runu, ctr_ids, fmt):
    """``ctr run --rm``: the guest's console is the task's stdout, its exit status ctr's."""
    cid = ctr_ids(f"rm-{fmt}")
    image = containerd.images[fmt]
    res = ctr_run(containerd, image, cid, runu, annotations=ANNOTATIONS[fmt], timeout=TIMEOUT)
    lines = guest_lines(res.stdout)
    assert lines and lines[0] == GREETING, res
    assert lines[1].startswith("cmdline: ") and lines[1].endswith(" exit=3 -- hello from-cmd"), lines
    assert "env.vars=PATH=" in lines[1]  # process.env reaches the guest command line
    assert lines[2:] == ["arg: hello", "arg: from-cmd", "bye 3"]
    assert res.returncode == exit_status(3), res
    assert res.stderr == ""

    # args on the ctr command line replace the image's Cmd
    cid2 = ctr_ids(f"rm-args-{fmt}")
    res = ctr_run(containerd, image, cid2, runu, "exit=5", "--", "one", "two", "three",
                          annotations=ANNOTATIONS[fmt], timeout=TIMEOUT)
    lines = guest_lines(res.stdout)
    assert lines[0] == GREETING and lines[1].endswith(" exit=5 -- one two three"), res
    assert lines[2:] == ["arg: one", "arg: two", "arg: three", "bye 5"]
    assert res.returncode == exit_status(5), res
    assert cid not in task_ls(containerd) and cid2 not in task_ls(containerd)


def test_ctr_run_vmm_dying_at_boot_gives_its_exit_status(containerd, runu, ctr_ids):
    """The VMM fails to load the kernel: `create` fails (the VMM is built then), ctr gets 1 and QEMU's
    message, and nothing of the container is left."""
    cid = ctr_ids("vmm-dies")
    res = ctr_run(containerd, containerd.images["broken"], cid, runu, annotations=ANNOTATIONS["pvh"],
                          timeout=TIMEOUT)
    assert res.returncode == 1, res
    assert "Error while loading elf kernel" in res.stdout + res.stderr, res
    assert cid not in task_ls(containerd)
    assert not (containerd.runtime_state_dir / cid).exists()
    assert our_qemus(containerd.base) == []


def test_ctr_run_detached_ps_kill_delete(containerd, runu, ctr_ids):
    """``ctr run -d`` of an idling guest, ``task ps`` (the QEMU pid), ``task kill``, ``task delete``."""
    cid = ctr_ids("det")
    res = ctr_run(containerd, containerd.images["multiboot"], cid, runu, "idle", "--", "detached",
                          detach=True, annotations=ANNOTATIONS["multiboot"], timeout=TIMEOUT)
    assert res.returncode == 0, res
    task = wait_task_status(containerd, cid, "RUNNING", timeout=10)
    pid = task["pid"]  # the VMM's supervisor (unikraft/supervisor.py)
    vmm = vmm_of(pid)
    assert task_ps(containerd, cid) == [pid, vmm]
    assert our_qemus(containerd.base) == [vmm]
    argv = proc_cmdline(vmm)
    assert os.path.basename(argv[0]) == "qemu-system-x86_64", argv
    assert argv[argv.index("-accel") + 1].split(",")[0] == "tcg"  # the annotation reached runu
    assert argv[argv.index("-M") + 1] == "pc"  # multiboot kernels boot on -M pc
    wait_for(lambda: "idling" in containerd.task_log(cid), "the guest to idle")
    log = guest_lines(containerd.task_log(cid))
    assert log[0] == GREETING and log[-2:] == ["arg: detached", "idling"], log
    fds = vmm_fds(vmm)
    assert fds[0] == "/dev/null" and fds[1].startswith("pipe:") and fds[2].startswith("pipe:"), fds
    assert_no_runtime_fds(vmm, containerd.runtime_state_dir, cid)

    # runu's view of it, in the root the shim gave runu
    state_dir = containerd.runtime_state_dir / cid
    assert (state_dir / "state.json").is_file()
    st = json.loads(run_cmd([runu, "--root", containerd.runtime_state_dir, "state", cid],
                                    timeout=TIMEOUT, check=True).stdout)
    assert st["status"] == "running" and st["pid"] == pid and st["id"] == cid

    # what a VM cannot do reaches the user as runu's message
    res = containerd.ctr("task", "exec", "--exec-id", "sh", cid, "/bin/sh", timeout=TIMEOUT)
    assert res.returncode != 0
    assert "OCI runtime exec failed: 'exec' is not supported for unikernels" in res.stderr, res.stderr

    # SIGTERM asks the guest to power off (graceful stop); the tiny kernel ignores the power button
    task_kill(containerd, cid, "SIGTERM", check=True, timeout=TIMEOUT)
    time.sleep(0.3)
    assert wait_task_status(containerd, cid, "RUNNING", timeout=10)["pid"] == pid
    task_kill(containerd, cid, "SIGKILL", check=True, timeout=TIMEOUT)
    wait_task_status(containerd, cid, "STOPPED", timeout=10)
    assert read_stat(pid) is None or read_stat(pid)[0] in "ZX"
    task_delete(containerd, cid, check=True, timeout=TIMEOUT)
    wait_task_status(containerd, cid, None, timeout=10)
    assert not state_dir.exists()  # runu delete removed it
    assert container_rm(containerd, cid, timeout=TIMEOUT).returncode == 0


def test_ctr_run_tty_guest_exits(containerd, runu, ctr_ids):
    """``ctr run -t``: runu hands the pty master to the shim's --console-socket, QEMU's serial
    console is on the pty, and the guest's exit status is ctr's."""
    cid = ctr_ids("tty")
    with ctr_run(containerd, containerd.images["pvh"], cid, runu, "exit=4", "--", "on-a-tty",
                         tty=True) as term:
        term.read_until(GREETING, timeout=TTY_TIMEOUT)
        assert term.wait(timeout=TTY_TIMEOUT) == exit_status(4), term.text
    lines = guest_lines(term.text)
    assert lines[0] == GREETING and lines[-2:] == ["arg: on-a-tty", "bye 4"], term.text
    assert "env.vars=TERM=" in lines[1]  # ctr -t adds TERM to the environment


def test_ctr_run_tty_idle_guest_killed(containerd, runu, ctr_ids):
    """An idling guest on a tty: QEMU's stdio is the pty slave; ``ctr task kill`` ends ``ctr run -t``."""
    cid = ctr_ids("ttyk")
    with ctr_run(containerd, containerd.images["multiboot"], cid, runu, "idle", "--",
                         annotations=ANNOTATIONS["multiboot"], tty=True) as term:
        term.read_until("idling", timeout=TTY_TIMEOUT)
        pid = wait_task_status(containerd, cid, "RUNNING", timeout=10)["pid"]
        sup = vmm_fds(pid)  # the supervisor: the terminal on all three
        assert sup[0].startswith("/dev/pts/") and sup[0] == sup[1] == sup[2], sup
        vmm = vmm_of(pid)
        fds = vmm_fds(vmm)  # the VMM: the terminal, and its stderr through the supervisor, which copies it there
        assert fds[0] == fds[1] == sup[0] and fds[2].startswith("pipe:"), fds
        assert_no_runtime_fds(vmm, containerd.runtime_state_dir, cid)
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        assert int(stat[3]) == pid and int(stat[4]) != 0  # session leader with a controlling tty
        assert os.isatty(term.master)
        task_kill(containerd, cid, "SIGKILL", check=True, timeout=TIMEOUT)
        status = term.wait(timeout=TTY_TIMEOUT)
    assert status == 128 + 9, term.text
    assert guest_lines(term.text)[0] == GREETING


@pytest.mark.parametrize("case", ["nokernel", "bad-accel"])
def test_ctr_create_failure_shows_runu_message(containerd, runu, ctr_ids, case):
    """A failing ``runu create`` reaches the user as containerd's "OCI runtime create failed: <msg>" (for an
    image without a kernel, the message of the delegate OCI runtime that runu handed it to)."""
    cid = ctr_ids(f"fail-{case}")
    if case == "nokernel":
        image, annotations, msg = containerd.images["nokernel"], {}, NO_KERNEL_MSG
    else:
        image, annotations = containerd.images["pvh"], {ACCEL_ANNOTATION: "warp-drive"}
        msg = f"annotation {ACCEL_ANNOTATION}='warp-drive' is not a valid accelerator"
    res = ctr_run(containerd, image, cid, runu, annotations=annotations, timeout=TIMEOUT)
    assert res.returncode != 0, res
    assert CREATE_FAILED in res.stderr and msg in res.stderr, res.stderr
    assert GREETING not in res.stdout
    assert not (containerd.runtime_state_dir / cid).exists()
    assert not (containerd.runtime_state_dir / "@delegate" / cid).exists()


def test_ctr_run_plain_image_is_a_real_container(containerd, runu, ctr_ids):
    """A busybox image through runu: the delegate OCI runtime runs it as a real container (PID 1 of its own
    PID namespace, the image's root), ``task exec`` works, ``--rm`` leaves no state in either directory."""
    cid = ctr_ids("plain")
    script = "echo pid=$$; ls /; readlink /proc/self/ns/pid"
    res = ctr_run(containerd, containerd.images["busybox"], cid, runu, "/bin/sh", "-c", script,
                          timeout=TIMEOUT)
    assert res.returncode == 0, res
    out = res.stdout.split()
    assert out[0] == "pid=1", out
    assert "bin" in out and "work" not in out and "usr" not in out, out  # the image's root, not the host's
    assert out[-1] != os.readlink("/proc/self/ns/pid"), out
    for d in (containerd.runtime_state_dir, containerd.runtime_state_dir / "@delegate"):
        assert not (d / cid).exists(), d

    cid = ctr_ids("plain-exec")
    res = ctr_run(containerd, containerd.images["busybox"], cid, runu, "/bin/sleep", "30", detach=True,
                          timeout=TIMEOUT)
    assert res.returncode == 0, res
    pid = wait_task_status(containerd, cid, "RUNNING", timeout=10)["pid"]
    assert (containerd.runtime_state_dir / "@delegate" / cid).is_dir()  # the delegate's state, under runu's root
    assert not (containerd.runtime_state_dir / cid).exists()
    res = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "/bin/sh", "-c", "echo exec-says-hi; echo $$",
                         timeout=TIMEOUT)
    assert res.returncode == 0 and res.stdout.split()[0] == "exec-says-hi", res
    assert task_ps(containerd, cid)[0] == pid
    listed = json.loads(run_cmd([runu, "--root", containerd.runtime_state_dir, "list", "--format", "json"],
                                        timeout=TIMEOUT, check=True).stdout)
    assert [(i["id"], i["pid"], i["status"]) for i in listed] == [(cid, pid, "running")]
    task_kill(containerd, cid, "SIGKILL", check=True, timeout=TIMEOUT)
    wait_task_status(containerd, cid, "STOPPED", timeout=10)
    task_delete(containerd, cid, check=True, timeout=TIMEOUT)
    wait_task_status(containerd, cid, None, timeout=10)
    assert not (containerd.runtime_state_dir / "@delegate" / cid).exists()


# ---------------------------------------------------------------------------------------------
# podman + conmon


def test_podman_run_rm_shows_guest(podman, podman_cids):
    """``podman run --rm --runtime runu`` (runu registered in containers.conf)."""
    res = podman.run(podman.images["pvh"], runtime="runu", extra=podman_cids(), timeout=TIMEOUT)
    lines = guest_lines(res.stdout)
    assert lines and lines[0] == GREETING, res
    # podman's /etc/hosts, /etc/hostname, /etc/resolv.conf and /run/.containerenv: two 9p shares for Unikraft
    # podman's /etc files and its /run/.containerenv become two shares, numbered in the spec's mount order,
    # which podman does not keep the same from run to run
    assert any(lines[1].endswith(f" exit=3 vfs.fstab=[ m0:{a}:9pfs:::mkmp m1:{b}:9pfs:::mkmp ] -- hello from-cmd")
               for a, b in (("/etc", "/run"), ("/run", "/etc"))), lines
    assert "env.vars=container=podman" in lines[1]
    assert lines[2:] == ["arg: hello", "arg: from-cmd", "bye 3"]
    assert res.returncode == exit_status(3), res
    (cid,) = podman_cids.read()
    assert not (PODMAN_RUNU_ROOT / cid).exists()


def test_podman_run_tty(podman, podman_cids):
    """``podman run -it``: conmon gets the pty master from runu's --console-socket."""
    with podman.run(podman.images["pvh"], "exit=6", "--", "podman-tty", runtime="runu", tty=True,
                    extra=podman_cids()) as term:
        term.read_until(GREETING, timeout=TTY_TIMEOUT)
        assert term.wait(timeout=TTY_TIMEOUT) == exit_status(6), term.text
    lines = guest_lines(term.text)
    assert lines[0] == GREETING and lines[-2:] == ["arg: podman-tty", "bye 6"], term.text
    assert "env.vars=TERM=" in lines[1]


def test_podman_run_it_ctrl_c_stops_idle_guest(podman, podman_cids):
    """``podman run -it``: what is typed reaches the VMM's pty; ^C is SIGINT to QEMU, which ends."""
    with podman.run(podman.images["pvh"], "idle", "--", runtime="runu", tty=True,
                    extra=podman_cids()) as term:
        term.read_until("idling", timeout=TTY_TIMEOUT)
        term.send(b"\x03")
        assert term.wait(timeout=TTY_TIMEOUT) == 0, term.text  # QEMU exits 0 on SIGINT
    assert "terminating on signal 2" in term.text


def test_podman_run_detached_logs_exec_stop(podman, podman_cids):
    """``podman run -d`` of an idling guest, ``logs``, ``exec`` (refused), ``stop`` (SIGTERM), ``rm``."""
    res = podman.run(podman.images["pvh"], "idle", "--", "podman-detached", runtime="runu",
                     detach=True, rm=False, extra=podman_cids(), timeout=TIMEOUT, check=True)
    cid = res.stdout.strip()
    assert podman_cids.read() == [cid]
    wait_for(lambda: "idling" in podman.podman("logs", cid, timeout=TIMEOUT).stdout, "the guest to idle")
    logs = guest_lines(podman.podman("logs", cid, timeout=TIMEOUT, check=True).stdout)
    assert logs[0] == GREETING and logs[-2:] == ["arg: podman-detached", "idling"], logs
    pid = int(podman.podman("inspect", "--format", "{{.State.Pid}}", cid, timeout=TIMEOUT,
                            check=True).stdout)
    vmm = vmm_of(pid)  # the container's pid is the VMM's supervisor
    assert os.path.basename(proc_cmdline(vmm)[0]) == "qemu-system-x86_64"
    assert our_qemus(podman.base) == [vmm]
    assert (PODMAN_RUNU_ROOT / cid / "state.json").is_file()

    res = podman.podman("exec", cid, "/bin/sh", timeout=TIMEOUT)
    assert res.returncode != 0
    assert "'exec' is not supported for unikernels" in res.stderr, res.stderr

    # SIGTERM asks the guest to power off (graceful stop); the tiny kernel ignores it, so podman kills it
    # after --time
    t = time.monotonic()
    podman.podman("stop", "--time", "1", cid, timeout=TIMEOUT, check=True)
    assert time.monotonic() - t >= 1
    state = podman.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", cid,
                          timeout=TIMEOUT, check=True).stdout.split()
    assert state == ["exited", "137"]
    assert read_stat(pid) is None or read_stat(pid)[0] in "ZX"
    podman.podman("rm", cid, timeout=TIMEOUT, check=True)
    assert not (PODMAN_RUNU_ROOT / cid).exists()


def test_podman_run_plain_image(podman, podman_cids):
    """``podman run --runtime runu`` of a plain image: the delegate OCI runtime runs it as a real container."""
    res = podman.run(podman.images["busybox"], "/bin/sh", "-c", "echo pid=$$; ls /", runtime="runu",
                     extra=podman_cids(), timeout=TIMEOUT)
    assert res.returncode == 0, res
    out = res.stdout.split()
    assert out[0] == "pid=1" and "bin" in out and "work" not in out, res
    (cid,) = podman_cids.read()
    assert not (PODMAN_RUNU_ROOT / cid).exists() and not (PODMAN_RUNU_ROOT / "@delegate" / cid).exists()


def test_podman_create_failure_shows_runu_message(podman, podman_cids):
    res = podman.run(podman.images["nokernel"], runtime="runu", extra=podman_cids(), timeout=TIMEOUT)
    assert res.returncode != 0, res
    assert NO_KERNEL_MSG in res.stderr, res.stderr
