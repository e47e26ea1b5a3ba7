"""Guest networking: the container's network (what CNI configured) handed to the guest.

Runs in the container's supervisor (see supervisor.py), inside the container's network
namespace: at create when the netns already has a network, else at start (CNI may
configure the netns between create and start). `runu create` puts an instruction into
the init configuration (`instruction()`); the supervisor calls `attach()`, which returns
a `Nic` that the VMM backend puts on the VMM's command line or configuration. pyroute2
is imported only here (~230 ms), and only when the netns has a default route.

What it does:

- Find the IPv4 default route (main table, lowest metric; /proc/self/net/route is
  read first, so a netns without one never imports pyroute2). None, or no IPv4
  address on its link: the guest boots without a network.
- "macvtap" (QEMU's NIC_DEVICE): a macvtap (`runu0`, bridge mode) on that link, up; its
  character device is opened through a private node made from the netns' own sysfs
  (`/sys/class/net/runu0/macvtap/tap<ifindex>/dev`, read from a sysfs mounted in
  a private mount namespace, since the host's /sys shows the host's netns and
  `/dev/tapN` can belong to another netns), made on a private tmpfs mounted on
  a directory of the state directory (which may be on a nodev file system),
  opened, unmounted. The fd is inherited by QEMU: `-netdev tap,fd=N` and a
  virtio-net device whose MAC is the macvtap's (`qemu.with_nic`).
- "tap" (Firecracker's): a persistent tap (`runu0`), up, joined to the link by tc: an
  ingress qdisc on both with a match-all u32 filter whose action is mirred
  egress redirect to the other (urunc's and Kata's "tc redirect"). The guest
  MAC is the link's MAC; Firecracker gets the tap through its API.
- Both: `netdev.ip=CIDR:GW:DNS0:DNS1:HOSTNAME:DOMAIN` (Unikraft 0.16 and
  later; name servers and search domain from the file bind-mounted on
  /etc/resolv.conf, read now, the hostname from the spec) and the older
  `netdev.ipv4_addr=`, `netdev.ipv4_gw_addr=` (when the route has a gateway),
  `netdev.ipv4_subnet_mask=` join the guest's parameters and the command line
  is rendered again (`guest_cmdline`, `unikraft.cmdline`; `Nic.cmdline`, which the
  backend puts in place of its own): Unikraft library parameters before `--`, and on
  QEMU microvm the NIC's `virtio_mmio.device` with them (`Nic.mmio`); a Linux kernel
  takes them as kernel parameters. Then the address is removed from the link: the
  guest owns it.

What was (about to be) created is recorded in `guestnet.json` in the state
directory before anything is changed. A failure half-way removes what was
created and puts the address (and default route) back, and raises
`GuestNetError` with a message for `runu create` or `runu start`; `release()` undoes
a success when the VMM then fails. `cleanup()` (runu delete)
does the same from the record when the netns outlives the container (joined
by path, as in a CRI pod); a netns of the container's own dies with it.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RECORD = "guestnet.json"
NIC = "runu0"          # the macvtap / tap in the container's netns
NETDEV_ID = "runu0"
AF_INET = 2
RT_TABLE_MAIN = 254
ETH_P_ALL = 3
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY = 0x2, 0x4, 0x8, 0x1
MS_REC, MS_SLAVE = 0x4000, 0x80000
MNT_DETACH = 2
TC_INGRESS = 0xFFFF0000
RESOLV_CONF_MAX = 64 * 1024


class GuestNetError(RuntimeError):
    """Guest network setup failed (the message says what, for `runu start`)."""


class Uplink:
    """The default route's link: `index`, `name`, `mac`, `addr` (dotted), `prefixlen`, `gateway` (or None),
    `route` (the default route's attributes, to put it back)."""

    def __init__(self, index: int, name: str, mac: str, addr: str, prefixlen: int, gateway: str | None,
                 route: dict[str, Any]) -> None:
        self.index, self.name, self.mac, self.addr = index, name, mac, addr
        self.prefixlen, self.gateway, self.route = prefixlen, gateway, route

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "mac": self.mac, "addr": self.addr,
                "prefixlen": self.prefixlen, "gateway": self.gateway, "route": self.route}


# ---- pure parts ----------------------------------------------------------------------------

def instruction(vmm: str, device: str, linux: bool, state_dir: str, netns: str = "",
                guest: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `runu create` tells the supervisor: the backend `vmm` and the device it takes (its NIC_DEVICE:
    "macvtap" or "tap"), the guest's kind, where the state directory is, the netns path the container joins
    ("" for a netns of its own) and `guest` (bundle.Plan.guest: the command line's parts, the QEMU machine,
    the spec's hostname and the resolv.conf mount's source)."""
    return {"vmm": vmm, "device": device, "linux": bool(linux), "state_dir": state_dir, "netns": netns or "",
            "guest": guest or {}}


def subnet_mask(prefixlen: int) -> str:
    if not 0 <= prefixlen <= 32:
        raise ValueError(f"invalid IPv4 prefix length {prefixlen}")
    m = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
    return ".".join(str((m >> s) & 0xFF) for s in (24, 16, 8, 0))


def _ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts)


def _dns_name(text: str) -> bool:
    return 0 < len(text) <= 253 and text.isascii() and all(c.isalnum() or c in "-." for c in text)


def read_resolv_conf(path: str, limit: int = RESOLV_CONF_MAX) -> tuple[list[str], str]:
    """(IPv4 name servers, first search domain) of the resolv.conf at `path` ("" or unreadable: none),
    reading at most `limit` bytes. The last `search` or `domain` line wins, as in glibc."""
    if not path:
        return [], ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return [], ""
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [], ""
        data = os.read(fd, limit)
    except OSError:
        return [], ""
    finally:
        os.close(fd)
    servers, domain = [], ""
    for raw in data.decode("utf-8", "replace").splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver" and _ipv4(words[1]):
            servers.append(words[1])
        elif len(words) >= 2 and words[0] in ("search", "domain"):
            domain = words[1].rstrip(".")
    return servers, domain if _dns_name(domain) else ""


def boot_params(up: Uplink, dns: list[str] | tuple[str, ...] = (), hostname: str = "",
                domain: str = "") -> list[str]:
    """The guest's network parameters: Unikraft 0.16's `netdev.ip=CIDR:GW:DNS0:DNS1:HOSTNAME:DOMAIN` (empty
    fields at the end left out), then the older `netdev.ipv4_*` form, which 0.16 and later ignore and older
    releases need (both are always given: a guest takes the one it knows, and nothing tells runu which)."""
    fields = [f"{up.addr}/{up.prefixlen}", up.gateway or "", *(list(dns[:2]) + ["", ""])[:2],
              hostname if _dns_name(hostname) else "", domain if _dns_name(domain) else ""]
    while fields and not fields[-1]:
        fields.pop()
    out = ["netdev.ip=" + ":".join(fields), f"netdev.ipv4_addr={up.addr}"]
    if up.gateway:
        out.append(f"netdev.ipv4_gw_addr={up.gateway}")
    out.append(f"netdev.ipv4_subnet_mask={subnet_mask(up.prefixlen)}")
    return out


def guest_cmdline(guest: dict[str, Any], params: list[str], vmm: str) -> str:
    """The guest command line of `guest` (instruction()'s) with the network `params` added to its parameters,
    and what the backend `vmm` needs there for the guest to find its NIC (`nic_line`)."""
    return _guest_line(guest, params, vmm)[0]


def _guest_line(guest: dict[str, Any], params: list[str], vmm: str) -> tuple[str, bool]:
    from mocktainer.unikraft import cmdline
    from mocktainer.unikraft.vmm import backend

    line = cmdline.Line.from_dict(guest.get("line") or {})
    announced, vmm_appends = backend(vmm).nic_cmdline(guest)
    line.params += list(params) + list(announced)
    return cmdline.render(line, vmm_appends=vmm_appends), bool(announced)


# ---- netlink -------------------------------------------------------------------------------

def _ipr() -> Any:
    from mocktainer.network import _pyroute2

    return _pyroute2().IPRoute()


def find_uplink(ipr: Any) -> Uplink | None:
    """The IPv4 default route's link with its first IPv4 address, or None (no route, or no address)."""
    best = None
    for r in ipr.route("dump", family=AF_INET):
        table = r.get_attr("RTA_TABLE") or r["table"]
        if r["dst_len"] != 0 or table != RT_TABLE_MAIN or not r.get_attr("RTA_OIF"):
            continue
        prio = r.get_attr("RTA_PRIORITY") or 0
        if best is None or prio < best[0]:
            best = (prio, r)
    if best is None:
        return None
    r = best[1]
    oif = r.get_attr("RTA_OIF")
    addrs = [a for a in ipr.get_addr(family=AF_INET, index=oif)]
    if not addrs:
        return None
    a = addrs[0]
    links = ipr.get_links(oif)
    if not links:
        return None
    link = links[0]
    route = {"gateway": r.get_attr("RTA_GATEWAY"), "oif": oif, "priority": r.get_attr("RTA_PRIORITY")}
    return Uplink(oif, link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_ADDRESS"),
                  a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"), a["prefixlen"],
                  r.get_attr("RTA_GATEWAY"), route)


def _lookup(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _restore(ipr: Any, up: dict[str, Any], nic: str, tc: bool) -> list[str]:
    """Remove `nic` (and the link's ingress qdisc when `tc`), put the address and default route back. Best
    effort: returns what could not be done."""
    problems = []
    idx = _lookup(ipr, nic)
    if idx is not None:
        try:
            ipr.link("del", index=idx)
        except Exception as e:
            problems.append(f"cannot remove {nic}: {e}")
    link = _lookup(ipr, up["name"])
    if link is None:
        return problems + [f"link {up['name']} is gone: its address {up['addr']}/{up['prefixlen']} cannot go back"]
    if tc:
        try:
            ipr.tc("del", "ingress", link)
        except Exception:
            pass  # none
    have = {a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=AF_INET, index=link)}
    if up["addr"] not in have:
        try:
            ipr.addr("add", index=link, address=up["addr"], prefixlen=up["prefixlen"])
        except Exception as e:
            problems.append(f"cannot put {up['addr']}/{up['prefixlen']} back on {up['name']}: {e}")
    route = up.get("route") or {}
    if route.get("gateway") and not any(
            r["dst_len"] == 0 for r in ipr.route("dump", family=AF_INET, table=RT_TABLE_MAIN)):
        kw = {"dst": "0.0.0.0/0", "gateway": route["gateway"], "oif": link}
        if route.get("priority"):
            kw["priority"] = route["priority"]
        try:
            ipr.route("add", **kw)
        except Exception as e:
            problems.append(f"cannot put the default route via {route['gateway']} back: {e}")
    return problems


def _write_json(path: str, data: dict[str, Any]) -> None:
    from mocktainer import fastjson, system

    system.atomic_write(path, fastjson.dumps(data).encode() + b"\n")


def _read_json(path: str) -> dict[str, Any]:
    from mocktainer import fastjson

    with open(path, "rb") as f:
        data = fastjson.loads(f.read())
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _open_macvtap(nic: str, ifindex: int, state_dir: str) -> int:
    """An fd of the macvtap's character device, inheritable (for the VMM).

    In a private mount namespace (a slave of the host's, which the VMM then runs in): a sysfs of this netns
    (the host's /sys shows the host's netns) gives major:minor from /sys/class/net/<nic>/macvtap/tap<N>/dev;
    a tmpfs (the state directory may be on a nodev file system, like /run) holds the node for as long as it
    takes to open it. Both are mounted on a directory in the state directory, and unmounted at once.
    """
    from mocktainer import system

    system.unshare(CLONE_NEWNS)
    system.mount("none", "/", None, MS_REC | MS_SLAVE)
    mnt = os.path.join(state_dir, ".netdev")
    os.mkdir(mnt, 0o700)
    try:
        system.mount("sysfs", mnt, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
        try:
            with open(os.path.join(mnt, "class/net", nic, "macvtap", f"tap{ifindex}", "dev")) as f:
                major, minor = (int(n) for n in f.read().strip().split(":"))
        finally:
            system.umount2(mnt, MNT_DETACH)
        system.mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0700,size=4k")
        try:
            node = os.path.join(mnt, "tap")
            os.mknod(node, 0o600 | 0o020000, os.makedev(major, minor))
            fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
        finally:
            system.umount2(mnt, MNT_DETACH)
    finally:
        os.rmdir(mnt)
    os.set_inheritable(fd, True)
    return fd


def _redirect(ipr: Any, src: int, dst: int) -> None:
    """Everything arriving on `src` leaves through `dst`."""
    ipr.tc("add-filter", "u32", src, parent=TC_INGRESS, protocol=ETH_P_ALL, prio=1, target=0x10001,
           keys=["0x0/0x0+0"],
           action=[{"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": dst}])


def has_default_route(path: str = "/proc/self/net/route") -> bool:
    """Whether this netns has an IPv4 default route, without pyroute2 (a fresh netns has none: no need to pay
    for importing it)."""
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                    return True
    except OSError:
        return True  # let netlink decide
    return False


class Nic:
    """The guest's side of the network, for the VMM backend: `device` ("macvtap" or "tap"), `name` of the
    interface, `fd` (the macvtap's character device, inheritable, else -1), `mac` for the guest, `params`
    (the network's guest parameters), `linux` (the guest's kind), the `uplink` (as_dict) whose address the
    guest took, `cmdline`: the guest command line rendered again with `params` (see `guest_cmdline`), which
    the backend uses instead of its own, and `mmio`: whether QEMU must run microvm without ACPI (see
    the backend's `nic_cmdline`)."""

    def __init__(self, device: str, name: str, fd: int, mac: str, params: list[str], linux: bool,
                 uplink: dict[str, Any], cmdline: str = "", mmio: bool = False) -> None:
        self.device, self.name, self.fd, self.mac = device, name, fd, mac
        self.params, self.linux, self.uplink = params, linux, uplink
        self.cmdline, self.mmio = cmdline, mmio

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def as_dict(self) -> dict[str, Any]:
        """Everything but the fd (which travels apart, see supervisor.py)."""
        return {"device": self.device, "name": self.name, "mac": self.mac, "params": self.params,
                "linux": self.linux, "uplink": self.uplink, "cmdline": self.cmdline, "mmio": self.mmio}

    @classmethod
    def from_dict(cls, d: dict[str, Any], fd: int = -1) -> Nic:
        return cls(d["device"], d["name"], fd, d["mac"], list(d["params"]), bool(d["linux"]), d["uplink"],
                   str(d.get("cmdline") or ""), bool(d.get("mmio")))


def attach(instr: dict[str, Any]) -> Nic | None:
    """Give the guest the netns' network (see module doc): the Nic for the VMM, or None when the netns has
    none. GuestNetError on failure, after undoing what was done."""
    vmm, device, state_dir = instr["vmm"], instr["device"], instr["state_dir"]
    linux = bool(instr.get("linux"))
    if not has_default_route():
        return None
    try:
        ipr = _ipr()
    except Exception as e:
        raise GuestNetError(f"guest network: cannot open a netlink socket: {e}") from None
    try:
        try:
            up = find_uplink(ipr)
        except Exception as e:
            raise GuestNetError(f"guest network: cannot read routes and addresses: {e}") from None
        if up is None:
            return None
        guest = dict(instr.get("guest") or {})
        guest.setdefault("line", {"linux": linux})
        dns, domain = read_resolv_conf(guest.get("resolv_conf") or "")
        params = boot_params(up, dns, guest.get("hostname") or "", domain)
        line, announced = _guest_line(guest, params, vmm)
        record = {"netns": instr.get("netns") or "", "vmm": vmm, "device": device, "nic": NIC,
                  "uplink": up.as_dict()}
        _write_json(os.path.join(state_dir, RECORD), record)
        fd = -1
        try:
            if device == "macvtap":
                try:
                    ipr.link("add", ifname=NIC, kind="macvtap", link=up.index, macvtap_mode="bridge")
                except Exception as e:
                    raise GuestNetError(f"cannot create a macvtap on {up.name}: {e}") from None
                idx = _lookup(ipr, NIC)
                if idx is None:
                    raise GuestNetError(f"the macvtap {NIC} vanished after its creation")
                mac = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
                ipr.link("set", index=idx, state="up")
                fd = _open_macvtap(NIC, idx, state_dir)
            elif device == "tap":
                from mocktainer import system

                try:
                    system.make_persistent_tap(NIC)
                except OSError as e:
                    raise GuestNetError(f"cannot create the tap device {NIC}: {e.strerror}") from None
                idx = _lookup(ipr, NIC)
                if idx is None:
                    raise GuestNetError(f"the tap {NIC} vanished after its creation")
                ipr.link("set", index=idx, state="up")
                for dev in (up.index, idx):
                    ipr.tc("add", "ingress", dev)
                _redirect(ipr, up.index, idx)
                _redirect(ipr, idx, up.index)
                mac = up.mac
            else:
                raise GuestNetError(f"no guest networking through a {device!r} device")
            try:
                ipr.addr("del", index=up.index, address=up.addr, prefixlen=up.prefixlen)
            except Exception as e:
                raise GuestNetError(f"cannot take {up.addr}/{up.prefixlen} off {up.name}: {e}") from None
            return Nic(device, NIC, fd, mac, params, linux, up.as_dict(), line, announced)
        except BaseException as e:
            if fd >= 0:
                os.close(fd)
            problems = _restore(ipr, up.as_dict(), NIC, device == "tap")
            msg = str(e) if isinstance(e, GuestNetError) else f"{type(e).__name__}: {e}"
            if not msg.startswith("guest network"):
                msg = f"guest network on {up.name}: {msg}"
            if problems:
                msg += " (undoing it: " + "; ".join(problems) + ")"
            raise GuestNetError(msg) from None
    finally:
        ipr.close()


def release(nic: Nic) -> list[str]:
    """Undo `attach` (a create or start that failed after it, in the container's netns). Problems found."""
    nic.close()
    try:
        ipr = _ipr()
    except Exception as e:
        return [f"cannot open a netlink socket: {e}"]
    try:
        return _restore(ipr, nic.uplink, nic.name, nic.device == "tap")
    finally:
        ipr.close()


def cleanup(state_dir: str) -> list[str]:
    """At delete: undo the guest network recorded in `state_dir` when its netns (joined by path) outlives the
    container. Returns problems (for warnings)."""
    path = os.path.join(state_dir, RECORD)
    try:
        record = _read_json(path)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        return [f"cannot read {path}: {e}"]
    netns = record.get("netns")
    if not netns:
        return []  # the container's own netns died with it
    from mocktainer import system

    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []  # gone with its devices
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        system.setns(target, system.CLONE_NEWNET)
        try:
            ipr = _ipr()
            try:
                return _restore(ipr, record["uplink"], record.get("nic") or NIC, record.get("device") == "tap")
            finally:
                ipr.close()
        finally:
            system.setns(own, system.CLONE_NEWNET)
    except Exception as e:
        return [f"cannot clean up the guest network in {netns}: {e}"]
    finally:
        os.close(target)
        os.close(own)
