"""Netlink work inside the container's network namespace, through pyroute2.

pyroute2 takes ~230 ms to import, so only the code paths that need it (routes
from the configuration, guest networking) import this module.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _pyroute2() -> Any:
    try:
        import pyroute2
    except ImportError:
        # The init runs with -S; site-packages become visible only on demand.
        import site

        site.main()
        import pyroute2
    return pyroute2


def add_routes(routes: list[dict[str, Any]]) -> None:
    """Add each configured route (destination/source/gateway/interface_name) in this netns."""
    ipr = _pyroute2().IPRoute()
    try:
        for r in routes:
            kw: dict[str, Any] = {}
            if r.get("destination"):
                kw["dst"] = r["destination"]
            if r.get("source"):
                kw["prefsrc"] = r["source"].split("/")[0]
            if r.get("gateway"):
                kw["gateway"] = r["gateway"]
            if r.get("interface_name"):
                idx = ipr.link_lookup(ifname=r["interface_name"])
                if not idx:
                    raise RuntimeError(f"route {r}: no interface named {r['interface_name']!r}")
                kw["oif"] = idx[0]
            if not kw.get("dst"):
                kw["dst"] = "default"
            try:
                ipr.route("add", **kw)
            except Exception as e:
                raise RuntimeError(f"cannot add route {r}: {e}") from None
    finally:
        ipr.close()
