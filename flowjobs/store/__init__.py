"""The Redis store: one module per noun (flows, runs and their step transitions, signals, history,
overdue work, retention, schedules), the Lua scripts with their typed reply decoders, the codec.

``RunStore`` holds one object per run-record noun (``flows``, ``runs``, ``signals``, ``history``,
``overdue``, ``retention``), all built over one ``StoreContext`` (one Redis, one key prefix, the
registered scripts); ``ScheduleStore`` and ``AsyncRunWrites`` stand alone.

Every state transition is one Lua script (``flowjobs/lua``) that checks the expected current
status, so no run is closed twice and no attempt's outcome is recorded twice.
"""

from flowjobs.store.async_runs import AsyncRunWrites
from flowjobs.store.base import StoreContext
from flowjobs.store.run_store import RunStore
from flowjobs.store.transitions import (
    Admission,
    AdmissionRefusal,
    AppliedPlan,
    CancelRefusal,
    Claim,
    ClaimRefusal,
    Continuation,
    Created,
    Delivered,
    FenceRefusal,
    NextAttempt,
    Park,
    Refusal,
    Refused,
    RetryRefusal,
    RunSnapshot,
    Signalled,
    SignalRefusal,
    SignalResume,
    StepDispatch,
    StepSkip,
    StoredStep,
    TokenBucket,
)

__all__ = [
    "Admission",
    "AdmissionRefusal",
    "AppliedPlan",
    "AsyncRunWrites",
    "CancelRefusal",
    "Claim",
    "ClaimRefusal",
    "Continuation",
    "Created",
    "Delivered",
    "FenceRefusal",
    "NextAttempt",
    "Park",
    "Refusal",
    "Refused",
    "RetryRefusal",
    "RunSnapshot",
    "RunStore",
    "SignalRefusal",
    "SignalResume",
    "Signalled",
    "StepDispatch",
    "StepSkip",
    "StoreContext",
    "StoredStep",
    "TokenBucket",
]
