"""Run history: paging and filters, idempotent triggers, pinned manifests, waiting, settings errors."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from redis.client import PubSub

from flowjobs import FlowDefinition, RunStatus, StepStatus
from flowjobs.core.job_calls import trigger_job_id
from flowjobs.store.base import LISTENER_VIEW_SECONDS, LISTENERS_SETTLE_SECONDS, LISTENERS_TTL_SECONDS
from flowjobs.store.codec import LISTENED_FIELD
from tests.conftest import Space, wait_until
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
    assert client.find_run_by_job(trigger_job_id("00000000-0000-4000-8000-000000000000")) is None
    assert client.get_run("00000000-0000-4000-8000-000000000000") is None


def test_flow_and_status_filters_read_an_index_that_follows_every_status_move(space: Space) -> None:
    ok, bad = flow("ok", {"a": {"type": "Noop"}}), flow("bad", {"a": {"type": "Boom"}})
    client = space.client(registry(ok, bad))
    bad_ids = [client.trigger("bad").run_id for _ in range(3)]
    ok_ids = [client.trigger("ok").run_id for _ in range(2)]
    pending = space.keys.flow_status_runs(ok.id, RunStatus.Pending.value)
    assert set(space.redis.zrange(pending, 0, -1)) == {str(i).encode() for i in ok_ids}
    space.drain()
    waiting = client.trigger("ok").run_id
    timed_out = client.trigger("ok").run_id
    assert client.store.runs.end_run(timed_out, RunStatus.TimedOut, "deadline") is RunStatus.TimedOut

    def listed(flow_id: UUID, status: RunStatus, limit: int = 50, before: UUID | None = None) -> list[UUID]:
        return [r.id for r in client.list_runs(flow_id=flow_id, status=status, limit=limit, before=before)]

    assert listed(bad.id, RunStatus.Failed) == list(reversed(bad_ids))
    assert listed(bad.id, RunStatus.Failed, limit=2, before=bad_ids[2]) == [bad_ids[1], bad_ids[0]]
    assert listed(ok.id, RunStatus.Succeeded) == list(reversed(ok_ids))
    assert listed(ok.id, RunStatus.Pending) == [waiting]
    assert listed(ok.id, RunStatus.TimedOut) == [timed_out]
    assert listed(ok.id, RunStatus.Running) == [] and listed(bad.id, RunStatus.Succeeded) == []
    assert listed(ok.id, RunStatus.Failed, limit=0) == []
    assert space.redis.zrange(pending, 0, -1) == [str(waiting).encode()]


def test_list_runs_takes_the_same_round_trips_however_many_runs_the_index_skips(
    space: Space, round_trips: list[str]
) -> None:
    rare, common = flow("rare", {"a": {"type": "Noop"}}), flow("common", {"a": {"type": "Noop"}})
    client = space.client(registry(rare, common))
    first = client.trigger("rare").run_id
    for _ in range(120):  # more than two pages of Pending runs of another flow after `first`
        client.trigger("common")
    trips = round_trips
    trips.clear()
    runs = client.list_runs(flow_id=rare.id, status=RunStatus.Pending, limit=50)
    assert [r.id for r in runs] == [first]
    assert len(trips) == 2, trips  # the page of ids, then its hashes
    trips.clear()
    assert client.list_runs(flow_id=rare.id, status=RunStatus.Pending, before=first) == []
    assert len(trips) == 3, trips  # plus the `before` run's score


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


def _published(space: Space, pubsub: PubSub) -> list[str]:
    """What the events channel carried so far: read up to a marker published now (a channel's
    messages arrive in order), so nothing still on its way is missed."""
    marker = f"marker-{uuid4()}"
    space.redis.publish(space.keys.events_channel(), marker)
    seen: list[str] = []

    def at_marker() -> bool:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            seen.append(message["data"].decode())
        return bool(seen) and seen[-1] == marker

    wait_until(at_marker, timeout=10, what="the marker")
    return seen[:-1]


def _subscribed(space: Space) -> PubSub:
    pubsub = space.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(space.keys.events_channel())
    return pubsub


def test_with_no_live_view_a_workers_events_are_recorded_and_not_published(space: Space) -> None:
    client = space.client(registry(flow("unheard", {"a": {"type": "Noop"}, "b": {"type": "Noop"}})))
    pubsub = _subscribed(space)  # a subscriber that does not say it listens (keep_listening)
    handle = client.trigger("unheard")
    space.drain()
    assert handle.wait(timeout=5).status is RunStatus.Succeeded
    assert _published(space, pubsub) == []
    pubsub.close()
    kinds = [e.type.value for e in client.queries.events(handle.run_id)]
    assert kinds[0] == "run.started" and kinds.count("step.completed") == 2 and kinds[-1] == "run.completed"
    assert space.redis.hget(space.keys.run_steps(handle.run_id), LISTENED_FIELD) is None


def test_a_live_view_that_starts_listening_mid_run_hears_the_rest_of_it(space: Space) -> None:
    steps = {
        "w": {"type": "WaitForSignal", "inputs": {"signalName": "go"}},
        "a": {"type": "Noop", "run_after": {"w": ["Succeeded"]}},
    }
    client = space.client(registry(flow("joined", steps)))
    handle = client.trigger("joined")
    space.drain()  # started unheard: parked on its signal
    pubsub = _subscribed(space)
    client.queries.keep_listening()
    client.signal(handle.run_id, "go")
    space.drain()  # the worker reads the marker before it takes a job
    assert handle.wait(timeout=5).status is RunStatus.Succeeded
    heard = _published(space, pubsub)
    pubsub.close()
    assert [tuple(m.split("|")[3:5]) for m in heard] == [
        ("step.started", "w"),
        ("step.completed", "w"),
        ("step.started", "a"),
        ("step.completed", "a"),
        ("run.completed", ""),
    ]
    # Heard through the worker's read of the marker: the run itself started unheard.
    assert space.redis.hget(space.keys.run_steps(handle.run_id), LISTENED_FIELD) is None


def test_a_new_listener_waits_until_no_worker_trusts_a_read_from_before_it(space: Space) -> None:
    """``keep_listening`` answers how long workers may still keep quiet: a worker trusts its read
    of the marker a while, so the first listener waits ``LISTENERS_SETTLE_SECONDS`` (in the
    server's clock); one that joins a marker set long ago, not at all; a refresh keeps when it was
    first set; a marker whose value is no time (as older processes set it) means the full wait."""
    queries = space.client(registry(flow("quiet", {"a": {"type": "Noop"}}))).queries
    key = space.keys.listeners()
    first = queries.keep_listening()
    assert LISTENERS_SETTLE_SECONDS - 0.5 < first <= LISTENERS_SETTLE_SECONDS
    assert LISTENER_VIEW_SECONDS < LISTENERS_SETTLE_SECONDS
    since = space.redis.get(key)
    assert queries.keep_listening() <= first and space.redis.get(key) == since
    seconds, micros = space.redis.time()
    space.redis.set(key, seconds * 1000 + micros // 1000 - 60_000, ex=5)  # first set a minute ago
    assert queries.keep_listening() == 0
    assert 5 < space.redis.ttl(key) <= LISTENERS_TTL_SECONDS
    space.redis.set(key, "1", ex=5)
    assert queries.keep_listening() == LISTENERS_SETTLE_SECONDS
    assert space.redis.get(key) == b"1" and space.redis.ttl(key) > 5


def test_every_event_is_published_for_live_views(space: Space) -> None:
    client = space.client(registry(flow("live", {"a": {"type": "Noop"}})))
    pubsub = space.redis.pubsub()
    pubsub.subscribe(space.keys.events_channel())
    wait_until(lambda: pubsub.get_message(timeout=0.1), what="the subscription")
    client.queries.keep_listening()  # the subscriber says it listens (README, "Flows UI")
    handle = client.trigger("live")
    space.drain()
    seen: list[str] = []

    def drained() -> bool:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            seen.append(message["data"].decode())
        return any("|run.completed|" in m for m in seen)

    wait_until(drained, timeout=10, what="the run.completed event")
    pubsub.close()
    assert all(m.startswith(f"{handle.run_id}|") for m in seen)
    kinds = [m.split("|")[3] for m in seen]
    assert kinds[0] == "run.started" and "step.completed" in kinds and kinds[-1] == "run.completed"
    # Started while a live view listened: every event of the run is published, whatever a worker read.
    assert space.redis.hget(space.keys.run_steps(handle.run_id), LISTENED_FIELD) == b"1"
