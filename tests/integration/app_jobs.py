"""Application jobs for the ``flowjobs.hangfire`` tests (module level, so workers import them)."""

from __future__ import annotations

import time
from pathlib import Path

from rq import get_current_job

from flowjobs.hangfire import automatic_retry, job_timeout
from tests.polling import poll


def add(a: int, b: int, *, times: int = 1) -> int:
    """A job with a JSON result."""
    return (a + b) * times


@automatic_retry(attempts=0)
def boom(message: str) -> None:
    """A job that fails, never retried."""
    raise RuntimeError(message)


def unlucky(message: str) -> None:
    """A job that fails, with the default automatic retries."""
    raise RuntimeError(message)


@automatic_retry(attempts=2, delays_in_seconds=[0])
def flaky(counter: str, failures: int) -> int:
    """Fails its first ``failures`` runs (counted in the file ``counter``), then returns the run number."""
    path = Path(counter)
    runs = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs <= failures:
        raise RuntimeError(f"run {runs} fails")
    return runs


def wait_for(flag: str, fail: bool = False) -> str:
    """Runs until the file ``flag`` exists (at most 60 s), then returns, or fails if ``fail``."""
    poll(Path(flag).exists, 60)
    if fail:
        raise RuntimeError("failed after its flag")
    return "done"


@automatic_retry(attempts=0)
@job_timeout(1)
def sleepy(seconds: float) -> None:
    """Sleeps past its one-second timeout."""
    time.sleep(seconds)


@job_timeout(3600)
def long_job() -> None:
    """A job allowed an hour."""


def expiry_after_failing(counter: str) -> int:
    """Fails its first run (counted in the file ``counter``); then returns its hash's TTL (-1: none)."""
    path = Path(counter)
    if not path.exists():
        path.write_text("1")
        raise RuntimeError("first run fails")
    job = get_current_job()
    assert job is not None
    return int(job.connection.ttl(job.key))
