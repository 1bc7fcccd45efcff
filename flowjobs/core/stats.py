"""Per-flow health over the last 24 hours (the flows UI's flow page, ``flowjobs stats``): runs per
hour by status, success rate, run duration percentiles and the slowest steps, computed from what
the store reads (no I/O here).

Runs are placed by their start (the run indexes' score) and counted by their status now. Counts
and the success rate are exact. Durations come from the newest ``SAMPLE_RUNS`` finished runs of
the window, and step durations from the steps of those runs, at most ``SAMPLE_STEPS`` step records:
bounded work whatever the history, and exact whenever the window holds no more than that. Each
figure says how many runs or steps it was computed from.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from flowjobs.core.manifest import manifest_key
from flowjobs.core.statuses import RunStatus

#: The window: the last 24 hours, in hourly buckets (the last one ends now).
WINDOW_HOURS = 24
HOUR = timedelta(hours=1)
#: At most this many finished runs of a flow (the newest of the window) give the run durations and
#: the steps read for the slowest steps.
SAMPLE_RUNS = 200
#: At most this many step records of a flow are read for the slowest steps.
SAMPLE_STEPS = 5000
#: How many steps the slowest-steps table lists.
SLOWEST_STEPS = 5
#: Statuses of a closed run: the success rate's denominator.
FINISHED: tuple[RunStatus, ...] = tuple(status for status in RunStatus if status.is_terminal)


def hour_edges(now: datetime) -> list[datetime]:
    """The ``WINDOW_HOURS + 1`` edges of the hourly buckets, oldest first, the last one ``now``:
    bucket ``i`` holds the runs started in ``[edges[i], edges[i + 1])``."""
    start = now - HOUR * WINDOW_HOURS
    return [start + HOUR * i for i in range(WINDOW_HOURS + 1)]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in (0, 1]): the smallest value that at least that
    fraction of ``values`` is less than or equal to; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def success_rate(totals: Mapping[RunStatus, int]) -> float | None:
    """Succeeded runs over finished runs (every final status); None when none finished."""
    finished = sum(totals.get(status, 0) for status in FINISHED)
    return totals.get(RunStatus.Succeeded, 0) / finished if finished else None


@dataclass(frozen=True)
class RunSample:
    """One finished run of the window, as the store reads it."""

    started_at: datetime
    completed_at: datetime


@dataclass(frozen=True)
class StepSample:
    """The last attempt of one finished step (Succeeded or Failed) of a sampled run."""

    step_key: str
    """Runtime key (a ForEach child's holds its iteration)."""
    seconds: float
    """From the attempt's claim to its outcome."""


class _Stats(BaseModel):
    """snake_case in Python, camelCase in JSON (``model_dump(by_alias=True)``), as the records."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class HourCounts(_Stats):
    """Runs started in one hour of the window, by their status now."""

    start: datetime
    """Start of the hour (inclusive); it ends an hour later."""
    counts: dict[RunStatus, int]
    """Every run status, with 0 for none."""

    @property
    def total(self) -> int:
        """Every run of the hour."""
        return sum(self.counts.values())


class Durations(_Stats):
    """Percentiles of a set of durations (seconds; None when the set is empty)."""

    count: int
    """How many durations they were computed from."""
    p50_seconds: float | None
    p95_seconds: float | None
    mean_seconds: float | None
    max_seconds: float | None


class StepDurations(Durations):
    """One step of the flow (a ForEach child: every iteration, as ``<loop>.<child>``)."""

    step: str


class FlowStats(_Stats):
    """One flow's health over the window."""

    flow_id: UUID
    flow_name: str
    window_start: datetime
    window_end: datetime
    hours: list[HourCounts]
    """``WINDOW_HOURS`` buckets, oldest first."""
    totals: dict[RunStatus, int]
    """Runs started in the window, by status (exact)."""
    runs: int
    """Runs started in the window (exact)."""
    finished: int
    """Of those, runs closed (exact)."""
    success_rate: float | None
    """Succeeded over finished, 0 to 1 (exact); None when none finished."""
    run_durations: Durations
    """Trigger to close, of the newest ``sample_runs`` finished runs at most."""
    sampled: bool
    """True when the window finished more runs than the durations were computed from."""
    sample_runs: int
    """The bound on the runs read (``SAMPLE_RUNS``)."""
    steps_read: int
    """Finished steps of those runs the slowest steps were computed from."""
    steps_sampled: bool
    """True when some steps of the sampled runs were not read (``sample_steps``)."""
    sample_steps: int
    """The bound on the step records read (``SAMPLE_STEPS``)."""
    slowest_steps: list[StepDurations]
    """At most ``SLOWEST_STEPS``, slowest p95 first (then mean, then name)."""


class StatsReport(_Stats):
    """What ``flowjobs stats --json`` prints: every flow asked for, over one window."""

    window_hours: int
    generated_at: datetime
    flows: list[FlowStats]


def durations(values: Sequence[float]) -> Durations:
    """Count, p50, p95, mean and max of ``values``."""
    return Durations(
        count=len(values),
        p50_seconds=percentile(values, 0.5),
        p95_seconds=percentile(values, 0.95),
        mean_seconds=sum(values) / len(values) if values else None,
        max_seconds=max(values, default=None),
    )


def slowest_steps(samples: Sequence[StepSample], limit: int = SLOWEST_STEPS) -> list[StepDurations]:
    """The ``limit`` steps (by manifest key) with the highest p95, then mean, then name."""
    by_step: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        by_step[manifest_key(sample.step_key)].append(sample.seconds)
    rows = [StepDurations(step=step, **dict(durations(values))) for step, values in by_step.items()]
    rows.sort(key=lambda row: (-(row.p95_seconds or 0.0), -(row.mean_seconds or 0.0), row.step))
    return rows[:limit]


def flow_stats(
    flow_id: UUID,
    flow_name: str,
    edges: Sequence[datetime],
    hour_counts: Sequence[Mapping[RunStatus, int]],
    runs: Sequence[RunSample],
    steps: Sequence[StepSample],
    *,
    steps_complete: bool,
    sample_runs: int = SAMPLE_RUNS,
    sample_steps: int = SAMPLE_STEPS,
) -> FlowStats:
    """A flow's figures from the store's reads: ``hour_counts[i]`` counts the runs started in
    ``[edges[i], edges[i + 1])`` by status, ``runs`` are the sampled finished runs, ``steps`` the
    finished steps read of them (``steps_complete``: every one of them)."""
    hours = [
        HourCounts(start=start, counts={status: counts.get(status, 0) for status in RunStatus})
        for start, counts in zip(edges[:-1], hour_counts, strict=True)
    ]
    totals = {status: sum(hour.counts[status] for hour in hours) for status in RunStatus}
    finished = sum(totals[status] for status in FINISHED)
    run_seconds = [max(0.0, (run.completed_at - run.started_at).total_seconds()) for run in runs]
    return FlowStats(
        flow_id=flow_id,
        flow_name=flow_name,
        window_start=edges[0],
        window_end=edges[-1],
        hours=hours,
        totals=totals,
        runs=sum(totals.values()),
        finished=finished,
        success_rate=success_rate(totals),
        run_durations=durations(run_seconds),
        sampled=finished > len(runs),
        sample_runs=sample_runs,
        steps_read=len(steps),
        steps_sampled=not steps_complete,
        sample_steps=sample_steps,
        slowest_steps=slowest_steps(steps),
    )
