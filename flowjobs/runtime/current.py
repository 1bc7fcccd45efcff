"""The job a runner is executing in this context, for runners that are not RQ (RQ tracks its own)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_job_id: ContextVar[str | None] = ContextVar("flowjobs_job_id", default=None)


@contextmanager
def running_job(job_id: str) -> Iterator[None]:
    """Mark ``job_id`` as the executing job while the block runs (the in-process runner)."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def running_job_id() -> str | None:
    """Id of the job a runner marked as executing here (``running_job``), if any."""
    return _job_id.get()
