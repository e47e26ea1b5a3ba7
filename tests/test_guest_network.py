"""Guest networking (mocktainer/unikraft/net.py): the netns' network handed to the guest at start.

Integration tests build what CNI builds (a netns with a veth whose container end has an address and a default
route), run the Linux test guest (TCG) with runu in that netns (joined by path) and check real traffic both
ways. Unit tests cover the argument building, the error paths (no route, no address, a link that refuses a
macvtap, a vanished link) and cleanup, in throw-away network namespaces.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RUNU, needs_root

from harness.images import unikernel_bundle
from harness.procs import ip
from guest import linux
from guest.build import build_tiny
from mocktainer.unikraft import host, net, qemu

QEMU = shutil.which("qemu-system-x86_64")
FIRECRACKER = shutil.which("firecracker")
BUSYBOX = "/bin/busybox"
M = linux.MARKER
GUEST_MIB = 128
VMM = "org.unikraft.runu.vmm"


def links(ns: str) -> list[str]:
    return [json_link["ifname"] for json_link in json.loads(ip("-j", "-n", ns, "link", "show"))]


def addrs(ns: str, dev: str) -> list[str]:
    out = json.loads(ip("-j", "-n", ns, "-4", "addr", "show", "dev", dev))
    return [f"{a['local']}/{a['prefixlen']}" for i in out for a in i.get("addr_info", [])]


def veth_pod(netns, subnet: str) -> tuple[str, str]:
    """(peer netns, pod netns): a veth between them; the pod end has .2/24 and a default route via .1."""
    peer, pod = netns(), netns()
    connect(peer, pod, subnet)
    return peer, pod


def connect(peer: str, pod: str, subnet: str) -> None:
    """What a CNI plugin does: a veth from `pod` (eth0, .2/24, default route via .1) to `peer` (.1)."""
    ip("link", "add", "vpeer", "netns", peer, "type", "veth", "peer", "name", "eth0", "netns", pod)
    ip("-n", peer, "addr", "add", f"{subnet}.1/24", "dev", "vpeer")
    ip("-n", peer, "link", "set", "vpeer", "up")
    ip("-n", pod, "addr", "add", f"{subnet}.2/24", "dev", "eth0")
    ip("-n", pod, "link", "set", "eth0", "up")
    ip("-n", pod, "route", "add", "default", "via", f"{subnet}.1")


def in_ns(ns: str, code: str) -> subprocess.CompletedProcess:
    """Python `code` (with `net` imported) run inside netns `ns`."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    prog = "import sys, json\nsys.path.insert(0, %r)\nfrom mocktainer.unikraft import net\n%s" % (src, code)
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", prog], capture_output=True, text=True,
                          timeout=60)


# -- pure argument building ------------------------------------------------------------------------------------

def uplink(gateway="10.0.0.1") -> net.Uplink:
    return net.Uplink(2, "eth0", "aa:bb:cc:dd:ee:ff", "10.0.0.2", 24, gateway, {})


LEGACY = ["netdev.ipv4_addr=10.0.0.2", "netdev.ipv4_gw_addr=10.0.0.1", "netdev.ipv4_subnet_mask=255.255.255.0"]


def test_boot_params_and_mask():
    assert net.boot_params(uplink()) == ["netdev.ip=10.0.0.2/24:10.0.0.1"] + LEGACY
    assert net.boot_params(uplink(None)) == ["netdev.ip=10.0.0.2/24", "netdev.ipv4_addr=10.0.0.2",
                                             "netdev.ipv4_subnet_mask=255.255.255.0"]
    assert net.boot_params(uplink(), ["8.8.8.8", "1.1.1.1", "9.9.9.9"], "web-1", "svc.local")[0] == \
        "netdev.ip=10.0.0.2/24:10.0.0.1:8.8.8.8:1.1.1.1:web-1:svc.local"
    assert net.boot_params(uplink(None), [], "web-1")[0] == "netdev.ip=10.0.0.2/24::::web-1"
    assert net.boot_params(uplink(), [], "bad:name", "x y")[0] == "netdev.ip=10.0.0.2/24:10.0.0.1"
    assert [net.subnet_mask(n) for n in (0, 8, 20, 30, 32)] == [
        "0.0.0.0", "255.0.0.0", "255.255.240.0", "255.255.255.252", "255.255.255.255"]
    with pytest.raises(ValueError):
        net.subnet_mask(33)


def test_read_resolv_conf(tmp_path):
    f = tmp_path / "resolv.conf"
    f.write_text("# by CRI\nnameserver 10.96.0.10\nnameserver fd00::1\nnameserver 8.8.8.8 # g\n"
                 "search default.svc.cluster.local svc.cluster.local\noptions ndots:5\n")
    assert net.read_resolv_conf(str(f)) == (["10.96.0.10", "8.8.8.8"], "default.svc.cluster.local")
    assert net.read_resolv_conf(str(tmp_path / "missing")) == ([], "")
    assert net.read_resolv_conf(str(tmp_path)) == ([], "")  # not a regular file
    assert net.read_resolv_conf("") == ([], "")
    big = tmp_path / "big"
    big.write_text("#" * 70000 + "\nnameserver 1.2.3.4\n")
    assert net.read_resolv_conf(str(big)) == ([], "")  # bounded: the name server past 64 KiB is not read


def guest(program="/unikraft/bin/kernel", params=(), args=(), linux=False, machine="microvm"):
    return {"machine": machine, "line": {"program": program, "params": list(params), "args": list(args),
                                         "linux": linux}}


@pytest.mark.parametrize("g, vmm, expected", [
    (guest(), "qemu", "/unikraft/bin/kernel P Q " + qemu.MICROVM_NIC_PARAM + " --"),
    (guest(args=["app", "a b"], machine="pc"), "qemu", "/unikraft/bin/kernel P Q -- app 'a b'"),
    (guest(None, ["env.vars=A=B"], ["app"], machine="pc"), "qemu", "env.vars=A=B P Q -- app"),
    (guest(args=["app", "--", "x"], machine="pc"), "qemu", "/unikraft/bin/kernel P Q -- app -- x"),
    (guest(params=["env.vars=A=B"]), "firecracker", "/unikraft/bin/kernel env.vars=A=B P Q -- ''"),
    (guest(args=["app"]), "firecracker", "/unikraft/bin/kernel P Q -- app"),
    (guest(None, ["console=ttyS0", "panic=-1"], linux=True), "qemu", "console=ttyS0 panic=-1 P Q"),
    (guest(None, ["console=ttyS0"], ["init", "args"], linux=True), "firecracker", "console=ttyS0 P Q -- init args"),
])
def test_guest_cmdline(g, vmm, expected):
    assert net.guest_cmdline(g, ["P", "Q"], vmm) == expected


def nic(cmdline, linux, device="macvtap", fd=-1, mac="02:00:00:00:00:01", mmio=False) -> net.Nic:
    return net.Nic(device, "runu0", fd, mac, ["netdev.ip=1.2.3.4/24"], linux, {}, cmdline, mmio)


def test_qemu_args_replace_the_one_append_and_add_the_nic():
    base = ["/usr/bin/qemu-system-x86_64", "-M", "microvm", "-kernel", "/k", "-append", "prog hello"]
    out = qemu.with_nic(base, nic("prog netdev.ip=1.2.3.4/24 -- hello", False, mmio=True), 7)
    assert out.count("-append") == 1
    assert out[out.index("-append") + 1] == "prog netdev.ip=1.2.3.4/24 -- hello"
    assert out[len(base):] == ["-machine", qemu.MICROVM_NO_ACPI] + qemu.nic_args(base, [(7, "02:00:00:00:00:01")])
    assert "virtio-net-device,netdev=net0,mac=02:00:00:00:00:01" in out  # microvm: virtio-mmio
    no_append = qemu.with_nic(["/q", "-M", "pc", "-kernel", "/k"], nic("a=b", True, mac="02:00:00:00:00:02"), 3)
    assert no_append[no_append.index("-append") + 1] == "a=b" and "-machine" not in no_append
    assert any(a.startswith("virtio-net-pci,") for a in no_append)


def test_firecracker_config():
    from mocktainer.unikraft import firecracker

    cfg = {"boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0 reboot=k"},
           "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}, "drives": []}
    tap = nic("console=ttyS0 reboot=k netdev.ip=1.2.3.4/24", True, "tap", mac="aa:bb:cc:dd:ee:ff")
    assert firecracker.boot_source(cfg, tap) == {"kernel_image_path": "/k",
                                                 "boot_args": "console=ttyS0 reboot=k netdev.ip=1.2.3.4/24"}
    assert firecracker.interface(tap) == {"iface_id": "eth0", "host_dev_name": "runu0",
                                          "guest_mac": "aa:bb:cc:dd:ee:ff"}
    assert cfg["boot-source"]["boot_args"] == "console=ttyS0 reboot=k"
    assert firecracker.boot_source(cfg) == cfg["boot-source"]


def test_has_default_route(tmp_path):
    head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    f = tmp_path / "route"
    f.write_text(head + "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert not net.has_default_route(str(f))
    f.write_text(head + "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    assert net.has_default_route(str(f))
    f.write_text(head)
    assert not net.has_default_route(str(f))


# -- netlink paths in throw-away namespaces ------------------------------------------------------------------------

NIC_JSON = ("None if n is None else "
            "{'device': n.device, 'name': n.name, 'fd': n.fd >= 0, 'mac': n.mac, 'params': n.params, "
            "'cmdline': n.cmdline, 'mmio': n.mmio}")


def run_setup(ns: str, state_dir: Path, device: str = "macvtap") -> dict:
    """net.attach() inside `ns`; its Nic or error as a dict (fds are closed)."""
    code = """
instr = net.instruction({"macvtap": "qemu", "tap": "firecracker"}[%r], %r, True, %r, "")
try:
    n = net.attach(instr)
    print(json.dumps({"nic": %s}))
except net.GuestNetError as e:
    print(json.dumps({"error": str(e)}))
""" % (device, device, str(state_dir), NIC_JSON)
    r = in_ns(ns, code)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@needs_root
def test_no_default_route_no_network(netns, tmp_path):
    ns = netns()
    ip("link", "add", "v0", "netns", ns, "type", "veth", "peer", "name", "v1", "netns", ns)
    ip("-n", ns, "addr", "add", "10.1.0.2/24", "dev", "v0")
    ip("-n", ns, "link", "set", "v0", "up")
    assert run_setup(ns, tmp_path) == {"nic": None}
    assert addrs(ns, "v0") == ["10.1.0.2/24"]
    assert not os.path.exists(tmp_path / net.RECORD)


@needs_root
def test_default_route_link_without_address_no_network(netns, tmp_path):
    ns = netns()
    ip("link", "add", "v0", "netns", ns, "type", "veth", "peer", "name", "v1", "netns", ns)
    ip("-n", ns, "link", "set", "v0", "up")
    ip("-n", ns, "link", "set", "v1", "up")
    ip("-n", ns, "route", "add", "default", "dev", "v0")
    assert run_setup(ns, tmp_path) == {"nic": None}
    assert sorted(links(ns)) == ["lo", "v0", "v1"]


@needs_root
def test_macvtap_refused_restores_the_link(netns, tmp_path):
    # A macvtap cannot sit on a loopback device: the kernel refuses it; nothing may be left changed.
    ns = netns()
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "route", "add", "default", "dev", "lo")
    before = addrs(ns, "lo")
    r = run_setup(ns, tmp_path)
    assert "error" in r and "cannot create a macvtap on lo" in r["error"], r
    assert links(ns) == ["lo"] and addrs(ns, "lo") == before
    assert [e for e in os.listdir(tmp_path) if e != net.RECORD] == []


@needs_root
def test_link_vanished_is_reported_and_cleaned(netns, tmp_path):
    """The uplink disappears while the macvtap is being made (simulated by deleting it from inside the
    macvtap step): the error names the link, and the macvtap went with it."""
    ns = netns()
    ip("link", "add", "v0", "netns", ns, "type", "veth", "peer", "name", "v1", "netns", ns)
    ip("-n", ns, "addr", "add", "10.2.0.2/24", "dev", "v0")
    ip("-n", ns, "link", "set", "v0", "up")
    ip("-n", ns, "link", "set", "v1", "up")
    ip("-n", ns, "route", "add", "default", "via", "10.2.0.1")
    code = """
real = net._open_macvtap
def vanish(nic, idx, state_dir):
    import subprocess
    subprocess.run(["ip", "link", "del", "v0"], check=True)
    return real(nic, idx, state_dir)
net._open_macvtap = vanish
try:
    net.attach(net.instruction("qemu", "macvtap", True, %r, ""))
    print("no error")
except net.GuestNetError as e:
    print(e)
""" % str(tmp_path)
    r = in_ns(ns, code)
    assert r.returncode == 0, r.stderr
    assert "guest network on v0" in r.stdout and "link v0 is gone" in r.stdout, r.stdout
    assert links(ns) == ["lo"]


@needs_root
@pytest.mark.parametrize("vmm", ["qemu", "firecracker"])
def test_setup_then_cleanup_from_the_record(netns, tmp_path, vmm, request):
    """attach() creates the device, takes the address; cleanup() (runu delete, in a netns joined by path)
    removes the device and tc, and puts the address and default route back. The state directory is on a
    nodev file system, like /run on most hosts (the macvtap node lives on a private tmpfs)."""
    peer, pod = veth_pod(netns, "10.3.0")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "nodev,size=1m", "tmpfs", str(state)], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(state)], check=False))
    device = {"qemu": qemu.NIC_DEVICE, "firecracker": "tap"}[vmm]
    path = f"/run/netns/{pod}"
    code = """
guest = {"machine": "pc", "hostname": "pod-a", "resolv_conf": %r,
         "line": {"program": None, "params": ["console=ttyS0"], "args": [], "linux": True}}
n = net.attach(net.instruction(%r, %r, True, %r, %r, guest))
print(json.dumps(%s))
""" % (str(tmp_path / "resolv.conf"), vmm, device, str(state), path, NIC_JSON)
    (tmp_path / "resolv.conf").write_text("nameserver 10.3.0.53\nsearch pods.example\n")
    r = in_ns(pod, code)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "runu0" in links(pod)
    assert addrs(pod, "eth0") == []
    params = ("netdev.ip=10.3.0.2/24:10.3.0.1:10.3.0.53::pod-a:pods.example "
              "netdev.ipv4_addr=10.3.0.2 netdev.ipv4_gw_addr=10.3.0.1 netdev.ipv4_subnet_mask=255.255.255.0")
    record = json.loads((state / net.RECORD).read_text())
    assert record["netns"] == path and record["uplink"]["addr"] == "10.3.0.2"
    assert " ".join(out["params"]) == params and out["name"] == "runu0"
    assert out["cmdline"] == "console=ttyS0 " + params and not out["mmio"]  # a Linux guest on pc: no mmio
    if vmm == "qemu":
        mac = json.loads(ip("-j", "-n", pod, "link", "show", "runu0"))[0]["address"]
        assert out["mac"] == mac and out["fd"]
        assert json.loads(ip("-j", "-n", pod, "-d", "link", "show", "runu0"))[0]["linkinfo"]["info_kind"] == "macvtap"
    else:
        eth_mac = json.loads(ip("-j", "-n", pod, "link", "show", "eth0"))[0]["address"]
        assert out["mac"] == eth_mac and not out["fd"]
        for dev, to in (("eth0", "runu0"), ("runu0", "eth0")):
            f = subprocess.run(["tc", "-n", pod, "filter", "show", "dev", dev, "ingress"], capture_output=True,
                               text=True).stdout
            assert f"Egress Redirect to device {to}" in f, f
    assert [e for e in os.listdir(state) if e != net.RECORD] == []  # no device node
    assert net.cleanup(str(state)) == []
    assert sorted(links(pod)) == ["eth0", "lo"]
    assert addrs(pod, "eth0") == ["10.3.0.2/24"]
    assert "default via 10.3.0.1" in ip("-n", pod, "route")
    assert "ingress" not in subprocess.run(["tc", "-n", pod, "qdisc", "show", "dev", "eth0"], capture_output=True,
                                           text=True).stdout
    # the traffic path works again for the next container
    subprocess.run(["ip", "netns", "exec", peer, BUSYBOX, "ping", "-c", "1", "-W", "2", "10.3.0.2"], check=True,
                   capture_output=True)


# -- runu end to end ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 not installed")
    try:
        return linux.build_linux_guest(str(tmp_path_factory.mktemp("linux-guest")))
    except linux.GuestMissing as e:
        pytest.skip("Linux test guest unavailable: %s" % e)


def linux_bundle(tmp_path: Path, guest, netns_path: str, args, name="bundle") -> str:
    kernel, initrd = guest
    return unikernel_bundle(tmp_path / name, kernel, ["quiet", *args], initrd=initrd,
                                    annotations={"org.unikraft.runu.accel": "tcg"},
                                    resources={"memory": {"limit": (GUEST_MIB + 64) << 20}}, netns=netns_path)


class Runu:
    def __init__(self, root: str):
        self.root = root

    def __call__(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([RUNU, "--root", self.root, *args], capture_output=True, text=True, timeout=60, **kw)

    def create(self, bundle: str, cid: str, log: Path) -> None:
        with open(log, "w") as out:
            r = subprocess.run([RUNU, "--root", self.root, "create", "--bundle", bundle, cid],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30)
        assert r.returncode == 0, log.read_text()


@pytest.fixture
def runu(tmp_path):
    r = Runu(str(tmp_path / "root"))
    yield r
    if os.path.isdir(r.root):
        for cid in os.listdir(r.root):
            r("delete", "--force", cid)


def wait_console(log: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = log.read_text(errors="replace")
        if text in out:
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} on the console:\n{out}")
        time.sleep(0.1)


needs_net_tools = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static (ping) is not installed")


@needs_root
@needs_net_tools
def test_two_guests_in_two_pods_ping_both_ways(guest, tmp_path, netns, runu):
    pods = [veth_pod(netns, "10.20.0"), veth_pod(netns, "10.21.0")]
    logs = []
    for n, (_peer, pod) in enumerate(pods):
        subnet = "10.2%d.0" % n
        b = linux_bundle(tmp_path, guest, f"/run/netns/{pod}", [f"ping={subnet}.1", "idle"], name=f"b{n}")
        # the resolv.conf that CRI and podman bind-mount, and the spec's hostname, reach the guest (netdev.ip)
        resolv = tmp_path / f"resolv{n}.conf"
        resolv.write_text(f"nameserver {subnet}.53\nnameserver 8.8.4.4\nsearch pod{n}.example other.example\n")
        cfg = json.loads(Path(b, "config.json").read_text())
        cfg["hostname"] = f"guest-{n}"
        cfg["mounts"] = list(cfg.get("mounts") or []) + [
            {"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv), "options": ["rbind", "ro"]}]
        Path(b, "config.json").write_text(json.dumps(cfg))
        log = tmp_path / f"console{n}.log"
        runu.create(b, f"net{n}", log)
        logs.append(log)
    for n in range(2):
        r = runu("start", f"net{n}")
        assert r.returncode == 0, r.stderr
    for n, (peer, pod) in enumerate(pods):
        subnet = "10.2%d.0" % n
        out = wait_console(logs[n], M + "idle")
        assert f"{M}network: from netdev.ip" in out, out
        assert f"{M}network: eth0 {subnet}.2/24" in out, out
        assert f"{M}network: dns {subnet}.53 8.8.4.4 search pod{n}.example" in out, out
        assert f"{M}network: hostname guest-{n}" in out, out
        assert f"{M}ping {subnet}.1: ok" in out, out
        r = subprocess.run(["ip", "netns", "exec", peer, BUSYBOX, "ping", "-c", "2", "-W", "5", f"{subnet}.2"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "runu0" in links(pod) and addrs(pod, "eth0") == []
    for n, (_peer, pod) in enumerate(pods):
        assert runu("delete", "--force", f"net{n}").returncode == 0
        assert sorted(links(pod)) == ["eth0", "lo"]  # the macvtap is gone, the address back
        assert addrs(pod, "eth0") == ["10.2%d.0.2/24" % n]
    assert os.listdir(runu.root) == []


@needs_root
def test_no_route_boots_without_network(guest, tmp_path, netns, runu):
    ns = netns()
    b = linux_bundle(tmp_path, guest, f"/run/netns/{ns}", [])
    log = tmp_path / "console.log"
    runu.create(b, "nonet", log)
    assert runu("start", "nonet").returncode == 0
    out = wait_console(log, M + "powering off")
    assert "netdev.ipv4_addr" not in out
    assert links(ns) == ["lo"]


@needs_root
def test_macvtap_refused_fails_create_with_a_message(guest, tmp_path, netns, runu):
    """The network exists at create: it is set up then, and its failure fails create, leaving nothing."""
    ns = netns()
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "route", "add", "default", "dev", "lo")
    b = linux_bundle(tmp_path, guest, f"/run/netns/{ns}", [])
    r = runu("create", "--bundle", b, "refused", stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert "cannot create a macvtap on lo" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(runu.root, "refused"))
    assert links(ns) == ["lo"]


@needs_root
def test_macvtap_refused_late_fails_start_with_a_message(guest, tmp_path, netns, runu):
    """The network appears between create and start: set up at start, its failure fails start."""
    ns = netns()
    b = linux_bundle(tmp_path, guest, f"/run/netns/{ns}", [])
    runu.create(b, "refused", tmp_path / "console.log")
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "route", "add", "default", "dev", "lo")
    r = runu("start", "refused")
    assert r.returncode == 1
    assert "failed to start" in r.stderr and "cannot create a macvtap on lo" in r.stderr, r.stderr
    assert runu("delete", "--force", "refused").returncode == 0
    assert links(ns) == ["lo"]


@needs_root
@needs_net_tools
def test_network_between_create_and_start_reaches_the_guest(guest, tmp_path, netns, runu):
    """A client that configures the netns after create (as `ctr run --cni` does): the QEMU that create built
    paused has no NIC, so at start the supervisor replaces it by one with the NIC and the address on the
    kernel command line, before the guest ever ran. The container's pid does not change; traffic flows."""
    peer, pod = netns(), netns()
    b = linux_bundle(tmp_path, guest, f"/run/netns/{pod}", ["ping=10.50.0.1", "idle"])
    log = tmp_path / "console.log"
    runu.create(b, "late", log)
    pid = json.loads(runu("state", "late").stdout)["pid"]
    connect(peer, pod, "10.50.0")
    r = runu("start", "late")
    assert r.returncode == 0, r.stderr
    st = json.loads(runu("state", "late").stdout)
    assert st["status"] == "running" and st["pid"] == pid
    out = wait_console(log, M + "idle", timeout=120)
    assert f"{M}network: eth0 10.50.0.2/24" in out, out
    assert f"{M}ping 10.50.0.1: ok" in out, out
    r = subprocess.run(["ip", "netns", "exec", peer, BUSYBOX, "ping", "-c", "2", "-W", "5", "10.50.0.2"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert runu("delete", "--force", "late").returncode == 0
    assert sorted(links(pod)) == ["eth0", "lo"] and addrs(pod, "eth0") == ["10.50.0.2/24"]


@needs_root
@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
@pytest.mark.parametrize("app", [[], ["one", "two words"]])
def test_tiny_kernel_reads_the_network_parameters_on_qemu(tmp_path, netns, runu, fmt, app):
    """QEMU microvm (PVH) and pc (multiboot) with a NIC: the tiny kernel, which reads its command line as
    Unikraft 0.16 does, gets argv[0], netdev.ip (and on microvm the NIC's virtio_mmio.device, QEMU's own)
    as parameters and exactly the application's arguments."""
    peer, pod = veth_pod(netns, "10.31.0")
    kernel = build_tiny(str(tmp_path / "k"), fmt)
    b = linux_bundle(tmp_path, (kernel, kernel), f"/run/netns/{pod}", [])
    cfg = json.loads(Path(b, "config.json").read_text())
    os.unlink(Path(b, "rootfs/unikraft/bin/initrd"))
    cfg["process"]["args"] = ["/unikraft/bin/kernel", "idle", "--", *app]
    cfg["process"]["env"] = ["A=1"]
    cfg["linux"]["resources"] = {}
    Path(b, "config.json").write_text(json.dumps(cfg))
    log = tmp_path / "console.log"
    runu.create(b, "tiny", log)
    assert runu("start", "tiny").returncode == 0
    out = wait_console(log, "idling", timeout=30)
    uk = [ln for ln in out.splitlines() if ln.startswith(("uk: ", "arg: "))]
    # multiboot: QEMU writes the kernel's path as it was given, the fd of the kernel checked at create
    argv0 = "/unikraft/bin/kernel" if fmt == "pvh" else "/proc/self/fd/4"
    expected = ["uk: argv0=" + argv0, "uk: netdev.ip=10.31.0.2/24:10.31.0.1:::runu"]
    if fmt == "pvh":
        expected.append("uk: " + qemu.MICROVM_NIC_PARAM)
    assert uk == expected + ["uk: env A=1"] + ["arg: " + a for a in app], out
    assert runu("delete", "--force", "tiny").returncode == 0
    assert addrs(pod, "eth0") == ["10.31.0.2/24"]


def vm_config(state_dir: str) -> dict:
    """Firecracker's own view of its VM (GET /vm/config on its API socket)."""
    r = subprocess.run(["curl", "-s", "--unix-socket", os.path.join(state_dir, "firecracker.sock"),
                        "http://localhost/vm/config"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@needs_root
@pytest.mark.skipif(FIRECRACKER is None or not host.kvm_usable(), reason="needs firecracker and a usable /dev/kvm")
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("order", ["before create", "between create and start"])
def test_firecracker_boots_with_the_tap(tmp_path, netns, runu, order):
    """The tiny kernel has no network driver: the tap, the tc redirects and Firecracker's network interface
    (configured through its API, at create or, for a network that appears later, at start before the
    InstanceStart) are set up and the VM boots with it. (No Linux guest can run under Firecracker on this
    host's KVM, which lacks hardware virtualisation: traffic through Firecracker is not tested here.)"""
    if order == "before create":
        peer, pod = veth_pod(netns, "10.30.0")
    else:
        peer, pod = netns(), netns()
    kernel = build_tiny(str(tmp_path / "k"), "pvh")
    b = linux_bundle(tmp_path, (kernel, kernel), f"/run/netns/{pod}", [])
    cfg = json.loads(Path(b, "config.json").read_text())
    os.unlink(Path(b, "rootfs/unikraft/bin/initrd"))
    cfg["process"]["args"] = ["/unikraft/bin/kernel", "idle", "--"]
    cfg["annotations"] = {VMM: "firecracker"}
    cfg["linux"]["resources"] = {}
    Path(b, "config.json").write_text(json.dumps(cfg))
    log = tmp_path / "console.log"
    runu.create(b, "fc", log)
    if order != "before create":
        assert vm_config(os.path.join(runu.root, "fc")).get("network-interfaces") in (None, [])
        connect(peer, pod, "10.30.0")
    assert runu("start", "fc").returncode == 0
    wait_console(log, "Hello from the runu test kernel", timeout=20)
    fc = vm_config(os.path.join(runu.root, "fc"))
    eth_mac = json.loads(ip("-j", "-n", pod, "link", "show", "eth0"))[0]["address"]
    (iface,) = fc["network-interfaces"]
    assert {k: iface[k] for k in ("iface_id", "host_dev_name", "guest_mac")} == {
        "iface_id": "eth0", "host_dev_name": "runu0", "guest_mac": eth_mac}
    # argv[0] first, the network's parameters before a `--` that Firecracker keeps (with nothing after it, the
    # empty word ''), so its virtio_mmio.device lands before it
    assert fc["boot-source"]["boot_args"] == (
        "/unikraft/bin/kernel idle netdev.ip=10.30.0.2/24:10.30.0.1:::runu netdev.ipv4_addr=10.30.0.2 "
        "netdev.ipv4_gw_addr=10.30.0.1 netdev.ipv4_subnet_mask=255.255.255.0 -- ''")
    out = wait_console(log, "idling", timeout=20)
    assert "uk: netdev.ip=10.30.0.2/24:10.30.0.1:::runu\n" in out and "uk: virtio_mmio.device=" in out, out
    assert "arg: " not in out, out
    assert "runu0" in links(pod) and addrs(pod, "eth0") == []
    assert runu("state", "fc").returncode == 0 and '"running"' in runu("state", "fc").stdout
    assert runu("delete", "--force", "fc").returncode == 0
    assert sorted(links(pod)) == ["eth0", "lo"]
    assert addrs(pod, "eth0") == ["10.30.0.2/24"]
