"""The read model: runs with their steps and attempts, run lists, events, step views."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from flowjobs.core.clock import epoch_score
from flowjobs.core.job_calls import run_of_job
from flowjobs.core.records import FlowRunRecord, FlowStepRecord, RunEvent
from flowjobs.core.statuses import RunStatus
from flowjobs.store.base import StorePart
from flowjobs.store.codec import (
    EVENTS_TRIMMED_FIELD,
    STORED_STEP_FIELDS,
    decode_events,
    decode_run,
    decode_step,
    from_hash,
    legacy_steps,
    step_field,
    stored_step,
    text,
)
from flowjobs.store.transitions import StoredStep

#: Sorts steps that never started nor completed last.
_LATEST = datetime.max.replace(tzinfo=UTC)


class History(StorePart):
    """Reads of run history, for the client, the CLI and When clauses."""

    def run_fields(self, run_id: UUID | str) -> dict[str, str]:
        """Raw fields of the run hash (empty when there is no such run)."""
        return from_hash(self.redis.hgetall(self.keys.run(run_id)))

    def get_run(self, run_id: UUID | str) -> FlowRunRecord | None:
        """The run record without steps, or None."""
        fields = self.run_fields(run_id)
        return decode_run(fields) if fields else None

    def get_run_detail(self, run_id: UUID | str) -> FlowRunRecord | None:
        """The run with every step and its attempts, read in one round-trip (two for a run stored
        before the one-hash layout, ``legacy_steps``)."""
        stored = self.scripts.run_detail(
            {
                "run_key": self.keys.run(run_id),
                "steps_key": self.keys.run_steps(run_id),
                "attempts_key": self.keys.attempts(run_id),
            }
        )
        if stored is None:
            return None
        steps_of = dict(stored.steps)
        legacy = legacy_steps(steps_of)
        if legacy:
            with self.redis.pipeline(transaction=False) as pipe:
                for key in legacy:
                    pipe.hgetall(self.keys.legacy_step(run_id, key))
                for key, found in zip(legacy, pipe.execute(), strict=True):
                    steps_of[key] = {**from_hash(found), **steps_of[key]}
        archived: dict[str, dict[int, str]] = {}
        for field, value in stored.attempts.items():
            step_key, _, number = field.rpartition("#")
            archived.setdefault(step_key, {})[int(number)] = value
        steps = [decode_step(run_id, key, fields, archived.get(key, {})) for key, fields in steps_of.items()]
        steps.sort(key=_started_order)
        return decode_run(stored.run).model_copy(update={"steps": steps})

    def list_runs(
        self,
        *,
        flow_id: UUID | str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        before: UUID | str | datetime | None = None,
        since: datetime | None = None,
        skip: int = 0,
    ) -> list[FlowRunRecord]:
        """Runs newest first; ``before`` (a run id or a time, exclusive) pages past the runs already
        seen, ``since`` (inclusive) stops at the oldest start wanted, ``skip`` drops that many first.

        Reads the narrowest index for the filters (all runs, per flow, per status, or per flow and
        status), so at most three round-trips whatever the history size: the ``before`` run's
        score, one page of ids, their hashes.
        """
        if limit < 1:
            return []
        bounds = self._score_bounds(before, since)
        if bounds is None:
            return []
        upper, lower = bounds
        index = self._run_index(flow_id, status)
        ids = self.redis.zrevrangebyscore(index, upper, lower, start=max(skip, 0), num=limit)
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(self.keys.run(text(run_id)))
            rows = pipe.execute()
        # Every index entry has its hash (both are written and moved together), so no refill.
        return [decode_run(from_hash(raw)) for raw in rows if raw]

    def count_runs(
        self,
        *,
        flow_ids: Sequence[UUID | str | None] = (None,),
        statuses: Sequence[RunStatus | None] = (None,),
        before: datetime | None = None,
        since: datetime | None = None,
    ) -> dict[tuple[str | None, RunStatus | None], int]:
        """How many runs each (flow, status) pair has (None: any), started in ``[since, before)``,
        in one round-trip (ZCOUNT on the same indexes as ``list_runs``)."""
        bounds = self._score_bounds(before, since)
        pairs = [(str(f) if f is not None else None, s) for f in flow_ids for s in statuses]
        if bounds is None:
            return dict.fromkeys(pairs, 0)
        upper, lower = bounds
        with self.redis.pipeline(transaction=False) as pipe:
            for flow_id, status in pairs:
                pipe.zcount(self._run_index(flow_id, status), lower, upper)
            counts = pipe.execute()
        return {pair: int(n) for pair, n in zip(pairs, counts, strict=True)}

    def _run_index(self, flow_id: UUID | str | None, status: RunStatus | None) -> str:
        """The narrowest run index for the filters."""
        if flow_id is not None and status is not None:
            return self.keys.flow_status_runs(flow_id, status.value)
        if status is not None:
            return self.keys.status_runs(status.value)
        if flow_id is not None:
            return self.keys.flow_runs(flow_id)
        return self.keys.runs()

    def _score_bounds(
        self, before: UUID | str | datetime | None, since: datetime | None
    ) -> tuple[str, str] | None:
        """``(max, min)`` started-at scores for ZREVRANGEBYSCORE/ZCOUNT; None when ``before`` names
        no run (nothing is older than an unknown run)."""
        upper = "+inf"
        if isinstance(before, datetime):
            upper = f"({epoch_score(before)}"
        elif before is not None:
            score = self.redis.zscore(self.keys.runs(), str(before))
            if score is None:
                return None
            upper = f"({score}"
        lower = str(epoch_score(since)) if since is not None else "-inf"
        return upper, lower

    def find_run_id_by_job(self, job_id: str) -> str | None:
        """The run an RQ job belongs to (trigger job or any step attempt): the one its id names
        (``run_of_job``) if that run exists, else the reverse job index's."""
        named = run_of_job(job_id)
        if named is not None and self.redis.exists(self.keys.run(named)):
            return named
        run_id = self.redis.hget(self.keys.jobs(), job_id)
        return text(run_id) if run_id else None

    def events(self, run_id: UUID | str) -> list[RunEvent]:
        """The run's event history, oldest first: its last ``max_run_events`` events."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.keys.run_steps(run_id), EVENTS_TRIMMED_FIELD)
            pipe.lrange(self.keys.events(run_id), 0, -1)
            trimmed, entries = pipe.execute()
        return decode_events(run_id, [text(raw) for raw in entries], int(trimmed or 0))

    def step_views(self, run_id: UUID | str, step_keys: Sequence[str]) -> dict[str, StoredStep]:
        """Status, output and error of some steps, in one round-trip (for When clauses)."""
        if not step_keys:
            return {}
        fields = [step_field(key, name) for key in step_keys for name in STORED_STEP_FIELDS]
        values = self.redis.hmget(self.keys.run_steps(run_id), fields)
        width = len(STORED_STEP_FIELDS)
        return {key: stored_step(values[i * width : (i + 1) * width]) for i, key in enumerate(step_keys)}


def _started_order(step: FlowStepRecord) -> tuple[datetime, str]:
    """Steps in the order they started (a step queued for its next attempt: when its last attempt
    started), then never-started ones by completion, then the rest; ties by step key."""
    started = step.started_at or (step.attempts[-1].started_at if step.attempts else None)
    return started or step.completed_at or _LATEST, step.step_key
