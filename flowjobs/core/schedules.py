"""A schedule's state (a flow's Cron trigger or an application's recurring job) and its
transitions, as pure functions of the state and the time; the schedules a flow file declares.

The store applies each transition atomically (``flowjobs.store.schedules``); nothing here talks
to Redis, so the rules (what a pause, a resume, a cron override or a new flow file do to the
next fire time) are tested on their own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from flowjobs.core.clock import iso
from flowjobs.core.cron import FirePlan, check_cron, next_fire
from flowjobs.core.errors import InvalidCron
from flowjobs.core.job_calls import JobCall, RecurringJobInfo
from flowjobs.core.manifest import FlowDefinition, TriggerMetadata, TriggerType

FLOW_SCHEDULE_PREFIX = "flow-"
#: Headers of a run a schedule started: the schedule's id, and the tick's instant (``now`` for an
#: extra fire with ``schedules trigger``).
SCHEDULE_HEADER = "X-Flowjobs-Schedule"
TICK_HEADER = "X-Flowjobs-Schedule-Tick"
#: A recurring job's id becomes part of its fired jobs' ids, which RQ limits to these characters.
_RECURRING_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
#: Inputs of a flow's Cron trigger: its expression and its zone (the others are the run's data).
CRON_INPUT = "cronExpression"
TIME_ZONE_INPUT = "timeZone"


class ScheduleKind(StrEnum):
    """What a schedule fires."""

    #: A flow's Cron trigger: each tick triggers a run.
    flow = "flow"
    #: An application's recurring job (``flowjobs.hangfire.RecurringJob``): each tick enqueues it.
    job = "job"


def flow_schedule_id(flow_id: UUID | str, trigger_key: str) -> str:
    """The reference's recurring id of a flow's Cron trigger: ``flow-<flowId>-<triggerKey>``."""
    return f"{FLOW_SCHEDULE_PREFIX}{flow_id}-{trigger_key}"


def tick_idempotency_key(schedule_id: str, tick: datetime) -> str:
    """A tick's identity, the idempotency key of the run it starts: ``<schedule id>@<instant>``."""
    return f"{schedule_id}@{iso(tick)}"


def check_recurring_id(recurring_id: str) -> str:
    """An application's recurring job id: ``[A-Za-z0-9_-]``, 1 to 200 characters, not ``flow-…``
    (those are the flows' Cron triggers); ``InvalidCron`` otherwise."""
    if not isinstance(recurring_id, str) or not _RECURRING_ID.match(recurring_id):
        raise InvalidCron(f"recurring job id {recurring_id!r} must be 1-200 characters of A-Z a-z 0-9 _ -")
    if recurring_id.startswith(FLOW_SCHEDULE_PREFIX):
        raise InvalidCron(
            f"recurring job id {recurring_id!r}: ids starting 'flow-' are the flows' Cron triggers"
        )
    return recurring_id


class ScheduleState(BaseModel):
    """One schedule: a flow's Cron trigger or an application's recurring job."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    schedule_id: str = Field(alias="job_id")
    """The schedule's id, Hangfire's recurring id: ``flow-<flowId>-<triggerKey>`` for a flow's Cron
    trigger, the application's id for a recurring job. Stored as the hash field ``job_id`` (its
    first name), so every version reads every stored schedule."""
    kind: ScheduleKind
    """Flow trigger or application job."""
    cron: str
    """The declared expression: the flow file's ``cronExpression``, or the recurring job's."""
    time_zone: str | None = None
    """IANA zone the expression is read in (``timeZone``); None: UTC."""
    is_paused: bool = False
    """Paused schedules do not fire (``schedules pause``); kept across restarts and deploys."""
    cron_override: str | None = None
    """Expression set at runtime (``schedules set-cron``); wins over ``cron`` until cleared."""
    updated_at: datetime
    """Last change of the declaration, the pause flag or the override."""
    next_fire_at: datetime | None = None
    """The next tick this schedule owes (None while paused)."""
    last_tick_at: datetime | None = None
    """The scheduled instant of the last tick fired."""
    last_fire_at: datetime | None = None
    """When the last tick was fired (its lag is ``last_fire_at - last_tick_at``)."""
    last_job_id: str | None = None
    """Job the last tick enqueued: a run's trigger job, or the recurring job's own job."""
    last_run_id: UUID | None = None
    """Run the last tick started (flow schedules)."""
    flow_id: UUID | None = None
    """Flow of a flow schedule."""
    flow_name: str | None = None
    """Name of that flow, for people."""
    trigger_key: str | None = None
    """The flow's Cron trigger key."""
    call_json: str | None = None
    """A recurring job's call (function path, JSON arguments, description), as JSON."""
    error: str | None = None
    """Why the duty could not plan the schedule (an expression with no tick): it fires no more until
    a resume, an override or a new expression in its flow file plans it again; None while it fires."""

    @property
    def effective_cron(self) -> str:
        """The expression the schedule fires on: the override, else the declared one."""
        return self.cron_override or self.cron

    def call(self) -> JobCall:
        """A recurring job's call (its ``job_id`` is replaced by each tick's)."""
        if self.call_json is None:
            raise ValueError(f"schedule {self.schedule_id} is a flow trigger, not a recurring job")
        data = json.loads(self.call_json)
        return JobCall(
            func=data["func"],
            args=tuple(data["args"]),
            kwargs=data.get("kwargs") or {},
            job_id=self.schedule_id,
            description=data["description"],
            meta=data.get("meta") or {},
            timeout_seconds=data.get("timeout_seconds"),
            retry_delays=tuple(data.get("retry_delays") or ()),
            keep_failed=bool(data.get("keep_failed")),
        )

    def to_fields(self) -> dict[str, str]:
        """The Redis hash fields (None fields left out; booleans as ``1``/``0``)."""
        fields: dict[str, str] = {}
        for name, value in self.model_dump(mode="json", exclude_none=True, by_alias=True).items():
            fields[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> ScheduleState | None:
        """The state from its hash fields (decoded to text); None for a missing hash."""
        if not fields:
            return None
        return cls.model_validate(fields)

    def summary(self, *, flow_enabled: bool = True) -> dict[str, Any]:
        """The listing's shape (the reference's ``/api/schedules`` entries, camelCase)."""
        return {
            "jobId": self.schedule_id,
            "kind": self.kind.value,
            "flowId": str(self.flow_id) if self.flow_id else None,
            "flowName": self.flow_name,
            "triggerKey": self.trigger_key,
            "cron": self.effective_cron,
            "declaredCron": self.cron,
            "cronOverride": self.cron_override,
            "timeZoneId": self.time_zone or "UTC",
            "paused": self.is_paused,
            "flowEnabled": flow_enabled,
            "nextExecution": iso(self.next_fire_at) if self.next_fire_at and not self.is_paused else None,
            "lastExecution": iso(self.last_fire_at) if self.last_fire_at else None,
            "lastTick": iso(self.last_tick_at) if self.last_tick_at else None,
            "lastJobId": self.last_job_id,
            "lastRunId": str(self.last_run_id) if self.last_run_id else None,
            "updatedAt": iso(self.updated_at),
            "error": self.error,
        }


def call_json(call: JobCall) -> str:
    """A recurring job's call as stored on its schedule."""
    return json.dumps(
        {
            "func": call.func,
            "args": list(call.args),
            "kwargs": dict(call.kwargs),
            "description": call.description,
            "meta": dict(call.meta),
            "timeout_seconds": call.timeout_seconds,
            "retry_delays": list(call.retry_delays),
            "keep_failed": call.keep_failed,
        },
        allow_nan=False,
    )


# -- transitions -----------------------------------------------------------------------------------


def declare(current: ScheduleState | None, declared: ScheduleState, now: datetime) -> ScheduleState:
    """A schedule (re)declared by a flow file or ``add_or_update``: the declaration replaces the old
    one, the pause flag, override and history are kept, and the next fire time is recomputed only
    when the expression in effect or the zone changed (so a restart never loses a missed tick)."""
    check_cron(declared.cron, declared.time_zone, now)
    if current is None:
        return _planned(declared.model_copy(update={"updated_at": now}), now)
    kept = declared.model_copy(
        update={
            "is_paused": current.is_paused,
            "cron_override": current.cron_override,
            "last_tick_at": current.last_tick_at,
            "last_fire_at": current.last_fire_at,
            "last_job_id": current.last_job_id,
            "last_run_id": current.last_run_id,
            "next_fire_at": current.next_fire_at,
            "updated_at": current.updated_at,
            "error": current.error,
        }
    )
    if kept == current:
        return current
    moved = (kept.effective_cron, kept.time_zone) != (current.effective_cron, current.time_zone)
    if kept.is_paused or not (moved or current.next_fire_at is None):
        # Paused: resume computes it; else the owed tick stays owed.
        return kept.model_copy(update={"updated_at": now})
    return _planned(kept.model_copy(update={"updated_at": now}), now)


def pause(current: ScheduleState, now: datetime) -> ScheduleState:
    """Stop firing; ticks while paused are never caught up."""
    if current.is_paused:
        return current
    return current.model_copy(update={"is_paused": True, "next_fire_at": None, "updated_at": now})


def resume(current: ScheduleState, now: datetime) -> ScheduleState:
    """Fire again from the next tick after ``now``; a schedule the duty marked (``error``) is
    planned again: ``InvalidCron`` while its expression still has no tick."""
    if not current.is_paused and current.error is None:
        return current
    return _planned(current.model_copy(update={"is_paused": False, "updated_at": now}), now)


def override_cron(current: ScheduleState, expression: str | None, now: datetime) -> ScheduleState:
    """Set (or, with None, clear) the runtime override; the expression then in effect is checked
    before anything is stored, paused or not (the reference stores a bad override first and then
    fails)."""
    changed = current.model_copy(update={"cron_override": expression, "updated_at": now})
    check_cron(changed.effective_cron, changed.time_zone, now)
    return _planned(changed, now)


def broken(current: ScheduleState, reason: str) -> ScheduleState:
    """A schedule the duty cannot plan: marked with ``reason`` and out of the due index (every pass
    would fail alike) until a resume, an override or a new expression plans it again."""
    return current.model_copy(update={"error": reason, "next_fire_at": None})


def _planned(state: ScheduleState, now: datetime) -> ScheduleState:
    """``state`` with its next tick after ``now`` (None while paused) and no ``error``;
    ``InvalidCron`` if its expression has no tick."""
    owed = None if state.is_paused else next_fire(state.effective_cron, now, state.time_zone)
    return state.model_copy(update={"next_fire_at": owed, "error": None})


def fired(
    current: ScheduleState,
    plan: FirePlan,
    now: datetime,
    *,
    job_id: str | None = None,
    run_id: UUID | None = None,
) -> ScheduleState:
    """After a pass over a due schedule: the next fire time, and the tick fired (if any)."""
    update: dict[str, Any] = {"next_fire_at": plan.next_fire}
    if plan.tick is not None:
        update |= {
            "last_tick_at": plan.tick,
            "last_fire_at": now,
            "last_job_id": job_id,
            "last_run_id": run_id,
        }
    return current.model_copy(update=update)


@dataclass(frozen=True)
class Fired:
    """What firing a tick did."""

    job_id: str
    """The job it enqueued: a run's trigger job, or the recurring job's own."""
    run_id: UUID | None
    """The run it started (flow schedules)."""
    new: bool
    """False when the tick had fired before: the ids are the first fire's, nothing was written."""


def recurring_info(state: ScheduleState) -> RecurringJobInfo:
    """A schedule as ``RecurringJob.list`` lists it."""
    return RecurringJobInfo(
        id=state.schedule_id,
        cron=state.effective_cron,
        time_zone=state.time_zone or "UTC",
        next_execution=None if state.is_paused else state.next_fire_at,
        last_execution=state.last_fire_at,
        last_job_id=state.last_job_id,
        paused=state.is_paused,
    )


def recurring_job(
    recurring_id: str, call: JobCall, cron: str, time_zone: str | None, now: datetime
) -> ScheduleState:
    """The declared state of an application's recurring job (``RecurringJob.add_or_update``):
    ``declare`` merges it with the stored one."""
    return ScheduleState(
        schedule_id=check_recurring_id(recurring_id),
        kind=ScheduleKind.job,
        cron=cron,
        time_zone=time_zone,
        updated_at=now,
        call_json=call_json(call),
    )


# -- flow schedules from flow files ------------------------------------------------------------


@dataclass
class SyncReport:
    """What one sync changed, by schedule id."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.updated)


def cron_trigger_data(trigger: TriggerMetadata) -> dict[str, Any]:
    """A Cron trigger's run data: its ``inputs`` without ``cronExpression``."""
    return {key: value for key, value in trigger.inputs.items() if key != CRON_INPUT}


def flow_declarations(definitions: list[FlowDefinition], now: datetime) -> dict[str, ScheduleState]:
    """The schedule every Cron trigger of these flows declares, by id."""
    declared: dict[str, ScheduleState] = {}
    for definition in definitions:
        for key, trigger in definition.manifest.triggers.items():
            if trigger.type is not TriggerType.Cron:
                continue
            zone = trigger.inputs.get(TIME_ZONE_INPUT)
            schedule_id = flow_schedule_id(definition.id, key)
            declared[schedule_id] = ScheduleState(
                schedule_id=schedule_id,
                kind=ScheduleKind.flow,
                cron=str(trigger.inputs.get(CRON_INPUT)),
                time_zone=zone if isinstance(zone, str) else None,
                updated_at=now,
                flow_id=definition.id,
                flow_name=definition.name,
                trigger_key=key,
            )
    return declared
