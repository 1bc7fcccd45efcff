"""Bad input gets a typed error and leaves nothing behind; a crashing handler fails its step only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowjobs import (
    FlowNotFound,
    FlowValidationError,
    InvalidTriggerData,
    RunStatus,
    StepStatus,
    TriggerNotFound,
)
from flowjobs.client import FlowClient
from flowjobs.core.errors import DataTooLarge
from flowjobs.core.registry import FlowRegistry
from tests.conftest import Space
from tests.integration.flows import flow, registry
from tests.test_flow_files import alias_bomb


def _written(space: Space) -> list[bytes]:
    """Every key under the test's prefix, and the RQ queue."""
    keys = list(space.redis.scan_iter(match=f"{space.settings.key_prefix}*", count=1000))
    if space.redis.exists(f"rq:queue:{space.settings.queue}"):
        keys.append(f"rq:queue:{space.settings.queue}".encode())
    return keys


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ({}, "no steps"),
        ({"a": {"type": "Noop", "run_after": ["ghost"]}}, "'a': run_after names 'ghost'"),
        ({"a": {"type": "Noop", "run_after": ["b"]}, "b": {"type": "Noop", "run_after": ["a"]}}, "cycle"),
        ({"a": {"type": " "}}, "type is empty"),
        ({"a": {"type": "Noop", "inputs": {"x": "@steps('a'"}}}, "step 'a'"),
        ({"a": {"type": "Noop", "inputs": {"x": "@steps('nope').output"}}}, "'nope'"),
    ],
)
def test_invalid_manifest_is_refused_at_registration_and_writes_nothing(
    space: Space, steps: dict[str, object], problem: str
) -> None:
    flows = FlowRegistry()
    with pytest.raises(FlowValidationError) as error:
        flows.add(flow("bad", steps))
    assert any(problem in p for p in error.value.problems), error.value.problems
    assert len(flows) == 0
    with pytest.raises(FlowNotFound):
        space.client(flows).trigger("bad")
    assert _written(space) == []


def test_bad_cron_and_duplicate_webhook_slug_are_refused(space: Space) -> None:
    flows = registry(
        flow(
            "hooked",
            {"a": {"type": "Noop"}},
            triggers={"in": {"type": "Webhook", "inputs": {"webhookSlug": "orders", "webhookAuth": "none"}}},
        )
    )
    with pytest.raises(FlowValidationError) as error:
        flows.add(
            flow(
                "clash",
                {"a": {"type": "Noop"}},
                triggers={
                    "in": {"type": "Webhook", "inputs": {"webhookSlug": "orders", "webhookAuth": "none"}},
                    "tick": {"type": "Cron", "inputs": {"cronExpression": "every tuesday"}},
                },
            )
        )
    problems = "\n".join(error.value.problems)
    assert "webhook slug 'orders' is already used" in problems
    assert "cronExpression 'every tuesday' does not parse" in problems
    assert [d.name for d in flows.all()] == ["hooked"]


def test_unknown_flow_trigger_and_bad_payloads_write_nothing(space: Space) -> None:
    client = space.client(registry(flow("ok", {"a": {"type": "Noop"}})))
    with pytest.raises(FlowNotFound):
        client.trigger("missing")
    with pytest.raises(TriggerNotFound, match="no trigger 'nightly'"):
        client.trigger("ok", "nightly")
    with pytest.raises(InvalidTriggerData, match="not JSON-serialisable"):
        client.trigger("ok", data={"when": object()})
    with pytest.raises(InvalidTriggerData, match="not JSON-serialisable"):
        client.trigger("ok", data={"x": float("nan")})
    with pytest.raises(InvalidTriggerData, match="headers"):
        client.trigger("ok", headers={"X-Count": 3})  # type: ignore[dict-item]
    assert _written(space) == []


def test_crashing_handlers_fail_their_step_and_the_worker_goes_on(space: Space) -> None:
    client = space.client(
        registry(
            flow("raises", {"a": {"type": "Boom", "inputs": {"message": "kaput"}}}),
            flow("unserialisable", {"a": {"type": "Unserialisable"}}),
            flow("no-handler", {"a": {"type": "NoSuchType"}}),
            flow("fine", {"a": {"type": "Noop"}}),
        )
    )
    worker = space.start_worker("survivor", simple=True)
    expectations = {
        "raises": "RuntimeError: kaput",
        "unserialisable": "Handler output is not JSON-serialisable",
        "no-handler": "no handler is registered for step type 'NoSuchType'",
    }
    for name, reason in expectations.items():
        run = client.trigger(name).wait(timeout=30)
        detail = client.get_run_detail(run.id)
        assert detail is not None and detail.status is RunStatus.Failed
        step = (detail.steps or [])[0]
        assert step.status is StepStatus.Failed
        assert reason in (step.error_message or ""), step.error_message
        assert (step.attempts or [])[0].error_message == step.error_message
    assert worker.poll() is None, "the worker process must survive crashing handlers"
    assert client.trigger("fine").wait(timeout=30).status is RunStatus.Succeeded


def test_cli_rejects_bad_input_with_exit_code_2(space: Space, tmp_path: Path) -> None:
    unknown = space.cli("trigger", "no-such-flow")
    assert unknown.returncode == 2 and "no flow with id or name 'no-such-flow'" in unknown.stderr
    bad_json = space.cli("trigger", "hello-flow", "--data", "{not json")
    assert bad_json.returncode == 2 and "not JSON" in bad_json.stderr
    bad_trigger = space.cli("trigger", "hello-flow", "--trigger", "nope")
    assert bad_trigger.returncode == 2 and "no trigger 'nope'" in bad_trigger.stderr
    (tmp_path / "broken.yaml").write_text(
        "id: 5d0c6c38-8a43-4d7e-a1f7-0e4b7b1f0a11\nname: broken\nsteps:\n"
        "  a: {type: Noop, run_after: [b]}\n  b: {type: Noop, run_after: [a]}\n"
        "  c: {type: '', run_after: [zz]}\n"
    )
    validated = space.cli("flows", "validate", str(tmp_path / "broken.yaml"))
    assert validated.returncode == 2
    assert "cycle" in validated.stderr and "'zz'" in validated.stderr and "type is empty" in validated.stderr
    assert "no entry step" in validated.stderr
    assert _written(space) == []
    good = space.cli("flows", "validate")
    assert good.returncode == 0, good.stderr


def _nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth - 1):
        value = {"next": value}
    return value


def test_deep_or_large_trigger_data_is_refused_and_writes_nothing(space: Space) -> None:
    client = space.client(registry(flow("ok", {"a": {"type": "Noop"}})))
    with pytest.raises(DataTooLarge, match="nested 5000 levels deep; the limit is 64") as deep:
        client.trigger("ok", data=_nested(5000))
    assert (deep.value.limit, deep.value.actual) == (64, 5000)
    with pytest.raises(DataTooLarge, match="nested 65 levels deep"):
        client.trigger("ok", data=_nested(65))
    with pytest.raises(DataTooLarge, match=r"trigger data is \d+ bytes as JSON; the limit is 1048576 bytes"):
        client.trigger("ok", data={"blob": "x" * (1024 * 1024)})
    assert _written(space) == []
    run = client.trigger("ok", data=_nested(64)).record()
    assert run.trigger_data_json is not None and run.trigger_data_json.count("{") == 64


def test_from_settings_passes_the_data_limits_and_run_timeout(space: Space) -> None:
    settings = space.settings.model_copy(
        update={"max_data_depth": 2, "max_data_bytes": 2048, "run_timeout_seconds": 90}
    )
    client = FlowClient.from_settings(settings, registry(flow("ok", {"a": {"type": "Noop"}})))
    with pytest.raises(DataTooLarge, match="nested 3 levels deep; the limit is 2"):
        client.trigger("ok", data={"a": {"b": {}}})
    with pytest.raises(DataTooLarge, match="the limit is 2048 bytes"):
        client.trigger("ok", data="y" * 3000)
    assert _written(space) == []
    run = client.trigger("ok", data={"a": {}}).record()
    assert run.timeout_at is not None
    assert (run.timeout_at - run.started_at).total_seconds() == pytest.approx(90)


@pytest.mark.parametrize("seconds", [1e12, 2_592_001, 0, -5, "600", True, None, [1]])
def test_a_bad_run_timeout_in_the_trigger_data_is_refused_and_writes_nothing(
    space: Space, seconds: Any
) -> None:
    client = space.client(registry(flow("ok", {"a": {"type": "Noop"}})))
    with pytest.raises(InvalidTriggerData, match="runTimeoutSeconds in the trigger data must be"):
        client.trigger("ok", data={"runTimeoutSeconds": seconds})
    assert _written(space) == []


def test_the_longest_run_timeout_sets_the_deadline(space: Space) -> None:
    client = space.client(registry(flow("ok", {"a": {"type": "Noop"}})))
    run = client.trigger("ok", data={"runTimeoutSeconds": 2_592_000}).record()
    assert run.timeout_at is not None
    assert (run.timeout_at - run.started_at).total_seconds() == pytest.approx(2_592_000)
    assert client.trigger("ok", data={"other": 1}).record().timeout_at is None


def test_from_settings_skips_a_bad_flow_file_and_triggers_the_good_ones(space: Space, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(
        "id: 7a3e1a52-5a0e-4b8e-9f43-2d1c0b9e8f70\nname: good\nsteps:\n  a: {type: Noop}\n"
    )
    (tmp_path / "bad.yaml").write_text("id: not-a-uuid\nname: bad\nsteps: {}\n")
    client = FlowClient.from_settings(space.settings.model_copy(update={"flows_dir": tmp_path}))
    assert [d.name for d in client.flows.all()] == ["good"]
    assert list(client.flows.invalid_files) == [tmp_path / "bad.yaml"]
    assert client.trigger("good").record().flow_name == "good"


def test_two_flow_files_with_the_same_id_are_refused_and_the_first_stays_triggerable(
    space: Space, tmp_path: Path
) -> None:
    body = "id: 2f0e9c1a-6b7d-4e8f-9a0b-1c2d3e4f5a6b\nname: {name}\nsteps:\n  a: {{type: Noop}}\n"
    (tmp_path / "a-first.yaml").write_text(body.format(name="first"))
    (tmp_path / "b-copy.yaml").write_text(body.format(name="copy"))
    validated = space.cli("flows", "validate", str(tmp_path))
    assert validated.returncode == 2, validated.stdout
    assert (
        "b-copy.yaml: flow id 2f0e9c1a-6b7d-4e8f-9a0b-1c2d3e4f5a6b is already used by flow 'first' "
        "(a-first.yaml)" in validated.stderr
    )
    in_folder = {"FLOWJOBS_FLOWS_DIR": str(tmp_path)}
    listed = space.cli("flows", "list", env=in_folder)
    assert listed.returncode == 0 and "INVALID" in listed.stdout and "already used" in listed.stdout
    triggered = space.cli("trigger", "first", env=in_folder)
    assert triggered.returncode == 0, triggered.stderr
    assert "b-copy.yaml skipped" in triggered.stderr


def test_flows_list_refuses_a_yaml_alias_bomb_naming_the_file(space: Space, tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb(7))
    (tmp_path / "good.yaml").write_text(
        "id: 7a3e1a52-5a0e-4b8e-9f43-2d1c0b9e8f70\nname: good\nsteps:\n  a: {type: Noop}\n"
    )
    listed = space.cli("flows", "list", env={"FLOWJOBS_FLOWS_DIR": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith("good ")
    assert f"bomb.yaml                      INVALID ({tmp_path / 'bomb.yaml'})" in listed.stdout
    assert "cannot read the file: it expands to more than 100000 YAML nodes" in listed.stdout


def test_a_run_failed_for_an_unreadable_stored_flow_shows_the_reason_in_its_events(space: Space) -> None:
    client = space.client(registry(flow("pinned", {"a": {"type": "Noop"}})))
    handle = client.trigger("pinned")
    manifest_hash = handle.record().manifest_hash
    assert manifest_hash is not None
    space.redis.set(space.keys.manifest(manifest_hash), "{not json")  # damaged in Redis
    space.start_worker("unreadable")
    assert handle.wait(timeout=60).status is RunStatus.Failed
    shown = space.cli("runs", "show", str(handle.run_id), "--events")
    assert shown.returncode == 0, shown.stderr
    completed = [line for line in shown.stdout.splitlines() if "run.completed" in line]
    assert len(completed) == 1
    assert completed[0].endswith(
        f"Failed: Run cannot be planned: its pinned manifest {manifest_hash} is missing or unparsable "
        "(1 validation error for FlowManifest"
    ), shown.stdout
