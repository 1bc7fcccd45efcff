"""plan_loop: ForEach iterations start in order, at most ``limit`` in flight, and finish together."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flowjobs.planner import SKIP_REASON, plan_loop
from flowjobs.statuses import RunStatus, StepStatus

S, F, R = StepStatus.Succeeded, StepStatus.Failed, StepStatus.Running
OK = frozenset({S})
CHILDREN = {"a": {}, "b": {"a": OK}}


def test_first_plan_starts_limit_iterations_with_their_entry_children() -> None:
    progress = plan_loop("L", CHILDREN, 5, 2, {})
    assert progress.ready == ("L.0.a", "L.1.a")
    assert progress.in_flight == 2 and not progress.finished


def test_a_finished_iteration_makes_room_for_the_next() -> None:
    statuses = {"L.0.a": S, "L.0.b": S, "L.1.a": R}
    progress = plan_loop("L", CHILDREN, 5, 2, statuses)
    assert progress.ready == ("L.2.a",)
    assert progress.in_flight == 2


def test_children_follow_their_siblings_and_skip_within_the_iteration() -> None:
    progress = plan_loop("L", CHILDREN, 2, None, {"L.0.a": S, "L.1.a": F})
    assert progress.ready == ("L.0.b",)
    assert dict(progress.skipped) == {"L.1.b": SKIP_REASON}


def test_outcomes_once_every_iteration_is_final() -> None:
    statuses = {"L.0.a": S, "L.0.b": S, "L.1.a": F, "L.1.b": StepStatus.Skipped}
    progress = plan_loop("L", CHILDREN, 2, 1, statuses)
    assert progress.finished
    assert progress.outcomes == (RunStatus.Succeeded, RunStatus.Failed)


def test_empty_loop_is_finished_at_once() -> None:
    progress = plan_loop("L", CHILDREN, 0, 3, {})
    assert progress.finished and progress.outcomes == () and progress.ready == ()


def test_admit_can_skip_a_child_of_one_iteration() -> None:
    progress = plan_loop("L", CHILDREN, 2, None, {}, lambda index: lambda key: "no" if index == 1 else None)
    assert progress.ready == ("L.0.a",)
    assert dict(progress.skipped) == {"L.1.a": "no", "L.1.b": SKIP_REASON}


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
    for _ in range(10 * count + 2):
        progress = plan_loop("L", CHILDREN, count, limit, statuses)
        for key in progress.ready:
            statuses[key] = R
        statuses.update({key: StepStatus.Skipped for key in progress.skipped})
        started = {int(key.split(".")[1]) for key in statuses}
        final = {i for i in started if all(statuses.get(f"L.{i}.{c}", R).is_final for c in CHILDREN)}
        assert len(started - final) <= limit
        assert started == set(range(len(started))), "iterations start in index order"
        if progress.finished:
            assert len(progress.outcomes) == count
            return
        running = sorted(key for key, status in statuses.items() if status is R)
        chosen = data.draw(st.lists(st.sampled_from(running), min_size=1, unique=True))
        for key in chosen:
            statuses[key] = data.draw(st.sampled_from([S, F]))
    raise AssertionError("the loop did not finish")
