"""Run history: paging and filters, idempotent triggers, pinned manifests, waiting, settings errors."""

from __future__ import annotations

import pytest

from flowjobs import FlowDefinition, RunStatus, StepStatus
from tests.conftest import Space
from tests.integration.flows import flow, registry


def test_list_runs_pages_newest_first_and_filters(space: Space) -> None:
    ok, bad = flow("ok", {"a": {"type": "Noop"}}), flow("bad", {"a": {"type": "Boom"}})
    client = space.client(registry(ok, bad))
    ids = [client.trigger("ok").run_id for _ in range(5)]
    failing = client.trigger("bad").run_id
    space.drain()

    first = client.list_runs(limit=4)
    assert [r.id for r in first] == [failing, *reversed(ids)][:4]
    second = client.list_runs(limit=4, before=first[-1].id)
    assert [r.id for r in second] == list(reversed(ids))[3:]
    assert client.list_runs(limit=4, before=second[-1].id) == []
    assert [r.id for r in client.list_runs(flow_id=ok.id, limit=10)] == list(reversed(ids))
    assert [r.id for r in client.list_runs(status=RunStatus.Failed)] == [failing]
    assert client.list_runs(flow_id=bad.id, status=RunStatus.Succeeded) == []
    assert client.find_run_by_job("no-such-job") is None
    assert client.get_run("00000000-0000-4000-8000-000000000000") is None


def test_idempotency_key_returns_the_first_run_and_writes_nothing(space: Space) -> None:
    client = space.client(registry(flow("once", {"a": {"type": "Noop"}})))
    first = client.trigger("once", data={"n": 1}, idempotency_key="order-42")
    keys_before = set(space.redis.scan_iter(match=f"{space.settings.key_prefix}*"))
    queued_before = space.redis.llen(f"rq:queue:{space.settings.queue}")
    again = client.trigger("once", data={"n": 2}, idempotency_key="order-42")
    by_header = client.trigger("once", headers={"Idempotency-Key": "order-42"})
    assert again.run_id == first.run_id == by_header.run_id
    assert set(space.redis.scan_iter(match=f"{space.settings.key_prefix}*")) == keys_before
    assert space.redis.llen(f"rq:queue:{space.settings.queue}") == queued_before
    other = client.trigger("once", idempotency_key="order-43")
    assert other.run_id != first.run_id
    space.drain()
    assert len(client.list_runs()) == 2


def test_a_run_is_planned_against_the_manifest_it_started_with(space: Space) -> None:
    v1 = flow("evolving", {"a": {"type": "Noop"}, "b": {"type": "Noop", "run_after": ["a"]}})
    client = space.client(registry(v1))
    old = client.trigger("evolving")
    # A deploy changes the flow (same id) before the old run's worker gets to it.
    v2 = FlowDefinition.model_validate(
        {
            "id": str(v1.id),
            "name": "evolving",
            "version": "2.0",
            "steps": {"a": {"type": "Noop"}, "c": {"type": "Noop", "run_after": ["a"]}},
        }
    )
    new = space.client(registry(v2)).trigger("evolving")
    space.drain()
    old_run, new_run = client.get_run_detail(old.run_id), client.get_run_detail(new.run_id)
    assert old_run is not None and new_run is not None
    assert {s.step_key for s in old_run.steps or []} == {"a", "b"}
    assert {s.step_key for s in new_run.steps or []} == {"a", "c"}
    assert (old_run.flow_version, new_run.flow_version) == ("1.0", "2.0")
    assert old_run.manifest_hash != new_run.manifest_hash
    assert all(s.status is StepStatus.Succeeded for s in (old_run.steps or []) + (new_run.steps or []))


def test_wait_raises_timeout_error_while_no_worker_runs(space: Space) -> None:
    handle = space.client(registry(flow("idle", {"a": {"type": "Noop"}}))).trigger("idle")
    with pytest.raises(TimeoutError, match="still Pending"):
        handle.wait(timeout=0.2)
    assert handle.status() is RunStatus.Pending


def test_an_invalid_setting_stops_the_process_naming_it(space: Space) -> None:
    done = space.cli(
        "flows", "list", env={"FLOWJOBS_CLAIM_LEASE_SECONDS": "soon", "FLOWJOBS_LOG_FORMAT": "xml"}
    )
    assert done.returncode == 2
    assert "FLOWJOBS_CLAIM_LEASE_SECONDS" in done.stderr and "FLOWJOBS_LOG_FORMAT" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_that_finishes_in_time_leaves_no_deadline_behind(space: Space) -> None:
    client = space.client(registry(flow("quick", {"a": {"type": "Noop"}})))
    handle = client.trigger("quick", data={"runTimeoutSeconds": 600})
    assert space.redis.zscore(space.keys.deadlines(), str(handle.run_id)) is not None
    space.drain()
    run = handle.wait(timeout=5)
    assert run.status is RunStatus.Succeeded and run.timeout_at is not None and run.timed_out_at is None
    assert space.redis.zscore(space.keys.deadlines(), str(handle.run_id)) is None
