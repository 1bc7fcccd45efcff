"""The schedules duty: every worker (and ``flowjobs scheduler``) fires due schedules, once per tick.

The duty has no lock: every process runs it and fires only the schedules whose flow and trigger
its own flow files have, leaving the other ticks to the processes that have them. A pass declares
the flow files' schedules (re-read only when a file changed; it removes none: that is ``schedules
prune``), then, for each schedule due now: plans the tick (``cron.plan_fire``: the latest due tick
within the grace window, never a storm), fires it through ``FlowClient.fire_schedule`` (the tick's
identity is the run's idempotency key, or the recurring job's tick claim, so a second process
firing the same tick gets the first run back and writes nothing), and moves the schedule to its
next fire time only if no one moved it meanwhile (``WATCH``). RQ's own ``CronScheduler`` has no
lock and double-fires when two run; it is not used.

A schedule that cannot be planned (an expression with no tick, stored before such expressions were
refused) is marked with the reason (``error``), logged and taken out of the due index; the others
fire in the same pass.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeGuard

import structlog

from flowjobs.client import FlowClient
from flowjobs.core.clock import iso, utcnow
from flowjobs.core.cron import FirePlan, plan_fire
from flowjobs.core.errors import (
    FlowDisabled,
    FlowjobsError,
    FlowNotFound,
    InvalidCron,
    ReplicasNotAcknowledged,
    TriggerNotFound,
)
from flowjobs.core.registry import FLOW_FILE_SUFFIXES, FlowRegistry
from flowjobs.core.schedules import Fired, ScheduleKind, ScheduleState, SyncReport, broken, fired
from flowjobs.store.base import REDIS_DOWN

log = structlog.get_logger("flowjobs.schedules")

#: Flow files' (name, modification time, size): re-read and re-synced only when this changes.
Fingerprint = tuple[tuple[str, int, int], ...]


def flows_fingerprint(folder: Path) -> Fingerprint | None:
    """What identifies the folder's flow files cheaply (a ``stat`` each); None without the folder."""
    if not folder.is_dir():
        return None
    found = []
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() in FLOW_FILE_SUFFIXES:
            stat = file.stat()
            found.append((file.name, stat.st_mtime_ns, stat.st_size))
    return tuple(found)


class ScheduleFirer:
    """Fires due schedules through a ``FlowClient``; ``run`` is one pass of the duty."""

    def __init__(
        self,
        client: FlowClient,
        *,
        grace_seconds: float,
        flows_dir: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.client = client
        self.store = client.schedules
        self.grace_seconds = grace_seconds
        self.flows_dir = flows_dir
        self.clock = clock
        self._fingerprint: Fingerprint | None = None

    def run(self) -> int:
        """One pass: re-sync if the flow files changed, then fire what is due; returns ticks fired."""
        self.refresh()
        return self.fire_due()

    def refresh(self) -> SyncReport | None:
        """Reload the flow files and declare their schedules, if the files changed since the last
        time (None: nothing to do).

        Without the folder this process knows no flow and declares nothing. Nothing is ever removed
        here: a flow this process lacks may be one other processes have (``schedules prune``).
        """
        if self.flows_dir is None:
            return None
        fingerprint = flows_fingerprint(self.flows_dir)
        if fingerprint is None or fingerprint == self._fingerprint:
            return None
        registry = FlowRegistry()
        registry.load_dir(self.flows_dir, strict=False)
        self.client.flows = registry
        report = self.client.sync_schedules()
        self._fingerprint = fingerprint
        return report

    def fire_due(self) -> int:
        """Fire every schedule due now; one failing schedule is logged and the others still fire."""
        now = self.clock()
        count = 0
        for schedule_id in self.store.due(now):
            try:
                count += self.fire_one(schedule_id, now)
            except REDIS_DOWN:
                raise
            except ReplicasNotAcknowledged as error:
                # The tick stays due: the next pass fires it again under the same idempotency key,
                # which returns the same run, and waits for the replicas again.
                log.warning("schedule.not_replicated", schedule_id=schedule_id, error=str(error))
            except Exception as error:
                log.exception("schedule.failed", schedule_id=schedule_id, error=repr(error))
        return count

    def fire_one(self, schedule_id: str, now: datetime) -> int:
        """Fire one due schedule's tick (if within the grace window) and move it to its next fire
        time; returns 1 if this call started the tick's run or job, else 0."""
        state = self.store.get(schedule_id)
        if state is None or state.is_paused or state.next_fire_at is None or state.next_fire_at > now:
            return 0
        due = state.next_fire_at
        with structlog.contextvars.bound_contextvars(
            schedule_id=schedule_id, flow_id=str(state.flow_id) if state.flow_id else None
        ):
            try:
                plan = plan_fire(state.effective_cron, state.time_zone, due, now, self.grace_seconds)
            except Exception as error:  # pure arithmetic on the stored state: it fails alike next pass
                self._break(state, due, error)
                return 0
            if plan.skipped:
                log.warning(
                    "schedule.missed_ticks",
                    skipped=plan.skipped,
                    firing=iso(plan.tick) if plan.tick else None,
                    grace_seconds=self.grace_seconds,
                )
            outcome: Fired | None = None
            if plan.tick is not None:
                try:
                    outcome = self._fire(state, plan)
                except (FlowNotFound, TriggerNotFound):
                    # This process's flow files lack the flow or its trigger (none, another folder,
                    # another release): leave the tick to a process that has them.
                    log.debug("schedule.flow_unknown_here")
                    return 0
            self._advance(state, due, plan, now, outcome)
            return int(outcome is not None and outcome.new)

    def _fire(self, state: ScheduleState, plan: FirePlan) -> Fired | None:
        """Fire the planned tick; a disabled flow's tick (or one the flow now refuses) is skipped."""
        assert plan.tick is not None
        if state.kind is ScheduleKind.flow and not self.client.store.flows.flow_enabled(str(state.flow_id)):
            log.info("schedule.skipped", reason="flow disabled", tick=iso(plan.tick))
            return None
        try:
            outcome = self.client.fire_schedule(state, plan.tick)
        except FlowDisabled:
            log.info("schedule.skipped", reason="flow disabled", tick=iso(plan.tick))
            return None
        except (FlowNotFound, TriggerNotFound, ReplicasNotAcknowledged):
            raise
        except FlowjobsError as error:  # the flow refuses this tick (bad trigger data)
            log.warning("schedule.refused", tick=iso(plan.tick), error=str(error))
            return None
        lag_ms = int((self.clock() - plan.tick).total_seconds() * 1000)
        with structlog.contextvars.bound_contextvars(run_id=str(outcome.run_id) if outcome.run_id else None):
            log.info(
                "schedule.fired" if outcome.new else "schedule.already_fired",
                tick=iso(plan.tick),
                job_id=outcome.job_id,
                lag_ms=lag_ms,
            )
        return outcome

    def _break(self, state: ScheduleState, due: datetime, error: Exception) -> None:
        """Mark a schedule that cannot be planned, unless it changed since this pass read it."""
        reason = str(error) or repr(error)
        log.error(
            "schedule.broken",
            cron=state.effective_cron,
            time_zone=state.time_zone,
            error=reason,
            exc_info=not isinstance(error, InvalidCron),  # an expression's fault needs no traceback
        )

        def mark(current: ScheduleState | None) -> ScheduleState | None:
            return broken(current, reason) if _still_due(current, due) else current

        self.store.change(state.schedule_id, mark)

    def _advance(
        self, state: ScheduleState, due: datetime, plan: FirePlan, now: datetime, outcome: Fired | None
    ) -> None:
        """Move the schedule to its next fire time, unless another process (or a pause, resume or
        new expression) changed its due time since this pass read it."""

        def advance(current: ScheduleState | None) -> ScheduleState | None:
            if not _still_due(current, due):
                return current
            return fired(
                current,
                plan if outcome is not None else FirePlan(None, plan.next_fire, plan.skipped),
                now,
                job_id=outcome.job_id if outcome else None,
                run_id=outcome.run_id if outcome else None,
            )

        self.store.change(state.schedule_id, advance)


def _still_due(current: ScheduleState | None, due: datetime) -> TypeGuard[ScheduleState]:
    """Whether no other process, pause, resume or new expression changed the schedule's due time."""
    return current is not None and not current.is_paused and current.next_fire_at == due
