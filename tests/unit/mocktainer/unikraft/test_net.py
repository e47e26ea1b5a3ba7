"""mocktainer.unikraft.net: attach / release / cleanup against a fake netlink (harness.netlink), so every
error path runs without root. The real thing (netns, macvtap, tap, QEMU) is tests/test_guest_network.py."""

import errno
import json
import os

import pytest

from harness.netlink import FakeIPRoute
from mocktainer import system
from mocktainer.unikraft import net


@pytest.fixture
def netns(monkeypatch):
    """Install a fake netlink: `netns(ipr)` makes `net` see `ipr`; returns it."""
    def install(ipr, default_route=True):
        monkeypatch.setattr(net, "has_default_route", lambda *a: default_route)
        monkeypatch.setattr(net, "_ipr", lambda: ipr)
        return ipr
    return install


@pytest.fixture
def macvtap_fd(monkeypatch):
    """Opening the macvtap's character device needs mounts: hand out a pipe's end instead, and remember it."""
    opened = []

    def fake_open(nic, ifindex, state_dir):
        r, w = os.pipe()
        os.close(w)
        opened.append(r)
        return r
    monkeypatch.setattr(net, "_open_macvtap", fake_open)
    yield opened
    for fd in opened:
        try:
            os.close(fd)
        except OSError:
            pass


def instr(tmp_path, device="macvtap", vmm="qemu"):
    return net.instruction(vmm, device, True, str(tmp_path))


def is_open(fd):
    try:
        os.fstat(fd)
    except OSError as e:
        assert e.errno == errno.EBADF
        return False
    return True


def untouched(ipr):
    assert ipr.index_of(net.NIC) is None
    assert ipr.addresses_of("eth0") == ["10.88.0.5/16"]
    assert [r["gateway"] for r in ipr.default_routes()] == ["10.88.0.1"]


def test_no_default_route_in_proc_never_opens_netlink(tmp_path, monkeypatch):
    monkeypatch.setattr(net, "has_default_route", lambda *a: False)
    monkeypatch.setattr(net, "_ipr", lambda: pytest.fail("netlink opened without a default route"))
    assert net.attach(instr(tmp_path)) is None


def test_no_default_route_in_the_main_table_means_no_network(tmp_path, netns):
    ipr = FakeIPRoute()
    eth0 = ipr.add_link("eth0")
    ipr.add_address(eth0, "10.0.0.2", 24)
    ipr.add_route(eth0, gateway="10.0.0.1", table=100)  # a default route, but not in the main table
    netns(ipr)
    assert net.attach(instr(tmp_path)) is None
    assert ipr.calls == [] and ipr.closed
    assert not os.path.exists(tmp_path / net.RECORD)


def test_no_ipv4_address_on_the_route_link_means_no_network(tmp_path, netns):
    ipr = FakeIPRoute()
    eth0 = ipr.add_link("eth0")
    ipr.add_route(eth0, gateway="10.0.0.1")
    netns(ipr)
    assert net.attach(instr(tmp_path)) is None
    assert ipr.calls == [] and ipr.closed
    assert not os.path.exists(tmp_path / net.RECORD)


def test_netlink_socket_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(net, "has_default_route", lambda *a: True)

    def refuse():
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(net, "_ipr", refuse)
    with pytest.raises(net.GuestNetError, match="cannot open a netlink socket: .*Operation not permitted"):
        net.attach(instr(tmp_path))


def test_routes_unreadable(tmp_path, netns):
    ipr = netns(FakeIPRoute.with_uplink({"route dump": OSError(errno.EACCES, "Permission denied")}))
    with pytest.raises(net.GuestNetError, match="cannot read routes and addresses: .*Permission denied"):
        net.attach(instr(tmp_path))
    assert ipr.closed


def test_macvtap_refused_leaves_the_netns_as_it_was(tmp_path, netns, macvtap_fd):
    ipr = netns(FakeIPRoute.with_uplink({"link add": OSError(errno.EOPNOTSUPP, "Operation not supported")}))
    with pytest.raises(net.GuestNetError) as e:
        net.attach(instr(tmp_path))
    assert str(e.value).startswith("guest network on eth0: cannot create a macvtap on eth0")
    assert "Operation not supported" in str(e.value) and "undoing" not in str(e.value)
    untouched(ipr)
    assert ipr.closed and macvtap_fd == []
    # what was about to be created was recorded first (runu delete undoes it from there)
    record = json.loads((tmp_path / net.RECORD).read_text())
    assert record["nic"] == net.NIC and record["uplink"]["addr"] == "10.88.0.5"


def test_failure_after_the_macvtap_removes_it_and_closes_its_fd(tmp_path, netns, macvtap_fd):
    ipr = netns(FakeIPRoute.with_uplink({"addr del": OSError(errno.EPERM, "Operation not permitted")}))
    with pytest.raises(net.GuestNetError, match="cannot take 10.88.0.5/16 off eth0"):
        net.attach(instr(tmp_path))
    untouched(ipr)
    assert ("link del", str(3)) in ipr.calls  # the macvtap (index 3) went
    assert len(macvtap_fd) == 1 and not is_open(macvtap_fd[0])


def test_char_device_failure_after_the_macvtap(tmp_path, netns, monkeypatch):
    ipr = netns(FakeIPRoute.with_uplink())

    def no_node(nic, ifindex, state_dir):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(net, "_open_macvtap", no_node)
    match = "guest network on eth0: (PermissionError|OSError): .*Operation not permitted"
    with pytest.raises(net.GuestNetError, match=match):
        net.attach(instr(tmp_path))
    untouched(ipr)


def test_undo_problems_are_reported_with_the_cause(tmp_path, netns, macvtap_fd):
    ipr = netns(FakeIPRoute.with_uplink({"addr del": OSError(errno.EPERM, "Operation not permitted"),
                                         "link del": OSError(errno.EBUSY, "Device or resource busy")}))
    with pytest.raises(net.GuestNetError) as e:
        net.attach(instr(tmp_path))
    msg = str(e.value)
    assert "cannot take 10.88.0.5/16 off eth0" in msg
    assert f"(undoing it: cannot remove {net.NIC}: " in msg and "busy" in msg
    assert ipr.addresses_of("eth0") == ["10.88.0.5/16"]  # the rest of the undo still ran


def test_tap_refused(tmp_path, netns, monkeypatch):
    ipr = netns(FakeIPRoute.with_uplink())

    def no_tun(name):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(system, "make_persistent_tap", no_tun)
    with pytest.raises(net.GuestNetError, match=f"cannot create the tap device {net.NIC}: Operation not permitted"):
        net.attach(instr(tmp_path, "tap", "firecracker"))
    untouched(ipr)
    assert not [c for c in ipr.calls if c[0] in ("link add", "link del", "addr del")]


def test_tap_redirect_refused_removes_the_tap(tmp_path, netns, monkeypatch):
    ipr = netns(FakeIPRoute.with_uplink({"tc add-filter": OSError(errno.EPERM, "Operation not permitted")}))
    monkeypatch.setattr(system, "make_persistent_tap", lambda name: ipr.add_link(name, kind="tun"))
    with pytest.raises(net.GuestNetError, match="guest network on eth0: .*Operation not permitted"):
        net.attach(instr(tmp_path, "tap", "firecracker"))
    untouched(ipr)
    assert ("tc del", "ingress", "2") in ipr.calls  # the uplink's ingress qdisc is removed again


def test_unknown_device_is_refused_and_undone(tmp_path, netns):
    ipr = netns(FakeIPRoute.with_uplink())
    with pytest.raises(net.GuestNetError, match="no guest networking through a 'bogus' device"):
        net.attach(instr(tmp_path, "bogus"))
    untouched(ipr)


def test_attach_then_release_puts_address_and_route_back(tmp_path, netns, macvtap_fd):
    ipr = netns(FakeIPRoute.with_uplink())
    nic = net.attach(instr(tmp_path))
    assert nic is not None and nic.device == "macvtap" and nic.fd == macvtap_fd[0]
    assert nic.mac == ipr.links[ipr.index_of(net.NIC)]["mac"]
    assert "netdev.ipv4_addr=10.88.0.5" in nic.params and "netdev.ipv4_gw_addr=10.88.0.1" in nic.params
    assert ipr.addresses_of("eth0") == [] and ipr.default_routes() == []  # the guest owns the address now
    assert net.release(nic) == []
    untouched(ipr)
    assert nic.fd == -1 and not is_open(macvtap_fd[0])


def test_release_when_the_uplink_is_gone(tmp_path, netns, macvtap_fd):
    ipr = netns(FakeIPRoute.with_uplink())
    nic = net.attach(instr(tmp_path))
    ipr.link("del", index=ipr.index_of("eth0"))
    problems = net.release(nic)
    assert problems == ["link eth0 is gone: its address 10.88.0.5/16 cannot go back"]
    assert ipr.index_of(net.NIC) is None


def test_release_reports_restore_failures(tmp_path, netns, macvtap_fd):
    ipr = netns(FakeIPRoute.with_uplink())
    nic = net.attach(instr(tmp_path))
    ipr.fail["addr add"] = OSError(errno.EPERM, "Operation not permitted")
    problems = net.release(nic)
    assert len(problems) == 1 and problems[0].startswith("cannot put 10.88.0.5/16 back on eth0")


def test_release_without_netlink(tmp_path, netns, macvtap_fd, monkeypatch):
    netns(FakeIPRoute.with_uplink())
    nic = net.attach(instr(tmp_path))

    def refuse():
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(net, "_ipr", refuse)
    assert net.release(nic) == ["cannot open a netlink socket: [Errno 1] Operation not permitted"]


def test_cleanup_without_a_record_or_with_a_private_netns(tmp_path):
    assert net.cleanup(str(tmp_path)) == []
    (tmp_path / net.RECORD).write_text(json.dumps({"netns": "", "uplink": {}}))
    assert net.cleanup(str(tmp_path)) == []
    (tmp_path / net.RECORD).write_text("[1]")
    assert net.cleanup(str(tmp_path))[0].startswith(f"cannot read {tmp_path / net.RECORD}")
