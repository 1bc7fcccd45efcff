"""The JobRunner on RQ: Hangfire state names for RQ's statuses, delayed jobs, delete and requeue."""

from __future__ import annotations

from datetime import timedelta

from flowjobs.runtime.base import JobCall, JobState
from flowjobs.runtime.rq import RQJobRunner
from tests.conftest import Space


def _call(space: Space, name: str, func: str = "flowjobs.clock.utcnow") -> JobCall:
    return JobCall(
        func=func,
        args=(),
        job_id=f"{space.token}-{name}",
        description=f"test {name}",
        meta={"run_id": "r", "step_key": name},
    )


def test_rq_runner_states_follow_the_job(space: Space) -> None:
    runner = RQJobRunner(space.redis, space.settings.queue, keep_seconds=3600)
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
        assert commands is not None and [c[0] for c in commands[0]] == [b"SADD", b"HSET", b"HSET", b"RPUSH"]
        assert runner.state(f"{space.token}-recorded") is JobState.Deleted, "recording sends nothing"
    finally:
        space.redis.delete(*[f"rq:job:{j}" for j in job_ids], *[f"rq:results:{j}" for j in job_ids])
