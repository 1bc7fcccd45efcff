"""Per-flow health's computation (flowjobs/core/stats.py): buckets, percentiles, success rate and
the slowest steps, without Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from flowjobs.core.stats import (
    SLOWEST_STEPS,
    WINDOW_HOURS,
    RunSample,
    StepSample,
    flow_stats,
    hour_edges,
    percentile,
    slowest_steps,
    success_rate,
)
from flowjobs.core.statuses import RunStatus

NOW = datetime(2026, 12, 6, 5, 30, 15, tzinfo=UTC)


def test_the_window_is_24_hourly_buckets_ending_now() -> None:
    edges = hour_edges(NOW)
    assert len(edges) == WINDOW_HOURS + 1 == 25
    assert edges[0] == NOW - timedelta(hours=24) and edges[-1] == NOW
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(edges))


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([7.0], 0.5, 7.0),
        ([7.0], 0.95, 7.0),
        ([4.0, 1.0, 3.0, 2.0], 0.5, 2.0),  # nearest rank: ceil(0.5 * 4) = 2nd smallest
        ([4.0, 1.0, 3.0, 2.0], 0.95, 4.0),
        ([float(i) for i in range(1, 101)], 0.5, 50.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([float(i) for i in range(1, 21)], 0.95, 19.0),  # ceil(19.0) = 19: no float drift upwards
    ],
)
def test_percentiles_are_nearest_rank(values: list[float], fraction: float, expected: float | None) -> None:
    assert percentile(values, fraction) == expected


def test_success_rate_is_succeeded_over_finished_runs() -> None:
    assert success_rate({}) is None
    assert success_rate({RunStatus.Running: 3, RunStatus.Pending: 1}) is None, "nothing finished"
    totals = {
        RunStatus.Succeeded: 6,
        RunStatus.Failed: 1,
        RunStatus.TimedOut: 1,
        RunStatus.Cancelled: 1,
        RunStatus.Skipped: 1,
        RunStatus.Running: 5,
    }
    assert success_rate(totals) == 0.6


def test_slowest_steps_group_foreach_iterations_and_rank_by_p95() -> None:
    samples = [
        StepSample("fetch", 1.0),
        StepSample("fetch", 3.0),
        StepSample("images.0.resize", 2.0),
        StepSample("images.1.resize", 10.0),
        StepSample("images.2.resize", 4.0),
        StepSample("notify", 0.5),
    ]
    rows = slowest_steps(samples)
    assert [row.step for row in rows] == ["images.resize", "fetch", "notify"]
    resize = rows[0]
    assert (resize.count, resize.p50_seconds, resize.p95_seconds) == (3, 4.0, 10.0)
    assert (resize.mean_seconds, resize.max_seconds) == (16.0 / 3, 10.0)
    many = [StepSample(f"s{i}", float(i)) for i in range(SLOWEST_STEPS + 3)]
    assert [row.step for row in slowest_steps(many)] == [f"s{i}" for i in range(SLOWEST_STEPS + 2, 2, -1)]


def test_flow_stats_from_the_store_reads() -> None:
    edges = hour_edges(NOW)
    hours: list[dict[RunStatus, int]] = [{} for _ in range(WINDOW_HOURS)]
    hours[0] = {RunStatus.Succeeded: 2}
    hours[-1] = {RunStatus.Succeeded: 1, RunStatus.Failed: 2, RunStatus.Running: 1}
    start = NOW - timedelta(minutes=5)
    runs = [RunSample(start, start + timedelta(seconds=s)) for s in (5, 1, 3)]
    flow_id = uuid.uuid4()
    stats = flow_stats(flow_id, "f", edges, hours, runs, [StepSample("a", 0.2)], steps_complete=False)
    assert stats.flow_id == flow_id and (stats.window_start, stats.window_end) == (edges[0], NOW)
    assert [h.total for h in stats.hours] == [2] + [0] * 22 + [4]
    assert stats.hours[-1].counts[RunStatus.Pending] == 0, "every status is listed"
    assert stats.totals[RunStatus.Succeeded] == 3 and stats.totals[RunStatus.Failed] == 2
    assert (stats.runs, stats.finished, stats.success_rate) == (6, 5, 0.6)
    assert (stats.run_durations.count, stats.run_durations.p50_seconds) == (3, 3.0)
    assert stats.run_durations.p95_seconds == 5.0
    assert stats.sampled, "five runs finished, three were read"
    assert stats.steps_sampled and stats.steps_read == 1

    data = stats.model_dump(mode="json", by_alias=True)
    assert data["successRate"] == 0.6 and data["runDurations"]["p95Seconds"] == 5.0
    assert data["hours"][-1]["counts"]["Failed"] == 2
    assert data["slowestSteps"] == [
        {"count": 1, "p50Seconds": 0.2, "p95Seconds": 0.2, "meanSeconds": 0.2, "maxSeconds": 0.2, "step": "a"}
    ]


def test_no_runs_gives_no_figures() -> None:
    stats = flow_stats(
        uuid.uuid4(), "f", hour_edges(NOW), [{}] * WINDOW_HOURS, [], [], steps_complete=True
    )
    assert (stats.runs, stats.finished, stats.success_rate, stats.sampled) == (0, 0, None, False)
    assert stats.run_durations.p50_seconds is None and stats.slowest_steps == []
