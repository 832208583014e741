"""Small helpers shared by the tests: bounded waiting."""

from __future__ import annotations

import time


def wait_until(predicate, *, timeout_s: float, what: str, interval_s: float = 0.25):
    """Polls ``predicate`` until it returns a truthy value, which is returned.

    Raises AssertionError naming ``what`` and the last value seen when ``timeout_s`` passes.
    The timeout bounds the loop; it is not an assertion about speed.
    """
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last value: {last!r}")
