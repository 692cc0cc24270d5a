"""Child processes that never outlive their parent, SIGTERM handled like Ctrl-C, and both held back
while a file that must be whole is written.

A pool worker whose parent is killed (SIGKILL, the out-of-memory killer, a closed terminal) would
otherwise go on decoding for nobody, holding memory and files. On Linux the kernel kills it
(PR_SET_PDEATHSIG); everywhere, a watchdog thread notices that the parent is gone within a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Iterator

__all__ = ["follow_parent", "sigterm_as_interrupt", "interrupts_deferred", "Terminated", "catch_stops", "stop_signal",
           "ignore_stops"]

_PR_SET_PDEATHSIG = 1
WATCH_EVERY = 0.5  # seconds between checks of the parent


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as on Ctrl-C (clean up, keep what is finished)."""


def follow_parent(parent: int | None) -> None:
    """Call in a freshly started child: it exits when `parent` (the pid that started it) is gone.
    SIGTERM gets its default action back (the parent's handler is not inherited), so that terminating
    the worker stops it."""
    with contextlib.suppress(ValueError, OSError):  # not the main thread, or no such signal
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # it died before the request above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="avdata-parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while True:
        time.sleep(WATCH_EVERY)
        if os.getppid() != parent:
            os._exit(1)


#: the stop signals (SIGINT, SIGTERM) that reached this process through the handlers here, in arrival order
_stops: list[int] = []


def _raise_terminated(signum: int, frame: object) -> None:
    _stops.append(signum)
    raise Terminated()


def _raise_interrupt(signum: int, frame: object) -> None:
    _stops.append(signum)
    raise KeyboardInterrupt()


def catch_stops() -> None:
    """For the whole process (a command's first step): Ctrl-C raises KeyboardInterrupt and SIGTERM Terminated,
    both noted for `stop_signal`; a signal the starting shell ignores (`nohup`, `cmd &`) stays ignored."""
    for sig, handler in ((signal.SIGINT, _raise_interrupt), (signal.SIGTERM, _raise_terminated)):
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, handler)


def stop_signal() -> int | None:
    """The first stop signal that reached the handlers here, or None."""
    return _stops[0] if _stops else None


def ignore_stops() -> None:
    """Ignore Ctrl-C and SIGTERM from now on: a process that is reporting its stop, or ending, finishes that
    (a second Ctrl-C there would print a traceback)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Inside, Ctrl-C and SIGTERM (and a Python SIGCHLD handler's call) are held back and delivered when it
    ends: torch.save interrupted in a write turns the KeyboardInterrupt into its own RuntimeError (a traceback
    and status 1, not the clean stop), and a checkpoint and its best.pt are written as a pair. Saves take a
    second or so: the stop waits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame: object) -> None:
        arrived.append(signum)

    held = [signal.SIGINT, signal.SIGTERM]
    child = getattr(signal, "SIGCHLD", None)
    if child is not None and callable(signal.getsignal(child)):
        # torch's DataLoader raises from SIGCHLD when a loader worker ends: a stop signalled to the process group
        # (torchrun, `kill` of the group) ends them too, and that RuntimeError would cut the file short as well
        held.append(child)
    previous = {s: signal.signal(s, hold) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stops = [s for s in arrived if s != child]
        if arrived:
            first = stops[0] if stops else arrived[0]
            handler = previous[signal.Signals(first)]
            if callable(handler):
                handler(first, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), first)
