"""Schedules from the flow registry: each Cron trigger of each flow is a schedule
``flow-<flowId>-<triggerKey>``.

Declaring (``sync_flow_schedules``) only adds and updates: the processes of one deployment may hold
different flow files (a rolling deploy, a CLI run from another folder), so no process takes what
its own registry lacks for gone. Removing the schedules a registry lacks (``prune_flow_schedules``)
is an operator's act: ``flowjobs schedules prune``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from flowjobs.errors import InvalidCron
from flowjobs.manifest import FlowDefinition, TriggerMetadata, TriggerType
from flowjobs.registry import FlowRegistry
from flowjobs.schedules.state import ScheduleKind, ScheduleState, declare, flow_schedule_id
from flowjobs.schedules.store import ScheduleStore

log = structlog.get_logger("flowjobs.schedules")

CRON_INPUT = "cronExpression"
TIME_ZONE_INPUT = "timeZone"


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
                job_id=schedule_id,
                kind=ScheduleKind.flow,
                cron=str(trigger.inputs.get(CRON_INPUT)),
                time_zone=zone if isinstance(zone, str) else None,
                updated_at=now,
                flow_id=definition.id,
                flow_name=definition.name,
                trigger_key=key,
            )
    return declared


def sync_flow_schedules(store: ScheduleStore, registry: FlowRegistry, now: datetime) -> SyncReport:
    """Declare the registry's Cron triggers as schedules.

    A new trigger gets a schedule; a changed expression or zone in the flow file updates it (a
    runtime override still wins, and the pause flag is kept). Nothing is removed; only changed
    schedules are written; application recurring jobs are never touched.
    """
    report = SyncReport()
    current = {state.job_id: state for state in store.all()}
    for schedule_id, declaration in flow_declarations(registry.all(), now).items():
        before = current.get(schedule_id)
        try:
            after = store.change(schedule_id, lambda state, d=declaration: declare(state, d, now))  # type: ignore[misc]
        except InvalidCron as error:
            log.warning(
                "schedule.invalid",
                schedule_id=schedule_id,
                flow_id=str(declaration.flow_id),
                error=str(error),
            )
            continue
        if before is None:
            report.added.append(schedule_id)
        elif after != before:
            report.updated.append(schedule_id)
    if report:
        log.info("schedules.synced", added=report.added, updated=report.updated)
    return report


def prune_flow_schedules(
    store: ScheduleStore, registry: FlowRegistry, now: datetime, *, dry_run: bool = False
) -> list[str]:
    """Remove the flow schedules whose flow or Cron trigger the registry lacks (with ``dry_run``,
    only name them); returns their ids. Application recurring jobs are never touched."""
    declared = flow_declarations(registry.all(), now)
    flow_schedules = (state.job_id for state in store.all() if state.kind is ScheduleKind.flow)
    stale = [schedule_id for schedule_id in flow_schedules if schedule_id not in declared]
    if dry_run:
        return stale
    removed = [schedule_id for schedule_id in stale if store.remove(schedule_id)]
    log.info("schedules.pruned", removed=removed)
    return removed
