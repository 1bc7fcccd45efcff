"""The run and step state machine as data: every legal status change, named, with the statuses it
leaves and enters, and the reasons the store writes when it ends or skips work for a run.

Spelled once, here. The store's Lua scripts do not spell these statuses: ``flowjobs.store.scripts``
generates a Lua prelude from this module (``RUN``, ``STEP``, ``FINAL``, ``ACTIVE``, ``REASON``) and
each script fences its writes with the rule it performs (``STEP.claim.from[status]``). The model is
Prefect's orchestration rules: a transition is legal only if a named FROM → TO rule allows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from flowjobs.core.statuses import RunStatus, StepStatus

S = TypeVar("S", StepStatus, RunStatus)

#: Step statuses a step never leaves on its own (only an operator's retry or a re-run moves it).
FINAL: frozenset[StepStatus] = frozenset(status for status in StepStatus if status.is_final)
#: Run statuses of a run that is not closed yet.
ACTIVE: frozenset[RunStatus] = frozenset(status for status in RunStatus if not status.is_terminal)


@dataclass(frozen=True)
class Rule(Generic[S]):
    """One named transition: from any status of ``source`` to one of ``target``.

    ``None`` in ``source`` is a step without a record yet; in ``target``, a record deleted.
    """

    name: str
    source: frozenset[S | None]
    target: frozenset[S | None]
    run: frozenset[RunStatus] | None = None
    """For a step rule: the statuses its run must be in (None: any)."""
    doc: str = ""

    def allows(self, source: S | None, target: S | None) -> bool:
        """Whether this rule moves ``source`` to ``target``."""
        return source in self.source and target in self.target


def _rules(*rules: Rule[S]) -> Mapping[str, Rule[S]]:
    return {rule.name: rule for rule in rules}


_ALL_RUN = frozenset(RunStatus)
_RUNNING = frozenset({RunStatus.Running})

#: The run transitions, by name; each says which script performs it.
RUN_RULES: Mapping[str, Rule[RunStatus]] = _rules(
    Rule(
        "start",
        frozenset({RunStatus.Pending}),
        _RUNNING,
        doc="start_run.lua: the trigger job starts the run.",
    ),
    Rule(
        "refuse_start",
        frozenset({RunStatus.Pending}),
        frozenset({RunStatus.Cancelled}),
        doc="start_run.lua: the run's flow was disabled while its trigger job waited.",
    ),
    Rule(
        "close",
        _RUNNING,
        frozenset({RunStatus.Succeeded, RunStatus.Failed, RunStatus.Skipped, RunStatus.Cancelled}),
        doc="apply_continuation (common.lua): every step is final; Cancelled once a cancel was requested.",
    ),
    Rule(
        "cancel",
        frozenset(ACTIVE),
        frozenset({RunStatus.Cancelled}),
        doc="cancel_run.lua: at once when no step runs on a worker, else by `close` after the last one.",
    ),
    Rule(
        "abort",
        frozenset(ACTIVE),
        _ALL_RUN - ACTIVE,
        doc="end_run.lua, from outside the run's steps: recovery ends it TimedOut when its deadline "
        "passed, Failed when it can never be planned again.",
    ),
    Rule(
        "reopen",
        _ALL_RUN - _RUNNING,
        _RUNNING,
        doc="retry_step.lua: a retried step's run runs again, to close once more as its steps decide.",
    ),
)

_NEW: frozenset[StepStatus | None] = frozenset({None})

#: The step transitions, by name; each says which script performs it.
STEP_RULES: Mapping[str, Rule[StepStatus]] = _rules(
    Rule(
        "dispatch",
        _NEW,
        frozenset({StepStatus.Pending}),
        run=_RUNNING,
        doc="apply_continuation (common.lua): a ready step's first attempt is queued, once.",
    ),
    Rule(
        "skip",
        _NEW,
        frozenset({StepStatus.Skipped}),
        run=_RUNNING,
        doc="apply_continuation (common.lua): a step the planner will never run (When false, blocked).",
    ),
    Rule(
        "claim",
        frozenset({StepStatus.Pending}),
        frozenset({StepStatus.Running}),
        run=_RUNNING,
        doc="claim.lua: a worker takes the current attempt, with a lease.",
    ),
    Rule(
        "renew",
        frozenset({StepStatus.Running}),
        frozenset({StepStatus.Running}),
        doc="renew_many.lua: the worker holding the attempt extends its lease.",
    ),
    Rule(
        "expand",
        frozenset({StepStatus.Running}),
        frozenset({StepStatus.Running}),
        doc="expand_loop.lua: a ForEach records its iterations and stays Running, holding no worker.",
    ),
    Rule(
        "complete",
        frozenset({StepStatus.Running}),
        frozenset(FINAL),
        doc="complete.lua: the attempt's outcome; Skipped when it would wait but its run is closing.",
    ),
    Rule(
        "requeue",
        frozenset({StepStatus.Running}),
        frozenset({StepStatus.Pending}),
        run=_RUNNING,
        doc="complete.lua: the next attempt is queued (a retry, a poll, a parked WaitForSignal).",
    ),
    Rule(
        "abandon",
        frozenset({StepStatus.Pending, StepStatus.Running}),
        frozenset({StepStatus.Skipped}),
        doc="skip_waiting (common.lua): a cancelled or ended run skips its queued and parked steps "
        "and its expanded ForEach steps (Running, holding no worker).",
    ),
    Rule(
        "retry",
        frozenset({StepStatus.Failed}),
        frozenset({StepStatus.Pending}),
        doc="retry_step.lua: an operator's new attempt of a Failed step.",
    ),
    Rule(
        "reset",
        frozenset({StepStatus.Skipped}),
        frozenset({None}),
        doc="retry_step.lua: the retried step's Skipped descendants lose their record, to be planned again.",
    ),
)


@dataclass(frozen=True)
class Reasons:
    """The reasons the store writes (a skipped step's ``error_message``, a closed run's event)."""

    cancelled: str = "Run was cancelled."
    """A step skipped because its run was cancelled."""
    flow_disabled: str = "The flow was disabled before the run started."
    """A run cancelled because its flow was disabled before its trigger job ran."""
    run_is: str = "Run is {status}."
    """A step that would wait again, skipped because its run closed meanwhile (``{status}``: the
    run's status); with TimedOut, also the reason its waiting steps are skipped at the deadline."""

    def closed(self, status: RunStatus) -> str:
        """``run_is`` for a run in ``status``."""
        return self.run_is.format(status=status.value)


REASONS = Reasons()
