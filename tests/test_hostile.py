"""Hostile bundles, corrupt state and careless callers (issue 12): each input gets a one-line error naming it,
exit status 1, and leaves nothing behind (state, process, cgroup, socket); what runu checks is what runs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from conftest import needs_root
from runu_helpers import Runtime, assert_error, spec, wait_for, write_bundle

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clients  # noqa: E402
from guest.build import build_tiny  # noqa: E402

pytestmark = [needs_root, pytest.mark.integration]

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86 is not installed")
GREETING = "Hello from the runu test kernel"
TCG = {"org.unikraft.runu.accel": "tcg"}


@pytest.fixture
def rt(tmp_path):
    r = Runtime("runu", str(tmp_path))
    yield r
    r.cleanup()


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels")
    return {fmt: build_tiny(str(out), fmt) for fmt in ("pvh", "multiboot")}


def unikernel(path, kernel, args=("idle",), initrd=None, annotations=None, resources=clients.KEEP) -> str:
    return clients.unikernel_bundle(path, kernel, args, initrd=initrd, annotations=dict(TCG, **(annotations or {})),
                                    resources=resources)


def nothing_left(rt: Runtime, cid: str) -> None:
    """No state, no process, no default cgroup of `cid`."""
    assert cid not in rt.ids()
    assert rt.new_processes() == []
    assert not any(cid in d for _, dirs, _ in os.walk("/sys/fs/cgroup/runu") for d in dirs)


def vmm_output(rt: Runtime, cid: str, bundle: str) -> str:
    with open(os.path.join(bundle, "out"), "wb") as out:
        r = subprocess.run([rt.binary, *rt.global_flags(), "run", "--bundle", bundle, cid], stdout=out,
                           stderr=subprocess.STDOUT, timeout=60)
    with open(os.path.join(bundle, "out"), errors="replace") as f:
        return f"rc={r.returncode}\n" + f.read()


# ---- reaching outside the bundle -------------------------------------------------------------

@needs_qemu
@pytest.mark.parametrize("swap", ["symlink", "file", "rootfs"])
def test_vmm_boots_the_kernel_checked_at_create(tmp_path, rt, kernels, swap):
    """A kernel swapped between create and start (for a symlink to a host file, another file, or the whole
    rootfs for one pointing elsewhere) changes nothing: the VMM opens the very file create checked."""
    b = unikernel(tmp_path / "b", kernels["pvh"], args=["exit=3"])
    out = tmp_path / "console"
    with open(out, "wb") as f:  # the VMM's console: the container's stdout, inherited from create
        subprocess.run([rt.binary, *rt.global_flags(), "create", "--bundle", b, "swap"], stdout=f, check=True,
                       timeout=30)
    kpath = os.path.join(b, "rootfs/unikraft/bin/kernel")
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"not a kernel at all" * 100)
    if swap == "symlink":
        os.rename(kpath, kpath + ".old")
        os.symlink(str(decoy), kpath)
    elif swap == "file":
        os.unlink(kpath)
        shutil.copy(str(decoy), kpath)
    else:
        other = tmp_path / "other" / "unikraft" / "bin"
        other.mkdir(parents=True)
        shutil.copy(str(decoy), other / "kernel")
        os.rename(os.path.join(b, "rootfs"), os.path.join(b, "rootfs.old"))
        os.symlink(str(tmp_path / "other"), os.path.join(b, "rootfs"))
    rt.ok("start", "swap")
    wait_for(lambda: rt.status("swap") == "stopped", 60, "the guest to exit")
    assert GREETING in out.read_text(errors="replace"), out.read_text(errors="replace")
    rt.ok("delete", "swap")
    nothing_left(rt, "swap")


@needs_qemu
def test_vmm_argv_names_inherited_fds_not_bundle_paths(tmp_path, rt, kernels):
    b = unikernel(tmp_path / "b", kernels["multiboot"], initrd=b"initrd-bytes")
    rt.create("fds", b)
    rt.ok("start", "fds")
    vmm = rt.state("fds")["pid"]
    wait_for(lambda: open(f"/proc/{vmm}/comm").read().startswith("qemu"), 10, "the VMM")
    with open(f"/proc/{vmm}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    kernel = argv[argv.index(b"-kernel") + 1].decode()
    initrd = argv[argv.index(b"-initrd") + 1].decode()
    assert kernel.startswith("/proc/self/fd/") and initrd.startswith("/proc/self/fd/"), argv
    for arg, name in ((kernel, "kernel"), (initrd, "initrd")):
        target = os.readlink(f"/proc/{vmm}/fd/{arg.rsplit('/', 1)[1]}")
        assert target == os.path.join(b, "rootfs/unikraft/bin", name)
    rt.ok("delete", "--force", "fds")
    nothing_left(rt, "fds")


@needs_qemu
@pytest.mark.parametrize("name", ["with space", "with,comma", "both ,x=y"])
def test_bundle_path_with_qemu_syntax_boots(tmp_path, rt, kernels, name):
    """A bundle (and so the initrd of a multiboot kernel, a QEMU module list) under a path with a blank or a
    comma boots: no path of the bundle is parsed as QEMU syntax."""
    b = unikernel(tmp_path / name, kernels["multiboot"], args=["exit=2"], initrd=b"initrd-bytes")
    out = vmm_output(rt, "qsyntax", b)
    assert GREETING in out, out
    assert out.startswith("rc=5\n"), out  # (2 << 1) | 1
    nothing_left(rt, "qsyntax")


@needs_qemu
def test_initrd_swapped_for_a_fifo_does_not_hang(tmp_path, rt, kernels):
    b = unikernel(tmp_path / "b", kernels["multiboot"], args=["exit=1"], initrd=b"initrd-bytes")
    rt.create("fifo", b)
    ipath = os.path.join(b, "rootfs/unikraft/bin/initrd")
    os.unlink(ipath)
    os.mkfifo(ipath)
    rt.ok("start", "fifo", timeout=20)
    wait_for(lambda: rt.status("fifo") == "stopped", 60, "the guest to exit")
    rt.ok("delete", "fifo")
    nothing_left(rt, "fifo")


def test_initrd_that_is_a_fifo_is_refused_at_create(tmp_path, rt, kernels):
    b = unikernel(tmp_path / "b", kernels["multiboot"])
    os.mkfifo(os.path.join(b, "rootfs/unikraft/bin/initrd"))
    res = rt("create", "--bundle", b, "fifo", timeout=20)
    assert_error(rt, res, ["initrd", "not a regular file"])
    nothing_left(rt, "fifo")
