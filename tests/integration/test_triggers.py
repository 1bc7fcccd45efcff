"""A trigger is one script (``create_run.lua``): the run, its indexes and its trigger job are written
together or not at all, after the flow's enabled flag and the caller's ``Admission``; the same
prepared run commits over a blocking or an asyncio connection. Real Redis, real RQ jobs."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis as AsyncRedis
from rq.job import Job
from rq.serializers import JSONSerializer

from flowjobs import RunStatus
from flowjobs.client import FlowClient, RunHandle
from flowjobs.core.errors import FlowDisabled, TriggerNotAdmitted
from flowjobs.store import Admission, AsyncRunWrites, TokenBucket
from tests.conftest import Space
from tests.integration.flows import flow, registry

STEPS = {"a": {"type": "Noop"}}


def _client(space: Space) -> FlowClient:
    return space.client(registry(flow("gated", STEPS)))


def _written(space: Space) -> tuple[set[bytes], int]:
    """Every key under the test's prefix, and the length of its RQ queue."""
    keys = set(space.redis.scan_iter(match=f"{space.settings.key_prefix}*"))
    return keys, space.redis.llen(f"rq:queue:{space.settings.queue}")


def test_a_trigger_is_one_round_trip_once_its_flow_is_saved(space: Space, round_trips: list[str]) -> None:
    client = _client(space)
    client.trigger("gated")
    round_trips.clear()
    handle = client.trigger("gated", data={"n": 1})
    assert round_trips == ["EVALSHA"]
    job = space.redis.hgetall(f"rq:job:{handle.background_job_id}")
    assert job[b"status"] == b"queued"
    assert handle.background_job_id.encode() in space.redis.lrange(f"rq:queue:{space.settings.queue}", 0, -1)
    space.drain()
    assert handle.record().status is RunStatus.Succeeded


def test_a_refused_admission_writes_nothing(space: Space) -> None:
    client = _client(space)
    prefix = space.settings.key_prefix
    bucket = Admission(bucket=TokenBucket(f"{prefix}test:bucket", per_second=0.001, burst=1))
    once = Admission(once_key=f"{prefix}test:once", once_seconds=60)
    client.trigger("gated", admission=bucket)  # takes the bucket's only token
    client.trigger("gated", admission=once)  # sets the key
    before = _written(space)
    with pytest.raises(TriggerNotAdmitted) as limited:
        client.trigger("gated", admission=bucket)
    assert limited.value.reason == "rate_limited"
    assert limited.value.retry_after_ms is not None and limited.value.retry_after_ms > 1000
    with pytest.raises(TriggerNotAdmitted) as replayed:
        client.trigger("gated", data={"other": "data"}, admission=once)
    assert (replayed.value.reason, replayed.value.retry_after_ms) == ("replayed", None)
    assert _written(space) == before
    assert len(client.list_runs()) == 2


def test_a_disabled_flow_takes_no_token_and_remembers_no_key(space: Space) -> None:
    client = _client(space)
    prefix = space.settings.key_prefix
    admission = Admission(
        bucket=TokenBucket(f"{prefix}test:bucket", per_second=1, burst=5),
        once_key=f"{prefix}test:once",
        once_seconds=60,
    )
    client.set_flow_enabled("gated", False)
    before = _written(space)
    with pytest.raises(FlowDisabled):
        client.trigger("gated", admission=admission)
    assert _written(space) == before
    assert not space.redis.exists(f"{prefix}test:bucket", f"{prefix}test:once")
    client.set_flow_enabled("gated", True)
    assert client.trigger("gated", admission=admission).created
    assert space.redis.exists(f"{prefix}test:bucket", f"{prefix}test:once") == 2


def test_the_first_trigger_of_a_new_process_saves_its_flow_in_the_same_script(space: Space) -> None:
    client = _client(space)
    definition = client.flows.get("gated")
    flow_key = space.keys.flow(definition.id)
    assert not space.redis.exists(flow_key)
    handle = client.trigger("gated")
    assert space.redis.hget(flow_key, "manifest_hash") == handle.record().manifest_hash.encode()
    assert space.redis.exists(space.keys.manifest(handle.record().manifest_hash))
    assert str(definition.id).encode() in space.redis.smembers(space.keys.flows())


def test_a_run_committed_on_an_event_loop_is_the_run_a_blocking_commit_writes(space: Space) -> None:
    client = _client(space)

    async def commit() -> RunHandle:
        redis = AsyncRedis.from_url(space.settings.redis_url)
        try:
            prepared = client.prepare_trigger("gated", data={"n": 1}, headers={"X-Source": "test"})
            return await client.commit_trigger_async(prepared, AsyncRunWrites(redis))
        finally:
            await redis.aclose()

    on_loop = asyncio.run(commit())
    blocking = client.trigger("gated", data={"n": 1}, headers={"X-Source": "test"})
    varying = {"id", "background_job_id", "started_at", "timeout_at"}
    records = [handle.record().model_dump(exclude=varying) for handle in (on_loop, blocking)]
    assert records[0] == records[1]
    assert records[0]["trigger_headers"] == {"X-Source": "test"}
    space.drain()
    assert on_loop.record().status is RunStatus.Succeeded


def test_an_admission_that_redis_would_refuse_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="per_second > 0"):
        TokenBucket("bucket", per_second=0, burst=1)
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBucket("bucket", per_second=1, burst=0)
    with pytest.raises(ValueError, match="once_seconds >= 1"):
        Admission(once_key="seen")


def _started_count(space: Space, flow_label: str) -> int:
    series = space.engine().store.metrics.read_metrics().series
    return int(sum(s.value for s in series if s.family.name == "runs_started" and s.labels == (flow_label,)))


def test_a_trigger_job_carries_its_flow_and_one_queued_without_it_still_starts_its_run(space: Space) -> None:
    # The trigger job names its run's flow (id and name), so starting the run reads neither first; a
    # trigger job queued by a version before that (its run id alone) starts its run the same way.
    client = _client(space)
    definition = client.flows.get("gated")
    new, old = client.trigger("gated"), client.trigger("gated")
    job = Job.fetch(new.background_job_id, connection=space.redis, serializer=JSONSerializer)
    assert job.args == [str(new.run_id), str(definition.id), "gated"]
    queued_before = Job.fetch(old.background_job_id, connection=space.redis, serializer=JSONSerializer)
    queued_before.args = queued_before.args[:1]  # as run_trigger's jobs were queued before
    queued_before.save()
    space.drain()
    assert [h.record().status for h in (new, old)] == [RunStatus.Succeeded] * 2
    assert _started_count(space, "gated") == 2
