"""Unikernels boot: the tiny test kernel (tests/guest) in real QEMU from the argv `plan()` makes.

The unit tests of mocktainer.unikraft live in tests/unit/mocktainer/unikraft/."""

import os
import select
import shutil
import subprocess
import time

import pytest

from harness.unikernels import runu_plan, unikraft_argv
from mocktainer.unikraft import host

GUEST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest")


GREETING = "Hello from the runu test kernel"


HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None or os.path.exists(
    "/usr/bin/qemu-system-x86_64")


HAVE_BUILDER = os.path.exists(os.path.join(GUEST_DIR, "build.py")) and shutil.which("gcc")


integration = pytest.mark.skipif(not (HAVE_QEMU and HAVE_BUILDER),
                                 reason="needs qemu-system-x86_64, gcc and tests/guest/build.py")


@pytest.fixture(scope="module")
def tiny_kernels(tmp_path_factory):
    from guest import build
    out = str(tmp_path_factory.mktemp("tiny"))
    return {fmt: build.build_tiny(out, fmt) for fmt in ("pvh", "multiboot")}


def unikernel_bundle(tmp_path, kernel_path):
    root = tmp_path / "rootfs"
    (root / "unikraft" / "bin").mkdir(parents=True)
    shutil.copy(kernel_path, root / "unikraft" / "bin" / "kernel")
    return root


def run_vmm(p, timeout=120):
    """Run the planned VMM like the container init would: argv and env from the plan."""
    env = dict(e.split("=", 1) for e in p.env)
    proc = subprocess.Popen(p.args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


ACCELS = ["tcg", "auto"]


@integration
@pytest.mark.integration
@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("fmt,machine", [("pvh", "microvm"), ("multiboot", "pc")])
def test_boot_exit_status_and_args(tmp_path, tiny_kernels, fmt, machine, accel):
    root = unikernel_bundle(tmp_path, tiny_kernels[fmt])
    spec = {"annotations": {"org.unikraft.runu.accel": accel},
            "process": {"args": ["/unikraft/bin/kernel", "exit=5", "--", "hello", "world"],
                        "env": ["GREETING=hi"]}}
    p = runu_plan(spec, str(root), {"PATH": "/nonexistent"})
    assert p.kernel.boot_protocol == fmt and p.machine == machine
    assert os.path.dirname(p.args[0]) in host.SYSTEM_DIRS
    t0 = time.monotonic()
    rc, out, err = run_vmm(p)
    elapsed = time.monotonic() - t0
    assert GREETING in out, (out, err)
    lines = out.splitlines()
    cmdline = [ln for ln in lines if ln.startswith("cmdline: ")][0]
    # multiboot: QEMU puts the kernel path first, as Unikraft expects.
    assert cmdline.endswith("env.vars=GREETING=hi exit=5 -- hello world"), cmdline
    assert "arg: hello" in lines and "arg: world" in lines
    assert "bye 5" in lines
    assert rc == (5 << 1) | 1, (rc, out, err)
    assert err == "", err  # nothing from QEMU on stderr (no CPU feature warnings)
    print("%s/%s (%s) booted and exited in %.0f ms" % (fmt, machine, p.accel, elapsed * 1000))


@integration
@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
def test_guest_reset_ends_vmm(tmp_path, tiny_kernels, fmt):
    root = unikernel_bundle(tmp_path, tiny_kernels[fmt])
    p = runu_plan({"process": {"args": ["reset"]}}, str(root), {"RUNU_ACCEL": "tcg"})
    rc, out, err = run_vmm(p)
    assert "bye reset" in out, (out, err)
    assert rc == 0


@integration
@pytest.mark.integration
def test_awkward_args_reach_guest_verbatim(tmp_path, tiny_kernels):
    root = unikernel_bundle(tmp_path, tiny_kernels["pvh"])
    args = ["/unikraft/bin/kernel", "--", "two words", "it's", 'say "hi"']
    p = runu_plan({"process": {"args": args}}, str(root), {"RUNU_ACCEL": "tcg"})
    rc, out, err = run_vmm(p)
    cmdline = [ln for ln in out.splitlines() if ln.startswith("cmdline: ")][0]
    assert cmdline == "cmdline: " + p.cmdline
    assert unikraft_argv(cmdline[len("cmdline: "):]) == ("/unikraft/bin/kernel", [], args[2:])
    assert [ln[5:] for ln in out.splitlines() if ln.startswith("arg: ")] == args[2:]
    assert rc == 1  # exit=0 by default


@integration
@pytest.mark.integration
def test_idle_guest_on_a_pty_is_killed(tmp_path, tiny_kernels):
    """A pty as the VMM's stdio (ctr run -t): the console shows there; SIGKILL ends it."""
    root = unikernel_bundle(tmp_path, tiny_kernels["pvh"])
    p = runu_plan({"process": {"args": ["idle"]}, "terminal": True}, str(root),
                    {"RUNU_ACCEL": "tcg"})
    master, slave = os.openpty()
    env = dict(e.split("=", 1) for e in p.env)
    proc = subprocess.Popen(p.args, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    buf = b""
    try:
        deadline = time.monotonic() + 60
        while b"idling" not in buf and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 1)
            if r:
                try:
                    buf += os.read(master, 4096)
                except OSError:
                    break
        assert GREETING.encode() in buf and b"idling" in buf, buf
        assert proc.poll() is None  # idles until killed
    finally:
        proc.kill()
        proc.wait(timeout=30)
        os.close(master)
    assert proc.returncode == -9
