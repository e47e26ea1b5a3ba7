"""Mounts under Firecracker: read-only copies made at create (mocktainer.unikraft.copies), writable mounts refused.

A Unikraft guest gets its mounts merged into a new initrd in the state directory (booted here with the tiny
kernel through `runu create/start`); a Linux guest gets one read-only ext4 drive. Linux guests cannot boot
under Firecracker on this machine (paravirtual KVM without vmx), so the drive is shown in a real
Firecracker's configuration (GET /vm/config) and the guest side by the Linux test guest under QEMU, with
the same image as a read-only virtio-blk disk and the same kernel parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

import pytest

from conftest import RUNU, base_env, needs_root
from guest import linux
from guest.build import build_tiny
from harness.images import unikernel_bundle
from harness.procs import processes_mentioning
from harness.runu import FIRECRACKER, needs_firecracker, runu
from harness.unikernels import make_elf, runu_plan
from mocktainer.error import ConfigError
from mocktainer.unikraft import control, copies, cpio, firecracker, mounts, vmm
from runu import settings
from test_mounts import guest  # noqa: F401  (the Linux test guest, a fixture)

QEMU = shutil.which("qemu-system-x86_64")
VMM = "org.unikraft.runu.vmm"
FC = {VMM: "firecracker"}
GREETING = "Hello from the runu test kernel"
INITRD_ROOT = "initrd0:/:extract::ramfs=1:"
MIB = 1 << 20


def bind(src, dest, *opts):
    return {"destination": dest, "type": "bind", "source": str(src), "options": ["rbind", *opts]}


def bundle(tmp_path, kernel, args, mounts_=(), initrd=None, annotations=FC, resources=None, name="bundle"):
    b = unikernel_bundle(tmp_path / name, kernel, args, initrd=initrd, annotations=annotations,
                         resources=resources or {})
    path = os.path.join(b, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["mounts"] = list(cfg.get("mounts") or []) + list(mounts_)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return b, cfg


def volume(tmp_path):
    """A directory source with what a copy must handle: files, a subdirectory, an absolute symlink to
    /etc/shadow, a relative one (a ConfigMap's layout), a FIFO and a device."""
    d = tmp_path / "vol"
    (d / "sub").mkdir(parents=True)
    (d / "config").write_text("from the host\n")
    (d / "sub" / "deep").write_text("deep\n")
    os.chmod(d / "config", 0o640)
    (d / "shadow").symlink_to("/etc/shadow")
    (d / "key").symlink_to("sub/deep")
    os.mkfifo(d / "fifo")
    os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(str(tmp_path_factory.mktemp("tiny")), "pvh")


# -- the rules ---------------------------------------------------------------------------------------------

def test_firecracker_rules(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("hosts", "hostname", "resolv.conf", "app.conf"):
        (tmp_path / name).write_text(name)
    spec = {"mounts": [bind(d, "/data", "ro"), bind(tmp_path / "hosts", "/etc/hosts", "rw"),
                       bind(tmp_path / "hostname", "/etc/hostname"), bind(tmp_path / "resolv.conf", "/etc/resolv.conf"),
                       bind(tmp_path / "app.conf", "/etc/app.conf", "ro"),
                       bind(d, "/dev/termination-log", "rw")]}  # skipped: under /dev
    given = firecracker.give_mounts(mounts.shares(spec, str(tmp_path), {}))
    assert given.copied and not given.live
    assert [(s.tag, s.dest, s.readonly) for s in given.items] == [("m0", "/data", True), ("m1", "/etc", True)]
    # the clients' files are copied as read-only snapshots
    assert [f[2] for f in given.items[1].files] == [True] * 4
    assert given.fstab() == []  # Unikraft: in the initrd, not 9p
    assert given.linux_params() == ["runu.disk=vda", "runu.mount=m0:/data:ro", "runu.mount=m1:/etc/hosts:ro:hosts",
                                    "runu.mount=m1:/etc/hostname:ro:hostname",
                                    "runu.mount=m1:/etc/resolv.conf:ro:resolv.conf",
                                    "runu.mount=m1:/etc/app.conf:ro:app.conf"]
    for m in (bind(d, "/data"), bind(d, "/data", "ro", "rw"), bind(tmp_path / "app.conf", "/etc/app.conf")):
        with pytest.raises(ConfigError) as e:
            firecracker.give_mounts(mounts.shares({"mounts": [m]}, str(tmp_path), {}))
        dest = m["destination"]
        assert str(e.value) == (
            "mount %s is writable, but Firecracker cannot share host files with a guest: runu gives it read-only "
            "copies made at create, and a writable copy's changes would never reach the host; mount it read-only "
            "(option ro) or use QEMU (annotation org.unikraft.runu.vmm=qemu)" % dest)
    with pytest.raises(ConfigError, match="Firecracker cannot share the bundle's rootfs.*use QEMU"):
        firecracker.give_mounts(mounts.shares({}, str(tmp_path), {mounts.ROOTFS_ANNOTATION: "true"}))
    # QEMU shares everything live, as before
    assert mounts.Given(mounts.shares(spec, str(tmp_path), {}), live=True).fstab() == [
        "m0:/data:9pfs:::mkmp", "m1:/etc:9pfs:::mkmp"]


def test_the_initrd_root_goes_first_in_vfs_fstab():
    assert mounts.initrd_root_fstab(["a=1"], INITRD_ROOT) == ["a=1", "vfs.fstab=[", INITRD_ROOT, "]"]
    assert mounts.initrd_root_fstab(["vfs.fstab=[", "fs1:/tmp:ramfs", "]"], INITRD_ROOT) == [
        "vfs.fstab=[", INITRD_ROOT, "fs1:/tmp:ramfs", "]"]
    mine = ["vfs.fstab=[", "fs1:/tmp:ramfs", "initrd0:/:extract::ramfs=1:", "]"]
    assert mounts.initrd_root_fstab(mine, INITRD_ROOT) == mine  # the user mounts the initrd already
    with pytest.raises(ConfigError, match="mounts /, but under Firecracker the mounts are copied into the initrd"):
        mounts.initrd_root_fstab(["vfs.fstab=fs0:/:9pfs"], INITRD_ROOT)


# -- copies, without a VM ----------------------------------------------------------------------------------

@needs_root
def test_merged_initrd_keeps_the_bundles_entries_and_confines_the_copy(tmp_path):
    vol = volume(tmp_path)
    conf = tmp_path / "app.conf"
    conf.write_text("app\n")
    base = cpio.write([cpio.Entry("etc", stat.S_IFDIR | 0o755, nlink=2, ino=1),
                       cpio.Entry("etc/motd", stat.S_IFREG | 0o644, b"from the image\n", ino=2),
                       cpio.Entry("data", stat.S_IFDIR | 0o755, nlink=2, ino=3),
                       cpio.Entry("data/hidden", stat.S_IFREG | 0o644, b"hidden by the mount\n", ino=4)])
    items = firecracker.give_mounts(mounts.shares(
        {"mounts": [bind(vol, "/data", "ro"), bind(conf, "/srv/app/app.conf", "ro")]}, str(tmp_path), {})).items
    got = cpio.read(copies.merge_initrd(base, items, 4 * MIB))
    by_name = {e.name: e for e in got}
    # the image's entries (its /data hidden by the mount), the directories the mounts need, the copies
    assert [e.name for e in got] == ["etc", "etc/motd", "srv", "srv/app", "data", "data/config", "data/key",
                                     "data/shadow", "data/sub", "data/sub/deep", "srv/app/app.conf"]
    assert by_name["etc/motd"].data == b"from the image\n"
    assert by_name["data/config"].data == b"from the host\n" and stat.S_IMODE(by_name["data/config"].mode) == 0o640
    # a symlink is a symlink: its target is text for the guest, runu never read /etc/shadow
    assert by_name["data/shadow"].kind == stat.S_IFLNK and by_name["data/shadow"].data == b"/etc/shadow"
    with open("/etc/shadow", "rb") as f:
        shadow = f.read()
    assert all(shadow not in e.data for e in got if e.data)
    assert by_name["data/key"].data == b"sub/deep"
    # the FIFO and the device are left out, the image's /data/hidden is hidden by the mount
    assert "data/fifo" not in by_name and "data/null" not in by_name and "data/hidden" not in by_name
    assert len({e.ino for e in got}) == len(got)  # no accidental hard links
    with pytest.raises(ConfigError, match="larger than 1 MiB.*use QEMU"):
        (vol / "big").write_bytes(b"x" * (MIB + 1))
        copies.merge_initrd(base, items, MIB)
    with pytest.raises(ConfigError, match="not a newc cpio archive.*use QEMU"):
        copies.merge_initrd(b"\x1f\x8b" + bytes(200), items, 4 * MIB)


@needs_root
def test_ext4_image_holds_the_copy(tmp_path):
    vol = volume(tmp_path)
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    items = firecracker.give_mounts(mounts.shares(
        {"mounts": [bind(vol, "/etc/cfg", "ro"), bind(tmp_path / "hosts", "/etc/hosts")]}, str(tmp_path), {})).items
    image = tmp_path / "mounts.ext4"
    image.write_bytes(copies.ext4_image(items, 64 * MIB, shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"))

    def debugfs(cmd):
        return subprocess.run(["debugfs", "-R", cmd, str(image)], capture_output=True, text=True, check=True).stdout

    assert debugfs("cat /m0/config") == "from the host\n"
    assert debugfs("cat /m0/sub/deep") == "deep\n"
    assert debugfs("cat /m1/hosts") == "127.0.0.1 localhost\n"
    assert 'Fast link dest: "/etc/shadow"' in debugfs("stat /m0/shadow")
    listing = debugfs("ls -p /m0")
    names = {line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6}
    assert names == {".", "..", "config", "sub", "shadow", "key"}, listing  # no fifo, no device
    assert "Filesystem volume name:   runu-mounts" in subprocess.run(
        ["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout


# -- Unikraft under Firecracker, through runu --------------------------------------------------------------

def create(root, b, cid, log):
    """`runu create`, the container's stdio on files (a pipe would keep a reader waiting); its stderr is in
    the result's `stderr`, the console in `log`."""
    err = str(log) + ".err"
    with open(log, "w") as out, open(err, "w+") as errors:
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", b, cid], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=errors, text=True, timeout=60, env=base_env())
        errors.seek(0)
        r.stderr = errors.read()
    return r


def api_get(state_dir, path):
    """GET `path` on the Firecracker API socket in `state_dir`."""
    fd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        sock = control.connect("/proc/self/fd/%d/%s" % (fd, firecracker.API_SOCKET))
    finally:
        os.close(fd)
    try:
        status, body = control.request(sock, "GET", path, b"")
    finally:
        sock.close()
    assert status == 200, body
    return json.loads(body)


@needs_root
@needs_firecracker
def test_tiny_kernel_boots_with_its_mounts_in_the_initrd(tmp_path, root, tiny):
    vol = volume(tmp_path)
    (tmp_path / "app.conf").write_text("app\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    b, _cfg = bundle(tmp_path, tiny, ["hello"], [bind(vol, "/data", "ro"),
                                                 bind(tmp_path / "app.conf", "/etc/app.conf", "ro"),
                                                 bind(tmp_path / "hosts", "/etc/hosts", "rw")])
    log = tmp_path / "console.log"
    r = create(root, b, "fcm1", log)
    assert r.returncode == 0, r.stderr + log.read_text()
    state_dir = os.path.join(root, "fcm1")
    initrd = os.path.join(state_dir, copies.INITRD_FILE)
    assert stat.S_IMODE(os.stat(initrd).st_mode) == 0o600
    with open(initrd, "rb") as f:
        data = f.read()
    got = {e.name: e for e in cpio.read(data)}
    assert sorted(got) == ["data", "data/config", "data/key", "data/shadow", "data/sub", "data/sub/deep", "etc",
                           "etc/app.conf", "etc/hosts"]
    assert got["data/config"].data == b"from the host\n" and got["etc/hosts"].data == b"127.0.0.1 localhost\n"
    assert got["data/shadow"].kind == stat.S_IFLNK and got["data/shadow"].data == b"/etc/shadow"
    with open(os.path.join(state_dir, firecracker.CONFIG_FILE)) as f:
        record = json.load(f)
    boot = record["boot-source"]
    assert boot["initrd_path"] == "/proc/self/fd/3/" + copies.INITRD_FILE
    assert boot["boot_args"] == "/unikraft/bin/kernel vfs.fstab=[ %s ] -- hello" % INITRD_ROOT
    # what Firecracker itself holds (configured through its API at create)
    live = api_get(state_dir, "/vm/config")
    assert live["boot-source"]["initrd_path"] == boot["initrd_path"] and live["drives"] == []
    # the source swapped for a link to /etc between create and start: the copy was made at create
    os.rename(vol, tmp_path / "moved")
    os.symlink("/etc", vol)
    assert runu(root, "start", "fcm1").returncode == 0
    deadline = time.monotonic() + 30
    while json.loads(runu(root, "state", "fcm1").stdout)["status"] != "stopped":
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    out = log.read_text()
    assert GREETING in out and "cmdline: /unikraft/bin/kernel vfs.fstab=[ %s ] -- hello" % INITRD_ROOT in out, out
    with open(initrd, "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    assert runu(root, "delete", "fcm1").returncode == 0
    assert not os.path.exists(state_dir)


@needs_root
@needs_firecracker
def test_the_bundles_initrd_is_merged(tmp_path, tiny):
    """The plan at create: the bundle's initrd entries kept (less what a mount hides), its root entry on the
    command line once; a copy bigger than half the guest's memory is refused."""
    conf = tmp_path / "app.conf"
    conf.write_text("app\n")
    base = cpio.write([cpio.Entry("etc", stat.S_IFDIR | 0o755, nlink=2, ino=1),
                       cpio.Entry("etc/motd", stat.S_IFREG | 0o644, b"motd\n", ino=2)])
    b, cfg = bundle(tmp_path, tiny, ["hello"], [bind(conf, "/etc/app.conf", "ro")], initrd=base,
                    resources={"memory": {"limit": 64 * MIB}})
    p = runu_plan(cfg, os.path.join(b, "rootfs"), base_env(), str(tmp_path / "state" / "c1"))
    assert [e.name for e in cpio.read(p.files[copies.INITRD_FILE])] == ["etc", "etc/motd", "etc/app.conf"]
    assert p.cmdline == "/unikraft/bin/kernel vfs.fstab=[ %s ] -- hello" % INITRD_ROOT
    config = json.loads(p.files[firecracker.CONFIG_FILE])
    assert config["boot-source"]["initrd_path"] == str(tmp_path / "state" / "c1" / copies.INITRD_FILE)
    # 64 MiB limit: 40 MiB for the guest, so at most 20 MiB of initrd
    with open(conf, "r+b") as f:
        f.truncate(21 * MIB)
    with pytest.raises(ConfigError, match=r"larger than 20 MiB .*/app.conf.*use QEMU"):
        runu_plan(cfg, os.path.join(b, "rootfs"), base_env(), str(tmp_path / "state" / "c2"))
    # no mount: no copy, the bundle's initrd as it is
    cfg["mounts"] = []
    p = runu_plan(cfg, os.path.join(b, "rootfs"), base_env(), str(tmp_path / "state" / "c3"))
    assert copies.INITRD_FILE not in p.files


@needs_root
@needs_firecracker
def test_refusals_leave_nothing(tmp_path, root, tiny):
    os.mkfifo(tmp_path / "fifo")
    d = tmp_path / "d"
    d.mkdir()
    cases = [
        (bind(d, "/data"), "mount /data is writable, but Firecracker cannot share host files with a guest"),
        (bind(tmp_path / "fifo", "/f", "ro"), "neither a directory nor a regular file"),
        (bind("/dev/null", "/null", "ro"), "neither a directory nor a regular file"),
        (bind(d, "/a/../etc", "ro"), "holds '..'"),
    ]
    for i, (m, words) in enumerate(cases):
        b, _cfg = bundle(tmp_path, tiny, ["hello"], [m], name="b%d" % i)
        cid = "fcr%d" % i
        r = create(root, b, cid, tmp_path / ("log%d" % i))
        assert r.returncode == 1 and words in r.stderr, (m, r.stderr)
        assert not os.path.exists(os.path.join(root, cid))
        assert processes_mentioning(os.path.join(root, cid)) == []


@needs_root
@needs_firecracker
def test_kubernetes_writable_files_do_not_fail_the_pod(tmp_path, root, tiny):
    """What the CRI plugin adds, read-write: /etc/hosts, /etc/hostname, /etc/resolv.conf (snapshots) and
    /dev/termination-log (skipped): the container is created."""
    files = {}
    for name in ("hosts", "hostname", "resolv.conf", "termination-log"):
        files[name] = tmp_path / name
        files[name].write_text(name + "\n")
    b, _cfg = bundle(tmp_path, tiny, ["hello"], [bind(files["hosts"], "/etc/hosts", "rw"),
                                                 bind(files["hostname"], "/etc/hostname", "rw"),
                                                 bind(files["resolv.conf"], "/etc/resolv.conf", "rw"),
                                                 bind(files["termination-log"], "/dev/termination-log", "rw")])
    r = create(root, b, "k8s", tmp_path / "log")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(root, "k8s", copies.INITRD_FILE), "rb") as f:
        assert [e.name for e in cpio.read(f.read())] == ["etc", "etc/hostname", "etc/hosts", "etc/resolv.conf"]
    assert runu(root, "delete", "--force", "k8s").returncode == 0


# -- Linux guests: the drive in Firecracker's configuration, the convention under QEMU ----------------------

def linux_vm(tmp_path, items, cmdline):
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(make_elf(linux_note=True))
    from mocktainer.unikraft.kernel import find_kernel

    rootfs = tmp_path / "rootfs"
    (rootfs / "unikraft" / "bin").mkdir(parents=True)
    shutil.copy(kernel, rootfs / "unikraft" / "bin" / "kernel")
    kern = find_kernel(str(rootfs))
    assert kern is not None and kern.linux and kern.boot_protocol == "elf"
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    s = settings.Settings({}, "/etc/runu/config.toml", base_env())
    return vmm.VM(kern, cmdline, 128, 1, dict(FC), s, str(state_dir), "lx1", None, items), state_dir


@needs_root
@needs_firecracker
def test_linux_guest_gets_a_read_only_drive(tmp_path):
    vol = volume(tmp_path)
    items = firecracker.give_mounts(mounts.shares({"mounts": [bind(vol, "/etc/cfg", "ro")]}, str(tmp_path), {})).items
    vm, state_dir = linux_vm(tmp_path, items, "console=ttyS0 runu.disk=vda runu.mount=m0:/etc/cfg:ro")
    # (this host has no vmx: runu refuses a Linux guest under Firecracker at create, so the check is told yes)
    launch = firecracker.launch(vm, hwvirt_check=lambda: True)
    drive = {"drive_id": "runu_mounts", "path_on_host": "%s/mounts.ext4" % state_dir, "is_root_device": False,
             "is_read_only": True}
    assert json.loads(launch.files[firecracker.CONFIG_FILE])["drives"] == [drive]
    for name, data in launch.files.items():
        (state_dir / name).write_bytes(data)
    out = subprocess.run(["debugfs", "-R", "cat /m0/config", str(state_dir / "mounts.ext4")], capture_output=True,
                         text=True, check=True).stdout
    assert out == "from the host\n"
    # a real Firecracker takes the configuration (it opens the drive read-only when it is configured)
    sock_path = str(state_dir / firecracker.API_SOCKET)
    proc = subprocess.Popen([FIRECRACKER, "--api-sock", sock_path, "--level", "Error"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        config = launch.setup["config"]
        sock = control.connect(sock_path)
        try:
            for path, body in (("/machine-config", config["machine-config"]), ("/boot-source", config["boot-source"]),
                               ("/drives/runu_mounts", drive)):
                status, answer = control.request(sock, "PUT", path, json.dumps(body).encode())
                assert status == 204, (path, answer)
            status, answer = control.request(sock, "GET", "/vm/config", b"")
        finally:
            sock.close()
        assert status == 200
        (got,) = json.loads(answer)["drives"]
        assert got["drive_id"] == "runu_mounts" and got["is_read_only"] is True and got["is_root_device"] is False
        assert got["path_on_host"] == drive["path_on_host"]
        assert open_flags(proc.pid, str(state_dir / "mounts.ext4")) & os.O_ACCMODE == os.O_RDONLY
    finally:
        proc.kill()
        proc.wait()


def open_flags(pid, path):
    """The open flags of the fd by which process `pid` holds `path`."""
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != path:
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                return int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        except FileNotFoundError:
            continue  # closed meanwhile
    raise AssertionError("process %d does not hold %s open" % (pid, path))


@needs_root
@pytest.mark.skipif(QEMU is None, reason="no QEMU")
def test_linux_guest_mounts_the_drive_by_the_convention(tmp_path, guest):  # noqa: F811  (the fixture)
    """The Linux test guest's init follows `runu.disk=` + `runu.mount=`: the same image and parameters as
    under Firecracker, the image a read-only virtio-blk disk (the guest's vda) under QEMU."""
    vol = volume(tmp_path)
    (tmp_path / "hosts").write_text("10.0.0.1 from-the-host\n")
    items = firecracker.give_mounts(mounts.shares(
        {"mounts": [bind(vol, "/etc/cfg", "ro"), bind(tmp_path / "hosts", "/etc/hosts", "rw")]}, str(tmp_path),
        {})).items
    params = mounts.Given(items, live=False).linux_params()
    image = tmp_path / "mounts.ext4"
    image.write_bytes(copies.ext4_image(items, 64 * MIB, shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"))
    kernel, initrd = guest
    append = " ".join(["console=ttyS0", "panic=-1", "quiet", *params, "cat=/etc/cfg/config", "cat=/etc/cfg/key",
                       "cat=/etc/hosts", "cat=/etc/cfg/shadow", "write=/etc/cfg/config", "write=/etc/hosts"])
    argv = [QEMU, "-M", "pc", "-accel", "tcg", "-cpu", "max", "-m", "128M", "-nodefaults", "-no-user-config",
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd,
            "-drive", "file=%s,if=none,id=d0,format=raw,readonly=on" % image, "-device", "virtio-blk-pci,drive=d0",
            "-append", append]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    lines = [line.split(linux.MARKER, 1)[1].strip() for line in r.stdout.splitlines() if linux.MARKER in line]
    assert "disk vda: ro" in lines, r.stdout  # a read-write mount was refused: the host's read-only disk
    assert "mount /etc/cfg (ro): ok" in lines and "mount /etc/hosts (ro): ok" in lines, r.stdout
    assert "cat /etc/cfg/config: from the host" in lines, r.stdout
    assert "cat /etc/cfg/key: deep" in lines, r.stdout  # a relative link inside the copy works
    assert "cat /etc/hosts: 10.0.0.1 from-the-host" in lines, r.stdout
    assert "cat /etc/cfg/shadow: fail" in lines, r.stdout  # the guest's own /etc/shadow: it has none
    assert "write /etc/cfg/config: fail" in lines and "write /etc/hosts: fail" in lines, r.stdout
    assert lines[-1] == "powering off", r.stdout
