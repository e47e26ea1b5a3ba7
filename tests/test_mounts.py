"""OCI mounts reach the guest (mocktainer.unikraft.mounts): the rules, the guest's instructions, and real guests.

The Linux test guest (tests/guest/linux.py, TCG, ~3 s a boot) mounts runu's virtio-fs shares itself (its
init follows the `runu.mount=` convention) and mounts them read-write whatever the spec says, so that a
refused write is the host's doing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import needs_root

import clients
from guest import linux
from guest.build import build_tiny
from mocktainer.error import ConfigError
from harness.unikernels import runu_plan
from mocktainer.unikraft import mounts

QEMU = shutil.which("qemu-system-x86_64")
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNU = shutil.which("runu") or os.path.join(TOP, ".venv/bin/runu")
M = linux.MARKER
GUEST_MIB = 128


def bind(src: str, dest: str, *opts: str) -> dict:
    return {"destination": dest, "type": "bind", "source": src, "options": ["rbind", *opts]}


# -- the rules (no root, no VM) ------------------------------------------------------------------------------

def test_skipped_shared_and_grouped(tmp_path):
    d = tmp_path / "vol"
    d.mkdir()
    for name in ("hosts", "resolv.conf"):
        (tmp_path / name).write_text(name)
    spec = {"mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/dev/shm", "type": "bind", "source": str(d), "options": ["rbind"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
        bind(str(d), "/data", "ro"),
        bind(str(tmp_path / "hosts"), "/etc/hosts"),
        bind(str(tmp_path / "resolv.conf"), "/etc/resolv.conf", "ro"),
    ]}
    got = mounts.shares(spec, str(tmp_path), {})
    assert [(s.tag, s.source, s.dest, s.readonly) for s in got] == [
        ("m0", str(d), "/data", True), ("m1", None, "/etc", False)]
    assert got[1].files == [("hosts", str(tmp_path / "hosts"), False),
                            ("resolv.conf", str(tmp_path / "resolv.conf"), True)]
    assert mounts.linux_params(got) == ["runu.mount=m0:/data:ro", "runu.mount=m1:/etc/hosts:rw:hosts",
                                        "runu.mount=m1:/etc/resolv.conf:ro:resolv.conf"]
    assert mounts.fstab_entries(got) == ["m0:/data:9pfs:::mkmp", "m1:/etc:9pfs:::mkmp"]


def test_refusals(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    d = tmp_path / "d"
    d.mkdir()
    for m, words in [
        (bind(str(d), "/a/../etc"), "'..'"),
        (bind(str(d), "relative"), "absolute"),
        (bind(str(tmp_path / "fifo"), "/f"), "neither a directory nor a regular file"),
        (bind("/dev/null", "/null"), "neither a directory nor a regular file"),
        (bind(str(tmp_path / "missing"), "/m"), "No such file"),
        ({"destination": "/x", "type": "nfs", "source": "srv:/x"}, "bind mounts"),
    ]:
        with pytest.raises(ConfigError) as e:
            mounts.shares({"mounts": [m]}, str(tmp_path), {})
        assert words in str(e.value), (m, str(e.value))
    with pytest.raises(ConfigError, match="true or false"):
        mounts.shares({}, str(tmp_path), {mounts.ROOTFS_ANNOTATION: "yes"})


def test_a_source_swapped_before_the_supervisor_opens_it_is_refused(tmp_path):
    """The supervisor opens what create checked without following a link in its place, and wants the same
    kind of object (mounts._open_checked)."""
    d = tmp_path / "d"
    d.mkdir()
    os.close(mounts._open_checked(str(d), True))
    os.rename(d, tmp_path / "moved")
    os.symlink("/etc", d)
    with pytest.raises(ConfigError, match="no longer a directory"):  # O_PATH|O_NOFOLLOW opened the link itself
        mounts._open_checked(str(d), True)
    os.unlink(d)
    (tmp_path / "moved" / "inner").mkdir()
    os.rename(tmp_path / "moved", tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "moved")  # a link on the way, not at the end
    with pytest.raises(ConfigError, match="Too many levels of symbolic links"):
        mounts._open_checked(str(tmp_path / "moved" / "inner"), True)
    os.mkfifo(d)
    with pytest.raises(ConfigError, match="no longer a directory"):
        mounts._open_checked(str(d), True)


def test_rootfs_annotation_follows_root_readonly(tmp_path):
    for ro in (True, False):
        got = mounts.shares({"root": {"path": "rootfs", "readonly": ro}}, str(tmp_path),
                            {mounts.ROOTFS_ANNOTATION: "true"})
        assert [(s.tag, s.dest, s.readonly) for s in got] == [("rootfs", "/", ro)]
        assert mounts.linux_params(got) == ["runu.root=rootfs:%s" % ("ro" if ro else "rw")]


def test_escaping_and_fstab_merge():
    s = mounts.Share("m0", "/src", "/my data:x", False)
    assert mounts.linux_params([s]) == ["runu.mount=m0:/my%20data%3Ax:rw"]
    with pytest.raises(ConfigError, match="vfs.fstab"):
        mounts.fstab_entries([s])
    ours = ["m0:/data:9pfs:::mkmp"]
    assert mounts.merge_fstab(["a=1"], []) == ["a=1"]
    assert mounts.merge_fstab(["a=1"], ours) == ["a=1", "vfs.fstab=[", "m0:/data:9pfs:::mkmp", "]"]
    assert mounts.merge_fstab(["vfs.fstab=[", "fs0:/:9pfs", "]", "b=2"], ours) == [
        "b=2", "vfs.fstab=[", "fs0:/:9pfs", "m0:/data:9pfs:::mkmp", "]"]
    assert mounts.merge_fstab(["vfs.fstab=fs0:/:9pfs"], ours) == [
        "vfs.fstab=[", "fs0:/:9pfs", "m0:/data:9pfs:::mkmp", "]"]
    initrd = "initrd0:/:extract::ramfs=1:"
    assert mounts.merge_fstab([], ours, initrd) == ["vfs.fstab=[", initrd, "m0:/data:9pfs:::mkmp", "]"]
    assert mounts.merge_fstab([], ["rootfs:/:9pfs:::mkmp"], initrd) == ["vfs.fstab=[", "rootfs:/:9pfs:::mkmp", "]"]


def _bundle(tmp_path, kernel, args, *, initrd=None, annotations=None, extra_mounts=(), resources=None,
            root_readonly=True):
    b = clients.unikernel_bundle(tmp_path / "bundle", kernel, args, initrd=initrd,
                                 annotations=annotations or {}, resources=resources or {})
    with open(os.path.join(b, "config.json")) as f:
        cfg = json.load(f)
    cfg["mounts"] = list(cfg.get("mounts") or []) + list(extra_mounts)
    cfg["root"]["readonly"] = root_readonly
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(cfg, f)
    return b, cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(str(tmp_path_factory.mktemp("tiny")), "pvh")


def test_qemu_devices_in_the_plan(tmp_path, tiny):
    """A unikernel gets virtio-9p (readonly=on for a read-only share) and its fstab entries; the state
    directory holds the shares."""
    kernel = tiny
    d = tmp_path / "vol"
    d.mkdir()
    b, cfg = _bundle(tmp_path, kernel, ["hello"], extra_mounts=[bind(str(d), "/data", "ro")])
    state = str(tmp_path / "state" / "c1")
    p = runu_plan(cfg, os.path.join(b, "rootfs"), {"RUNU_ACCEL": "tcg"}, state)
    assert "vfs.fstab=[ m0:/data:9pfs:::mkmp ] -- hello" in p.cmdline
    i = p.args.index("-fsdev")
    assert p.args[i + 1] == "local,id=fs-m0,path=%s/shares/m0,security_model=none,multidevs=remap,readonly=on" % state
    assert p.setup["shares"]["items"][0]["source"] == str(d)


def test_fstab_survives_the_network_rerender(tmp_path, tiny):
    """The guest network renders the command line again at create or start (net.guest_cmdline, from the
    plan's guest record): a unikernel with mounts AND a network still gets its vfs.fstab entries, with the
    user's own entry first and the network's parameters beside them, before the `--`."""
    from mocktainer.unikraft import net

    d = tmp_path / "vol"
    d.mkdir()
    b, cfg = _bundle(tmp_path, tiny, ["vfs.fstab=fs9:/x:9pfs", "--", "hello"],
                     extra_mounts=[bind(str(d), "/data", "ro")])
    p = runu_plan(cfg, os.path.join(b, "rootfs"), {"RUNU_ACCEL": "tcg"}, str(tmp_path / "state" / "c1"))
    up = net.Uplink(2, "eth0", "02:00:00:00:00:01", "10.0.0.2", 24, "10.0.0.1", {})
    params = net.boot_params(up)
    for vmm in ("qemu", "firecracker"):
        line = net.guest_cmdline(p.guest, params, vmm)
        head, _sep, tail = line.partition(" -- ")
        assert "vfs.fstab=[ fs9:/x:9pfs m0:/data:9pfs:::mkmp ]" in head, line
        assert all(w in head.split() for w in params), line
        assert tail.split() == ["hello"], line


@needs_root
def test_linux_mounts_survive_the_network_rerender(guest, tmp_path):
    """The same for a Linux guest: its `runu.mount=` parameters stay beside the network's."""
    from mocktainer.unikraft import net

    kernel, initrd = guest
    d = tmp_path / "vol"
    d.mkdir()
    b, cfg = _bundle(tmp_path, kernel, ["quiet", "--", "hello"], initrd=initrd,
                     extra_mounts=[bind(str(d), "/data", "ro")])
    p = runu_plan(cfg, os.path.join(b, "rootfs"), {"RUNU_ACCEL": "tcg"}, str(tmp_path / "state" / "c1"))
    assert "runu.mount=m0:/data:ro" in p.cmdline.split()
    up = net.Uplink(2, "eth0", "02:00:00:00:00:01", "10.0.0.2", 24, "10.0.0.1", {})
    line = net.guest_cmdline(p.guest, net.boot_params(up), "qemu").split()
    assert "runu.mount=m0:/data:ro" in line and "netdev.ipv4_addr=10.0.0.2" in line, line
    assert line.index("runu.mount=m0:/data:ro") < line.index("--"), line


# (Firecracker: tests/test_firecracker_mounts.py)


@needs_root
@pytest.mark.skipif(QEMU is None, reason="no QEMU")
def test_tiny_kernel_boots_with_mounts_and_gets_the_fstab(tmp_path, tiny):
    """The tiny kernel has no file system: it boots with the 9p devices present, and its command line
    carries what a Unikraft guest would mount (the user's own vfs.fstab entry kept)."""
    d = tmp_path / "vol"
    d.mkdir()
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    b, _cfg = _bundle(tmp_path, tiny, ["vfs.fstab=fs9:/x:9pfs", "--", "hello"],
                      annotations={"org.unikraft.runu.accel": "tcg"},
                      extra_mounts=[bind(str(d), "/data", "ro"),
                                    bind(str(tmp_path / "resolv.conf"), "/etc/resolv.conf")])
    r = _run(str(tmp_path / "root"), b, "tinymounts")
    cmdline = next(line for line in r.stdout.splitlines() if line.startswith("cmdline:"))
    # argv[0] first (the program name runu writes for a PVH boot, issue 11), then one merged vfs.fstab list
    assert cmdline == ("cmdline: /unikraft/bin/kernel vfs.fstab=[ fs9:/x:9pfs m0:/data:9pfs:::mkmp "
                       "m1:/etc:9pfs:::mkmp ] -- hello"), r
    assert "arg: hello" in r.stdout
    assert r.returncode == 1, r  # guest exit code 0


@needs_root
@pytest.mark.skipif(QEMU is None, reason="no QEMU")
def test_a_kernel_without_9pfs_boots_without_the_shares(tmp_path):
    """A Unikraft image without lib9pfs stops at boot on a 9pfs vfs.fstab entry (a real 0.17 build does;
    the tiny kernel built without 9pfs does the same, first part). runu finds no "9pfs" in such a kernel and
    gives it no share, with a warning, so that the mounts every client adds (/etc/resolv.conf, ...) do not
    keep it from booting (second part: without that, the guest crashes and the container exits 1)."""
    kernel = build_tiny(str(tmp_path / "k"), "pvh", no_9pfs=True)
    d = tmp_path / "vol"
    d.mkdir()
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    tcg = {"org.unikraft.runu.accel": "tcg"}
    b, _cfg = _bundle(tmp_path / "own", kernel, ["vfs.fstab=fs9:/x:9pfs", "--", "halt"], annotations=tcg)
    r = _run(str(tmp_path / "root"), b, "no9pfs-own")
    assert "uk: vfs.fstab: cannot mount fs9:/x:9pfs" in r.stdout and "bye crash" in r.stdout, r
    assert r.returncode == 1 and "the guest crashed" in r.stderr, r
    b, _cfg = _bundle(tmp_path / "mounts", kernel, ["halt"], annotations=tcg,
                      extra_mounts=[bind(str(d), "/data", "ro"),
                                    bind(str(tmp_path / "resolv.conf"), "/etc/resolv.conf")])
    r = _run(str(tmp_path / "root"), b, "no9pfs-mounts")
    assert "vfs.fstab" not in r.stdout and "bye halt" in r.stdout, r
    assert r.returncode == 0, r
    assert ("runu: warning: the kernel has no 9pfs file system" in r.stderr
            and "not shared with the guest: /data, /etc/resolv.conf;" in r.stderr), r


# -- real guests -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    try:
        return linux.build_linux_guest(str(tmp_path_factory.mktemp("linux-guest")))
    except linux.GuestMissing as e:
        pytest.skip("Linux test guest unavailable: %s" % e)


def _run(root: str, bundle_dir: str, cid: str, steps=("run",), between=None) -> subprocess.CompletedProcess:
    try:
        if steps == ("run",):
            return subprocess.run([RUNU, "--root", root, "run", "--bundle", bundle_dir, cid],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
        out = open(os.path.join(os.path.dirname(root), cid + ".out"), "w+")
        subprocess.run([RUNU, "--root", root, "create", "--bundle", bundle_dir, cid], stdin=subprocess.DEVNULL,
                       stdout=out, stderr=subprocess.STDOUT, check=True, timeout=60)
        if between:
            between()
        subprocess.run([RUNU, "--root", root, "start", cid], check=True, timeout=30)
        import time

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            st = subprocess.run([RUNU, "--root", root, "state", cid], capture_output=True, text=True)
            if '"stopped"' in st.stdout:
                break
            time.sleep(0.5)
        out.seek(0)
        return subprocess.CompletedProcess([], 0, out.read(), "")
    finally:
        if os.path.isdir(root):
            for c in os.listdir(root):
                subprocess.run([RUNU, "--root", root, "delete", "--force", c], capture_output=True, timeout=30)


def lines_of(out: str) -> list[str]:
    return [line.split(M, 1)[1].strip() for line in out.splitlines() if M in line]


@needs_root
@pytest.mark.skipif(QEMU is None, reason="no QEMU")
def test_linux_guest_reads_writes_and_is_confined(guest, tmp_path):
    kernel, initrd = guest
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "config").write_text("from the host\n")
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    (ro / "escape").symlink_to(secret)  # absolute: the guest resolves it in its own tree
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    args = ["quiet", "cat=/etc/cfg/config", "write=/etc/cfg/config", "write=/data/out", "cat=/etc/resolv.conf",
            "cat=/etc/cfg/escape", "write=/etc/resolv.conf", "--", "hello"]
    b, _cfg = _bundle(tmp_path, kernel, args, initrd=initrd,
                      annotations={"org.unikraft.runu.accel": "tcg"},
                      resources={"memory": {"limit": (GUEST_MIB + 64 + 8) << 20}},
                      extra_mounts=[bind(str(ro), "/etc/cfg", "ro"), bind(str(rw), "/data", "rw"),
                                    bind(str(resolv), "/etc/resolv.conf", "ro")])
    r = _run(str(tmp_path / "root"), b, "mounts1")
    lines = lines_of(r.stdout)
    assert "mount /etc/cfg (ro): ok" in lines, r
    assert "mount /data (rw): ok" in lines, r
    assert "cat /etc/cfg/config: from the host" in lines, r
    assert "write /etc/cfg/config: fail" in lines, r   # read-only on the host side
    assert (ro / "config").read_text() == "from the host\n"
    assert "write /data/out: ok" in lines, r
    assert (rw / "out").read_text() == "written by the guest\n"
    assert "cat /etc/resolv.conf: nameserver 192.0.2.53" in lines, r
    assert "write /etc/resolv.conf: fail" in lines, r
    assert "cat /etc/cfg/escape: fail" in lines, r   # the guest has no /tmp/.../secret: not the host's file
    assert "host secret" not in r.stdout
    assert lines[-1] == "powering off", r


@needs_root
@pytest.mark.skipif(QEMU is None, reason="no QEMU")
def test_source_swapped_after_create_is_not_followed(guest, tmp_path):
    kernel, initrd = guest
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("original\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("swapped in\n")
    b, _cfg = _bundle(tmp_path, kernel, ["quiet", "cat=/v/f"], initrd=initrd,
                      annotations={"org.unikraft.runu.accel": "tcg"},
                      resources={"memory": {"limit": (GUEST_MIB + 64 + 8) << 20}},
                      extra_mounts=[bind(str(src), "/v", "ro")])

    def swap():
        os.rename(src, tmp_path / "moved")
        os.symlink(other, src)

    r = _run(str(tmp_path / "root"), b, "mounts2", steps=("create", "start"), between=swap)
    lines = lines_of(r.stdout)
    assert "cat /v/f: original" in lines, r


def test_linux_guest_has_the_share_modules(guest):
    kernel, initrd = guest
    import gzip

    with open(initrd, "rb") as f:
        data = gzip.decompress(f.read())
    assert b"lib/modules/fs.list" in data
    assert b"virtiofs.ko" in data and b"fuse.ko" in data


def _naming(text: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(p))
            except OSError:
                pass
    return out


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@needs_root
@pytest.mark.skipif(QEMU is None, reason="no QEMU")
def test_virtiofsd_is_the_supervisors_child_in_the_cgroup_and_leaves_nothing(guest, tmp_path):
    kernel, initrd = guest
    vols = []
    for i in range(2):
        d = tmp_path / ("v%d" % i)
        d.mkdir()
        vols.append(bind(str(d), "/v%d" % i, "ro"))
    b, _cfg = _bundle(tmp_path, kernel, ["quiet"], initrd=initrd, annotations={"org.unikraft.runu.accel": "tcg"},
                      resources={"memory": {"limit": (GUEST_MIB + 64 + 8) << 20}}, extra_mounts=vols)
    root = str(tmp_path / "root")
    pid_file = str(tmp_path / "pid")
    try:
        with open(tmp_path / "out", "w") as out:  # (the container keeps its stdio: no pipe)
            subprocess.run([RUNU, "--root", root, "create", "--bundle", b, "--pid-file", pid_file, "fsd1"],
                           stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True, timeout=60)
        sup = int(_read(pid_file))
        helpers = [p for p in _naming(root)
                   if open("/proc/%d/cmdline" % p, "rb").read().split(b"\0")[0] == mounts.VIRTIOFSD.encode()]
        mine = [p for p in helpers if int(_read("/proc/%d/stat" % p).rsplit(")", 1)[1].split()[1]) == sup]
        assert len(mine) == 2, helpers  # one per share, children of the supervisor
        for p in mine:
            assert _read("/proc/%d/cgroup" % p) == _read("/proc/%d/cgroup" % sup)
        # the shares are mounted only in the supervisor's private namespace
        assert os.path.join(root, "fsd1", "shares") not in _read("/proc/self/mountinfo")
        assert os.path.join(root, "fsd1", "shares") in _read("/proc/%d/mountinfo" % sup)
    finally:
        subprocess.run([RUNU, "--root", root, "delete", "--force", "fsd1"], capture_output=True, timeout=30)
    import time

    deadline = time.monotonic() + 10
    while _naming(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _naming(root) == []
    assert root not in _read("/proc/self/mountinfo")
    assert not os.path.exists(os.path.join(root, "fsd1"))  # shares/ and the sockets went with the state


@needs_root
@pytest.mark.skipif(QEMU is None, reason="no QEMU")
def test_linux_guest_gets_the_rootfs_on_request(guest, tmp_path):
    kernel, initrd = guest
    b, _cfg = _bundle(tmp_path, kernel, ["quiet", "cat=/newroot/etc/motd", "write=/newroot/new"], initrd=initrd,
                      annotations={"org.unikraft.runu.accel": "tcg", mounts.ROOTFS_ANNOTATION: "true"},
                      resources={"memory": {"limit": (GUEST_MIB + 64 + 8) << 20}}, root_readonly=False)
    os.makedirs(os.path.join(b, "rootfs", "etc"))
    with open(os.path.join(b, "rootfs", "etc", "motd"), "w") as f:
        f.write("from the image\n")
    r = _run(str(tmp_path / "root"), b, "rootfs1")
    lines = lines_of(r.stdout)
    assert "root: rootfs on /newroot (rw)" in lines, r
    assert "cat /newroot/etc/motd: from the image" in lines, r
    assert "write /newroot/new: ok" in lines, r
    assert _read(os.path.join(b, "rootfs", "new")) == "written by the guest\n"


def test_qemu_args_per_transport():
    ro = mounts.Share("m0", "/src", "/data", True)
    files = mounts.Share("m1", None, "/etc", False, [("hosts", "/h", False)])
    nine = mounts.qemu_args([ro, files], "/run/runu/c", "microvm", False, 64)
    local = "local,id=fs-%s,path=/run/runu/c/shares/%s,security_model=none,multidevs=remap"
    assert nine == ["-fsdev", local % ("m0", "m0") + ",readonly=on",
                    "-device", "virtio-9p-device,fsdev=fs-m0,mount_tag=m0",
                    "-fsdev", local % ("m1", "m1"),
                    "-device", "virtio-9p-device,fsdev=fs-m1,mount_tag=m1"]
    fs = mounts.qemu_args([ro], "/run/runu/c", "pc", True, 128, "/proc/self/fd/4")
    assert fs == ["-object", "memory-backend-memfd,id=runu-mem,size=128M,share=on",
                  "-machine", "memory-backend=runu-mem",
                  "-chardev", "socket,id=vfs-m0,path=/proc/self/fd/4/vfs-m0.sock",
                  "-device", "vhost-user-fs-pci,chardev=vfs-m0,tag=m0"]
    assert mounts.qemu_args([], "/run/runu/c", "pc", True, 128) == []
    assert mounts.virtiofsd_args("/run/runu/c", ro, 5)[:4] == [mounts.VIRTIOFSD, "--fd=5", "-o",
                                                              "source=/run/runu/c/shares/m0"]
