"""Reads for per-flow health (``flowjobs/core/stats.py``): counts from the per-flow, per-status run
indexes, durations from the newest finished runs' hashes and their step records. Only reads, at
query time, in a few round-trips per flow whatever the history (the step records in batches of
``_STEP_BATCH`` runs): nothing is written on any path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from uuid import UUID

from flowjobs.core.clock import epoch_score
from flowjobs.core.stats import FINISHED, RunSample, StepSample
from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.store.base import StorePart
from flowjobs.store.codec import from_hash, legacy_steps, moment, split_steps, text

#: Steps whose last attempt ran to an outcome (a Skipped step never ran).
_RAN = (StepStatus.Succeeded.value, StepStatus.Failed.value)
#: Runs whose step records one round-trip reads (the step bound is checked between batches' runs).
_STEP_BATCH = 10


@dataclass(frozen=True)
class FlowWindow:
    """What the store holds about one flow's runs started in a window."""

    hour_counts: list[dict[RunStatus, int]]
    """Per bucket between consecutive edges: runs by status now."""
    runs: list[RunSample]
    """The newest finished runs, at most the sample bound."""
    steps: list[StepSample]
    """The finished steps of those runs, newest runs first, at most the step bound."""
    steps_complete: bool
    """False when some of those runs' steps were left unread (the step bound)."""


class StatsReads(StorePart):
    """Reading one flow's runs of a window for its health figures."""

    def flow_window(
        self, flow_id: UUID | str, edges: Sequence[datetime], *, sample_runs: int, sample_steps: int
    ) -> FlowWindow:
        """Counts per bucket (``edges``: bucket bounds, oldest first) and status, exact (ZCOUNT on
        the per-flow, per-status indexes, scored by start); the newest ``sample_runs`` finished runs
        of the whole window with their completion; and the last attempt's duration of the finished
        steps of those runs, newest run first, stopping before the run that would pass
        ``sample_steps`` step records."""
        scores = [epoch_score(edge) for edge in edges]
        statuses = list(RunStatus)
        with self.redis.pipeline(transaction=False) as pipe:
            for low, high in pairwise(scores):
                for status in statuses:
                    pipe.zcount(self.keys.flow_status_runs(flow_id, status.value), low, f"({high}")
            for status in FINISHED:
                index = self.keys.flow_status_runs(flow_id, status.value)
                pipe.zrevrangebyscore(
                    index, f"({scores[-1]}", scores[0], start=0, num=sample_runs, withscores=True
                )
            replies = pipe.execute()
        counted, newest = replies[: -len(FINISHED)], replies[-len(FINISHED) :]
        hour_counts = [
            dict(zip(statuses, (int(n) for n in counted[i : i + len(statuses)]), strict=True))
            for i in range(0, len(counted), len(statuses))
        ]
        members = sorted((row for rows in newest for row in rows), key=lambda row: row[1], reverse=True)
        run_ids = [text(member) for member, _ in members[:sample_runs]]
        runs = self._runs(run_ids)
        steps, complete = self._steps(run_ids, sample_steps)
        return FlowWindow(hour_counts, runs, steps, steps_complete=complete)

    def _runs(self, run_ids: Sequence[str]) -> list[RunSample]:
        """The start and close of each run still held."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hmget(self.keys.run(run_id), "started_at", "completed_at")
            replies = pipe.execute()
        # A run gone since the index was read (retention) is not a sample.
        return [RunSample(moment(text(s)), moment(text(c))) for s, c in replies if s and c]

    def _steps(self, run_ids: Sequence[str], budget: int) -> tuple[list[StepSample], bool]:
        """The last attempt's claim-to-outcome time of every Succeeded or Failed step of the runs,
        in order, stopping before the run that would pass ``budget`` step records (then False)."""
        ran: list[tuple[str, str, dict[str, str]]] = []
        complete = True
        for start in range(0, len(run_ids), _STEP_BATCH):
            batch = run_ids[start : start + _STEP_BATCH]
            with self.redis.pipeline(transaction=False) as pipe:
                for run_id in batch:
                    pipe.hgetall(self.keys.run_steps(run_id))
                listed = pipe.execute()
            for run_id, found in zip(batch, listed, strict=True):
                steps = split_steps(run_id, from_hash(found))
                if len(steps) > budget:
                    complete = False
                    break
                budget -= len(steps)
                ran += [(run_id, key, fields) for key, fields in steps.items() if fields["status"] in _RAN]
            if not complete:
                break
        # Runs stored with one hash per step (``legacy_steps``) hold the times there.
        legacy = [(run_id, key, fields) for run_id, key, fields in ran if key in legacy_steps({key: fields})]
        if legacy:
            with self.redis.pipeline(transaction=False) as pipe:
                for run_id, key, _ in legacy:
                    pipe.hgetall(self.keys.legacy_step(run_id, key))
                for (_, _, fields), found in zip(legacy, pipe.execute(), strict=True):
                    fields.update({**from_hash(found), "status": fields["status"]})
        samples = []
        for _, key, fields in ran:
            started, completed = fields.get("started_at"), fields.get("completed_at")
            if started and completed:
                seconds = (moment(completed) - moment(started)).total_seconds()
                samples.append(StepSample(key, max(0.0, seconds)))
        return samples, complete
