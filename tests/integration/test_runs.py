"""Runs on real RQ workers: the record a run leaves, fan-out/fan-in in parallel, failures and handlers."""

from __future__ import annotations

import json
from datetime import UTC

from rq.job import Job
from rq.serializers import JSONSerializer

from flowjobs import RunStatus, StepStatus
from flowjobs.core.planner import SKIP_REASON
from tests.conftest import Space
from tests.integration.flows import flow, registry


def test_linear_flow_fills_every_run_field_and_links_every_job(space: Space) -> None:
    definition = flow(
        "linear",
        {
            "first": {"type": "Echo", "inputs": {"orderId": "@triggerBody()?.orderId"}},
            "second": {
                "type": "Echo",
                "run_after": ["first"],
                "inputs": {"prev": "@steps('first').output.inputs"},
            },
            "third": {"type": "Echo", "run_after": ["second"], "inputs": {"literal": [1, 2]}},
        },
    )
    client = space.client(registry(definition))
    handle = client.trigger(
        "linear", data={"orderId": 7}, headers={"X-Trace": "abc", "Authorization": "Bearer secret"}
    )
    pending = client.get_run(handle.run_id)
    assert pending is not None and pending.status is RunStatus.Pending
    assert pending.background_job_id == handle.background_job_id

    space.drain()

    run = client.get_run_detail(handle.run_id)
    assert run is not None
    assert run.id == handle.run_id
    assert run.flow_id == definition.id
    assert run.flow_name == "linear"
    assert run.status is RunStatus.Succeeded
    assert run.trigger_key == "manual"
    assert json.loads(run.trigger_data_json or "null") == {"orderId": 7}
    assert run.trigger_headers == {"X-Trace": "abc"}
    assert run.started_at.tzinfo is not None and run.started_at.utcoffset() == UTC.utcoffset(None)
    assert run.completed_at is not None and run.completed_at >= run.started_at
    assert run.source_run_id is None
    assert run.flow_version == "1.0"
    assert run.manifest_hash == definition.manifest.content_hash()
    assert [s.step_key for s in run.steps or []] == ["first", "second", "third"]

    outputs = {s.step_key: json.loads(s.output_json or "null") for s in run.steps or []}
    assert outputs["first"]["inputs"] == {"orderId": 7}
    assert outputs["second"]["inputs"] == {"prev": {"orderId": 7}}
    assert outputs["third"]["inputs"] == {"literal": [1, 2]}

    trigger_job = Job.fetch(run.background_job_id or "", connection=space.redis, serializer=JSONSerializer)
    assert trigger_job.get_status() == "finished"
    assert trigger_job.meta["run_id"] == str(run.id)
    assert trigger_job.meta["flow_id"] == str(definition.id)
    assert trigger_job.meta["run_url"] == f"/flows/runs/{run.id}"
    found = client.find_run_by_job(trigger_job.id)
    assert found is not None and found.id == run.id

    for step in run.steps or []:
        assert step.status is StepStatus.Succeeded
        assert step.attempt_count == 1
        assert step.started_at is not None and step.completed_at is not None
        assert step.input_json is not None
        assert [a.attempt for a in step.attempts or []] == [1]
        assert (step.attempts or [])[0].job_id == step.job_id
        job = Job.fetch(step.job_id or "", connection=space.redis, serializer=JSONSerializer)
        assert job.meta == {
            "flow_id": str(definition.id),
            "run_id": str(run.id),
            "step_key": step.step_key,
            "attempt": 1,
            "run_url": f"/flows/runs/{run.id}",
        }
        assert job.description == f"flow=linear run={run.id} step={step.step_key} attempt=1"
        assert job.get_status() == "finished"
        back = client.find_run_by_job(job.id)
        assert back is not None and back.id == run.id
    # Each of these job ids names its run: none needs the reverse job index.
    assert space.redis.hlen(space.keys.jobs()) == 0

    listed = client.list_runs(flow_id=definition.id)
    assert [r.id for r in listed] == [run.id]
    assert listed[0].steps is None
    assert [e.type.value for e in space.engine().store.history.events(run.id)] == [
        "run.started",
        "step.started",
        "step.completed",
        "step.started",
        "step.completed",
        "step.started",
        "step.completed",
        "run.completed",
    ]


def test_diamond_runs_middle_steps_in_parallel_and_joins_once(space: Space) -> None:
    left, right, joined = (f"{space.token}:{name}" for name in ("left", "right", "joined"))
    definition = flow(
        "diamond",
        {
            "start": {"type": "Noop"},
            "left": {"type": "Barrier", "run_after": ["start"], "inputs": {"mine": left, "peer": right}},
            "right": {"type": "Barrier", "run_after": ["start"], "inputs": {"mine": right, "peer": left}},
            "join": {"type": "Record", "run_after": ["left", "right"], "inputs": {"key": joined}},
        },
    )
    client = space.client(registry(definition))
    space.start_worker("a")
    space.start_worker("b")
    run = client.trigger("diamond").wait(timeout=60)
    detail = client.get_run_detail(run.id)
    assert detail is not None and detail.status is RunStatus.Succeeded, detail
    pids = {s.step_key: json.loads(s.output_json or "{}").get("pid") for s in detail.steps or []}
    # Forking workers run each job in its own work-horse; the barrier only opens when both ran at once.
    assert pids["left"] != pids["right"]
    assert space.redis.llen(joined) == 1
    join = next(s for s in detail.steps or [] if s.step_key == "join")
    assert join.attempt_count == 1


def test_failed_step_skips_dependents_but_not_independent_branches(space: Space) -> None:
    definition = flow(
        "failing",
        {
            "a": {"type": "Noop"},
            "b": {"type": "Boom", "run_after": ["a"], "inputs": {"message": "card declined"}},
            "c": {"type": "Noop", "run_after": ["b"]},
            "d": {"type": "Noop", "run_after": ["c"]},
            "side": {"type": "Noop", "run_after": ["a"]},
        },
    )
    client = space.client(registry(definition))
    handle = client.trigger("failing")
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed
    steps = {s.step_key: s for s in run.steps or []}
    assert steps["b"].status is StepStatus.Failed
    assert steps["b"].error_message == "RuntimeError: card declined"
    for key in ("c", "d"):
        assert steps[key].status is StepStatus.Skipped
        assert steps[key].error_message == SKIP_REASON
        assert steps[key].job_id is None
    assert steps["side"].status is StepStatus.Succeeded


def test_error_handler_branch_that_succeeds_makes_the_run_succeed(space: Space) -> None:
    definition = flow(
        "handled",
        {
            "charge": {"type": "Refuse", "inputs": {"message": "insufficient funds"}},
            "ship": {"type": "Noop", "run_after": {"charge": ["Succeeded"]}},
            "refund": {"type": "Noop", "runAfter": {"charge": ["Failed"]}},
        },
    )
    client = space.client(registry(definition))
    handle = client.trigger("handled")
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    steps = {s.step_key: s for s in run.steps or []}
    assert steps["charge"].status is StepStatus.Failed
    assert steps["charge"].error_message == "insufficient funds"
    assert steps["ship"].status is StepStatus.Skipped
    assert steps["refund"].status is StepStatus.Succeeded
