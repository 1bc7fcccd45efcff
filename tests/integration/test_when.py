"""When clauses and expressions on real workers: skipped steps carry their evaluation trace."""

from __future__ import annotations

import json

from flowjobs import RunStatus, StepStatus
from tests.conftest import Space
from tests.integration.flows import flow, registry


def test_when_false_skips_with_trace_and_propagates(space: Space) -> None:
    client = space.client(
        registry(
            flow(
                "gated",
                {
                    "quote": {"type": "Echo", "inputs": {"total": "@triggerBody()?.order.total"}},
                    "approve": {
                        "type": "Noop",
                        "run_after": {
                            "quote": {
                                "statuses": ["Succeeded"],
                                "when": "@steps('quote').output.inputs.total >= 1000",
                            }
                        },
                    },
                    "notify": {"type": "Noop", "run_after": ["approve"]},
                    "auto": {
                        "type": "Echo",
                        "run_after": {
                            "quote": {
                                "statuses": ["Succeeded"],
                                "when": "@steps('quote').output.inputs.total < 1000 && "
                                "@triggerHeaders()['x-channel'] == 'web'",
                            }
                        },
                        "inputs": {
                            "channel": "@triggerHeaders()['X-CHANNEL']",
                            "status": "@steps('quote').status",
                        },
                    },
                },
            )
        )
    )
    handle = client.trigger("gated", data={"order": {"total": 500}}, headers={"X-Channel": "web"})
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    steps = {s.step_key: s for s in run.steps or []}
    assert steps["approve"].status is StepStatus.Skipped
    trace = json.loads(steps["approve"].evaluation_trace_json or "{}")
    assert trace == {
        "expression": "@steps('quote').output.inputs.total >= 1000",
        "resolved": "500 >= 1000",
        "result": False,
    }
    assert "500 >= 1000" in (steps["approve"].error_message or "")
    assert steps["notify"].status is StepStatus.Skipped and steps["notify"].evaluation_trace_json is None
    assert steps["auto"].status is StepStatus.Succeeded
    assert json.loads(steps["auto"].output_json or "{}")["inputs"] == {
        "channel": "web",
        "status": "Succeeded",
    }


def test_when_evaluation_error_skips_the_step_with_the_error(space: Space) -> None:
    client = space.client(
        registry(
            flow(
                "typed",
                {
                    "a": {"type": "Echo", "inputs": {"n": "@triggerBody()?.n"}},
                    "b": {
                        "type": "Noop",
                        "run_after": {
                            "a": {"statuses": ["Succeeded"], "when": "@steps('a').output.inputs.n > 3"}
                        },
                    },
                },
            )
        )
    )
    handle = client.trigger("typed", data={"n": "five"})
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None
    b = next(s for s in run.steps or [] if s.step_key == "b")
    assert b.status is StepStatus.Skipped
    trace = json.loads(b.evaluation_trace_json or "{}")
    assert trace["result"] is False and trace["resolved"] == '"five" > 3' and trace["error"]
    # Every leaf on the success path was skipped: the run is Skipped.
    assert run.status is RunStatus.Skipped
