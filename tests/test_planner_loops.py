"""advance_loop: ForEach iterations start in order, at most ``limit`` in flight, planned one
iteration at a time from the loop's counters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flowjobs.core.planner import SKIP_REASON, LoopProgress, advance_loop, open_iterations
from flowjobs.core.statuses import RunStatus, StepStatus

S, F, R = StepStatus.Succeeded, StepStatus.Failed, StepStatus.Running
OK = frozenset({S})
CHILDREN = {"a": {}, "b": {"a": OK}}


def test_first_plan_starts_limit_iterations_with_their_entry_children() -> None:
    plan = advance_loop("L", CHILDREN, 2, LoopProgress(5), {})
    assert plan.ready == ("L.0.a", "L.1.a")
    assert plan.progress == LoopProgress(5, started=2, done=0)
    assert plan.in_flight == 2 and not plan.finished


def test_a_finished_iteration_makes_room_for_the_next() -> None:
    plan = advance_loop("L", CHILDREN, 2, LoopProgress(5, 2, 0), {0: {"a": S, "b": S}})
    assert plan.ready == ("L.2.a",)
    assert plan.finals == {0: RunStatus.Succeeded}
    assert plan.progress == LoopProgress(5, started=3, done=1)


def test_children_follow_their_siblings_and_skip_within_the_iteration() -> None:
    plan = advance_loop("L", CHILDREN, None, LoopProgress(2, 2, 0), {0: {"a": S}, 1: {"a": F}})
    assert plan.ready == ("L.0.b",)
    assert dict(plan.skipped) == {"L.1.b": SKIP_REASON}
    assert plan.finals == {1: RunStatus.Failed}


def test_the_loop_finishes_when_its_last_iteration_does() -> None:
    plan = advance_loop("L", CHILDREN, 1, LoopProgress(2, 2, 1), {1: {"a": F, "b": StepStatus.Skipped}})
    assert plan.finished and plan.finals == {1: RunStatus.Failed}


def test_empty_loop_is_finished_at_once() -> None:
    plan = advance_loop("L", CHILDREN, 3, LoopProgress(0), {})
    assert plan.finished and plan.ready == () and plan.finals == {}


def test_admit_can_skip_a_child_of_one_iteration() -> None:
    plan = advance_loop(
        "L", CHILDREN, None, LoopProgress(2), {}, lambda index: lambda key: "no" if index == 1 else None
    )
    assert plan.ready == ("L.0.a",)
    assert dict(plan.skipped) == {"L.1.a": "no", "L.1.b": SKIP_REASON}
    assert plan.finals == {1: RunStatus.Skipped}


def test_open_iterations_reads_a_whole_run() -> None:
    statuses = {"L.0.a": S, "L.0.b": S, "L.2.a": R, "other": S, "L.x.a": S}
    started, iterations = open_iterations("L", CHILDREN, statuses)
    assert started == 3
    assert iterations == {0: {"a": S, "b": S}, 1: {}, 2: {"a": R}}


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=12),
    limit=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_in_flight_never_exceeds_the_limit_and_every_iteration_ends(
    count: int, limit: int, data: st.DataObject
) -> None:
    statuses: dict[str, StepStatus] = {}
    outcomes: dict[int, RunStatus] = {}
    progress = LoopProgress(count)
    plan = advance_loop("L", CHILDREN, limit, progress, {})
    for _ in range(10 * count + 2):
        for key in plan.ready:
            statuses[key] = R
        statuses.update(dict.fromkeys(plan.skipped, StepStatus.Skipped))
        assert not set(plan.finals) & set(outcomes), "an iteration is final once"
        outcomes.update(plan.finals)
        progress = plan.progress
        started = {int(key.split(".")[1]) for key in statuses}
        assert started == set(range(progress.started)), "iterations start in index order"
        assert progress.done == len(outcomes)
        assert progress.started - progress.done <= limit
        if plan.finished:
            assert sorted(outcomes) == list(range(count))
            return
        running = sorted(key for key, status in statuses.items() if status is R)
        key = data.draw(st.sampled_from(running))
        statuses[key] = data.draw(st.sampled_from([S, F]))
        index = int(key.split(".")[1])
        own = {
            child: statuses[f"L.{index}.{child}"] for child in CHILDREN if f"L.{index}.{child}" in statuses
        }
        plan = advance_loop("L", CHILDREN, limit, progress, {index: own})
    raise AssertionError("the loop did not finish")
