"""A step job is kept as RQ keeps jobs, though flowjobs' scripts write its start and its end (in
the claim and the completion): RQ's registries, statuses, results and worker counters."""

from __future__ import annotations

from rq import Queue
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from flowjobs import RunStatus
from tests.conftest import Space
from tests.integration.flows import flow, registry


def test_step_jobs_start_and_end_as_rq_records_them(space: Space) -> None:
    client = space.client(
        registry(
            flow(
                "kept",
                {
                    "look": {"type": "OwnJob"},
                    "fail": {"type": "Boom", "run_after": ["look"], "inputs": {"message": "no luck"}},
                },
            )
        )
    )
    handle = client.trigger("kept")
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed
    steps = {s.step_key: s for s in run.steps or []}
    queue = Queue(space.settings.queue, connection=space.redis, serializer=JSONSerializer)
    worker_name = f"{space.token}-inproc"

    look = Job.fetch(steps["look"].job_id or "", connection=space.redis, serializer=JSONSerializer)
    running = {"status": "started", "worker": worker_name, "started_registry": True, "started_at": True}
    assert look.return_value() == running, "the claim wrote the job's start before the handler ran"
    assert look.get_status() == "finished" and look.worker_name == worker_name
    assert look.started_at is not None and look.ended_at is not None and look.ended_at >= look.started_at
    result = look.latest_result()
    assert result is not None and result.type is Result.Type.SUCCESSFUL and result.worker_name == worker_name
    assert result.execution_id and result.execution_started_at and result.execution_ended_at
    assert look.id in queue.finished_job_registry.get_job_ids()
    keep = space.settings.rq_job_ttl_seconds
    assert 0 < space.redis.ttl(look.key) <= keep and 0 < space.redis.ttl(Result.get_key(look.id)) <= keep

    fail = Job.fetch(steps["fail"].job_id or "", connection=space.redis, serializer=JSONSerializer)
    assert fail.get_status() == "failed" and fail.id in queue.failed_job_registry.get_job_ids()
    failure = fail.latest_result()
    assert failure is not None and failure.type is Result.Type.FAILED
    assert "RuntimeError: no luck" in (failure.exc_string or "")
    assert fail.return_value() is None

    trigger = Job.fetch(run.background_job_id or "", connection=space.redis, serializer=JSONSerializer)
    assert trigger.get_status() == "finished" and trigger.worker_name == worker_name
    assert trigger.started_at is not None and trigger.id in queue.finished_job_registry.get_job_ids()

    assert queue.started_job_registry.get_job_ids() == []
    assert not space.redis.exists(f"rq:executions:{look.id}", f"rq:executions:{fail.id}")
    assert space.redis.llen(queue.intermediate_queue_key) == 0


def test_the_worker_hash_counts_the_step_jobs_and_their_working_time(space: Space) -> None:
    client = space.client(
        registry(flow("counted", {"a": {"type": "Noop"}, "b": {"type": "Boom", "run_after": ["a"]}}))
    )
    client.trigger("counted")
    space.drain()
    worker = space.redis.hgetall(f"rq:worker:{space.token}-inproc")
    # The trigger job and step a succeeded, step b failed; RQ keeps the hash a minute after death.
    assert worker[b"successful_job_count"] == b"2" and worker[b"failed_job_count"] == b"1"
    assert float(worker[b"total_working_time"]) > 0
    assert b"current_job" not in worker
