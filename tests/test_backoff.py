"""Pure tests of flowjobs.core.backoff.retry_delay."""

from __future__ import annotations

import pytest

from flowjobs.core.backoff import retry_delay
from flowjobs.core.manifest import RetryPolicy

POLICY = RetryPolicy(max_attempts=6, backoff_seconds=2, backoff_factor=3, max_backoff_seconds=100)


@pytest.mark.parametrize(
    ("failed_attempt", "delay"),
    [
        (1, 2.0),  # before attempt 2: the base delay
        (2, 6.0),  # times the factor
        (3, 18.0),
        (4, 54.0),
        (5, 100.0),  # 162 capped by max_backoff_seconds
        (6, None),  # the last attempt failed: no retry
        (7, None),
    ],
)
def test_retry_delay_table(failed_attempt: int, delay: float | None) -> None:
    assert retry_delay(POLICY, failed_attempt) == delay


def test_default_policy_never_retries() -> None:
    assert retry_delay(RetryPolicy(), 1) is None


def test_factor_one_is_a_constant_delay() -> None:
    policy = RetryPolicy(max_attempts=4, backoff_seconds=5, backoff_factor=1)
    assert [retry_delay(policy, n) for n in (1, 2, 3, 4)] == [5.0, 5.0, 5.0, None]


def test_zero_backoff_retries_immediately() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [retry_delay(policy, n) for n in (1, 2, 3)] == [0.0, 0.0, None]


def test_cap_applies_from_the_first_delay() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_seconds=30, max_backoff_seconds=10)
    assert [retry_delay(policy, n) for n in (1, 2, 3)] == [10.0, 10.0, None]


def test_delays_never_decrease_and_never_exceed_the_cap() -> None:
    policy = RetryPolicy(max_attempts=40, backoff_seconds=0.5, backoff_factor=1.7, max_backoff_seconds=300)
    delays = [retry_delay(policy, n) for n in range(1, 40)]
    assert all(d is not None and 0 <= d <= 300 for d in delays)
    assert delays == sorted(delays)  # type: ignore[type-var]
    assert delays[-1] == 300
    assert retry_delay(policy, 40) is None


def test_cap_holds_for_very_late_attempts() -> None:
    # "Double from 1 s up to 1 min, keep trying for a day": a valid policy whose later delays must
    # stay at the cap. 2.0 ** 1024 overflows a float, so this also checks no OverflowError escapes.
    policy = RetryPolicy(max_attempts=1440, backoff_seconds=1, backoff_factor=2, max_backoff_seconds=60)
    assert retry_delay(policy, 1024) == 60
    assert retry_delay(policy, 1100) == 60
    assert retry_delay(policy, 1439) == 60
    assert retry_delay(policy, 1440) is None
