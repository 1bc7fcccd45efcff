"""A step's declared timeout, enforced to the declared value around its handler."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from rq.timeouts import JobTimeoutException


@contextmanager
def step_deadline(seconds: float | None) -> Iterator[None]:
    """Raise ``JobTimeoutException`` in the block once ``seconds`` have passed (``None``: no limit).

    RQ's own job timeout is an ``alarm`` in whole seconds (flowjobs rounds it up), so a 2.5 s
    timeout would kill at 3 s; an interval timer fires at the declared value. It replaces RQ's
    alarm for the handler's duration and is cleared after it, so recording the outcome is never
    cut short. Signals reach only the main thread: elsewhere (and where ``setitimer`` is missing)
    the block runs unbounded and the engine checks the elapsed time after it.
    """
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise JobTimeoutException(f"the handler ran longer than {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
