"""Job runners: ``JobRunner`` (``base``) and its two implementations, on RQ (``rq``) and in this
process for flow tests (``inprocess``). The engine reaches a job system only through ``JobRunner``;
the worker and the web process use RQ directly for what is RQ's own (its worker loop, rq-dashboard)."""

from flowjobs.runtime.base import JobRunner

__all__ = ["JobRunner"]
