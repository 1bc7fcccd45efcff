"""Typed errors raised by flowjobs; every bad input maps to one of these."""

from __future__ import annotations


class FlowjobsError(Exception):
    """Base class of every error flowjobs raises on purpose."""


class FlowValidationError(FlowjobsError):
    """A flow definition is invalid; ``problems`` lists every problem found."""

    def __init__(self, flow: str, problems: list[str]) -> None:
        self.flow = flow
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"flow {flow!r} is invalid:\n{lines}")


class ExpressionError(FlowjobsError):
    """An expression does not parse, or cannot be evaluated."""

    def __init__(self, message: str, expression: str = "", position: int | None = None) -> None:
        self.message = message
        self.expression = expression
        self.position = position
        where = f" at position {position}" if position is not None else ""
        shown = f" in {expression!r}" if expression else ""
        super().__init__(f"{message}{where}{shown}")


class FlowNotFound(FlowjobsError):
    """No registered flow has that id or name."""


class TriggerNotFound(FlowjobsError):
    """The flow has no trigger with that key."""


class FlowDisabled(FlowjobsError):
    """The flow is disabled; it cannot be triggered."""


class TriggerNotAdmitted(FlowjobsError):
    """A trigger's ``Admission`` refused it and nothing was written: ``reason`` is ``rate_limited``
    (``retry_after_ms`` until a token is back) or ``replayed`` (its ``once_key`` was set)."""

    def __init__(self, reason: str, message: str, *, retry_after_ms: int | None = None) -> None:
        self.reason = reason
        self.retry_after_ms = retry_after_ms
        super().__init__(message)


class ReplicasNotAcknowledged(FlowjobsError):
    """Fewer replicas than ``FLOWJOBS_REDIS_WAIT_REPLICAS`` acknowledged a new run in time (HTTP
    503). The run was written on the primary and runs as any other unless the primary fails
    before a replica copied it: then it is gone. ``run_id`` says which run to look for."""

    def __init__(self, run_id: str, acknowledged: int, wanted: int, timeout_ms: int) -> None:
        self.run_id = run_id
        self.acknowledged = acknowledged
        self.wanted = wanted
        super().__init__(
            f"run {run_id} was written on the Redis primary, but {acknowledged} of the {wanted} "
            f"replica(s) required acknowledged it within {timeout_ms} ms: it is lost if the primary "
            "fails before replicating it (look it up, or trigger again with an idempotency key)"
        )


class InvalidTriggerData(FlowjobsError):
    """Trigger data or headers are not JSON (or not a JSON object where one is required)."""


class RunNotFound(FlowjobsError):
    """No run has that id (or the id is not a run id: a UUID)."""


class HandlerNotFound(FlowjobsError):
    """No handler is registered for a step type."""


class SignalNotFound(FlowjobsError):
    """No run with that id, or no step of it waits for that signal."""


class SignalAlreadyDelivered(FlowjobsError):
    """That signal was already delivered to the waiting step."""


class SignalBusy(FlowjobsError):
    """Steps kept parking on the signal while it was being delivered; nothing was written."""


class InvalidSignalPayload(FlowjobsError):
    """A signal payload is not JSON-serialisable."""


class InvalidSettings(FlowjobsError):
    """A setting has an invalid value; the message names it."""


class DataTooLarge(InvalidTriggerData):
    """A JSON value is nested deeper, or encodes larger, than its limit (HTTP 413's meaning).

    ``limit`` and ``actual`` are in levels or bytes, as the message says.
    """

    def __init__(self, message: str, *, limit: int, actual: int) -> None:
        self.limit = limit
        self.actual = actual
        super().__init__(message)


class TriggerHeadersTooLarge(DataTooLarge):
    """The headers a trigger would store are too many, one is too long, or all are too large
    (``FLOWJOBS_MAX_TRIGGER_HEADERS``, ``…_HEADER_BYTES``, ``…_HEADERS_BYTES``); nothing was written."""


class InvalidIdempotencyKey(InvalidTriggerData):
    """An idempotency key is empty, longer than 255 characters, or holds control characters or
    leading or trailing spaces; nothing was written."""


class HandlerImportError(FlowjobsError):
    """A module of ``FLOWJOBS_HANDLER_MODULES`` could not be imported; the message names it and why."""

    def __init__(self, module: str, cause: BaseException) -> None:
        self.module = module
        super().__init__(
            f"cannot import handler module {module!r} (FLOWJOBS_HANDLER_MODULES): "
            f"{type(cause).__name__}: {cause}"
        )


class RunNotActive(FlowjobsError):
    """The action needs an active (Pending or Running) run; the message names its status."""


class StepNotFound(FlowjobsError):
    """The run's flow has no step with that key."""


class StepNotRetryable(FlowjobsError):
    """Only a Failed top-level step can be retried; the message says why this one cannot."""


class RunCancelled(FlowjobsError):
    """The run's cancel was requested: clear it (``clear_cancel=True``, ``--clear-cancel``) to retry
    a step."""


class ScheduleNotFound(FlowjobsError):
    """No cron schedule or recurring job has that id."""


class InvalidCron(FlowjobsError):
    """A cron expression does not parse, or a time zone is unknown; nothing was stored."""


class InvalidJobCall(FlowjobsError):
    """A background job cannot be sent as JSON: a lambda, a local function, an unimportable path, or
    arguments that are not JSON."""


class JobNotFound(FlowjobsError):
    """No background job has this id: it never existed, or the job system no longer keeps it."""
