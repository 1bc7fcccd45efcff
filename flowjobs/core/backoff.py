"""Retry policy arithmetic: the one backoff function every caller uses."""

from __future__ import annotations

from flowjobs.core.manifest import RetryPolicy


def retry_delay(policy: RetryPolicy, failed_attempt: int) -> float | None:
    """Seconds to wait before the attempt after ``failed_attempt``; None when no attempt is left."""
    if failed_attempt >= policy.max_attempts:
        return None
    try:
        delay = policy.backoff_seconds * policy.backoff_factor ** (failed_attempt - 1)
    except OverflowError:
        return policy.max_backoff_seconds
    return min(delay, policy.max_backoff_seconds)
