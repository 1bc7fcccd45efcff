"""The JobRunner on RQ: Hangfire state names for RQ's statuses, delayed jobs, delete and requeue."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from rq.job import Job
from rq.serializers import JSONSerializer

from flowjobs.core.job_calls import JobCall, JobState
from flowjobs.runtime.inprocess import InProcessRunner
from tests.conftest import Space


def _call(
    space: Space, name: str, func: str = "flowjobs.core.clock.utcnow", timeout_seconds: float | None = None
) -> JobCall:
    return JobCall(
        func=func,
        args=(),
        job_id=f"{space.token}-{name}",
        description=f"test {name}",
        meta={"run_id": "r", "step_key": name},
        timeout_seconds=timeout_seconds,
    )


def test_rq_runner_states_follow_the_job(space: Space) -> None:
    runner = space.runner(rq_job_ttl_seconds=3600)
    job_ids: list[str] = []
    now = runner.enqueue(_call(space, "now"))
    later = runner.schedule(_call(space, "later"), timedelta(hours=1))
    child = runner.continue_with(now, _call(space, "child"))
    broken = runner.enqueue(_call(space, "broken", func="tests.handlers.no_such_function"))
    job_ids += [now, later, child, broken]
    try:
        assert runner.state(now) is JobState.Enqueued
        assert runner.state(later) is JobState.Scheduled
        assert runner.state(child) is JobState.Awaiting
        assert runner.state("never-enqueued") is JobState.Deleted
        space.drain()
        assert runner.state(now) is JobState.Succeeded
        assert runner.state(child) is JobState.Succeeded
        assert runner.state(broken) is JobState.Failed
        assert runner.state(later) is JobState.Scheduled, "a delayed job waits for RQ's scheduler"
        assert runner.requeue(broken) and runner.state(broken) is JobState.Enqueued
        assert runner.delete(later) and runner.state(later) is JobState.Deleted
        assert not runner.delete("never-enqueued") and not runner.requeue("never-enqueued")
        commands = runner.enqueue_commands([_call(space, "recorded")])
        assert commands is not None and [c[0] for c in commands[0]] == [b"SADD", b"HSET", b"RPUSH"]
        assert runner.state(f"{space.token}-recorded") is JobState.Deleted, "building sends nothing"
        retried = replace(_call(space, "retried"), retry_delays=(1,))
        commands = runner.enqueue_commands([retried])
        assert commands is not None and [c[0] for c in commands[0]] == [b"SADD", b"HSET", b"HSET", b"RPUSH"]
        assert runner.state(f"{space.token}-retried") is JobState.Deleted, "recording sends nothing"
    finally:
        space.redis.delete(*[f"rq:job:{j}" for j in job_ids], *[f"rq:results:{j}" for j in job_ids])


def test_built_enqueue_commands_queue_the_job_rq_would(space: Space) -> None:
    runner = space.runner(rq_job_ttl_seconds=3600, job_timeout_seconds=7)
    call = replace(_call(space, "built", timeout_seconds=2.5), args=("r", "s", 1, None), meta={"n": "é"})
    by_rq = runner.enqueue(replace(call, job_id=f"{space.token}-by-rq"))
    (commands,) = runner.enqueue_commands([call]) or [[]]
    try:
        with space.redis.pipeline(transaction=True) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()
        ours, theirs = (space.redis.hgetall(f"rq:job:{job_id}") for job_id in (call.job_id, by_rq))
        for stamp in (b"created_at", b"enqueued_at"):
            assert ours.pop(stamp) and theirs.pop(stamp)
        assert ours == theirs
        assert space.redis.lrange(runner.queue.key, 0, -1) == [by_rq.encode(), call.job_id.encode()]
        job = Job.fetch(call.job_id, connection=space.redis, serializer=JSONSerializer)
        assert (job.func_name, job.args, job.meta) == (call.func, ["r", "s", 1, None], {"n": "é"})
        assert job.timeout == 3
    finally:
        runner.queue.empty()
        space.redis.delete(f"rq:job:{call.job_id}", f"rq:job:{by_rq}")


def test_rq_job_timeouts_round_up_to_whole_seconds_on_every_path(space: Space) -> None:
    runner = space.runner(rq_job_ttl_seconds=3600, job_timeout_seconds=7)
    job_ids = [
        runner.enqueue(_call(space, "half", timeout_seconds=2.5)),
        runner.schedule(_call(space, "short", timeout_seconds=0.4), timedelta(hours=1)),
        runner.continue_with(f"{space.token}-half", _call(space, "child", timeout_seconds=2.2)),
        runner.enqueue(_call(space, "default")),
    ]
    try:
        jobs = [Job.fetch(job_id, connection=space.redis) for job_id in job_ids]
        assert [job.timeout for job in jobs] == [3, 1, 3, 7]
        assert all(job.result_ttl == job.failure_ttl == 3600 for job in jobs)
    finally:
        space.redis.delete(*[f"rq:job:{j}" for j in job_ids])


def test_states_reads_many_jobs_in_one_round_trip(space: Space) -> None:
    runner = space.runner(rq_job_ttl_seconds=3600)
    queued = runner.enqueue(_call(space, "queued"))
    later = runner.schedule(_call(space, "later"), timedelta(hours=1))
    try:
        with space.redis.pipeline(transaction=False) as pipe:
            pipe.hset(f"rq:job:{space.token}-odd", "status", "a-status-rq-may-add")
            pipe.execute()
        odd, missing = f"{space.token}-odd", f"{space.token}-missing"
        assert runner.states([queued, later, odd, missing]) == {
            queued: JobState.Enqueued,
            later: JobState.Scheduled,
            odd: JobState.Deleted,
            missing: JobState.Deleted,
        }
        assert runner.states([]) == {}
    finally:
        space.redis.delete(*[f"rq:job:{space.token}-{n}" for n in ("queued", "later", "odd")])

    inprocess = InProcessRunner()
    known = inprocess.enqueue(_call(space, "known"))
    assert inprocess.states([known, "unknown"]) == {known: JobState.Enqueued, "unknown": JobState.Deleted}
