"""Stopping a child process at a chosen moment, as the kill tests of prepare, merge and download do: wait
until it is doing the work (a bounded wait), sleep a seeded delay, send the signal, and check it ended with
the status a stop gives (or finished first) and without a traceback."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Callable

#: the status each stop ends a command with (README's exit statuses); SIGKILL leaves no say
STOP_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 60) -> bool:
    """True once `ready()` holds; False when the child ended first (or after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return True
        time.sleep(0.005)
    return False


def stop_when(proc: subprocess.Popen, ready: Callable[[], bool], delay: float, sig: int,
              timeout: float = 60) -> str:
    """Send `sig` `delay` seconds after `ready()` holds (not at all when the child ended first); its output."""
    try:
        if wait_until(proc, ready, timeout):
            time.sleep(delay)
            proc.send_signal(sig)
        said = proc.communicate(timeout=timeout)[0]
    finally:
        proc.kill()
    assert proc.returncode in (0, STOP_STATUS[signal.Signals(sig)]), said
    assert "Traceback" not in said
    return said
