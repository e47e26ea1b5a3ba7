"""A fake netlink (pyroute2's IPRoute, the part guest networking uses) holding links, addresses and routes
in memory, so the error paths of `mocktainer.unikraft.net` run without root and without a netns.

Like the kernel: removing a link's last IPv4 address drops the routes through that link, and removing a
link drops its addresses and routes. `fail` makes one operation raise: its key is the operation
("link add", "link del", "link set", "addr add", "addr del", "route add", "route dump", "tc add", ...).
`calls` records every change, in order.
"""

from __future__ import annotations

import errno
from typing import Any

AF_INET = 2
RT_TABLE_MAIN = 254


class Msg(dict):
    """A netlink message: header fields as items, attributes through `get_attr` (pyroute2's shape)."""

    def __init__(self, fields: dict[str, Any], attrs: dict[str, Any]) -> None:
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class FakeIPRoute:
    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.links: dict[int, dict[str, Any]] = {1: {"name": "lo", "mac": "00:00:00:00:00:00", "kind": ""}}
        self.addrs: list[dict[str, Any]] = []
        self.routes: list[dict[str, Any]] = []
        self.fail = dict(fail or {})
        self.calls: list[tuple[str, ...]] = []
        self.closed = False
        self._next = 2

    # ---- building the netns ----------------------------------------------------------------

    def add_link(self, name: str, mac: str = "02:00:00:00:00:01", kind: str = "veth") -> int:
        idx = self._next
        self._next += 1
        self.links[idx] = {"name": name, "mac": mac, "kind": kind}
        return idx

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        self.addrs.append({"index": index, "address": address, "prefixlen": prefixlen})

    def add_route(self, oif: int, gateway: str | None = None, dst_len: int = 0, table: int = RT_TABLE_MAIN,
                  priority: int | None = None) -> None:
        self.routes.append({"oif": oif, "gateway": gateway, "dst_len": dst_len, "table": table,
                            "priority": priority})

    @classmethod
    def with_uplink(cls, fail: dict[str, BaseException] | None = None) -> FakeIPRoute:
        """A netns as CNI leaves it: eth0 with 10.88.0.5/16 and a default route via 10.88.0.1."""
        ipr = cls(fail)
        eth0 = ipr.add_link("eth0", "0a:58:0a:58:00:05")
        ipr.add_address(eth0, "10.88.0.5", 16)
        ipr.add_route(eth0, dst_len=16)
        ipr.add_route(eth0, gateway="10.88.0.1", priority=100)
        return ipr

    # ---- what a test looks at --------------------------------------------------------------

    def index_of(self, name: str) -> int | None:
        return next((i for i, link in self.links.items() if link["name"] == name), None)

    def addresses_of(self, name: str) -> list[str]:
        idx = self.index_of(name)
        return [f"{a['address']}/{a['prefixlen']}" for a in self.addrs if a["index"] == idx]

    def default_routes(self) -> list[dict[str, Any]]:
        return [r for r in self.routes if r["dst_len"] == 0]

    # ---- the IPRoute interface ---------------------------------------------------------------

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise self.fail[op]

    def route(self, cmd: str, **kw: Any) -> list[Msg]:
        self._maybe_fail(f"route {cmd}")
        if cmd == "dump":
            table = kw.get("table")
            return [Msg({"dst_len": r["dst_len"], "table": r["table"]},
                        {"RTA_TABLE": r["table"], "RTA_OIF": r["oif"], "RTA_GATEWAY": r["gateway"],
                         "RTA_PRIORITY": r["priority"]})
                    for r in self.routes if table is None or r["table"] == table]
        if cmd == "add":
            self.calls.append(("route add", kw.get("dst", ""), kw.get("gateway") or ""))
            if kw["oif"] not in self.links:
                raise OSError(errno.ENODEV, "No such device")
            dst_len = int(kw.get("dst", "0.0.0.0/0").split("/")[1])
            self.add_route(kw["oif"], kw.get("gateway"), dst_len, priority=kw.get("priority"))
            return []
        raise NotImplementedError(f"route {cmd}")

    def get_addr(self, family: int = AF_INET, index: int | None = None) -> list[Msg]:
        self._maybe_fail("addr dump")
        return [Msg({"prefixlen": a["prefixlen"], "index": a["index"]},
                    {"IFA_LOCAL": a["address"], "IFA_ADDRESS": a["address"]})
                for a in self.addrs if index is None or a["index"] == index]

    def get_links(self, index: int) -> list[Msg]:
        link = self.links.get(index)
        if link is None:
            return []
        return [Msg({"index": index}, {"IFLA_IFNAME": link["name"], "IFLA_ADDRESS": link["mac"]})]

    def link_lookup(self, ifname: str) -> list[int]:
        idx = self.index_of(ifname)
        return [] if idx is None else [idx]

    def link(self, cmd: str, **kw: Any) -> None:
        self._maybe_fail(f"link {cmd}")
        self.calls.append((f"link {cmd}", str(kw.get("ifname") or kw.get("index"))))
        if cmd == "add":
            if self.index_of(kw["ifname"]) is not None:
                raise OSError(errno.EEXIST, "File exists")
            self.add_link(kw["ifname"], "02:00:00:00:00:99", kw.get("kind", ""))
        elif cmd == "del":
            idx = kw["index"]
            del self.links[idx]
            self.addrs = [a for a in self.addrs if a["index"] != idx]
            self.routes = [r for r in self.routes if r["oif"] != idx]
        elif cmd != "set":
            raise NotImplementedError(f"link {cmd}")

    def addr(self, cmd: str, index: int, address: str, prefixlen: int) -> None:
        self._maybe_fail(f"addr {cmd}")
        self.calls.append((f"addr {cmd}", f"{address}/{prefixlen}"))
        if cmd == "add":
            self.add_address(index, address, prefixlen)
        elif cmd == "del":
            self.addrs = [a for a in self.addrs if (a["index"], a["address"]) != (index, address)]
            if not any(a["index"] == index for a in self.addrs):
                self.routes = [r for r in self.routes if r["oif"] != index]
        else:
            raise NotImplementedError(f"addr {cmd}")

    def tc(self, cmd: str, *args: Any, **kw: Any) -> None:
        self._maybe_fail(f"tc {cmd}")
        self.calls.append((f"tc {cmd}", *map(str, args)))

    def close(self) -> None:
        self.closed = True
