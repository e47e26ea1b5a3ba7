"""The Linux test guest (tests/guest/linux.py): Debian's cloud kernel and a busybox initramfs, booted under QEMU.

Always TCG: Linux guests crash under the paravirtual KVM of the project's machines.
Machine `pc` (SeaBIOS): `microvm` boots as fast, but without HPET/ACPI PM timer the
kernel's TSC calibration against the PIT fails now and then under TCG and boot hangs.
Each boot takes ~2-3 s. Every QEMU process is killed and reaped in a ``finally`` block.
"""

import gzip
import os
import shutil
import subprocess
import time

import pytest

from conftest import needs_root

import clients
from guest import linux

QEMU = shutil.which("qemu-system-x86_64")
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNU = shutil.which("runu") or os.path.join(TOP, ".venv/bin/runu")
BUSYBOX = "/bin/busybox"
M = linux.MARKER
BOOT_TIMEOUT = 40  # a boot takes ~2-3 s; generous for a loaded machine
GUEST_MIB = 128    # the kernel needs ~80 MiB; with 64 MiB it resets while decompressing (QEMU exits 0, silently)

pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed (Debian: qemu-system-x86)")


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    try:
        return linux.build_linux_guest(str(tmp_path_factory.mktemp("linux-guest")))
    except linux.GuestMissing as e:
        reason = str(e) if linux.SETUP_SCRIPT in str(e) else "%s (%s)" % (e, linux.SETUP_SCRIPT)
        pytest.skip("Linux test guest unavailable: " + reason)


def qemu_argv(guest, append, extra=()):
    kernel, initrd = guest
    return [QEMU, "-M", "pc", "-accel", "tcg", "-cpu", "max", "-m", "%dM" % GUEST_MIB,
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-chardev", "stdio,id=con", "-serial", "chardev:con", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd, *extra,
            "-append", "console=ttyS0 panic=-1 quiet " + append]


class Qemu:
    """QEMU with its console (stdout and stderr) in a file; always use as a context manager."""

    def __init__(self, argv, log, pass_fds=()):
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
                                     pass_fds=pass_fds)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        finally:
            self._out.close()

    def output(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_for(self, text, timeout=BOOT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, "QEMU exited (%s) before %r:\n%s" % (self.proc.returncode, text,
                                                                                   self.output())
            assert time.monotonic() < deadline, "no %r after %ss:\n%s" % (text, timeout, self.output())
            time.sleep(0.05)

    def finish(self, timeout=BOOT_TIMEOUT):
        """QEMU's exit status and the guest's lines (marker stripped)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("QEMU still running after %ss:\n%s" % (timeout, self.output()))
        return rc, guest_lines(self.output())


def guest_lines(out):
    return [line[len(M):].rstrip("\r") for line in out.splitlines() if line.startswith(M)]


def boot(guest, tmp_path, append, extra=(), pass_fds=()):
    with Qemu(qemu_argv(guest, append, extra), str(tmp_path / "console.log"), pass_fds) as q:
        return q.finish()


# -- the initramfs, without booting ------------------------------------------------------------------------------

def read_newc(data):
    """{name: (mode, rdevmajor, rdevminor, data)} from a newc archive."""
    out, off = {}, 0
    while True:
        assert data[off:off + 6] == b"070701", "bad cpio magic at %d" % off
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, rmaj, rmin, data[off:off + size])
        off += size
        off += -off % 4


def test_initramfs_contents(guest):
    kernel, initrd = guest
    with open(kernel, "rb") as f:
        assert f.read(0x210)[0x202:0x206] == b"HdrS"  # a bzImage
    with open(initrd, "rb") as f:
        files = read_newc(gzip.decompress(f.read()))
    assert files["init"][0] == 0o100755
    with open(linux.INIT_SCRIPT, "rb") as f:
        assert files["init"][3] == f.read()
    assert files["dev/console"][:3] == (0o20600, 5, 1)
    assert files["bin/busybox"][3][:4] == b"\x7fELF"
    for applet in ("bin/sh", "sbin/ip", "bin/ping", "sbin/insmod", "sbin/poweroff"):
        assert files[applet][0] & 0o170000 == 0o120000, applet  # symlinks to busybox
    net = files["lib/modules/net.list"][3].decode().split()
    assert net[-1] == "virtio_net.ko"
    for before, after in (("virtio_ring.ko", "virtio.ko"), ("failover.ko", "net_failover.ko"),
                          ("net_failover.ko", "virtio_net.ko"), ("virtio.ko", "virtio_pci.ko")):
        assert net.index(before) < net.index(after)
    for name in net + files["lib/modules/boot.list"][3].decode().split():
        assert files["lib/modules/" + name][3][:4] == b"\x7fELF", name


def test_build_is_cached(guest):
    kernel, initrd = guest
    before = os.stat(initrd).st_mtime_ns
    assert linux.build_linux_guest(os.path.dirname(initrd)) == (kernel, initrd)
    assert os.stat(initrd).st_mtime_ns == before


# -- booting under QEMU ------------------------------------------------------------------------------------------

def test_boots_prints_command_line_and_powers_off(guest, tmp_path):
    rc, lines = boot(guest, tmp_path, "hello=world -- one two")
    assert lines[0] == "booted", lines
    assert lines[1] == "cmdline: console=ttyS0 panic=-1 quiet hello=world -- one two"
    assert lines[-1] == "powering off"
    assert rc == 0  # ACPI power-off ends QEMU with status 0


@pytest.mark.parametrize("form", ["0.16", "legacy", "both"])
def test_network_configured_without_a_peer(guest, tmp_path, form):
    # A NIC with no backend: the address, mask and route are set up all the same, from Unikraft 0.16's
    # netdev.ip (which wins when both are there, as runu gives both) or the older netdev.ipv4_* form.
    mac = "52:54:00:ab:cd:ef"
    new = "netdev.ip=10.9.8.6/30:10.9.8.5:10.9.8.53::guest-1:example.test"
    old = "netdev.ipv4_addr=10.9.8.6 netdev.ipv4_gw_addr=10.9.8.5 netdev.ipv4_subnet_mask=255.255.255.252"
    append = {"0.16": new, "legacy": old, "both": new + " " + old.replace("10.9.8.6", "10.9.8.7")}[form]
    rc, lines = boot(guest, tmp_path, append, extra=["-device", "virtio-net-pci,mac=" + mac])
    assert "network: eth0 10.9.8.6/30 mac %s" % mac in lines, lines
    assert "network: default via 10.9.8.5" in lines
    if form == "legacy":
        assert "network: from netdev.ipv4_*" in lines
    else:
        assert "network: from netdev.ip" in lines
        assert "network: dns 10.9.8.53 - search example.test" in lines
        assert "network: hostname guest-1" in lines
    assert rc == 0 and lines[-1] == "powering off"


def test_panic_reaches_qemu_through_pvpanic(guest, tmp_path):
    # Without pvpanic, panic=-1 resets the guest and -no-reboot turns that into exit status 0.
    rc, lines = boot(guest, tmp_path, "panic", extra=["-device", "pvpanic", "-action", "panic=exit-failure"])
    assert lines[-1] == "panicking", lines
    assert rc == 1


@needs_root
def test_macvtap_on_veth_traffic_both_ways(guest, tmp_path, netns):
    """What the networking issue does: the guest owns the container end of a veth through a macvtap (bridge mode)
    and pings the peer; the peer pings the guest."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (it provides ping)")
    peer, ctr = netns(), netns()

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("link", "add", "vpeer", "netns", peer, "type", "veth", "peer", "name", "vctr", "netns", ctr)
    ip("-n", peer, "addr", "add", "10.0.0.1/24", "dev", "vpeer")
    ip("-n", peer, "link", "set", "vpeer", "up")
    ip("-n", ctr, "link", "set", "vctr", "up")
    ip("-n", ctr, "link", "add", "link", "vctr", "name", "mvt0", "type", "macvtap", "mode", "bridge")
    ip("-n", ctr, "link", "set", "mvt0", "up")
    # /dev/tapN is numbered by the per-netns ifindex: make a private node from the netns' sysfs.
    info = subprocess.run(["ip", "netns", "exec", ctr, "sh", "-c",
                           "cat /sys/class/net/mvt0/address /sys/class/net/mvt0/macvtap/tap*/dev"],
                          check=True, capture_output=True, text=True).stdout.split()
    mac, (major, minor) = info[0], map(int, info[1].split(":"))
    node = str(tmp_path / "tap")
    os.mknod(node, 0o600 | 0o020000, os.makedev(major, minor))
    fd = os.open(node, os.O_RDWR)
    try:
        append = "netdev.ip=10.0.0.2/24:10.0.0.1 ping=10.0.0.1 idle"  # Unikraft 0.16's form
        extra = ["-netdev", "tap,id=n0,fd=%d" % fd, "-device", "virtio-net-pci,netdev=n0,mac=" + mac]
        with Qemu(qemu_argv(guest, append, extra), str(tmp_path / "console.log"), pass_fds=[fd]) as q:
            q.wait_for(M + "idle")
            assert M + "network: from netdev.ip" in q.output(), q.output()
            assert M + "ping 10.0.0.1: ok" in q.output(), q.output()
            r = subprocess.run(["ip", "netns", "exec", peer, BUSYBOX, "ping", "-c", "2", "-W", "5", "10.0.0.2"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
    finally:
        os.close(fd)


@needs_root
def test_runu_run_boots_the_linux_guest(guest, tmp_path):
    kernel, initrd = guest
    # runu gives the guest the limit minus QEMU's own overhead (64 MiB): ask for GUEST_MIB for the guest.
    bundle = clients.unikernel_bundle(tmp_path / "bundle", kernel, ["quiet", "--", "hello"], initrd=initrd,
                                      env=["GREETING=hi"], annotations={"org.unikraft.runu.accel": "tcg"},
                                      resources={"memory": {"limit": (GUEST_MIB + 64) << 20}})
    root = str(tmp_path / "root")
    try:
        r = subprocess.run([RUNU, "--root", root, "run", "--bundle", bundle, "linux1"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
    finally:
        if os.path.isdir(root):
            for cid in os.listdir(root):
                subprocess.run([RUNU, "--root", root, "delete", "--force", cid], capture_output=True, timeout=30)
    lines = guest_lines(r.stdout)
    assert lines[:1] == ["booted"], r
    cmdline = next(line for line in lines if line.startswith("cmdline: ")).split()[1:]
    assert cmdline[:2] == ["console=ttyS0", "panic=-1"]  # runu's parameters for a Linux kernel
    assert cmdline[2:] == ["GREETING=hi", "quiet", "--", "hello"]
    assert lines[-1] == "powering off"
    assert r.returncode == 0, r
