"""Control actions on real Redis and workers: cancel, re-run with lineage, retry of a failed step."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from flowjobs import FlowRunRecord, RunStatus, StepStatus
from flowjobs.core.errors import RunCancelled, RunNotActive, RunNotFound, StepNotRetryable
from flowjobs.core.job_calls import JobState
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry


def _steps(run: FlowRunRecord | None) -> dict[str, Any]:
    assert run is not None
    return {s.step_key: s for s in run.steps or []}


def _events(space: Space, run_id: object, kind: str) -> list[Any]:
    return [e for e in space.engine().store.history.events(str(run_id)) if e.type.value == kind]


def test_cancel_of_a_run_no_worker_started_closes_it_at_once(space: Space) -> None:
    client = space.client(registry(flow("idle", {"a": {"type": "Noop"}})))
    handle = client.trigger("idle")
    run = client.cancel(handle.run_id, "not needed")
    assert run.status is RunStatus.Cancelled and run.completed_at is not None
    assert run.cancel_requested and run.cancel_reason == "not needed"
    assert client.runner.state(handle.background_job_id) is JobState.Deleted  # cancelled in RQ
    space.drain()  # the trigger job, if it ran anyway, changes nothing
    assert client.get_run(handle.run_id).status is RunStatus.Cancelled  # type: ignore[union-attr]
    assert len(_events(space, handle.run_id, "run.completed")) == 1
    with pytest.raises(RunNotActive, match="Cancelled"):
        client.cancel(handle.run_id)
    with pytest.raises(RunNotFound):
        client.cancel("00000000-0000-4000-8000-000000000000")


def test_cancel_releases_a_parked_step(space: Space) -> None:
    steps = {
        "wait": {"type": "WaitForSignal", "inputs": {"signalName": "go", "timeoutSeconds": 600}},
        "after": {"type": "Noop", "run_after": ["wait"]},
    }
    client = space.client(registry(flow("parked", steps)))
    handle = client.trigger("parked")
    space.drain()
    assert space.engine().store.runs.step_fields(str(handle.run_id), "wait")["status"] == "Pending"
    run = client.cancel(handle.run_id)
    assert run.status is RunStatus.Cancelled
    wait = _steps(client.get_run_detail(handle.run_id))["wait"]
    assert wait.status is StepStatus.Skipped and wait.error_message == "Run was cancelled."
    assert "after" not in _steps(client.get_run_detail(handle.run_id))


def test_cancel_lets_the_running_step_finish_then_closes_once(space: Space) -> None:
    started = f"{space.token}:started"
    steps = {
        "slow": {"type": "AwaitCancel", "inputs": {"started": started}},
        "next": {"type": "Noop", "run_after": ["slow"]},
        "side": {"type": "Noop", "run_after": ["slow"]},
    }
    client = space.client(registry(flow("running", steps)))
    space.start_worker("solo")
    handle = client.trigger("running")
    wait_until(lambda: space.redis.get(started), timeout=30, what="the step to start")

    run = client.cancel(handle.run_id, "operator")
    assert run.status is RunStatus.Running and run.cancel_requested  # the running step finishes first
    final = handle.wait(timeout=30)
    assert final.status is RunStatus.Cancelled
    steps_after = _steps(client.get_run_detail(handle.run_id))
    assert json.loads(steps_after["slow"].output_json or "{}") == {"saw_cancel": True}
    assert steps_after["slow"].status is StepStatus.Succeeded
    for key in ("next", "side"):
        assert steps_after[key].status is StepStatus.Skipped
        assert steps_after[key].error_message == "Run was cancelled."
    assert len(_events(space, handle.run_id, "run.completed")) == 1
    assert [e.message for e in _events(space, handle.run_id, "run.cancel_requested")] == ["operator"]


def _flaky(space: Space) -> dict[str, Any]:
    """A step that fails on its first attempt and succeeds on its second."""
    return {"type": "Flaky", "inputs": {"key": f"{space.token}:flaky", "succeed_on": 2}}


def test_retry_of_a_failed_step_replans_its_skipped_descendants_and_closes_again(space: Space) -> None:
    steps = {
        "a": _flaky(space),
        "b": {"type": "Noop", "run_after": ["a"]},
        "c": {"type": "Noop", "run_after": ["b"]},
    }
    client = space.client(registry(flow("retryable", steps)))
    handle = client.trigger("retryable")
    space.drain()
    first = client.get_run_detail(handle.run_id)
    assert first is not None and first.status is RunStatus.Failed and first.completed_at is not None
    assert _steps(first)["b"].status is StepStatus.Skipped

    retried = client.retry_step(handle.run_id, "a")
    assert (retried.run_id, retried.attempt) == (handle.run_id, 2)
    assert retried.job_id == client.store.runs.step_fields(str(handle.run_id), "a")["job_id"]
    reopened = client.get_run(handle.run_id)
    assert reopened is not None and reopened.status is RunStatus.Running and reopened.completed_at is None
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    assert run.completed_at is not None and run.completed_at > first.completed_at
    steps_after = _steps(run)
    assert [(x.attempt, x.status) for x in steps_after["a"].attempts or []] == [
        (1, StepStatus.Failed),
        (2, StepStatus.Succeeded),
    ]
    assert steps_after["b"].status is StepStatus.Succeeded and steps_after["c"].status is StepStatus.Succeeded
    closes = _events(space, handle.run_id, "run.completed")
    assert [e.message for e in closes] == ["Failed", "Succeeded"]
    assert [e.message for e in _events(space, handle.run_id, "step.retried")] == [
        "retry requested: attempt 2"
    ]
    with pytest.raises(StepNotRetryable, match="only a Failed step"):
        client.retry_step(handle.run_id, "a")


def test_two_concurrent_retries_of_one_step_have_one_winner(space: Space) -> None:
    client = space.client(registry(flow("race", {"a": _flaky(space)})))
    handle = client.trigger("race")
    space.drain()
    assert client.get_run(handle.run_id).status is RunStatus.Failed  # type: ignore[union-attr]
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def retry() -> None:
        barrier.wait()
        try:
            client.retry_step(handle.run_id, "a")
            outcomes.append("won")
        except StepNotRetryable:
            outcomes.append("lost")

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    assert [x.attempt for x in _steps(run)["a"].attempts or []] == [1, 2]


def test_retry_on_a_cancelled_run_needs_its_cancel_cleared(space: Space) -> None:
    steps = {"a": _flaky(space), "wait": {"type": "WaitForSignal", "inputs": {"signalName": "never"}}}
    client = space.client(registry(flow("cancelled", steps)))
    handle = client.trigger("cancelled")
    space.drain()
    client.cancel(handle.run_id)
    assert client.get_run(handle.run_id).status is RunStatus.Cancelled  # type: ignore[union-attr]
    with pytest.raises(RunCancelled, match="clear_cancel"):
        client.retry_step(handle.run_id, "a")
    client.retry_step(handle.run_id, "a", clear_cancel=True)
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and not run.cancel_requested
    assert _steps(run)["a"].status is StepStatus.Succeeded


def test_rerun_keeps_data_and_headers_drops_the_idempotency_key_and_records_lineage(space: Space) -> None:
    client = space.client(
        registry(flow("echo", {"e": {"type": "Echo", "inputs": {"v": "@triggerBody()?.v"}}}))
    )
    first = client.trigger("echo", data={"v": 1}, headers={"X-Tenant": "acme"}, idempotency_key="k1")
    second = client.rerun(first.run_id)
    third = client.rerun(second.run_id)
    assert len({first.run_id, second.run_id, third.run_id}) == 3
    space.drain()
    rerun = client.get_run_detail(second.run_id)
    assert rerun is not None and rerun.status is RunStatus.Succeeded
    assert rerun.source_run_id == first.run_id and rerun.trigger_headers == {"X-Tenant": "acme"}
    assert json.loads(_steps(rerun)["e"].output_json or "{}")["inputs"] == {"v": 1}
    assert rerun.idempotency_key is None

    lineage = client.lineage(second.run_id)
    assert [r.id for r in lineage.ancestors] == [first.run_id]
    assert [r.id for r in lineage.descendants] == [third.run_id]
    assert [r.id for r in client.lineage(first.run_id).descendants] == [second.run_id, third.run_id]
    assert [r.id for r in client.lineage(third.run_id).ancestors] == [second.run_id, first.run_id]
    assert [e.message for e in _events(space, first.run_id, "run.rerun")] == [f"re-run as {second.run_id}"]


def test_cli_control_actions(space: Space) -> None:
    client = space.client(registry(flow("cli-control", {"a": _flaky(space)})))
    handle = client.trigger("cli-control")
    space.drain()

    retried = space.cli("runs", "retry-step", str(handle.run_id), "a", "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["attempt"] == 2
    again = space.cli("runs", "retry-step", str(handle.run_id), "a")
    assert again.returncode == 2 and "only a Failed step" in again.stderr
    space.drain()

    lineage = space.cli("runs", "lineage", str(handle.run_id), "--json")
    assert lineage.returncode == 0 and json.loads(lineage.stdout)["descendants"] == []

    idle = client.trigger("cli-control")
    cancelled = space.cli("runs", "cancel", str(idle.run_id), "--reason", "cli", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "Cancelled"
    finished = space.cli("runs", "cancel", str(idle.run_id))
    assert finished.returncode == 2 and "only a Pending or Running run can be cancelled" in finished.stderr


def test_a_run_whose_flow_was_disabled_before_its_trigger_job_ran_is_cancelled(space: Space) -> None:
    client = space.client(registry(flow("gated", {"a": {"type": "Noop"}})))
    handle = client.trigger("gated")
    client.set_flow_enabled("gated", False)
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Cancelled and run.steps == []
    assert run.cancel_reason == "The flow was disabled before the run started."
    client.set_flow_enabled("gated", True)
    again = client.trigger("gated")
    space.drain()
    assert client.get_run(again.run_id).status is RunStatus.Succeeded  # type: ignore[union-attr]


def test_retry_of_a_step_races_a_rerun_of_its_run_and_both_stand(space: Space) -> None:
    client = space.client(registry(flow("both", {"a": _flaky(space)})))
    handle = client.trigger("both")
    space.drain()
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def retry() -> None:
        barrier.wait()
        results["retry"] = client.retry_step(handle.run_id, "a")

    def rerun() -> None:
        barrier.wait()
        results["rerun"] = client.rerun(handle.run_id)

    threads = [threading.Thread(target=retry), threading.Thread(target=rerun)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    space.drain()
    original = client.get_run_detail(handle.run_id)
    assert original is not None and original.status is RunStatus.Succeeded
    assert [x.attempt for x in _steps(original)["a"].attempts or []] == [1, 2]
    derived = client.lineage(handle.run_id).descendants
    assert len(derived) == 1 and derived[0].source_run_id == handle.run_id
    assert client.get_run(derived[0].id).status.is_terminal  # type: ignore[union-attr]


def test_validate_and_signal_speak_json(space: Space, tmp_path: Any) -> None:
    valid = space.cli("flows", "validate", "--json")
    assert valid.returncode == 0 and json.loads(valid.stdout)["valid"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: 6f1c2a9e-0000-4000-8000-00000000abcd\nname: bad\nsteps: {}\n")
    invalid = space.cli("flows", "validate", str(bad), "--json")
    assert invalid.returncode == 2 and json.loads(invalid.stdout)["valid"] is False
    client = space.client(
        registry(flow("sig", {"w": {"type": "WaitForSignal", "inputs": {"signalName": "go"}}}))
    )
    handle = client.trigger("sig")
    space.drain()
    sent = space.cli("runs", "signal", str(handle.run_id), "go", "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"runId": str(handle.run_id), "signal": "go", "delivery": "resumed"}
