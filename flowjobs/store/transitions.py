"""The store's transition types: what callers ask a script to do, and what it answers.

Redis-free: the engine, recovery and the client plan with these; ``flowjobs.store.scripts``
turns script replies into them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from flowjobs.core.planner import LoopProgress
from flowjobs.core.statuses import RunStatus, StepStatus


@dataclass(frozen=True)
class StepDispatch:
    """One attempt of a step to put in the dispatch ledger (and then on the queue)."""

    step_key: str
    step_type: str
    attempt: int
    job_id: str
    due: datetime | None = None


@dataclass(frozen=True)
class StepSkip:
    """A step to record as Skipped, with the reason and, for When clauses, the evaluation trace."""

    step_key: str
    step_type: str
    reason: str
    trace_json: str | None = None


@dataclass(frozen=True)
class StateScope:
    """The part of a run a snapshot reads for planning: the statuses of some steps (the top-level
    ones, and one ForEach iteration's children) and one loop's counters, instead of everything."""

    keys: tuple[str, ...]
    """Step keys whose statuses to read."""
    loop: str | None = None
    """A ForEach step whose counters to read."""
    index: int | None = None
    """With ``loop``: the iteration whose children ``keys`` include."""


@dataclass(frozen=True)
class LoopAdvance:
    """ForEach counters a continuation moves: outcomes of iterations that became final, and how
    many iterations are started."""

    loop_key: str
    started: int
    finals: Mapping[int, RunStatus] = field(default_factory=dict)


@dataclass(frozen=True)
class Continuation:
    """A planned continuation: dispatches, skips, and the run's close when all will be final."""

    dispatch: Sequence[StepDispatch] = ()
    skip: Sequence[StepSkip] = ()
    close: RunStatus | None = None
    required: Sequence[str] = ()
    """Step keys that must all be final for the run to close (the manifest's top-level steps)."""
    job_commands: Mapping[str, Sequence[Sequence[bytes]]] = field(default_factory=dict)
    """Per step key, the Redis commands that enqueue its job, run in the same script if dispatched."""
    version: int | None = None
    """The ``steps_version`` the plan was made at: applied only if still current."""
    loops: Sequence[LoopAdvance] = ()
    """ForEach counters to advance."""
    scope: StateScope | None = None
    """What to read back, to plan again, if the plan is out of date (None: the whole run)."""


@dataclass(frozen=True)
class AppliedPlan:
    """What ``apply_plan`` did: the steps it dispatched, and the status it closed the run with."""

    dispatched: list[str]
    closed: RunStatus | None
    run_status: RunStatus | None
    """The run's status after the plan (None: no such run)."""


@dataclass(frozen=True)
class StoredStep:
    """Status, output JSON and error of a step as the store holds them (``when.py`` turns them into
    the expressions' ``StepView``)."""

    status: StepStatus | None
    output_json: str | None
    error: str | None


@dataclass(frozen=True)
class RunSnapshot:
    """Step statuses, the run's fields and ForEach counters, read atomically for planning: of the
    whole run (``scope`` None) or of the part ``scope`` names."""

    statuses: dict[str, StepStatus]
    run: dict[str, str]
    loops: dict[str, LoopProgress] = field(default_factory=dict)
    """Counters of the expanded ForEach steps read (every one, or the scope's)."""
    scope: StateScope | None = None
    """What was read; None: every step and loop."""
    iteration_final: bool = False
    """With a scope naming an iteration: its outcome is already recorded (nothing left to plan in it)."""
    applied: AppliedPlan | None = None
    """The continuation ``complete`` applied in the same script, if it was still current (then
    nothing else was read: the caller planned from the snapshot it had)."""

    @property
    def version(self) -> int:
        """``steps_version`` of the run when this was read."""
        return int(self.run.get("steps_version", "0"))


@dataclass(frozen=True)
class Claim:
    """A granted claim: the run's fields and the referenced steps, read in the same script."""

    run: dict[str, str]
    snapshot: RunSnapshot
    """Step statuses, run fields and loops at claim time, to plan the continuation ahead."""
    refs: dict[str, StoredStep] = field(default_factory=dict)
    first_started_at: datetime | None = None
    """When the step's first attempt was claimed (polling and signal timeouts count from it)."""
    loop_item_json: str | None = None
    """For a ForEach child: its iteration's item, as JSON."""


class AdmissionRefusal(StrEnum):
    """Why ``create_run.lua`` wrote no run."""

    disabled = "disabled"
    """The flow is disabled."""
    rate_limited = "rate_limited"
    """The admission bucket had no token (detail: milliseconds until one is back)."""
    replayed = "replayed"
    """The admission ``once_key`` was already set (a delivery received before)."""


class ClaimRefusal(StrEnum):
    """Why ``claim.lua`` refused a worker the attempt (``StepOutcome`` has the same words)."""

    stale = "stale"
    """The attempt is not the step's current Pending one (detail ``<status>#<attempt>``)."""
    run_not_running = "run_not_running"
    """The run is not Running (detail: its status, or ``missing``)."""


class FenceRefusal(StrEnum):
    """Why ``complete.lua`` or ``expand_loop.lua`` recorded nothing."""

    stale = "stale"
    """The attempt is not the step's current Running one (detail ``<status>#<attempt>``, or
    ``lease renewed`` when recovery found the lease extended since it expired)."""


class SignalRefusal(StrEnum):
    """Why ``deliver_signal.lua`` delivered nothing."""

    no_run = "no_run"
    """No such run."""
    already = "already"
    """The signal name was delivered before (detail: when)."""
    not_active = "not_active"
    """The run is closed (detail: its status)."""
    changed = "changed"
    """The signal's waiters moved since the caller read them: read again."""
    unknown = "unknown"
    """No step of the run waits for the name, nor can one still park on it."""


class CancelRefusal(StrEnum):
    """Why ``cancel_run.lua`` cancelled nothing."""

    no_run = "no_run"
    """No such run."""
    not_active = "not_active"
    """The run is closed (detail: its status)."""


class RetryRefusal(StrEnum):
    """Why ``retry_step.lua`` queued no new attempt."""

    no_run = "no_run"
    """No such run."""
    cancelled = "cancelled"
    """The run's cancel was requested (and not cleared)."""
    not_failed = "not_failed"
    """The step is not Failed at the attempt the caller saw (detail ``<status>#<attempt>``)."""


#: Any script's refusal (each script answers with its own family).
Refusal = AdmissionRefusal | ClaimRefusal | FenceRefusal | SignalRefusal | CancelRefusal | RetryRefusal
R = TypeVar("R", AdmissionRefusal, ClaimRefusal, FenceRefusal, SignalRefusal, CancelRefusal, RetryRefusal)


@dataclass(frozen=True)
class Cancelled:
    """A cancel request that was recorded: whether the run closed at once, and the queued jobs of
    the steps it skipped (to cancel in the job system too)."""

    closed: bool
    job_ids: list[str]


@dataclass(frozen=True)
class Refused(Generic[R]):
    """A transition the script refused, and why (``reason`` is of the script's refusal family)."""

    reason: R
    detail: str = ""


@dataclass(frozen=True)
class TokenBucket:
    """A token bucket in Redis: ``burst`` takes at once, then ``per_second`` on average."""

    key: str
    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and self.burst >= 1):
            raise ValueError(f"a token bucket needs per_second > 0 and burst >= 1, not {self}")


@dataclass(frozen=True)
class Admission:
    """What a new run must pass besides its flow being enabled, checked (in this order) by the
    script that writes it: a token from ``bucket``, and ``once_key`` not set yet (it is then kept
    for ``once_seconds``). The webhook receiver's rate limit and replay memory."""

    bucket: TokenBucket | None = None
    once_key: str | None = None
    once_seconds: int = 0
    counted: Mapping[str, str] | None = None
    """Metric field to count per outcome of the script (``created``, ``existing``, ``disabled``,
    ``rate_limited``, ``replayed``): a webhook delivery's, in the same call."""

    def __post_init__(self) -> None:
        if self.once_key is not None and self.once_seconds < 1:
            raise ValueError(f"once_key needs once_seconds >= 1, not {self.once_seconds}")


@dataclass(frozen=True)
class NewRun:
    """A run ready to be written by ``create_run.lua``: the script's JSON document and binary ARGV,
    built without I/O so the same run can be written over a blocking or an asyncio connection."""

    run_id: str
    args: Mapping[str, object]
    argv: Sequence[bytes]


@dataclass(frozen=True)
class Created:
    """A run written (``created``), or the first run of its idempotency key (nothing written)."""

    run_id: str
    created: bool


@dataclass(frozen=True)
class Park:
    """Park a WaitForSignal step: record its waiter, unless the signal was already delivered."""

    signal_name: str
    expires_at: datetime | None


@dataclass(frozen=True)
class Signalled:
    """The signal a parking step waited for had already arrived: its payload."""

    payload_json: str


@dataclass(frozen=True)
class SignalResume:
    """The attempt that resumes a step parked on a signal, and its job's enqueue commands."""

    attempt: int
    job_id: str
    commands: Sequence[Sequence[bytes]] = ()


@dataclass(frozen=True)
class Delivered:
    """A signal delivered: the parked steps it resumed (none: it is kept for a step that parks later)."""

    resumed: list[str]


@dataclass(frozen=True)
class NextAttempt:
    """Queue the step again as this attempt instead of making it final."""

    attempt: int
    job_id: str
    due: datetime
    event: str = "step.retried"
    message: str | None = None
