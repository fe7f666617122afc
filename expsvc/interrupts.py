"""Ctrl-C (SIGINT): the user's, told apart from a ``KeyboardInterrupt`` that plugin code raises itself.

The command line installs :func:`startup_handler` before importing anything heavy (a Ctrl-C during the
imports prints one line and exits 130 at once: nothing has been written yet), then :func:`install` once
the command runs: Ctrl-C raises ``KeyboardInterrupt`` as usual, so runs are marked ``interrupted``, and
:func:`user_pressed` records that it was the user.

Plugin loading runs under :func:`watching`, which records SIGINTs that arrive meanwhile (chaining to the
handler in place).  A ``KeyboardInterrupt`` raised by a plugin's import while no SIGINT arrived is the
plugin's own doing: it is isolated and reported like any other failing plugin.  A real Ctrl-C is never
swallowed: it stops the program, even if the plugin caught it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODE = 130
MESSAGE = "interrupted"

_received = 0  # SIGINTs delivered to a handler of this module


def user_pressed() -> int:
    """How many SIGINTs this module's handlers have seen (0: none, so a KeyboardInterrupt is no Ctrl-C)."""
    return _received


def startup_handler(signum: int, frame: FrameType | None) -> None:
    """During start-up: say so on one line and exit 130 now (no traceback; nothing was written yet)."""
    os.write(2, f"{MESSAGE}\n".encode())
    os._exit(EXIT_CODE)


def _raise(signum: int, frame: FrameType | None) -> None:
    global _received
    _received += 1
    raise KeyboardInterrupt


def install() -> None:
    """Ctrl-C raises ``KeyboardInterrupt`` (counted by :func:`user_pressed`).  Main thread only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _raise)


@contextmanager
def watching() -> Iterator[int]:
    """Count SIGINTs that arrive in the block (yields the count before it), keeping the handler's behaviour.

    Outside the main thread no signal handler runs, so a ``KeyboardInterrupt`` there is never the user's.
    """
    before = _received
    if threading.current_thread() is not threading.main_thread():
        yield before
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous) or previous is _raise:
        yield before  # ignored or default (the process dies): no KeyboardInterrupt can come from a Ctrl-C
        return

    def chained(signum: int, frame: FrameType | None) -> None:
        global _received
        _received += 1
        previous(signum, frame)  # type: ignore[operator]

    signal.signal(signal.SIGINT, chained)
    try:
        yield before
    finally:
        signal.signal(signal.SIGINT, previous)
