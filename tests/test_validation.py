"""Pure tests of registration-time validation: every problem kind, all reported at once."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

from flowjobs.core.errors import FlowValidationError
from flowjobs.core.manifest import FlowDefinition
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.validation import find_cycle, flow_problems


def flow(
    steps: dict[str, Any], triggers: dict[str, Any] | None = None, *, name: str | None = None
) -> FlowDefinition:
    data: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": name or f"flow-{uuid.uuid4().hex[:6]}",
        "steps": steps,
    }
    if triggers is not None:
        data["triggers"] = triggers
    return FlowDefinition.model_validate(data)


def rejected(definition: FlowDefinition, registry: FlowRegistry | None = None) -> list[str]:
    """The problems of a flow that ``FlowRegistry.add`` must reject; checks it was not registered."""
    registry = registry or FlowRegistry()
    before = len(registry)
    with pytest.raises(FlowValidationError) as info:
        registry.add(definition)
    assert len(registry) == before
    assert info.value.flow == definition.name
    assert info.value.problems, "a FlowValidationError must name its problems"
    for problem in info.value.problems:
        assert problem in str(info.value)
    return info.value.problems


def has(problems: list[str], *fragments: str) -> bool:
    """True when one single problem contains every fragment."""
    return any(all(fragment in p for fragment in fragments) for p in problems)


GOOD_STEPS: dict[str, Any] = {"a": {"type": "A"}, "b": {"type": "B", "run_after": ["a"]}}


def test_a_valid_flow_has_no_problems_and_registers() -> None:
    definition = flow(
        {
            "a": {"type": "A", "inputs": {"x": "@triggerBody()?.x"}},
            "b": {
                "type": "B",
                "inputs": {"y": "@steps('a').output.y"},
                "run_after": {"a": {"statuses": ["Succeeded"], "when": "@steps('a').output.n > 1"}},
            },
        },
        {
            "nightly": {"type": "Cron", "inputs": {"cronExpression": "*/5 * * * *"}},
            "hook": {"type": "Webhook", "inputs": {"webhookSlug": "good-hook", "webhookAuth": "none"}},
        },
    )
    assert flow_problems(definition) == []
    registry = FlowRegistry()
    assert registry.add(definition) is definition
    assert len(registry) == 1


def test_missing_dependency_names_the_step_that_names_it() -> None:
    problems = rejected(flow({"a": {"type": "A"}, "ship": {"type": "Ship", "run_after": ["fetch"]}}))
    assert has(problems, "'ship'", "'fetch'")


def test_cycle_is_reported_with_its_path() -> None:
    problems = rejected(
        flow(
            {
                "start": {"type": "S"},
                "a": {"type": "A", "run_after": ["b"]},
                "b": {"type": "B", "run_after": ["a"]},
            }
        )
    )
    assert has(problems, "cycle", "a -> b -> a")


def test_self_cycle_is_reported() -> None:
    problems = rejected(flow({"start": {"type": "S"}, "a": {"type": "A", "run_after": ["start", "a"]}}))
    assert has(problems, "cycle", "a -> a")


def test_no_entry_step() -> None:
    problems = rejected(
        flow(
            {
                "a": {"type": "A", "run_after": ["b"]},
                "b": {"type": "B", "run_after": ["a"]},
            }
        )
    )
    assert has(problems, "no entry step")
    assert has(problems, "cycle")


def test_no_steps() -> None:
    problems = rejected(flow({}))
    assert has(problems, "no steps")


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_type(blank: str) -> None:
    problems = rejected(flow({"a": {"type": "A"}, "b": {"type": blank, "run_after": ["a"]}}))
    assert has(problems, "'b'", "type is empty")


@pytest.mark.parametrize("second_slug", ["partner-orders", "Partner-Orders"])
def test_duplicate_webhook_slug_across_two_flows(second_slug: str) -> None:
    registry = FlowRegistry()
    hook = {"hook": {"type": "Webhook", "inputs": {"webhookSlug": "partner-orders", "webhookAuth": "none"}}}
    first = registry.add(flow(GOOD_STEPS, hook))
    second = flow(
        GOOD_STEPS, {"in": {"type": "Webhook", "inputs": {"webhookSlug": second_slug, "webhookAuth": "none"}}}
    )
    problems = rejected(second, registry)
    assert has(problems, "'in'", second_slug, str(first.id))
    assert registry.all() == [first]
    assert registry.webhook_slugs() == {"partner-orders": first.id}


def test_re_registering_the_same_flow_keeps_its_own_slug() -> None:
    registry = FlowRegistry()
    definition = flow(
        GOOD_STEPS, {"hook": {"type": "Webhook", "inputs": {"webhookSlug": "mine", "webhookAuth": "none"}}}
    )
    registry.add(definition)
    registry.add(definition.model_copy(update={"version": "2.0"}))
    assert len(registry) == 1
    assert registry.get(definition.id).version == "2.0"


@pytest.mark.parametrize("cron", ["not a cron", "61 * * * *", "* * *", "", None, 5])
def test_unparsable_cron(cron: Any) -> None:
    inputs = {} if cron is None else {"cronExpression": cron}
    problems = rejected(flow(GOOD_STEPS, {"nightly": {"type": "Cron", "inputs": inputs}}))
    assert has(problems, "'nightly'", "cronExpression")


def test_unparsable_expression_in_inputs() -> None:
    problems = rejected(flow({"a": {"type": "A", "inputs": {"order": {"id": "@steps('a'"}}}}))
    assert has(problems, "'a'", "@steps('a'")


def test_unparsable_when_clause() -> None:
    problems = rejected(
        flow(
            {
                "a": {"type": "A"},
                "b": {
                    "type": "B",
                    "run_after": {"a": {"statuses": ["Succeeded"], "when": "@steps('a').output >"}},
                },
            }
        )
    )
    assert has(problems, "'b'", "when")


def test_unknown_step_in_an_input_expression() -> None:
    problems = rejected(flow({"a": {"type": "A", "inputs": {"x": "@steps('ghost').output"}}}))
    assert has(problems, "'a'", "'ghost'")


def test_unknown_step_in_a_when_clause() -> None:
    problems = rejected(
        flow(
            {
                "a": {"type": "A"},
                "b": {"type": "B", "run_after": {"a": {"when": "@steps('phantom').status == 'Failed'"}}},
            }
        )
    )
    assert has(problems, "'b'", "'phantom'")


def test_duplicate_flow_name_with_another_id() -> None:
    registry = FlowRegistry()
    registry.add(flow(GOOD_STEPS, name="orders"))
    problems = rejected(flow(GOOD_STEPS, name="orders"), registry)
    assert has(problems, "'orders'", "already used")


def test_every_problem_is_listed_in_one_error() -> None:
    registry = FlowRegistry()
    registry.add(
        flow(
            GOOD_STEPS,
            {"hook": {"type": "Webhook", "inputs": {"webhookSlug": "taken", "webhookAuth": "none"}}},
        )
    )
    bad = flow(
        {
            "a": {"type": "", "inputs": {"x": "@steps('nowhere').output", "y": "@steps('a'"}},
            "b": {"type": "B", "run_after": ["missing", "c"]},
            "c": {"type": "C", "run_after": ["b"]},
        },
        {
            "nightly": {"type": "Cron", "inputs": {"cronExpression": "every night"}},
            "hook": {"type": "Webhook", "inputs": {"webhookSlug": "taken", "webhookAuth": "none"}},
        },
    )
    problems = rejected(bad, registry)
    assert has(problems, "'a'", "type is empty")
    assert has(problems, "'a'", "'nowhere'")
    assert has(problems, "'a'", "@steps('a'")
    assert has(problems, "'b'", "'missing'")
    assert has(problems, "cycle", "b -> c -> b")
    assert has(problems, "'nightly'", "cronExpression")
    assert has(problems, "'hook'", "taken")
    assert len(problems) == 7
    assert len(registry) == 1


def test_no_steps_and_bad_trigger_are_both_reported() -> None:
    problems = rejected(flow({}, {"nightly": {"type": "Cron", "inputs": {"cronExpression": "nope"}}}))
    assert has(problems, "no steps")
    assert has(problems, "'nightly'")
    assert len(problems) == 2


# ---------------------------------------------------------------- find_cycle


@pytest.mark.parametrize(
    "graph",
    [
        {},
        {"a": []},
        {"a": [], "b": ["a"], "c": ["a", "b"]},
        {"a": ["missing"]},  # missing dependencies are another problem, not a cycle
    ],
)
def test_find_cycle_on_acyclic_graphs(graph: dict[str, list[str]]) -> None:
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    ("graph", "members"),
    [
        ({"a": ["a"]}, {"a"}),
        ({"a": ["b"], "b": ["a"]}, {"a", "b"}),
        ({"s": [], "a": ["s", "c"], "b": ["a"], "c": ["b"]}, {"a", "b", "c"}),
        ({"x": [], "y": ["x"], "p": ["q"], "q": ["r"], "r": ["p", "y"]}, {"p", "q", "r"}),
    ],
)
def test_find_cycle_returns_a_closed_path(graph: dict[str, list[str]], members: set[str]) -> None:
    cycle = find_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == members
    assert len(cycle) == len(members) + 1
    for step, dep in itertools.pairwise(cycle):
        assert dep in graph[step], f"{step} -> {dep} is not an edge"


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e12, 2_592_001, 0, -1])
def test_wait_for_signal_timeout_must_be_finite_positive_and_bounded(timeout: float) -> None:
    problems = rejected(
        flow({"wait": {"type": "WaitForSignal", "inputs": {"signalName": "go", "timeoutSeconds": timeout}}})
    )
    assert problems == [
        "step 'wait': inputs.timeoutSeconds of a WaitForSignal step "
        "must be a finite number > 0 and <= 2592000"
    ]


@pytest.mark.parametrize("timeout", ["60", True, [60]])
def test_wait_for_signal_timeout_must_be_a_number(timeout: object) -> None:
    problems = rejected(
        flow({"wait": {"type": "WaitForSignal", "inputs": {"signalName": "go", "timeoutSeconds": timeout}}})
    )
    assert has(problems, "inputs.timeoutSeconds of a WaitForSignal step must be a valid number")


@pytest.mark.parametrize("timeout", [0.5, 86400, 2_592_000])
def test_wait_for_signal_timeout_within_bounds_is_accepted(timeout: float) -> None:
    definition = flow(
        {"wait": {"type": "WaitForSignal", "inputs": {"signalName": "go", "timeoutSeconds": timeout}}}
    )
    assert flow_problems(definition) == []
