"""Time limits for work bridge runs in its own process (the PyTorch reference run, each stage): past the limit, a
typed error names the step instead of the run hanging. Node and Chromium run under their own timeouts."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bridge.errors import BridgeError


class TimeLimitError(BridgeError):
    """A step of the run took longer than its time limit (`--time-limit`)."""


@contextmanager
def time_limit(seconds: float | None, stage: str, what: str) -> Iterator[None]:
    """Raise `TimeLimitError` in the block once `seconds` have passed (None or 0: no limit).

    The limit uses SIGALRM, so it applies on the main thread only (elsewhere the block runs unlimited); a long
    native call (one huge matmul) is interrupted when it returns to Python."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeLimitError(f"{what} took longer than {seconds:g} s", stage=stage,
                             hint="check the input sizes (an accidental huge intermediate?), or raise the limit "
                                  "with --time-limit SECONDS (0 for none)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
