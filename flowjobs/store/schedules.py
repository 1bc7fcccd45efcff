"""Schedules in Redis: one hash per schedule, the due index, tick claims, and the flow files' Cron
triggers declared into them.

Every change is one ``WATCH``/``MULTI`` round on the schedule's hash: read the state, apply a
pure transition (``flowjobs.core.schedules``), write the hash and the due index together, or
start over if another process changed the hash meanwhile. No change is ever half written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from flowjobs.core.clock import epoch_ms
from flowjobs.core.errors import InvalidCron, ScheduleNotFound
from flowjobs.core.keys import Keys
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.schedules import ScheduleKind, ScheduleState, SyncReport, declare, flow_declarations
from flowjobs.store.codec import from_hash, text

log = structlog.get_logger("flowjobs.schedules")

#: How long a recurring job's tick claim is kept: far longer than any grace window replays a tick.
TICK_CLAIM_SECONDS = 7 * 86400

#: A transition: the new state from the current one (None: no schedule). Returning the current
#: state unchanged writes nothing; returning None deletes the schedule.
Change = Callable[[ScheduleState | None], ScheduleState | None]


class ScheduleStore:
    """Reads and atomic changes of schedule states under one key prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def get(self, schedule_id: str) -> ScheduleState | None:
        """One schedule, or None."""
        return ScheduleState.from_fields(from_hash(self.redis.hgetall(self.keys.schedule(schedule_id))))

    def require(self, schedule_id: str) -> ScheduleState:
        """One schedule; ``ScheduleNotFound`` if there is none."""
        state = self.get(schedule_id)
        if state is None:
            raise ScheduleNotFound(f"no schedule or recurring job with id {schedule_id!r}")
        return state

    def all(self) -> list[ScheduleState]:
        """Every schedule, by id (one round-trip for the ids, one for the hashes)."""
        ids = sorted(text(member) for member in self.redis.smembers(self.keys.schedules()))
        with self.redis.pipeline(transaction=False) as pipe:
            for schedule_id in ids:
                pipe.hgetall(self.keys.schedule(schedule_id))
            found = [ScheduleState.from_fields(from_hash(raw)) for raw in pipe.execute()]
        return [state for state in found if state is not None]

    def due(self, now: datetime, limit: int = 500) -> list[str]:
        """Ids of the unpaused schedules whose next fire time is at or before ``now``, earliest first."""
        members = self.redis.zrangebyscore(
            self.keys.schedules_due(), "-inf", epoch_ms(now), start=0, num=limit
        )
        return [text(member) for member in members]

    def change(self, schedule_id: str, transition: Change) -> ScheduleState | None:
        """Apply ``transition`` atomically; returns the state after it (None: no schedule)."""
        key = self.keys.schedule(schedule_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    current = ScheduleState.from_fields(from_hash(pipe.hgetall(key)))
                    new = transition(current)
                    if new is current:
                        return current
                    pipe.multi()
                    if new is None:
                        self._delete(pipe, schedule_id)
                    else:
                        self._write(pipe, new)
                    pipe.execute()
                    return new
                except WatchError:
                    continue

    def update(self, schedule_id: str, transition: Callable[[ScheduleState], ScheduleState]) -> ScheduleState:
        """Apply ``transition`` to an existing schedule; ``ScheduleNotFound`` if there is none."""

        def existing(current: ScheduleState | None) -> ScheduleState:
            if current is None:
                raise ScheduleNotFound(f"no schedule or recurring job with id {schedule_id!r}")
            return transition(current)

        state = self.change(schedule_id, existing)
        assert state is not None  # ``existing`` never returns None
        return state

    def remove(self, schedule_id: str) -> bool:
        """Delete a schedule; False if there was none."""
        existed: list[bool] = []

        def gone(current: ScheduleState | None) -> None:
            existed.append(current is not None)
            return None

        self.change(schedule_id, gone)
        return existed[-1]

    def claim_tick(
        self, schedule_id: str, tick: datetime, job_id: str, enqueue: Callable[[Pipeline], None]
    ) -> tuple[str, bool]:
        """Enqueue a recurring job's tick once: the tick's claim (schedule id + instant) and the
        job are written in one ``MULTI``; a tick claimed before returns ``(its job id, False)``
        and writes nothing."""
        key = self.keys.schedule_tick(schedule_id, epoch_ms(tick))
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    existing = pipe.get(key)
                    if existing is not None:
                        return bytes(existing).decode(), False  # type: ignore[arg-type]
                    # Explicit MULTI: RQ's enqueue joins a transaction only if one is already open.
                    pipe.multi()
                    pipe.set(key, job_id, ex=TICK_CLAIM_SECONDS)
                    enqueue(pipe)
                    pipe.execute()
                    return job_id, True
                except WatchError:
                    continue

    def _write(self, pipe: Pipeline, state: ScheduleState) -> None:
        key = self.keys.schedule(state.schedule_id)
        pipe.delete(key)  # fields that became None must go
        pipe.hset(key, mapping=state.to_fields())  # type: ignore[arg-type]
        pipe.sadd(self.keys.schedules(), state.schedule_id)
        if state.is_paused or state.next_fire_at is None:
            pipe.zrem(self.keys.schedules_due(), state.schedule_id)
        else:
            pipe.zadd(self.keys.schedules_due(), {state.schedule_id: epoch_ms(state.next_fire_at)})

    def _delete(self, pipe: Pipeline, schedule_id: str) -> None:
        pipe.delete(self.keys.schedule(schedule_id))
        pipe.srem(self.keys.schedules(), schedule_id)
        pipe.zrem(self.keys.schedules_due(), schedule_id)


# -- flow schedules from the flow registry --------------------------------------------------------
# Each Cron trigger of each flow is a schedule ``flow-<flowId>-<triggerKey>``. Declaring
# (``sync_flow_schedules``) only adds and updates: the processes of one deployment may hold different
# flow files (a rolling deploy, a CLI run from another folder), so no process takes what its own
# registry lacks for gone. Removing the schedules a registry lacks (``prune_flow_schedules``) is an
# operator's act: ``flowjobs schedules prune``.


def sync_flow_schedules(store: ScheduleStore, registry: FlowRegistry, now: datetime) -> SyncReport:
    """Declare the registry's Cron triggers as schedules.

    A new trigger gets a schedule; a changed expression or zone in the flow file updates it (a
    runtime override still wins, and the pause flag is kept). Nothing is removed; only changed
    schedules are written; application recurring jobs are never touched.
    """
    report = SyncReport()
    current = {state.schedule_id: state for state in store.all()}
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
    flow_schedules = (state.schedule_id for state in store.all() if state.kind is ScheduleKind.flow)
    stale = [schedule_id for schedule_id in flow_schedules if schedule_id not in declared]
    if dry_run:
        return stale
    removed = [schedule_id for schedule_id in stale if store.remove(schedule_id)]
    log.info("schedules.pruned", removed=removed)
    return removed
