"""Pure tests of flowjobs.core.manifest: Python vs file definitions, aliases, shorthands and the graph."""

from __future__ import annotations

import json
import textwrap
from typing import Any
from uuid import UUID

import pytest
import yaml
from pydantic import ValidationError

from flowjobs.core.manifest import (
    FlowDefinition,
    FlowManifest,
    RetryPolicy,
    RunAfterCondition,
    StepMetadata,
    TriggerMetadata,
    TriggerType,
)
from flowjobs.core.statuses import StepStatus

FLOW_ID = UUID("6f1c2a9e-0000-4000-8000-00000000abcd")

ORDER_YAML = textwrap.dedent(
    """
    id: 6f1c2a9e-0000-4000-8000-00000000abcd
    name: order-fulfillment
    version: "1.0"
    triggers:
      manual:  {type: Manual}
      nightly: {type: Cron, inputs: {cronExpression: "30 1 * * *"}}
      partner: {type: Webhook, inputs: {webhookSlug: partner-orders}}
    steps:
      fetch: {type: FetchOrder, inputs: {orderId: "@triggerBody()?.orderId"}}
      ship:
        type: Ship
        run_after: {fetch: [Succeeded]}
        retry: {max_attempts: 3, backoff_seconds: 2}
        timeout_seconds: 30
      compensate:
        type: Compensate
        run_after: {ship: [Failed]}
    """
)


def python_order_flow() -> FlowDefinition:
    return FlowDefinition(
        id=FLOW_ID,
        name="order-fulfillment",
        version="1.0",
        manifest=FlowManifest(
            triggers={
                "manual": TriggerMetadata(type=TriggerType.Manual),
                "nightly": TriggerMetadata(type=TriggerType.Cron, inputs={"cronExpression": "30 1 * * *"}),
                "partner": TriggerMetadata(
                    type=TriggerType.Webhook, inputs={"webhookSlug": "partner-orders"}
                ),
            },
            steps={
                "fetch": StepMetadata(type="FetchOrder", inputs={"orderId": "@triggerBody()?.orderId"}),
                "ship": StepMetadata(
                    type="Ship",
                    run_after={"fetch": RunAfterCondition(statuses=(StepStatus.Succeeded,))},
                    retry=RetryPolicy(max_attempts=3, backoff_seconds=2),
                    timeout_seconds=30,
                ),
                "compensate": StepMetadata(
                    type="Compensate", run_after={"ship": RunAfterCondition(statuses=(StepStatus.Failed,))}
                ),
            },
        ),
    )


def test_python_and_yaml_definitions_are_equal() -> None:
    from_python = python_order_flow()
    from_yaml = FlowDefinition.model_validate(yaml.safe_load(ORDER_YAML))
    assert from_yaml == from_python
    assert from_yaml.manifest.content_hash() == from_python.manifest.content_hash()
    assert from_yaml.manifest.canonical_json() == from_python.manifest.canonical_json()


def test_json_round_trip_keeps_the_definition_and_its_hash() -> None:
    original = python_order_flow()
    text = json.dumps(original.model_dump(mode="json", by_alias=True))
    reloaded = FlowDefinition.model_validate_json(text)
    assert reloaded == original
    assert reloaded.manifest.content_hash() == original.manifest.content_hash()


def test_content_hash_is_stable_and_short_hex() -> None:
    digest = python_order_flow().manifest.content_hash()
    assert digest == python_order_flow().manifest.content_hash()
    assert len(digest) == 24
    int(digest, 16)


def test_content_hash_ignores_dict_key_order() -> None:
    data = yaml.safe_load(ORDER_YAML)
    reordered = {**data, "steps": dict(reversed(list(data["steps"].items())))}
    a = FlowDefinition.model_validate(data).manifest
    b = FlowDefinition.model_validate(reordered).manifest
    assert a.content_hash() == b.content_hash()


def test_content_hash_changes_with_the_manifest() -> None:
    data = yaml.safe_load(ORDER_YAML)
    base = FlowDefinition.model_validate(data).manifest.content_hash()
    data["steps"]["compensate"]["run_after"] = {"ship": ["Failed", "Skipped"]}
    assert FlowDefinition.model_validate(data).manifest.content_hash() != base
    data = yaml.safe_load(ORDER_YAML)
    data["steps"]["fetch"]["inputs"]["orderId"] = 42
    assert FlowDefinition.model_validate(data).manifest.content_hash() != base


def test_camel_case_aliases_are_accepted() -> None:
    camel: dict[str, Any] = {
        "type": "Ship",
        "runAfter": {"fetch": ["Succeeded"]},
        "timeoutSeconds": 12.5,
        "retry": {"maxAttempts": 4, "backoffSeconds": 1.5, "backoffFactor": 3, "maxBackoffSeconds": 20},
    }
    snake: dict[str, Any] = {
        "type": "Ship",
        "run_after": {"fetch": ["Succeeded"]},
        "timeout_seconds": 12.5,
        "retry": {"max_attempts": 4, "backoff_seconds": 1.5, "backoff_factor": 3, "max_backoff_seconds": 20},
    }
    step = StepMetadata.model_validate(camel)
    assert step == StepMetadata.model_validate(snake)
    assert step.timeout_seconds == 12.5
    assert step.run_after == {"fetch": RunAfterCondition(statuses=(StepStatus.Succeeded,))}
    assert step.retry == RetryPolicy(
        max_attempts=4, backoff_seconds=1.5, backoff_factor=3, max_backoff_seconds=20
    )


def test_camel_case_run_after_in_a_flow_file() -> None:
    data = yaml.safe_load(ORDER_YAML)
    data["steps"]["compensate"] = {"type": "Compensate", "runAfter": {"ship": ["Failed"]}}
    data["steps"]["ship"]["timeoutSeconds"] = data["steps"]["ship"].pop("timeout_seconds")
    assert FlowDefinition.model_validate(data) == python_order_flow()


def test_run_after_list_shorthand_means_after_success() -> None:
    step = StepMetadata.model_validate({"type": "Join", "run_after": ["a", "b"]})
    assert step.run_after == {
        "a": RunAfterCondition(statuses=(StepStatus.Succeeded,)),
        "b": RunAfterCondition(statuses=(StepStatus.Succeeded,)),
    }
    assert StepMetadata.model_validate({"type": "Join", "runAfter": ["a"]}).run_after == {
        "a": RunAfterCondition(statuses=(StepStatus.Succeeded,))
    }


@pytest.mark.parametrize(
    ("condition", "statuses", "when"),
    [
        (["Failed"], (StepStatus.Failed,), None),
        (["Succeeded", "Skipped"], (StepStatus.Succeeded, StepStatus.Skipped), None),
        ("Failed", (StepStatus.Failed,), None),
        ([], (StepStatus.Succeeded,), None),
        (
            {"statuses": ["Failed"], "when": "@steps('a').status == 'Failed'"},
            (StepStatus.Failed,),
            "@steps('a').status == 'Failed'",
        ),
        ({"when": "1 == 1"}, (StepStatus.Succeeded,), "1 == 1"),
    ],
)
def test_run_after_condition_forms(
    condition: Any, statuses: tuple[StepStatus, ...], when: str | None
) -> None:
    parsed = RunAfterCondition.model_validate(condition)
    assert parsed.statuses == statuses
    assert parsed.when == when


def test_unknown_status_in_run_after_is_rejected() -> None:
    with pytest.raises(ValidationError):
        StepMetadata.model_validate({"type": "X", "run_after": {"a": ["Done"]}})


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (StepMetadata, {"type": "X", "colour": "red"}),
        (StepMetadata, {"type": "X", "run_after": {"a": {"statuses": ["Failed"], "unless": "x"}}}),
        (StepMetadata, {"type": "X", "retry": {"max_attempts": 2, "jitter": True}}),
        (TriggerMetadata, {"type": "Manual", "schedule": "* * * * *"}),
        (FlowManifest, {"steps": {}, "handlers": {}}),
        (FlowDefinition, {"id": str(FLOW_ID), "name": "f", "steps": {"a": {"type": "A"}}, "owner": "me"}),
    ],
)
def test_unknown_keys_are_rejected(model: type, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    assert any(err["type"] == "extra_forbidden" for err in info.value.errors())


def test_unknown_trigger_type_is_rejected() -> None:
    with pytest.raises(ValidationError):
        TriggerMetadata.model_validate({"type": "Email"})


@pytest.mark.parametrize(
    "retry",
    [{"max_attempts": 0}, {"backoff_seconds": -1}, {"backoff_factor": 0.5}, {"max_backoff_seconds": -1}],
)
def test_retry_policy_bounds(retry: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate(retry)


def test_retry_policy_defaults_to_no_retry() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 1
    assert StepMetadata(type="X").retry is None


def test_dependency_graph_shape() -> None:
    manifest = FlowManifest.model_validate(
        {
            "steps": {
                "a": {"type": "A"},
                "b": {"type": "B", "run_after": ["a"]},
                "c": {"type": "C", "run_after": {"a": ["Succeeded", "Failed"], "b": ["Skipped"]}},
            }
        }
    )
    graph = manifest.dependency_graph()
    assert graph == {
        "a": {},
        "b": {"a": frozenset({StepStatus.Succeeded})},
        "c": {
            "a": frozenset({StepStatus.Succeeded, StepStatus.Failed}),
            "b": frozenset({StepStatus.Skipped}),
        },
    }
    assert all(isinstance(accepted, frozenset) for deps in graph.values() for accepted in deps.values())
    assert list(graph) == ["a", "b", "c"]


def test_top_level_form_without_manifest_key() -> None:
    data = yaml.safe_load(ORDER_YAML)
    assert "manifest" not in data
    top_level = FlowDefinition.model_validate(data)
    nested = FlowDefinition.model_validate(
        {
            "id": data["id"],
            "name": data["name"],
            "version": data["version"],
            "manifest": {"triggers": data["triggers"], "steps": data["steps"]},
        }
    )
    assert top_level == nested
    assert set(top_level.manifest.steps) == {"fetch", "ship", "compensate"}
    assert set(top_level.manifest.triggers) == {"manual", "nightly", "partner"}


def test_top_level_steps_without_triggers_get_the_default_manual_trigger() -> None:
    flow = FlowDefinition.model_validate({"id": str(FLOW_ID), "name": "f", "steps": {"a": {"type": "A"}}})
    assert flow.manifest.triggers == {"manual": TriggerMetadata(type=TriggerType.Manual)}
    assert flow.version == "1.0"


def test_manifest_and_top_level_steps_together_are_rejected() -> None:
    with pytest.raises(ValidationError):
        FlowDefinition.model_validate(
            {"id": str(FLOW_ID), "name": "f", "manifest": {"steps": {}}, "steps": {"a": {"type": "A"}}}
        )


@pytest.mark.parametrize(("raw", "label"), [(2, "2"), (1.5, "1.5"), ("1.0", "1.0")])
def test_numeric_version_becomes_a_label(raw: Any, label: str) -> None:
    flow = FlowDefinition.model_validate({"id": str(FLOW_ID), "name": "f", "version": raw, "steps": {}})
    assert flow.version == label


def test_definitions_are_frozen() -> None:
    flow = python_order_flow()
    with pytest.raises(ValidationError):
        flow.name = "other"  # type: ignore[misc]


def test_empty_name_is_rejected() -> None:
    with pytest.raises(ValidationError):
        FlowDefinition(id=FLOW_ID, name="")


@pytest.mark.parametrize(
    ("step", "loc", "message"),
    [
        ({"timeout_seconds": float("inf")}, ("timeout_seconds",), "a finite number > 0 and <= 604800"),
        ({"timeout_seconds": 604801}, ("timeout_seconds",), "a finite number > 0 and <= 604800"),
        ({"retry": {"max_attempts": 10**6}}, ("retry", "max_attempts"), "an integer >= 1 and <= 10000"),
        ({"retry": {"backoff_seconds": float("nan")}}, ("retry", "backoff_seconds"), ">= 0 and <= 604800"),
        ({"retry": {"backoff_factor": float("inf")}}, ("retry", "backoff_factor"), ">= 1 and <= 100"),
        ({"retry": {"max_backoff_seconds": 1e12}}, ("retry", "max_backoff_seconds"), ">= 0 and <= 604800"),
        ({"poll": {"interval_seconds": float("inf")}}, ("poll", "interval_seconds"), "> 0 and <= 604800"),
        ({"poll": {"timeout_seconds": float("inf")}}, ("poll", "timeout_seconds"), "> 0 and <= 604800"),
        ({"poll": {"min_attempts": 0}}, ("poll", "min_attempts"), "an integer >= 1 and <= 10000"),
        ({"concurrency_limit": 10_001}, ("concurrency_limit",), "an integer >= 1 and <= 10000"),
    ],
)
def test_every_number_of_a_step_is_finite_and_bounded(
    step: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        StepMetadata.model_validate({"type": "T", **step})
    [error] = info.value.errors()
    assert error["loc"] == loc
    assert error["msg"].startswith("must be ") and error["msg"].endswith(message)


def test_the_largest_allowed_numbers_are_accepted() -> None:
    step = StepMetadata.model_validate(
        {
            "type": "T",
            "timeout_seconds": 604800,
            "retry": {"max_attempts": 10_000, "backoff_seconds": 604800, "backoff_factor": 100},
            "poll": {"interval_seconds": 604800, "timeout_seconds": 604800, "min_attempts": 10_000},
        }
    )
    assert step.timeout_seconds == 604800 and step.retry is not None and step.retry.max_attempts == 10_000
