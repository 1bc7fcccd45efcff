"""Pure tests of flowjobs.core.registry: add, get, flow files and folders (no Redis)."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flowjobs.core.errors import FlowNotFound, FlowValidationError
from flowjobs.core.manifest import FlowDefinition, TriggerType
from flowjobs.core.registry import FlowRegistry, parse_flow_file

ROOT = Path(__file__).resolve().parent.parent
FLOWS_DIR = ROOT / "config" / "flows"

HELLO_ID = UUID("0b6c1f2e-5a43-4c8e-9d7a-2f1e3c4b5a60")
ORDER_ID = UUID("6f1c2a9e-0000-4000-8000-00000000abcd")


def definition(name: str, **steps: Any) -> FlowDefinition:
    return FlowDefinition.model_validate(
        {"id": str(uuid.uuid4()), "name": name, "steps": steps or {"only": {"type": "Only"}}}
    )


GOOD_YAML = textwrap.dedent(
    """
    id: 11111111-1111-4111-8111-111111111111
    name: good-flow
    steps:
      a: {type: A}
      b: {type: B, run_after: [a]}
    """
)

BAD_YAML = textwrap.dedent(
    """
    id: 22222222-2222-4222-8222-222222222222
    name: bad-flow
    steps:
      a: {type: A, run_after: [nowhere]}
    """
)


# ---------------------------------------------------------------- add / get


def test_get_by_name_by_id_and_by_id_string() -> None:
    registry = FlowRegistry()
    flow = registry.add(definition("orders"))
    assert registry.get("orders") is flow
    assert registry.get(flow.id) is flow
    assert registry.get(str(flow.id)) is flow
    assert registry.get(str(flow.id).upper()) is flow


@pytest.mark.parametrize("unknown", ["nope", "", str(uuid.uuid4()), uuid.uuid4()])
def test_get_unknown_flow_raises_flow_not_found(unknown: str | UUID) -> None:
    registry = FlowRegistry([definition("orders")])
    with pytest.raises(FlowNotFound):
        registry.get(unknown)


def test_constructor_registers_the_given_definitions() -> None:
    a, b = definition("b-flow"), definition("a-flow")
    registry = FlowRegistry([a, b])
    assert len(registry) == 2
    assert registry.all() == [b, a]  # sorted by name


def test_add_replaces_a_flow_with_the_same_id() -> None:
    registry = FlowRegistry()
    first = registry.add(definition("orders"))
    renamed = first.model_copy(update={"name": "orders-v2", "version": "2.0"})
    registry.add(renamed)
    assert len(registry) == 1
    assert registry.get(first.id) is renamed
    with pytest.raises(FlowNotFound):
        registry.get("orders")


def test_rejected_flow_leaves_the_registry_unchanged() -> None:
    registry = FlowRegistry()
    good = registry.add(definition("orders"))
    bad_replacement = FlowDefinition.model_validate(
        {"id": str(good.id), "name": "orders", "steps": {"a": {"type": "A", "run_after": ["ghost"]}}}
    )
    with pytest.raises(FlowValidationError) as info:
        registry.add(bad_replacement)
    assert any("'ghost'" in p for p in info.value.problems)
    assert registry.get(good.id) is good
    with pytest.raises(FlowValidationError):
        registry.add(definition("broken", a={"type": "A", "run_after": ["a"]}))
    assert registry.all() == [good]
    with pytest.raises(FlowNotFound):
        registry.get("broken")


def test_webhook_slugs_are_lower_cased_and_mapped_to_their_flow() -> None:
    flow = FlowDefinition.model_validate(
        {
            "id": str(uuid.uuid4()),
            "name": "hooks",
            "triggers": {
                "manual": {"type": "Manual"},
                "in": {"type": "Webhook", "inputs": {"webhookSlug": "Partner-Orders", "webhookAuth": "none"}},
            },
            "steps": {"a": {"type": "A"}},
        }
    )
    registry = FlowRegistry([flow])
    assert registry.webhook_slugs() == {"partner-orders": flow.id}


# ---------------------------------------------------------------- flow files


def test_load_dir_loads_the_example_flows() -> None:
    registry = FlowRegistry()
    loaded = registry.load_dir(FLOWS_DIR)
    names = {flow.name for flow in loaded}
    assert names == {"hello-flow", "order-fulfillment", "order-approval", "image-batch"}
    assert len(registry) == 4
    hello = registry.get("hello-flow")
    assert hello.id == HELLO_ID
    assert hello.manifest.dependency_graph()["summarize"].keys() == {"greet", "count"}
    order = registry.get(ORDER_ID)
    assert order.name == "order-fulfillment"
    assert order.manifest.triggers["nightly"].type is TriggerType.Cron
    # the example uses the camelCase `runAfter` alias for its error handler
    assert order.manifest.dependency_graph()["compensate"] == {"ship": frozenset({"Failed"})}
    assert registry.webhook_slugs() == {"partner-orders": ORDER_ID}


def test_load_dir_registers_the_good_file_and_names_the_bad_one(tmp_path: Path) -> None:
    (tmp_path / "a-good.yaml").write_text(GOOD_YAML)
    (tmp_path / "b-bad.yml").write_text(BAD_YAML)
    (tmp_path / "notes.txt").write_text("not a flow")
    registry = FlowRegistry()
    with pytest.raises(FlowValidationError) as info:
        registry.load_dir(tmp_path)
    assert info.value.problems
    assert all(p.startswith("b-bad.yml: ") for p in info.value.problems)
    assert any("'nowhere'" in p for p in info.value.problems)
    assert "b-bad.yml" in str(info.value)
    assert [flow.name for flow in registry.all()] == ["good-flow"]
    with pytest.raises(FlowNotFound):
        registry.get("bad-flow")


def test_load_dir_reports_every_bad_file(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(BAD_YAML)
    (tmp_path / "two.json").write_text("{not json")
    (tmp_path / "three.yaml").write_text("- just\n- a list\n")
    registry = FlowRegistry()
    with pytest.raises(FlowValidationError) as info:
        registry.load_dir(tmp_path)
    named = {p.split(":", 1)[0] for p in info.value.problems}
    assert named == {"one.yaml", "two.json", "three.yaml"}
    assert len(registry) == 0


def test_load_dir_reads_json_files(tmp_path: Path) -> None:
    data = {"id": str(uuid.uuid4()), "name": "json-flow", "steps": {"a": {"type": "A"}}}
    (tmp_path / "flow.json").write_text(json.dumps(data))
    loaded = FlowRegistry().load_dir(tmp_path)
    assert [flow.name for flow in loaded] == ["json-flow"]


def test_add_file_registers_one_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_YAML)
    registry = FlowRegistry()
    flow = registry.add_file(path)
    assert registry.get("good-flow") is flow
    assert flow.manifest.dependency_graph() == {"a": {}, "b": {"a": frozenset({"Succeeded"})}}


def test_a_second_file_with_the_same_id_is_refused_and_the_first_kept(tmp_path: Path) -> None:
    (tmp_path / "a-first.yaml").write_text(GOOD_YAML)
    (tmp_path / "b-copy.yaml").write_text(GOOD_YAML.replace("good-flow", "copied-flow"))
    registry = FlowRegistry()
    with pytest.raises(FlowValidationError) as info:
        registry.load_dir(tmp_path)
    assert info.value.problems == [
        "b-copy.yaml: flow id 11111111-1111-4111-8111-111111111111 is already used by flow "
        "'good-flow' (a-first.yaml)"
    ]
    assert [flow.name for flow in registry.all()] == ["good-flow"]
    assert registry.add_file(tmp_path / "a-first.yaml").name == "good-flow"  # a file may replace its own


def test_parse_flow_file_of_broken_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n  steps: {")
    with pytest.raises(FlowValidationError) as info:
        parse_flow_file(path)
    assert info.value.flow == "broken.yaml"
    assert info.value.problems


def test_parse_flow_file_of_broken_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": ')
    with pytest.raises(FlowValidationError) as info:
        parse_flow_file(path)
    assert info.value.problems


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", ""])
def test_parse_flow_file_of_a_non_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(FlowValidationError) as info:
        parse_flow_file(path)
    assert any("mapping" in p for p in info.value.problems)


def test_parse_flow_file_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FlowValidationError):
        parse_flow_file(tmp_path / "absent.yaml")


def test_parse_flow_file_turns_model_errors_into_problems(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(
        textwrap.dedent(
            """
        id: 33333333-3333-4333-8333-333333333333
        name: model-errors
        steps:
          a: {inputs: {}}
          b: {type: B, colour: red}
        """
        )
    )
    with pytest.raises(FlowValidationError) as info:
        parse_flow_file(path)
    assert info.value.flow == "model-errors"
    assert any("steps.a.type" in p for p in info.value.problems)
    assert any("steps.b.colour" in p for p in info.value.problems)
