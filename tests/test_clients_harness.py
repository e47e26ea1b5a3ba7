"""Prove the client harness (tests/harness/) with Debian's runc (and crun): real containerd + ctr and podman + conmon.

The runtime is always reached through a tiny logging wrapper script, so each test also checks that
the client really called the binary it was given (and with which flags).  Pointing these helpers at
runu later means passing its path instead of the wrapper's target.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from harness.containerd import (Containerd, container_rm, ctr_cleanup, ctr_run, task_delete, task_kill,
    task_ls, task_ps, wait_task_status)
from harness.fs import mounts_under
from harness.images import build_image, busybox_rootfs, import_image, unikraft_rootfs
from harness.podman import Podman
from harness.procs import become_subreaper, cmdline, crun_cgroup_problem, read_stat, reap_zombies, require, unique_id

pytestmark = [
    pytest.mark.clients,
    pytest.mark.skipif(os.geteuid() != 0, reason="real container clients need root"),
]

RUNTIMES = {"runc": "/usr/sbin/runc", "crun": "/usr/bin/crun"}


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()
    yield
    reap_zombies()


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request, tmp_path):
    """(name, wrapper path, call log): a shell wrapper that logs its argv and execs the runtime."""
    name = request.param
    real = RUNTIMES[name]
    require(real)
    if name == "crun" and (why := crun_cgroup_problem()):
        pytest.skip(why)
    log = tmp_path / f"{name}-calls.log"
    log.touch()
    wrapper = tmp_path / f"logged-{name}"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return name, wrapper, log


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory):
    require("umoci", "busybox")
    tmp = tmp_path_factory.mktemp("busybox-image")
    rootfs = busybox_rootfs(tmp / "rootfs")
    return build_image(rootfs, "localhost/mocktainer/busybox:latest",
                               cmd=["echo", "hello from the image"], dest=tmp / "busybox.oci.tar")


@pytest.fixture(scope="module")
def containerd(busybox_tar):
    require("containerd", "ctr", "containerd-shim-runc-v2")
    with Containerd() as cd:
        cd.image = import_image(cd, busybox_tar, "localhost/mocktainer/busybox:latest")
        yield cd


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


# ---------------------------------------------------------------------------------------------
# building images (umoci only)


def test_build_image_with_unikraft_kernel(tmp_path):
    require("umoci")
    kernel = b"\x7fELF" + bytes(range(256)) * 4
    rootfs = unikraft_rootfs(tmp_path / "rootfs", kernel, initrd=b"initrd-bytes")
    tar_path = build_image(rootfs, "uk-hello", entrypoint=["/unikraft/bin/kernel"],
                                   cmd=["-h"], annotations={"org.example.k": "v"},
                                   labels={"org.example.l": "w"})
    assert tar_path == tmp_path / "rootfs.oci.tar"
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        assert {"oci-layout", "index.json"} <= set(names)
        blob = lambda digest: json.load(tar.extractfile("blobs/sha256/" + digest.split(":")[1]))  # noqa: E731
        index = json.load(tar.extractfile("index.json"))
        (desc,) = index["manifests"]
        assert desc["annotations"]["org.opencontainers.image.ref.name"] == "localhost/uk-hello:latest"
        manifest = blob(desc["digest"])
        assert manifest["annotations"] == {"org.example.k": "v"}
        config = blob(manifest["config"]["digest"])["config"]
        assert config["Entrypoint"] == ["/unikraft/bin/kernel"] and config["Cmd"] == ["-h"]
        assert config["Labels"] == {"org.example.l": "w"}
        (layer,) = manifest["layers"]
        with tarfile.open(fileobj=tar.extractfile("blobs/sha256/" + layer["digest"].split(":")[1])) as lt:
            member = lt.getmember("unikraft/bin/kernel")
            assert member.isfile() and lt.extractfile(member).read() == kernel
            assert lt.extractfile("unikraft/bin/initrd").read() == b"initrd-bytes"


def test_import_unikraft_image_into_containerd(tmp_path, containerd):
    rootfs = unikraft_rootfs(tmp_path / "rootfs", b"\x7fELF-not-really")
    tar_path = build_image(rootfs, "localhost/uk/kernel-only:v1", cmd=["arg"])
    ref = import_image(containerd, tar_path, "localhost/uk/kernel-only:v1")
    assert ref == "localhost/uk/kernel-only:v1"
    containerd.ctr("image", "rm", ref, check=True)


# ---------------------------------------------------------------------------------------------
# containerd + ctr


def test_ctr_run_rm_prints_line(containerd, runtime):
    name, wrapper, log = runtime
    cid = unique_id("rm")
    try:
        res = ctr_run(containerd, containerd.image, cid, wrapper, "echo", f"hello via {name}",
                              check=True)
        assert res.stdout == f"hello via {name}\n"
        res = ctr_run(containerd, containerd.image, cid + "-cmd", wrapper, check=True)
        assert res.stdout == "hello from the image\n"
    finally:
        ctr_cleanup(containerd, cid)
        ctr_cleanup(containerd, cid + "-cmd")
    lines = calls(log)
    assert any(re.search(rf"--log-format json create --bundle \S+ --pid-file \S+ {cid}$", ln) for ln in lines)
    # the shim appends the namespace to --runc-root, like its default /run/containerd/runc/<ns>
    assert all(ln.startswith(f"--root {containerd.runtime_root}/{containerd.namespace} ") for ln in lines)
    assert cid not in task_ls(containerd)


def test_ctr_run_detached_ps_kill_delete(containerd, runtime):
    name, wrapper, log = runtime
    cid = unique_id("det")
    script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"
    try:
        ctr_run(containerd, containerd.image, cid, wrapper, "sh", "-c", script,
                        detach=True, check=True)
        task = wait_task_status(containerd, cid, "RUNNING")
        pids = task_ps(containerd, cid)
        assert task["pid"] in pids
        assert cmdline(task["pid"])[:2] == ["sh", "-c"]
        deadline = time.monotonic() + 10
        while "ready" not in containerd.task_log(cid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "ready" in containerd.task_log(cid)
        task_kill(containerd, cid, "SIGTERM", check=True)
        wait_task_status(containerd, cid, "STOPPED")
        task_delete(containerd, cid, check=True)
        wait_task_status(containerd, cid, None)
        assert "got-term" in containerd.task_log(cid)
        container_rm(containerd, cid, check=True)
    finally:
        ctr_cleanup(containerd, cid)
    verbs = [ln.split()[6] if ln.startswith("--root") else ln for ln in calls(log)]
    assert verbs[:2] == ["create", "start"]
    assert "ps" in verbs and "kill" in verbs and "delete" in verbs
    assert f"--format json {cid}" in "\n".join(calls(log))


def test_ctr_run_tty(containerd, runtime):
    name, wrapper, log = runtime
    cid = unique_id("tty")
    try:
        with ctr_run(containerd, containerd.image, cid, wrapper, "sh", tty=True) as term:
            term.read_until("# ", timeout=20)
            term.send("echo tty-$((40+2))\n")
            term.read_until(re.compile(rb"tty-42\r*\n"), timeout=20)
            term.send("exit 3\n")
            assert term.wait(timeout=20) == 3
    finally:
        ctr_cleanup(containerd, cid)
    assert any("--console-socket" in ln and ln.endswith(cid) for ln in calls(log))


def test_ctr_run_tty_plain_output(containerd, runtime):
    name, wrapper, _log = runtime
    cid = unique_id("ttyo")
    try:
        term = ctr_run(containerd, containerd.image, cid, wrapper, "echo", "line on a tty",
                               tty=True)
        with term:
            assert term.wait(timeout=20) == 0
            assert "line on a tty\n" in term.text
    finally:
        ctr_cleanup(containerd, cid)


def test_containerd_stop_cleans_up(busybox_tar, tmp_path):
    require("containerd", "ctr", "containerd-shim-runc-v2", RUNTIMES["runc"])
    cd = Containerd()
    try:
        cd.start()
        ref = import_image(cd, busybox_tar, "localhost/mocktainer/busybox:latest")
        cid = unique_id("left")
        ctr_run(cd, ref, cid, RUNTIMES["runc"], "sleep", "1000", detach=True, check=True)
        task = wait_task_status(cd, cid, "RUNNING")
        shims = cd.shim_pids()
        assert len(shims) == 1
        assert mounts_under(cd.base)
        assert any(os.path.isdir(f"/sys/fs/cgroup/{c}/{cd.namespace}") for c in ("memory", "pids", ""))
    finally:
        cd.stop()
    cd.stop()  # idempotent
    assert not cd.base.exists()
    assert read_stat(task["pid"]) is None
    assert all(read_stat(p) is None for p in shims)
    assert not cd.shim_pids()
    assert not [d for d in os.listdir("/sys/fs/cgroup")
                if os.path.exists(f"/sys/fs/cgroup/{d}/{cd.namespace}")]


# ---------------------------------------------------------------------------------------------
# podman + conmon


@pytest.fixture
def podman_with(runtime):
    require("podman", "conmon")
    name, wrapper, log = runtime
    custom = f"harness-{name}"
    with Podman({custom: wrapper}) as pm:
        yield pm, custom, log
    assert not pm.base.exists()
    assert not pm.conmon_pids()


def test_podman_run_rm_prints_line(podman_with, busybox_tar):
    pm, custom, log = podman_with
    ref = pm.load(busybox_tar, "localhost/mocktainer/busybox:latest")
    res = pm.run(ref, "echo", f"hello via {custom}", runtime=custom, check=True)
    assert res.stdout == f"hello via {custom}\n"
    assert pm.podman("ps", "-aq", check=True).stdout.strip() == ""
    lines = calls(log)
    create = [ln for ln in lines if " create " in f" {ln} "]
    assert create and create[0].startswith("--log-format=json --log ")  # runtime_supports_json works
    assert not any(ln.startswith("--root") for ln in lines)             # podman passes no --root
    cid = create[0].split()[-1]
    assert f"start {cid}" in lines and f"delete --force {cid}" in lines


def test_podman_run_tty(podman_with, busybox_tar):
    pm, custom, log = podman_with
    ref = pm.load(busybox_tar, "localhost/mocktainer/busybox:latest")
    with pm.run(ref, "sh", runtime=custom, tty=True) as term:
        term.read_until("# ", timeout=20)
        term.send("echo pod-$((6*7))\n")
        term.read_until(re.compile(rb"pod-42\r*\n"), timeout=20)
        term.send("exit 4\n")
        assert term.wait(timeout=30) == 4
    assert any("--console-socket" in ln for ln in calls(log))


# ---------------------------------------------------------------------------------------------
# process plumbing


def test_reap_zombies_leaves_popen_children_alone():
    proc = subprocess.Popen(["sh", "-c", "exit 5"])
    # an orphan: sh starts a background sleep and exits; the sleep re-parents to us (subreaper)
    subprocess.run(["sh", "-c", "sleep 0.2 & echo $! > /dev/null"], check=True)
    deadline = time.monotonic() + 10
    reaped = []
    while time.monotonic() < deadline:
        reaped += reap_zombies()
        if reaped and (st := read_stat(proc.pid)) and st[0] == "Z":
            break
        time.sleep(0.05)
    assert reaped, "the orphaned sleep was not adopted and reaped"
    assert proc.pid not in reaped
    assert proc.wait(5) == 5
