"""Application jobs for the ``flowjobs.hangfire`` tests (module level, so workers import them)."""

from __future__ import annotations


def add(a: int, b: int, *, times: int = 1) -> int:
    """A job with a JSON result."""
    return (a + b) * times


def boom(message: str) -> None:
    """A job that fails."""
    raise RuntimeError(message)
