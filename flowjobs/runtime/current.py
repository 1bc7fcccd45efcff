"""The job a runner is executing in this context: its id for runners that are not RQ (RQ tracks its
own), and the bookkeeping a runner leaves to the scripts of the job (``JobBooks``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from flowjobs.core.job_calls import JobBooks, JobCall

_job: ContextVar[JobCall | None] = ContextVar("flowjobs_job", default=None)
_books: ContextVar[JobBooks | None] = ContextVar("flowjobs_job_books", default=None)


@contextmanager
def running_job(call: JobCall) -> Iterator[None]:
    """Mark ``call`` as the executing job while the block runs (the in-process runner)."""
    token = _job.set(call)
    try:
        yield
    finally:
        _job.reset(token)


def running_job_id() -> str | None:
    """Id of the job a runner marked as executing here (``running_job``), if any."""
    call = _job.get()
    return call.job_id if call is not None else None


def running_job_meta() -> Mapping[str, Any]:
    """Meta of the job a runner marked as executing here (empty if none): what RQ keeps in a job's
    ``meta``, such as the trace context it runs under."""
    call = _job.get()
    return call.meta if call is not None else {}


@contextmanager
def keeping_books(books: JobBooks) -> Iterator[None]:
    """Leave the bookkeeping of the executing job to its scripts while the block runs."""
    token = _books.set(books)
    try:
        yield
    finally:
        _books.reset(token)


def job_books(job_id: str | None) -> JobBooks | None:
    """The bookkeeping the runner leaves to the scripts of job ``job_id``, if it does."""
    books = _books.get()
    return books if books is not None and job_id is not None and books.job_id == job_id else None
