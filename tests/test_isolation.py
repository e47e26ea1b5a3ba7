"""Hostile input and isolation: QEMU's seccomp sandbox and no_new_privs on the VMM, symlinks planted at the
--pid-file and --log targets or in the bundle."""

import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import base_env, needs_root, vmm_of

from harness.images import unikernel_bundle
from guest.build import build_tiny
from mocktainer.unikraft import qemu
from harness.runu import runu

pytestmark = [needs_root, pytest.mark.integration]

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNU = shutil.which("runu") or os.path.join(TOP, ".venv/bin/runu")
QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86 is not installed")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return build_tiny(str(tmp_path_factory.mktemp("kernels")), "pvh")


def make_bundle(tmp_path, kernel, args=("idle", "--"), name="bundle"):
    return unikernel_bundle(tmp_path / name, kernel, args, annotations={"org.unikraft.runu.accel": "tcg"},
                                    resources={"memory": {"limit": 160 * 1024 * 1024}})


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return fields


# ---- QEMU's seccomp sandbox ----------------------------------------------------------------

def test_seccomp_detection_reads_the_dynamic_section(tmp_path):
    assert not qemu.has_seccomp("/bin/busybox")  # static
    assert not qemu.has_seccomp(str(tmp_path / "missing"))
    (tmp_path / "junk").write_bytes(b"\x7fELF" + os.urandom(4000))
    assert not qemu.has_seccomp(str(tmp_path / "junk"))
    if QEMU:
        out = subprocess.run(["ldd", QEMU], capture_output=True, text=True).stdout
        assert qemu.has_seccomp(QEMU) == ("libseccomp.so" in out)


def test_sandbox_options():
    assert qemu.SANDBOX_ARGS[0] == "-sandbox" and qemu.SANDBOX_ARGS[1].startswith("on,")
    for word in ("obsolete=deny", "elevateprivileges=deny", "spawn=deny", "resourcecontrol=deny"):
        assert word in qemu.SANDBOX_ARGS[1]


@needs_qemu
def test_vmm_runs_sandboxed_with_no_new_privs(tmp_path, root, kernel):
    if not qemu.has_seccomp(QEMU):
        pytest.skip("this QEMU is built without seccomp")
    b = make_bundle(tmp_path, kernel)
    log = tmp_path / "out.log"
    with open(log, "w") as out:
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", b, "--pid-file", f"{b}/pid", "iso1"],
                           stdout=out, stderr=out, timeout=30, env=base_env())
    assert r.returncode == 0, log.read_text()
    pid = int(open(f"{b}/pid").read())
    assert runu(root, "start", "iso1").returncode == 0
    deadline = time.time() + 20
    while "idling" not in log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    assert "idling" in log.read_text(), log.read_text()  # the guest boots under the sandbox
    pid = vmm_of(pid)  # the VMM, child of the container's supervisor
    argv = open(f"/proc/{pid}/cmdline").read().split("\0")
    assert argv[argv.index("-sandbox") + 1] == qemu.SANDBOX_ARGS[1]
    st = proc_status(pid)
    assert st["Seccomp"] == "2", st  # SECCOMP_MODE_FILTER
    assert st["NoNewPrivs"] == "1", st  # libseccomp sets it when it loads the filter
    # only stdio and what runu means the VMM to have (the QMP directory and socket, the checked kernel it boots
    # as /proc/self/fd/4, read-only)
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    targets = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds if fd > 2}
    unexpected = {fd: t for fd, t in targets.items()
                  if not (t.startswith(("socket:", "anon_inode:", "pipe:", "/dev/kvm", "/dev/urandom"))
                          or t == os.path.join(root, "iso1")
                          or (fd == 4 and t == os.path.join(b, "rootfs/unikraft/bin/kernel")))}
    assert unexpected == {}, targets
    with open(f"/proc/{pid}/fdinfo/4") as f:
        assert int(f.read().split("flags:")[1].split()[0], 8) & os.O_ACCMODE == os.O_RDONLY
    assert runu(root, "kill", "iso1", "KILL").returncode == 0
    deadline = time.time() + 10
    while json.loads(runu(root, "state", "iso1").stdout)["status"] != "stopped" and time.time() < deadline:
        time.sleep(0.05)
    assert runu(root, "delete", "iso1").returncode == 0


# ---- symlinks at --pid-file and --log ------------------------------------------------------

@needs_qemu
def test_symlink_at_pid_file_is_replaced_not_followed(tmp_path, root, kernel):
    b = make_bundle(tmp_path, kernel)
    outside = tmp_path / "outside"
    outside.write_text("precious")
    pid_file = tmp_path / "pid"
    os.symlink(outside, pid_file)
    with open(tmp_path / "out.log", "w") as out:  # the VMM keeps its stdio: no pipe to wait on
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", b, "--pid-file", str(pid_file), "pf1"],
                           stdout=out, stderr=out, timeout=30, env=base_env())
    assert r.returncode == 0, (tmp_path / "out.log").read_text()
    assert outside.read_text() == "precious"
    assert not os.path.islink(pid_file) and pid_file.read_text().isdigit()  # the rename replaced the link
    assert runu(root, "delete", "--force", "pf1").returncode == 0


def test_symlink_at_log_is_not_followed(tmp_path, root):
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    log = tmp_path / "log.json"
    os.symlink(outside, log)
    r = subprocess.run([RUNU, "--root", root, "--log", str(log), "--log-format", "json", "state", "nope"],
                       capture_output=True, text=True, timeout=30, env=base_env())
    assert r.returncode == 1 and r.stderr.startswith("runu: "), r  # the error still reaches stderr
    assert outside.read_text() == "precious\n"
    assert os.readlink(log) == str(outside)
    # a dangling link is not followed to create its target either
    os.unlink(outside)
    r = subprocess.run([RUNU, "--root", root, "--log", str(log), "state", "nope"],
                       capture_output=True, text=True, timeout=30, env=base_env())
    assert r.returncode == 1 and not outside.exists()


# ---- symlinks in the bundle ----------------------------------------------------------------

def _create(root, b, cid="sl1"):
    r = runu(root, "create", "--bundle", b, cid)
    assert r.returncode == 1, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runu: "), r
    assert not os.path.exists(os.path.join(root, cid))
    return lines[0]


@needs_qemu
@pytest.mark.parametrize("what", ["rootfs", "unikraft", "bin", "kernel", "initrd"])
def test_symlinks_in_the_bundle_are_refused(tmp_path, root, kernel, what):
    b = make_bundle(tmp_path, kernel)
    rootfs = os.path.join(b, "rootfs")
    outside = tmp_path / "outside"
    outside.mkdir()
    if what == "rootfs":
        os.rename(rootfs, outside / "rootfs")
        os.symlink(outside / "rootfs", rootfs)
    elif what == "unikraft":
        os.rename(os.path.join(rootfs, "unikraft"), outside / "unikraft")
        os.symlink(outside / "unikraft", os.path.join(rootfs, "unikraft"))
    elif what == "bin":
        os.rename(os.path.join(rootfs, "unikraft", "bin"), outside / "bin")
        os.symlink(outside / "bin", os.path.join(rootfs, "unikraft", "bin"))
    elif what == "kernel":
        os.rename(os.path.join(rootfs, "unikraft", "bin", "kernel"), outside / "kernel")
        os.symlink(outside / "kernel", os.path.join(rootfs, "unikraft", "bin", "kernel"))
    else:
        (outside / "initrd").write_bytes(b"\0" * 512)
        os.symlink(outside / "initrd", os.path.join(rootfs, "unikraft", "bin", "initrd"))
    msg = _create(root, b)
    assert "symlink" in msg or "symbolic link" in msg, msg


@needs_qemu
def test_relative_symlink_inside_the_rootfs_is_refused_too(tmp_path, root, kernel):
    """Even a link that stays inside: the kernel is opened component by component with O_NOFOLLOW."""
    b = make_bundle(tmp_path, kernel)
    kdir = os.path.join(b, "rootfs", "unikraft", "bin")
    os.rename(os.path.join(kdir, "kernel"), os.path.join(kdir, "real"))
    os.symlink("real", os.path.join(kdir, "kernel"))
    assert "symbolic link" in _create(root, b)


# ---- symlinks in the state root ------------------------------------------------------------

def test_symlinked_container_dir_in_the_root_is_not_deleted_through(tmp_path, root):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "state.json").write_text("{}")
    (outside / "x").write_text("keep")
    os.makedirs(root, exist_ok=True)
    os.symlink(outside, os.path.join(root, "evil"))
    for args in (("delete", "evil"), ("delete", "--force", "evil"), ("kill", "evil", "KILL")):
        r = runu(root, *args)
        assert "Traceback" not in r.stderr, r
    assert sorted(os.listdir(outside)) == ["state.json", "x"]


def test_symlinked_container_dir_in_the_root_is_refused(tmp_path, root):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "state.json").write_text("not json")
    os.makedirs(root, exist_ok=True)
    os.symlink(outside, os.path.join(root, "evil"))
    r = runu(root, "state", "evil")
    assert r.returncode == 1 and "state.json" not in r.stderr, r
