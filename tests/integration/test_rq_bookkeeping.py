"""A step job is kept as RQ keeps jobs, though flowjobs' scripts write its start and its end (in
the claim and the completion): RQ's registries, statuses, results and worker counters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from flowjobs import RunStatus, StepStatus
from flowjobs.core.job_calls import JobCall, JobState
from flowjobs.jobs import install_engine
from flowjobs.recovery import recover
from flowjobs.runtime import rq as rq_runtime
from flowjobs.runtime.rq import FlowJob
from flowjobs.worker import build_worker
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry
from tests.polling import poll


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
    running = {
        "status": "started",
        "worker": worker_name,
        "started_registry": True,
        "started_at": True,
        "expires": False,
        "executions_expire": False,
        "worker_outlives_heartbeat": True,
        "worker_busy_with_it": True,
    }
    assert look.return_value() == running, "the claim wrote the job's start before the handler ran"
    assert look.get_status() == "finished" and look.worker_name == worker_name
    assert look.started_at is not None and look.ended_at is not None and look.ended_at >= look.started_at
    loaded = FlowJob.fetch(look.id, connection=space.redis, serializer=JSONSerializer)  # as workers load it
    times = ("created_at", "enqueued_at", "started_at", "ended_at", "last_heartbeat")
    assert [getattr(loaded, t) for t in times] == [getattr(look, t) for t in times]
    assert loaded.serializer is JSONSerializer and loaded.meta == look.meta
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
    assert trigger.ended_at is not None and trigger.ended_at >= trigger.started_at
    assert trigger.return_value() == "Running"
    ended = trigger.latest_result()
    assert ended is not None and ended.type is Result.Type.SUCCESSFUL and ended.worker_name == worker_name
    assert 0 < space.redis.ttl(trigger.key) <= keep

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


def _queued_step_job(space: Space) -> tuple[Queue, str]:
    """Run the trigger job of the one run triggered in ``space``: its queue and its one queued step job."""
    install_engine(space.engine())
    try:
        worker = build_worker(space.redis, space.settings.queue, simple=True, name=f"{space.token}-inproc")
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING", max_jobs=1)  # the trigger
    finally:
        install_engine(None)
    queue = Queue(space.settings.queue, connection=space.redis, serializer=JSONSerializer)
    (step_job_id,) = queue.get_job_ids()
    return queue, step_job_id


def _fail_as_rq_does(space: Space, queue: Queue, job_id: str) -> Job:
    """Take a queued job out of its queue into the failed registry with a failure TTL, as RQ fails one."""
    job = Job.fetch(job_id, connection=space.redis, serializer=JSONSerializer)
    queue.remove(job)
    job.set_status(JobStatus.FAILED)
    queue.failed_job_registry.add(job, ttl=3600, exc_string="lost with its worker")
    return job


def test_a_requeued_step_job_whose_hash_expires_runs_without_the_expiry(space: Space) -> None:
    # RQ fails a job it could not run (its maintenance fails one a dead worker had dequeued) with
    # the failure TTL on its hash, which a requeue keeps: the job's start clears it (RQ's
    # Job.perform does), or the hash would expire under the running job.
    client = space.client(registry(flow("requeued", {"look": {"type": "OwnJob"}})))
    handle = client.trigger("requeued")
    queue, step_job_id = _queued_step_job(space)
    job = _fail_as_rq_does(space, queue, step_job_id)
    assert 0 < space.redis.ttl(job.key) <= 3600
    queue.failed_job_registry.requeue(step_job_id)
    assert 0 < space.redis.ttl(job.key) <= 3600, "RQ's requeue keeps the failure's expiry"
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    look = Job.fetch(step_job_id, connection=space.redis, serializer=JSONSerializer)
    seen = look.return_value()
    assert isinstance(seen, dict) and seen["expires"] is False
    assert look.get_status() == "finished"
    assert 0 < space.redis.ttl(look.key) <= space.settings.rq_job_ttl_seconds


def test_a_step_job_claimed_long_after_its_dequeue_runs_without_an_expiry(
    space: Space, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RQ's maintenance fails a dequeued job left unstarted for a minute, setting the failure's
    # expiry on its hash, and its worker may still claim it: a claim that long after the dequeue
    # clears the expiry (the wait is shortened to none here; the expiry is set as that failure's).
    monkeypatch.setattr(rq_runtime, "_UNSTARTED_SECONDS", 0.0)
    client = space.client(registry(flow("stalled", {"look": {"type": "OwnJob"}})))
    handle = client.trigger("stalled")
    _, step_job_id = _queued_step_job(space)
    space.redis.expire(Job.key_for(step_job_id), 3600)
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    seen = Job.fetch(step_job_id, connection=space.redis, serializer=JSONSerializer).return_value()
    assert isinstance(seen, dict) and seen["expires"] is False


def test_a_step_job_queued_again_by_recovery_runs_without_its_earlier_expiry(space: Space) -> None:
    # Recovery queues a dispatched step's job again under its id when RQ failed it unrun: the new
    # hash is written over the failed one, whose expiry it clears.
    client = space.client(registry(flow("recovered", {"look": {"type": "OwnJob"}})))
    handle = client.trigger("recovered")
    queue, step_job_id = _queued_step_job(space)
    job = _fail_as_rq_does(space, queue, step_job_id)
    assert recover(space.engine(), grace_seconds=0) == 1
    assert space.redis.ttl(job.key) == -1
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    seen = Job.fetch(step_job_id, connection=space.redis, serializer=JSONSerializer).return_value()
    assert isinstance(seen, dict) and seen["expires"] is False


def test_a_requeued_application_job_whose_hash_expires_runs_without_the_expiry(
    space: Space, tmp_path: Path
) -> None:
    # The same for a job that is no flow's: RQ's own start clears the expiry its failure set.
    runner = space.runner()
    job_id = runner.enqueue(
        JobCall(
            "tests.integration.app_jobs.expiry_after_failing",
            (str(tmp_path / "runs"),),
            f"{space.token}-expiring",
            "fails, then reports its expiry",
        )
    )
    space.drain()
    queue = Queue(space.settings.queue, connection=space.redis, serializer=JSONSerializer)
    assert job_id in queue.failed_job_registry.get_job_ids()
    assert space.redis.ttl(Job.key_for(job_id)) > 0
    queue.failed_job_registry.requeue(job_id)
    space.drain()
    job = Job.fetch(job_id, connection=space.redis, serializer=JSONSerializer)
    assert job.get_status() == "finished" and job.return_value() == -1


def test_a_waiting_worker_hash_holds_its_counts_and_is_idle(space: Space) -> None:
    # The counts of the jobs whose ends the scripts wrote are added with a heartbeat, at the latest
    # when the worker waits for work.
    client = space.client(
        registry(flow("tallied", {"a": {"type": "Noop"}, "b": {"type": "Boom", "run_after": ["a"]}}))
    )
    handle = client.trigger("tallied")
    space.start_worker("waiting", simple=True)
    key = f"rq:worker:{space.token}-waiting"

    def counted() -> bool:
        worker = space.redis.hgetall(key)
        return worker.get(b"successful_job_count") == b"2" and worker.get(b"failed_job_count") == b"1"

    wait_until(counted, timeout=30, what="the waiting worker's counts")
    run = client.get_run(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed
    worker = space.redis.hgetall(key)
    assert worker[b"state"] == b"idle" and b"current_job" not in worker
    assert float(worker[b"total_working_time"]) > 0 and b"death" not in worker


@pytest.mark.parametrize("simple", [True, False], ids=["simple", "forking"])
def test_a_running_step_shows_as_its_workers_current_job_within_a_second(space: Space, simple: bool) -> None:
    # A SimpleWorker's claim leaves the worker hash alone within a second of its last write of a
    # current job (it shows the previous one meanwhile); a job still running then is written.
    steps = {"a": {"type": "Noop"}, "b": {"type": "Sleep", "inputs": {"seconds": 4}, "run_after": ["a"]}}
    client = space.client(registry(flow("shown", steps)))
    space.start_worker("shown", simple=simple)
    handle = client.trigger("shown")

    def running_b() -> str | None:
        run = client.get_run_detail(handle.run_id)
        b = next((s for s in (run.steps if run else None) or [] if s.step_key == "b"), None)
        return b.job_id if b is not None and b.status is StepStatus.Running else None

    job_id = wait_until(running_b, timeout=30, what="step b to run")
    key = f"rq:worker:{space.token}-shown"
    started = time.monotonic()
    shown = poll(lambda: space.redis.hmget(key, "state", "current_job") == [b"busy", job_id.encode()], 3)
    assert shown, f"worker hash: {space.redis.hgetall(key)}"
    assert time.monotonic() - started < 1.5
    assert handle.wait(timeout=30).status is RunStatus.Succeeded


def test_a_job_continuing_a_trigger_job_runs_after_it(space: Space) -> None:
    # A trigger job's end is written in one script, unless jobs depend on it: RQ enqueues them.
    client = space.client(registry(flow("continued", {"a": {"type": "Noop"}})))
    handle = client.trigger("continued")
    run = client.get_run(handle.run_id)
    assert run is not None and run.background_job_id
    after = space.runner().continue_with(
        run.background_job_id,
        JobCall("tests.integration.app_jobs.add", (2, 3), f"{space.token}-after", "after the trigger"),
    )
    space.drain()
    assert space.runner().state(after) is JobState.Succeeded
    assert Job.fetch(after, connection=space.redis, serializer=JSONSerializer).return_value() == 5
    trigger = Job.fetch(run.background_job_id, connection=space.redis, serializer=JSONSerializer)
    assert trigger.get_status() == "finished" and trigger.return_value() == "Running"


def test_a_forking_worker_leaves_rqs_records_of_a_runs_jobs_and_of_itself(space: Space) -> None:
    # The trigger job runs in the worker's own process, each step in a work-horse whose completion
    # script writes the job's end and the worker idle; step b outlasts the parent's monitoring
    # interval (1 s here), so the parent wrote its working time meanwhile and must reset it.
    steps = {"a": {"type": "Noop"}, "b": {"type": "Sleep", "inputs": {"seconds": 1.5}, "run_after": ["a"]}}
    client = space.client(registry(flow("forked", steps)))
    space.start_worker("fork")
    handle = client.trigger("forked")
    assert handle.wait(timeout=60).status is RunStatus.Succeeded
    run = client.get_run_detail(handle.run_id)
    assert run is not None
    queue = Queue(space.settings.queue, connection=space.redis, serializer=JSONSerializer)
    worker_name = f"{space.token}-fork"
    job_ids = [run.background_job_id or "", *[step.job_id or "" for step in run.steps or []]]
    for job_id in job_ids:
        job = Job.fetch(job_id, connection=space.redis, serializer=JSONSerializer)
        assert job.get_status() == "finished" and job.worker_name == worker_name, job_id
        assert job.started_at is not None and job.ended_at is not None, job_id
        assert job.id in queue.finished_job_registry.get_job_ids()
    key = f"rq:worker:{worker_name}"
    counted = wait_until(
        lambda: (worker := space.redis.hgetall(key)).get(b"successful_job_count") == b"3" and worker,
        timeout=10,
        what="the worker hash to count 3 jobs",
    )
    assert counted[b"state"] == b"idle" and b"current_job" not in counted
    assert float(counted[b"current_job_working_time"]) == 0
    assert float(counted[b"total_working_time"]) >= 1.5
    assert queue.started_job_registry.get_job_ids() == []


def test_a_forking_workers_horses_take_over_one_connection(space: Space) -> None:
    # Each work-horse would otherwise connect (and handshake) anew: one connection per step.
    steps = {key: {"type": "EngineConnection"} for key in "abc"}
    for later, earlier in (("b", "a"), ("c", "b")):
        steps[later]["run_after"] = [earlier]
    client = space.client(registry(flow("connected", steps)))
    worker = space.start_worker("fork")
    handles = [client.trigger("connected") for _ in range(2)]
    outputs = []
    for handle in handles:
        assert handle.wait(timeout=60).status is RunStatus.Succeeded
        run = client.get_run_detail(handle.run_id)
        assert run is not None
        outputs += [json.loads(step.output_json or "{}") for step in run.steps or []]
    assert len({output["pid"] for output in outputs}) == 6, "a work-horse per step"
    assert len({output["client_id"] for output in outputs}) == 1, outputs
    # The worker goes on once a horse is done and reaps it after the next fork: at most the last
    # one is left to reap.
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    states = [Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] for pid in children]
    assert states.count("Z") <= 1, states
