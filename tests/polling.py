"""The tests' one way to wait: poll a condition until it holds or a deadline passes (the tests, their
handlers and their application jobs wait on other processes, with no event to block on)."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds between two looks at the condition.
POLL_SECONDS = 0.01


def poll(condition: Callable[[], object], timeout: float) -> object:
    """``condition``'s first truthy value within ``timeout`` seconds, else its last (falsy) one."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(POLL_SECONDS)
