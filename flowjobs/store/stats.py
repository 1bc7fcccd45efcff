"""Reads for per-flow health (``flowjobs/core/stats.py``): counts from the per-flow, per-status run
indexes, durations from the newest finished runs' hashes and their step hashes. Only reads, at
query time, in four round-trips per flow whatever the history: nothing is written on any path."""

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
from flowjobs.store.codec import moment, text

#: Steps whose last attempt ran to an outcome (a Skipped step never ran).
_RAN = (StepStatus.Succeeded.value, StepStatus.Failed.value)


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
        runs, sizes = self._runs(run_ids)
        kept, budget = [], sample_steps
        for run_id in run_ids:
            size = sizes.get(run_id, 0)
            if size > budget:
                break
            kept.append(run_id)
            budget -= size
        steps = self._steps(kept)
        return FlowWindow(hour_counts, runs, steps, steps_complete=len(kept) == len(run_ids))

    def _runs(self, run_ids: Sequence[str]) -> tuple[list[RunSample], dict[str, int]]:
        """The start and close of each run still held, and how many step records each has."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hmget(self.keys.run(run_id), "started_at", "completed_at")
                pipe.hlen(self.keys.run_steps(run_id))
            replies = pipe.execute()
        runs, sizes = [], {}
        for run_id, (started, completed), size in zip(run_ids, replies[::2], replies[1::2], strict=True):
            if started and completed:  # gone since the index was read (retention): not a sample
                runs.append(RunSample(moment(text(started)), moment(text(completed))))
                sizes[run_id] = int(size)
        return runs, sizes

    def _steps(self, run_ids: Sequence[str]) -> list[StepSample]:
        """The last attempt's claim-to-outcome time of every Succeeded or Failed step of the runs."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hgetall(self.keys.run_steps(run_id))
            listed = pipe.execute()
        ran = [
            (run_id, text(key))
            for run_id, steps in zip(run_ids, listed, strict=True)
            for key, status in steps.items()
            if text(status) in _RAN
        ]
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id, key in ran:
                pipe.hmget(self.keys.step(run_id, key), "started_at", "completed_at")
            times = pipe.execute()
        samples = []
        for (_, key), (started, completed) in zip(ran, times, strict=True):
            if started and completed:
                seconds = (moment(text(completed)) - moment(text(started))).total_seconds()
                samples.append(StepSample(key, max(0.0, seconds)))
        return samples
