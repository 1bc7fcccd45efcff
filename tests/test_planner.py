"""Pure tests of flowjobs.core.planner: readiness, skip propagation and the terminal classifier
(the rules of the README's "How it works")."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowjobs.core.planner import SKIP_REASON, classify, plan
from flowjobs.core.statuses import RunStatus, StepStatus

S = StepStatus.Succeeded
F = StepStatus.Failed
K = StepStatus.Skipped
P = StepStatus.Pending
R = StepStatus.Running

OK = frozenset({S})
ON_FAIL = frozenset({F})

Graph = dict[str, dict[str, frozenset[StepStatus]]]


def chain(*keys: str) -> Graph:
    """a <- b <- c ...: each step runs after the previous one succeeded."""
    graph: Graph = {}
    for i, key in enumerate(keys):
        graph[key] = {keys[i - 1]: OK} if i else {}
    return graph


DIAMOND: Graph = {"a": {}, "b": {"a": OK}, "c": {"a": OK}, "d": {"b": OK, "c": OK}}


# ---------------------------------------------------------------- linear chains


def test_linear_chain_runs_one_step_at_a_time() -> None:
    graph = chain("a", "b", "c")
    assert plan(graph, {}).ready == ("a",)
    assert plan(graph, {"a": R}).ready == ()
    assert plan(graph, {"a": S}).ready == ("b",)
    assert plan(graph, {"a": S, "b": S}).ready == ("c",)
    done = plan(graph, {"a": S, "b": S, "c": S})
    assert done.ready == ()
    assert dict(done.skipped) == {}
    assert done.finished
    assert done.outcome is RunStatus.Succeeded


def test_unfinished_plan_has_no_outcome() -> None:
    result = plan(chain("a", "b"), {"a": S})
    assert not result.finished
    assert result.outcome is None


def test_entry_steps_are_all_ready_at_start() -> None:
    graph: Graph = {"x": {}, "y": {}, "z": {"x": OK, "y": OK}}
    assert sorted(plan(graph, {}).ready) == ["x", "y"]


# ---------------------------------------------------------------- fan-out / fan-in


def test_diamond_fans_out_after_the_root() -> None:
    assert sorted(plan(DIAMOND, {"a": S}).ready) == ["b", "c"]


@pytest.mark.parametrize(
    ("statuses", "ready"),
    [
        ({"a": S, "b": S}, ("c",)),  # c has no record yet: d waits, c is ready
        ({"a": S, "b": S, "c": P}, ()),
        ({"a": S, "b": S, "c": R}, ()),
        ({"a": S, "b": R, "c": S}, ()),
        ({"a": S, "b": S, "c": S}, ("d",)),
    ],
)
def test_fan_in_is_an_and_join(statuses: dict[str, StepStatus], ready: tuple[str, ...]) -> None:
    result = plan(DIAMOND, statuses)
    assert result.ready == ready
    assert not result.finished


def test_fan_in_with_one_unaccepted_branch_skips_the_join() -> None:
    result = plan(DIAMOND, {"a": S, "b": S, "c": F})
    assert result.ready == ()
    assert dict(result.skipped) == {"d": SKIP_REASON}
    assert result.finished
    assert result.outcome is RunStatus.Failed


def test_fan_in_waits_for_every_dependency_to_be_final_before_skipping() -> None:
    # c failed, but b is still running: the join is decided only once all inputs are final.
    result = plan(DIAMOND, {"a": S, "b": R, "c": F})
    assert result.ready == ()
    assert "d" not in result.skipped
    assert not result.finished


# ---------------------------------------------------------------- failure and skip propagation


def test_failure_skips_dependents_transitively_in_one_call() -> None:
    graph = chain("a", "b", "c", "d")
    result = plan(graph, {"a": S, "b": F})
    assert result.ready == ()
    assert dict(result.skipped) == {"c": SKIP_REASON, "d": SKIP_REASON}
    assert result.finished
    assert result.outcome is RunStatus.Failed


def test_skip_reason_text_is_the_reference_one() -> None:
    assert SKIP_REASON == "Prerequisite status did not satisfy runAfter conditions."


def test_failure_does_not_abort_an_independent_branch() -> None:
    graph: Graph = {
        "a": {},
        "a2": {"a": OK},
        "a3": {"a2": OK},
        "b": {},
        "b2": {"b": OK},
        "b3": {"b2": OK},
    }
    result = plan(graph, {"a": F, "b": S})
    assert dict(result.skipped) == {"a2": SKIP_REASON, "a3": SKIP_REASON}
    assert result.ready == ("b2",)
    assert not result.finished
    later = plan(graph, {"a": F, "a2": K, "a3": K, "b": S, "b2": S})
    assert later.ready == ("b3",)
    assert dict(later.skipped) == {}


def test_skipped_dependency_is_accepted_when_listed() -> None:
    graph: Graph = {"a": {}, "b": {"a": OK}, "c": {"b": frozenset({S, K})}}
    result = plan(graph, {"a": F})
    # b is skipped because a failed; c accepts a skipped b and becomes ready in the same call.
    assert dict(result.skipped) == {"b": SKIP_REASON}
    assert result.ready == ("c",)
    assert not result.finished


def test_already_recorded_steps_are_never_reskipped() -> None:
    graph = chain("a", "b")
    result = plan(graph, {"a": F, "b": K})
    assert dict(result.skipped) == {}
    assert result.finished


# ---------------------------------------------------------------- error-handler branch


HANDLER: Graph = {"x": {}, "handle": {"x": ON_FAIL}, "next": {"x": OK}}


def test_error_handler_is_ready_when_its_dependency_failed() -> None:
    result = plan(HANDLER, {"x": F})
    assert result.ready == ("handle",)
    assert dict(result.skipped) == {"next": SKIP_REASON}
    assert not result.finished


def test_error_handler_is_skipped_when_its_dependency_succeeded() -> None:
    result = plan(HANDLER, {"x": S})
    assert result.ready == ("next",)
    assert dict(result.skipped) == {"handle": SKIP_REASON}


def test_handled_failure_ends_succeeded() -> None:
    result = plan(HANDLER, {"x": F, "handle": S, "next": K})
    assert result.finished
    assert result.outcome is RunStatus.Succeeded


# ---------------------------------------------------------------- pending / running records


@pytest.mark.parametrize("status", [P, R])
def test_step_with_an_active_record_is_never_ready(status: StepStatus) -> None:
    graph: Graph = {"a": {}, "b": {"a": OK}}
    first = plan(graph, {"a": status})
    assert "a" not in first.ready
    assert first.ready == ()
    assert not first.finished
    second = plan(graph, {"a": S, "b": status})
    assert second.ready == ()
    assert dict(second.skipped) == {}
    assert not second.finished
    assert second.outcome is None


@pytest.mark.parametrize("status", [P, R])
def test_active_record_of_a_step_whose_dependency_failed_is_left_alone(status: StepStatus) -> None:
    # e.g. a step re-enqueued by retry_step: the planner must not skip over a live record.
    graph = chain("a", "b")
    result = plan(graph, {"a": F, "b": status})
    assert dict(result.skipped) == {}
    assert result.ready == ()
    assert not result.finished


# ---------------------------------------------------------------- terminal classifier

ORDER: Graph = {"fetch": {}, "ship": {"fetch": OK}, "compensate": {"ship": ON_FAIL}}

CLASSIFY_CASES: list[tuple[str, Graph, dict[str, StepStatus], RunStatus]] = [
    ("all succeeded", chain("a", "b"), {"a": S, "b": S}, RunStatus.Succeeded),
    ("first failed, rest skipped", chain("a", "b"), {"a": F, "b": K}, RunStatus.Failed),
    ("nothing ran at all", chain("a", "b"), {"a": K, "b": K}, RunStatus.Skipped),
    ("all failed, no success", {"a": {}, "b": {}}, {"a": F, "b": F}, RunStatus.Failed),
    (
        "failure handled by a succeeded handler",
        ORDER,
        {"fetch": S, "ship": F, "compensate": S},
        RunStatus.Succeeded,
    ),
    ("failure whose handler also failed", ORDER, {"fetch": S, "ship": F, "compensate": F}, RunStatus.Failed),
    # An error-handler edge does not continue the success path: ship is a leaf too, so this succeeds.
    (
        "happy path, only the error handler skipped",
        ORDER,
        {"fetch": S, "ship": S, "compensate": K},
        RunStatus.Succeeded,
    ),
    (
        "the success path itself skipped at its end",
        {"a": {}, "b": {"a": OK}, "h": {"a": ON_FAIL}},
        {"a": S, "b": K, "h": K},
        RunStatus.Skipped,
    ),
    ("unhandled failure next to a succeeded branch", {"a": {}, "b": {}}, {"a": S, "b": F}, RunStatus.Failed),
    (
        "handler accepts both outcomes and succeeded",
        {"x": {}, "h": {"x": frozenset({S, F})}},
        {"x": F, "h": S},
        RunStatus.Succeeded,
    ),
    (
        "one failure handled, another not",
        {"x": {}, "y": {}, "h": {"x": ON_FAIL}},
        {"x": F, "y": F, "h": S},
        RunStatus.Failed,
    ),
    (
        "all leaves skipped by a when clause",
        {"a": {}, "b": {"a": OK}, "c": {"a": OK}},
        {"a": S, "b": K, "c": K},
        RunStatus.Skipped,
    ),
    (
        "one leaf succeeded, another skipped",
        {"a": {}, "b": {"a": OK}, "c": {"a": OK}},
        {"a": S, "b": S, "c": K},
        RunStatus.Succeeded,
    ),
    ("handler skipped, main path succeeded", HANDLER, {"x": S, "handle": K, "next": S}, RunStatus.Succeeded),
    ("handled failure, skipped follow-up", HANDLER, {"x": F, "handle": S, "next": K}, RunStatus.Succeeded),
    (
        "handler that does not list the failed step does not handle it",
        {"x": {}, "y": {"x": ON_FAIL}, "z": {}},
        {"x": S, "y": K, "z": F},
        RunStatus.Failed,
    ),
]


@pytest.mark.parametrize(
    ("graph", "statuses", "expected"),
    [case[1:] for case in CLASSIFY_CASES],
    ids=[case[0] for case in CLASSIFY_CASES],
)
def test_classify_table(graph: Graph, statuses: dict[str, StepStatus], expected: RunStatus) -> None:
    assert classify(graph, statuses) is expected
    assert reference_outcome(graph, statuses) is expected
    finished = plan(graph, statuses)
    assert finished.finished
    assert finished.ready == ()
    assert finished.outcome is expected


# ---------------------------------------------------------------- property test over random DAGs


def reference_outcome(
    graph: Mapping[str, Mapping[str, frozenset[StepStatus]]], final: Mapping[str, StepStatus]
) -> RunStatus:
    """The README's outcome rule, written out independently of flowjobs.core.planner."""
    succeeded = {k for k in graph if final[k] == StepStatus.Succeeded}
    failed = {k for k in graph if final[k] == StepStatus.Failed}
    if not succeeded:
        return RunStatus.Failed if failed else RunStatus.Skipped
    handled = {dep for step in succeeded for dep in graph[step]}
    if failed - handled:
        return RunStatus.Failed
    # Leaves: steps that no step runs after on success (error-handler edges do not count).
    dependents: dict[str, int] = dict.fromkeys(graph, 0)
    for deps in graph.values():
        for dep, accepted in deps.items():
            if StepStatus.Succeeded in accepted:
                dependents[dep] += 1
    leaves = [k for k, n in dependents.items() if n == 0]
    if all(final[k] == StepStatus.Skipped for k in leaves):
        return RunStatus.Skipped
    return RunStatus.Succeeded


ACCEPTABLE = [S, F, K]


@st.composite
def dags(draw: st.DrawFn) -> Graph:
    """1..12 steps; edges only from a lower to a higher index (acyclic); a non-empty accepted set per edge."""
    n = draw(st.integers(min_value=1, max_value=12))
    keys = [f"s{i}" for i in range(n)]
    graph: Graph = {}
    for j, key in enumerate(keys):
        deps: dict[str, frozenset[StepStatus]] = {}
        for i in range(j):
            if draw(st.booleans()):
                accepted = draw(st.sets(st.sampled_from(ACCEPTABLE), min_size=1))
                deps[keys[i]] = frozenset(accepted)
        graph[key] = deps
    return graph


@settings(max_examples=300, deadline=None)
@given(graph=dags(), data=st.data())
def test_simulated_runs_respect_the_planner_contract(graph: Graph, data: st.DataObject) -> None:
    statuses: dict[str, StepStatus] = {}
    ever_ready: set[str] = set()
    ever_skipped: set[str] = set()
    running: list[str] = []
    for _ in range(10 * len(graph) + 10):  # every round finalises at least one step
        result = plan(graph, statuses)
        # Skips are applied in the same continuation, so readiness is judged with them applied.
        after = {**statuses, **dict.fromkeys(result.skipped, StepStatus.Skipped)}
        # (a) a ready step has no record, and all its dependencies are final and accepted.
        for key in result.ready:
            assert key not in after
            for dep, accepted in graph[key].items():
                assert dep in after and after[dep].is_final, (key, dep)
                assert after[dep] in accepted, (key, dep)
        # (b) never ready twice; never both ready and skipped.
        assert len(set(result.ready)) == len(result.ready)
        assert not ever_ready & set(result.ready)
        assert not set(result.ready) & set(result.skipped)
        # Skips: only steps without a record, with exactly the reference reason.
        for key, reason in result.skipped.items():
            assert key not in statuses
            assert key not in ever_skipped
            assert reason == SKIP_REASON
        ever_ready |= set(result.ready)
        ever_skipped |= set(result.skipped)
        # (e) a skipped step has a dependency whose final status it does not accept.
        for key in result.skipped:
            assert any(
                dep in after and after[dep].is_final and after[dep] not in accepted
                for dep, accepted in graph[key].items()
            ), key
        if result.finished:
            assert result.ready == ()
            assert not running
            assert result.outcome is not None
            statuses = after
            break
        assert result.outcome is None
        statuses = after
        # Dispatch: ready steps get a Running record (they must not come back as ready).
        for key in result.ready:
            statuses[key] = StepStatus.Running
            running.append(key)
        assert running, "not finished, yet nothing ready or running: the run is stuck"
        # Execute a non-empty subset of the running steps, each with a random outcome.
        done = data.draw(st.lists(st.sampled_from(running), min_size=1, unique=True), label="completed")
        for key in done:
            statuses[key] = data.draw(st.sampled_from([S, F]), label=f"outcome of {key}")
            running.remove(key)
    else:
        pytest.fail("the simulated run did not finish")
    # (c) every step is final, each reached by exactly one path (dispatched xor skipped).
    assert set(statuses) == set(graph)
    assert all(status.is_final for status in statuses.values())
    assert ever_ready | ever_skipped == set(graph)
    assert not ever_ready & ever_skipped
    assert {k for k, s in statuses.items() if s is StepStatus.Skipped} == ever_skipped
    # (d) the outcome follows the README's rule.
    expected = reference_outcome(graph, statuses)
    assert result.outcome is expected
    assert classify(graph, statuses) is expected
    again = plan(graph, statuses)
    assert again.finished
    assert again.outcome is expected
    assert again.ready == ()
    assert dict(again.skipped) == {}
