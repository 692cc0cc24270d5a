"""`finishes(fn)`: run a call that might block for good (a read of a FIFO, a stalled server) in a thread,
with a deadline, so the test fails instead of hanging."""

from __future__ import annotations

import threading
from typing import Callable


def finishes(fn: Callable[[], object], seconds: float = 60.0) -> object:
    """fn's result or the exception it raised; fails the test if it is still running after `seconds`."""
    out: list = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:  # any one: asserted on by the caller
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds:.0f} s (blocked on a FIFO?)"
    return out[0]
