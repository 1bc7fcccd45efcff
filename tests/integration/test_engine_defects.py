"""Regression tests for defects of the engine found by trying to break it (issue 6, part A)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flowjobs import FlowRunRecord, RunStatus, StepStatus
from flowjobs.core.clock import utcnow
from flowjobs.store import Claim
from tests.conftest import Space
from tests.integration.flows import flow, registry


def _run(space: Space, steps: dict[str, Any], data: Any = None) -> FlowRunRecord:
    client = space.client(registry(flow("defect", steps)))
    handle = client.trigger("defect", data=data)
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None
    return run


def _steps(run: FlowRunRecord) -> dict[str, Any]:
    return {s.step_key: s for s in run.steps or []}


def test_output_nested_too_deep_fails_the_attempt_once(space: Space) -> None:
    run = _run(space, {"deep": {"type": "Deep", "inputs": {"depth": 5000}}})
    deep = _steps(run)["deep"]
    assert run.status is RunStatus.Failed
    assert deep.status is StepStatus.Failed and deep.attempt_count == 1
    assert "Handler output is too large" in (deep.error_message or "")
    assert "limit is 64" in (deep.error_message or "")


def test_error_in_the_engine_around_a_handler_fails_the_attempt(space: Space) -> None:
    client = space.client(
        registry(flow("defect", {"use": {"type": "Echo", "inputs": {"body": "@triggerBody()"}}}))
    )
    handle = client.trigger("defect", data={"fine": True})
    # Data stored by an older version, before trigger data was bounded: too deep to decode.
    space.redis.hset(space.keys.run(handle.run_id), "trigger_data_json", "[" * 5000 + "]" * 5000)
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed
    use = _steps(run)["use"]
    assert use.status is StepStatus.Failed and use.attempt_count == 1
    assert (use.error_message or "").startswith("flowjobs could not run the step: RecursionError")


def test_handler_returning_running_fails_the_attempt(space: Space) -> None:
    run = _run(space, {"odd": {"type": "SayRunning"}})
    odd = _steps(run)["odd"]
    assert run.status is RunStatus.Failed and odd.status is StepStatus.Failed
    assert odd.error_message == (
        "Handler returned StepResult with status Running; a handler may return Succeeded, Failed or Pending."
    )


def test_last_iteration_skipped_by_when_keeps_its_skip_records(space: Space) -> None:
    run = _run(
        space,
        {
            "loop": {
                "type": "ForEach",
                "for_each": [3, 2, 0],
                "concurrency_limit": 1,
                "steps": {
                    "a": {"type": "Echo"},
                    "b": {
                        "type": "Echo",
                        "run_after": {
                            "a": {
                                "statuses": ["Succeeded"],
                                "when": "@steps('a').output.inputs.__loopItem > 0",
                            }
                        },
                    },
                    "c": {"type": "Echo", "run_after": ["b"]},
                },
            }
        },
    )
    steps = _steps(run)
    assert run.status is RunStatus.Succeeded
    assert [o["status"] for o in json.loads(steps["loop"].output_json or "[]")] == [
        "Succeeded",
        "Succeeded",
        "Skipped",
    ]
    assert steps["loop.2.b"].status is StepStatus.Skipped
    assert json.loads(steps["loop.2.b"].evaluation_trace_json or "{}")["resolved"] == "0 > 0"
    assert steps["loop.2.c"].status is StepStatus.Skipped


def test_expressions_inside_a_literal_for_each_list_are_resolved(space: Space) -> None:
    run = _run(
        space,
        {
            "src": {"type": "Echo", "inputs": {"v": "from-step"}},
            "loop": {
                "type": "ForEach",
                "run_after": ["src"],
                "for_each": ["@triggerBody()?.a", "@steps('src').output.inputs.v", "plain"],
                "steps": {"show": {"type": "Echo"}},
            },
        },
        data={"a": "from-trigger"},
    )
    steps = _steps(run)
    assert run.status is RunStatus.Succeeded
    items = [
        json.loads(steps[f"loop.{i}.show"].output_json or "{}")["inputs"]["__loopItem"] for i in range(3)
    ]
    assert items == ["from-trigger", "from-step", "plain"]


def test_fractional_step_timeouts_are_enforced_as_declared(space: Space) -> None:
    run = _run(
        space,
        {
            "within": {"type": "Sleep", "timeout_seconds": 2.5, "inputs": {"seconds": 2.2}},
            "beyond": {"type": "Sleep", "timeout_seconds": 0.4, "inputs": {"seconds": 0.9}},
        },
    )
    steps = _steps(run)
    assert steps["within"].status is StepStatus.Succeeded
    assert steps["beyond"].status is StepStatus.Failed
    assert steps["beyond"].error_message == "Step timed out: the handler ran longer than 0.4s."
    attempt = (steps["beyond"].attempts or [])[0]
    assert attempt.started_at is not None and attempt.completed_at is not None
    assert (attempt.completed_at - attempt.started_at).total_seconds() < 0.9


def test_claims_carry_trigger_data_only_to_steps_that_reference_it(space: Space) -> None:
    big = {"blob": "x" * 200_000, "id": 7}
    steps = {
        "plain": {"type": "Noop"},
        "uses": {"type": "Echo", "run_after": ["plain"], "inputs": {"id": "@triggerBody()?.id"}},
        "reads": {"type": "ReadTrigger", "run_after": ["plain"]},
    }
    client = space.client(registry(flow("defect", steps)))
    handle = client.trigger("defect", data=big)
    engine = space.engine()
    store, run_id = engine.store, str(handle.run_id)
    started = store.runs.start_run(run_id)
    assert started is not None
    engine.continue_run(run_id, started[1])
    lease = utcnow() + timedelta(seconds=30)
    without = store.runs.claim(
        run_id, "plain", 1, job_id="j", worker="w", lease_until=lease, with_trigger=False
    )
    assert isinstance(without, Claim) and "trigger_data_json" not in without.run
    assert without.run["flow_id"] and without.run["manifest_hash"]
    store.runs.complete(run_id, "plain", 1, status=StepStatus.Succeeded)
    engine.continue_run(run_id, store.runs.run_state(run_id))

    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    outputs = {s.step_key: json.loads(s.output_json or "null") for s in run.steps or []}
    assert outputs["uses"]["inputs"] == {"id": 7}
    assert outputs["reads"] == {"data": big}, "a handler still reads the trigger data, on demand"


BAD_DELAYS: dict[str, tuple[dict[str, Any], str]] = {
    "negative": ({"delay": -5}, "-5"),
    "centuries": ({"delay": 1e10}, "10000000000.0"),
    "nan": ({"delay": "nan", "as_float": True}, "nan"),
    "infinite": ({"delay": "inf", "as_float": True}, "inf"),
    "text": ({"delay": "soon"}, "'soon'"),
}


def test_a_pending_delay_out_of_bounds_fails_the_attempt_with_the_reason(space: Space) -> None:
    steps = {
        name: {"type": "PendingFor", "inputs": {**inputs, "key": f"{space.token}:{name}"}}
        for name, (inputs, _) in BAD_DELAYS.items()
    }
    steps["fine"] = {"type": "PendingFor", "inputs": {"delay": 0, "key": f"{space.token}:fine"}}
    by_key = _steps(_run(space, steps))
    for name, (_, shown) in BAD_DELAYS.items():
        step = by_key[name]
        assert step.status is StepStatus.Failed and step.attempt_count == 1, (name, step)
        message = step.error_message or ""
        assert message.startswith("ValueError: StepResult.pending: delay_seconds must be"), message
        assert message.endswith(f", not {shown}"), message
        assert space.redis.lrange(f"{space.token}:{name}", 0, -1) == [b"1"], name
    assert by_key["fine"].status is StepStatus.Succeeded and by_key["fine"].attempt_count == 2
