"""pyroute2, loaded on demand: netlink work in a container's network namespace.

pyroute2 takes ~230 ms to import, so only the code path that needs it (a guest's
network, unikraft/net.py) imports this module, and this module imports pyroute2
only when called.
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

