"""The one poller of the test suite: wait until a probe says yes, or fail naming what was awaited."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str = "condition", timeout: float = 10.0, interval: float = 0.02,
             *, step: Callable[[], object] | None = None) -> T:
    """Poll `probe()` until it returns something truthy and return that value.

    After `timeout` seconds raise AssertionError naming `what` and the last value, so a test's
    failure says what never happened. `step` runs before each probe (the harness reaps zombies there).
    """
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def wait_empty(what: str, leftovers: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
              *, step: Callable[[], object] | None = None) -> None:
    """Poll `leftovers()` until it returns nothing; on timeout fail with `what` and what is still left."""
    last: list[object] = []

    def none_left() -> bool:
        last[:] = [leftovers()]
        return not last[0]

    try:
        wait_for(none_left, what, timeout, interval, step=step)
    except AssertionError:
        raise AssertionError(f"{what}: {last[0]!r}") from None
