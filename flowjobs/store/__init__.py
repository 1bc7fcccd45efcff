"""The Redis run store, one module per noun: flows, runs (and step transitions), signals, history
(the read model), recovery queries; the Lua scripts and their decoders; the record codec.

Every state transition is one Lua script (``flowjobs/lua``) that checks the expected current
status, so no run is closed twice and no attempt's outcome is recorded twice.
"""

from flowjobs.store.async_runs import AsyncRunWrites
from flowjobs.store.run_store import RunStore
from flowjobs.store.transitions import (
    Admission,
    AppliedPlan,
    Claim,
    Continuation,
    Created,
    Delivered,
    NextAttempt,
    Park,
    Refusal,
    Refused,
    RunSnapshot,
    Signalled,
    SignalResume,
    StepDispatch,
    StepSkip,
    StepView,
    TokenBucket,
)

__all__ = [
    "Admission",
    "AppliedPlan",
    "AsyncRunWrites",
    "Claim",
    "Continuation",
    "Created",
    "Delivered",
    "NextAttempt",
    "Park",
    "Refusal",
    "Refused",
    "RunSnapshot",
    "RunStore",
    "SignalResume",
    "Signalled",
    "StepDispatch",
    "StepSkip",
    "StepView",
    "TokenBucket",
]
