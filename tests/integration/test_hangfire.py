"""``flowjobs.hangfire`` on RQ: jobs and recurring jobs as RQ and rq-dashboard show them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from flowjobs.core.clock import utcnow
from flowjobs.core.cron import latest_tick
from flowjobs.core.errors import InvalidCron, InvalidJobCall, JobNotFound, ScheduleNotFound
from flowjobs.core.job_calls import JobState
from flowjobs.core.registry import FlowRegistry
from flowjobs.hangfire import BackgroundJob, RecurringJob, automatic_retry, job_timeout, runner_from_settings
from flowjobs.runtime.inprocess import InProcessRunner
from flowjobs.schedules.firing import ScheduleFirer
from flowjobs.web.rq_dashboard import create_rq_dashboard
from tests.conftest import Space, wait_until
from tests.integration import app_jobs


@pytest.fixture
def jobs(space: Space) -> BackgroundJob:
    return BackgroundJob(runner_from_settings(space.settings, space.redis))


@pytest.fixture
def queue(space: Space) -> Iterator[Queue]:
    """The test's queue; afterwards, the RQ keys of every application job it saw (their ids carry
    no test token, so the space's own cleanup cannot find them)."""
    queue = Queue(space.settings.queue, connection=space.redis, serializer=JSONSerializer)
    yield queue
    registries = [
        queue.finished_job_registry,
        queue.failed_job_registry,
        queue.deferred_job_registry,
        queue.scheduled_job_registry,
        queue.started_job_registry,
        queue.canceled_job_registry,
    ]
    ids = set(queue.get_job_ids()).union(*(r.get_job_ids() for r in registries))
    for job_id in ids:
        space.redis.delete(Job.key_for(job_id), f"rq:results:{job_id}", Job.dependents_key_for(job_id))
    for registry in registries:
        space.redis.delete(registry.key)


@pytest.fixture
def dashboard(space: Space) -> FlaskClient:
    """rq-dashboard as ``flowjobs web`` mounts it at ``/rq`` (JSON serializer, its 0.9 defects
    replaced), in this process on the test's Redis."""
    return create_rq_dashboard(space.settings).test_client()


def result(space: Space, job_id: str) -> Any:
    return Job.fetch(job_id, connection=space.redis, serializer=JSONSerializer).return_value()


def test_enqueue_runs_a_function_by_path_with_json_arguments(
    space: Space, jobs: BackgroundJob, queue: Queue, dashboard: FlaskClient
) -> None:
    job_id = jobs.enqueue(app_jobs.add, 2, 3, times=2)
    by_path = jobs.enqueue("tests.integration.app_jobs.add", 1, 1)
    assert jobs.state(job_id) is JobState.Enqueued
    assert {job_id, by_path} <= set(queue.get_job_ids())
    shown = dashboard.get(f"/0/data/job/{job_id}.json")
    assert shown.status_code == 200 and shown.get_json()["id"] == job_id
    space.drain()
    assert jobs.state(job_id) is JobState.Succeeded
    assert (result(space, job_id), result(space, by_path)) == (10, 2)
    assert job_id in queue.finished_job_registry.get_job_ids()
    listed = dashboard.get(f"/0/data/jobs/{space.settings.queue}/finished/10/asc/1.json").get_json()
    assert job_id in {job["id"] for job in listed["jobs"]}


def test_continue_job_with_waits_for_the_parent(
    space: Space, jobs: BackgroundJob, queue: Queue, dashboard: FlaskClient
) -> None:
    parent = jobs.enqueue(app_jobs.add, 1, 2)
    child = jobs.continue_job_with(parent, app_jobs.add, 10, 20)
    assert jobs.state(child) is JobState.Awaiting
    assert child in queue.deferred_job_registry.get_job_ids()
    shown = dashboard.get(f"/0/data/job/{child}.json")
    assert shown.status_code == 200, shown.text
    assert shown.get_json()["depends_on"] == [parent]
    assert shown.get_json()["depends_on_status"] == ["active"]
    listed = dashboard.get(f"/0/data/jobs/{space.settings.queue}/deferred/10/asc/1.json").get_json()
    assert child in {job["id"] for job in listed["jobs"]}
    space.drain()
    assert jobs.state(child) is JobState.Succeeded and result(space, child) == 30
    assert dashboard.get(f"/0/data/job/{child}.json").get_json()["status"] == "finished"

    failing = jobs.enqueue(app_jobs.boom, "no")
    after = jobs.continue_job_with(failing, app_jobs.add, 1, 1)
    space.drain()
    assert jobs.state(failing) is JobState.Failed
    assert jobs.state(after) is JobState.Awaiting  # only after success, as ContinueJobWith


def test_schedule_delete_and_requeue(
    space: Space, jobs: BackgroundJob, queue: Queue, dashboard: FlaskClient
) -> None:
    later = jobs.schedule(app_jobs.add, timedelta(hours=1), 1, 2)
    at = jobs.schedule(app_jobs.add, utcnow() + timedelta(hours=2), 3, 4)
    assert jobs.state(later) is JobState.Scheduled
    assert {later, at} <= set(queue.scheduled_job_registry.get_job_ids())
    listed = dashboard.get(f"/0/data/jobs/{space.settings.queue}/scheduled/10/asc/1.json").get_json()
    assert {later, at} <= {job["id"] for job in listed["jobs"]}
    assert jobs.delete(later) and jobs.state(later) is JobState.Deleted
    assert later not in queue.scheduled_job_registry.get_job_ids()
    assert not jobs.delete(later)

    failed = jobs.enqueue(app_jobs.boom, "first time")
    space.drain()
    assert jobs.state(failed) is JobState.Failed and failed in queue.failed_job_registry.get_job_ids()
    assert jobs.requeue(failed) and jobs.state(failed) is JobState.Enqueued
    assert failed in queue.get_job_ids()


def test_jobs_a_worker_cannot_import_or_send_as_json_are_refused_at_enqueue(
    jobs: BackgroundJob, queue: Queue
) -> None:
    def local(x: int) -> int:
        return x

    with pytest.raises(InvalidJobCall, match="module-level"):
        jobs.enqueue(lambda: None)
    with pytest.raises(InvalidJobCall, match="module-level"):
        jobs.enqueue(local, 1)
    with pytest.raises(InvalidJobCall, match="not JSON"):
        jobs.enqueue(app_jobs.add, {1, 2}, 3)
    with pytest.raises(InvalidJobCall, match="not JSON"):
        jobs.enqueue(app_jobs.add, 1, float("nan"))
    with pytest.raises(InvalidJobCall, match="cannot be imported"):
        jobs.enqueue("tests.integration.app_jobs.missing")


def test_recurring_jobs_fire_once_per_tick_and_can_be_triggered_listed_and_removed(
    space: Space, queue: Queue, dashboard: FlaskClient
) -> None:
    runner = runner_from_settings(space.settings, space.redis)
    recurring = RecurringJob(runner)
    recurring.add_or_update("report", app_jobs.add, "*/5 * * * *", 1, 2, times=3)
    recurring.add_or_update("report", app_jobs.add, "*/5 * * * *", 2, 2)  # update
    with pytest.raises(InvalidCron):
        recurring.add_or_update("flow-x", app_jobs.add, "* * * * *", 1, 1)
    with pytest.raises(InvalidCron):
        recurring.add_or_update("bad", app_jobs.add, "every day", 1, 1)
    [info] = recurring.list()
    assert (info.id, info.cron, info.time_zone, info.paused) == ("report", "*/5 * * * *", "UTC", False)

    now_job = recurring.trigger("report")
    assert now_job in queue.get_job_ids()

    # Due now for its latest tick: two duty passes (two processes) enqueue one job.
    tick = latest_tick("*/5 * * * *", utcnow())
    runner.schedules.change("report", lambda s: s and s.model_copy(update={"next_fire_at": tick}))
    client = space.client(FlowRegistry())
    firers = [ScheduleFirer(client, grace_seconds=600) for _ in range(2)]
    assert sum(firer.fire_due() for firer in firers) == 1
    tick_job = f"report-{int(tick.timestamp())}"
    assert tick_job in queue.get_job_ids()
    assert recurring.list()[0].last_job_id == tick_job
    shown = dashboard.get(f"/0/data/job/{tick_job}.json")
    assert shown.status_code == 200
    space.drain()
    assert (result(space, now_job), result(space, tick_job)) == (4, 4)

    assert recurring.remove_if_exists("report") and not recurring.remove_if_exists("report")
    assert recurring.list() == []
    with pytest.raises(ScheduleNotFound):
        recurring.trigger("report")


def test_the_in_process_runner_keeps_recurring_jobs_too() -> None:
    runner = InProcessRunner()
    recurring = RecurringJob(runner)
    recurring.add_or_update("tick", app_jobs.add, "* * * * * *", 1, 1)
    [info] = recurring.list()
    assert info.next_execution is not None
    assert runner.fire_due_recurring(info.next_execution + timedelta(seconds=5)) == 1
    assert runner.fire_due_recurring(info.next_execution + timedelta(seconds=5)) == 0
    job = recurring.trigger("tick")
    assert runner.state(job) is JobState.Enqueued
    # The same service as on RQ: the tick's and the extra fire's ids and meta are RQ's.
    [after] = recurring.list()
    assert after.last_job_id is not None and re.fullmatch(r"tick-\d+", after.last_job_id)
    assert re.fullmatch(r"tick-now-[0-9a-f]{12}", job)
    assert runner._calls[job].meta["recurring_id"] == "tick"
    assert runner.run_until_idle() == 2
    assert recurring.remove_if_exists("tick") and recurring.list() == []


def retries(space: Space, job_id: str) -> tuple[int | None, list[int]]:
    job = Job.fetch(job_id, connection=space.redis, serializer=JSONSerializer)
    return job.retries_left, list(job.retry_intervals or [])


def test_failed_jobs_are_retried_as_hangfire_retries_them(
    space: Space, jobs: BackgroundJob, queue: Queue, tmp_path: Path
) -> None:
    # Undecorated: 10 retries with Hangfire's back-off; after the first failure it waits, Scheduled.
    unlucky = jobs.enqueue(app_jobs.unlucky, "first")
    space.drain()
    assert jobs.state(unlucky) is JobState.Scheduled
    left, delays = retries(space, unlucky)
    assert left == 9 and len(delays) == 10
    for n, delay in enumerate(delays, start=1):
        assert (n - 1) ** 4 + 15 <= delay <= (n - 1) ** 4 + 15 + 29 * n
    assert unlucky in queue.scheduled_job_registry.get_job_ids()

    # @automatic_retry(attempts=2, delays_in_seconds=[0]): two retries, then Failed.
    recovers = jobs.enqueue(app_jobs.flaky, str(tmp_path / "a"), 2)
    gives_up = jobs.enqueue(app_jobs.flaky, str(tmp_path / "b"), 5)
    space.drain()
    assert jobs.state(recovers) is JobState.Succeeded and result(space, recovers) == 3
    assert jobs.state(gives_up) is JobState.Failed and (tmp_path / "b").read_text() == "3"

    never = jobs.enqueue(app_jobs.boom, "once")
    space.drain()
    assert jobs.state(never) is JobState.Failed and retries(space, never) == (None, [])
    with pytest.raises(InvalidJobCall, match="attempts"):
        automatic_retry(attempts=-1)
    with pytest.raises(InvalidJobCall, match="delays"):
        automatic_retry(attempts=1, delays_in_seconds=[float("nan")])


def test_the_job_timeout_is_the_settings_default_or_the_functions_own(
    space: Space, jobs: BackgroundJob, queue: Queue
) -> None:
    def timeout(job_id: str) -> Any:
        return Job.fetch(job_id, connection=space.redis, serializer=JSONSerializer).timeout

    assert timeout(jobs.enqueue(app_jobs.add, 1, 1)) == space.settings.job_timeout_seconds == 180
    assert timeout(jobs.enqueue(app_jobs.long_job)) == 3600
    stopped = jobs.enqueue(app_jobs.sleepy, 30)
    space.drain()
    assert jobs.state(stopped) is JobState.Failed
    failed = Job.fetch(stopped, connection=space.redis, serializer=JSONSerializer)
    assert "JobTimeoutException" in (failed.latest_result().exc_string or "")  # type: ignore[union-attr]
    with pytest.raises(InvalidJobCall, match="timeout"):
        job_timeout(0)


def test_continuations_of_unknown_and_deleted_parents(
    space: Space, jobs: BackgroundJob, queue: Queue
) -> None:
    with pytest.raises(JobNotFound, match="hf-missing"):
        jobs.continue_job_with("hf-missing", app_jobs.add, 1, 1)
    assert queue.get_job_ids() == [] and queue.deferred_job_registry.get_job_ids() == []

    parent = jobs.schedule(app_jobs.add, timedelta(hours=1), 1, 2)
    child = jobs.continue_job_with(parent, app_jobs.add, 3, 4)
    grandchild = jobs.continue_job_with(child, app_jobs.add, 5, 6)
    assert jobs.delete(parent)
    for job_id in (child, grandchild):
        assert jobs.state(job_id) is JobState.Deleted
        job = Job.fetch(job_id, connection=space.redis, serializer=JSONSerializer)
        assert job.meta["deleted_reason"] == "Continuation condition was not met"
    # A continuation of a deleted continuation is deleted at once; of a deleted job, refused.
    late = jobs.continue_job_with(child, app_jobs.add, 7, 8)
    assert jobs.state(late) is JobState.Deleted
    with pytest.raises(JobNotFound):
        jobs.continue_job_with(parent, app_jobs.add, 1, 1)

    failing = jobs.enqueue(app_jobs.boom, "no")
    after = jobs.continue_job_with(failing, app_jobs.add, 1, 1)
    space.drain()
    assert jobs.state(after) is JobState.Awaiting
    assert jobs.delete(failing) and jobs.state(after) is JobState.Deleted
    space.drain()
    assert all(result(space, job_id) is None for job_id in (child, grandchild, late, after))


def test_a_job_deleted_while_processing_stays_deleted(
    space: Space, jobs: BackgroundJob, queue: Queue, tmp_path: Path
) -> None:
    space.start_worker("hf", simple=True)

    def raw_status(job_id: str) -> bytes | None:
        status: bytes | None = space.redis.hget(Job.key_for(job_id), "status")
        return status

    for fail, ended in ((False, b"finished"), (True, b"failed")):
        flag = tmp_path / f"flag-{fail}"
        job_id = jobs.enqueue(app_jobs.wait_for, str(flag), fail)
        child = jobs.continue_job_with(job_id, app_jobs.add, 1, 1)
        wait_until(lambda: jobs.state(job_id) is JobState.Processing, 30, "the job to start")  # noqa: B023
        assert jobs.delete(job_id) and jobs.state(job_id) is JobState.Deleted
        assert jobs.state(child) is JobState.Deleted
        flag.touch()
        wait_until(lambda: raw_status(job_id) == ended, 30, "the worker to end the job")  # noqa: B023
        assert jobs.state(job_id) is JobState.Deleted
        assert job_id not in queue.scheduled_job_registry.get_job_ids()  # a failure is not retried
        assert 0 < space.redis.ttl(Job.key_for(job_id)) <= space.settings.rq_job_ttl_seconds
        assert jobs.state(child) is JobState.Deleted and result(space, child) is None


def test_failed_jobs_are_kept_until_deleted_or_requeued(
    space: Space, jobs: BackgroundJob, queue: Queue
) -> None:
    failed = jobs.enqueue(app_jobs.boom, "kept")
    done = jobs.enqueue(app_jobs.add, 1, 1)
    space.drain()
    assert jobs.state(failed) is JobState.Failed
    assert space.redis.ttl(Job.key_for(failed)) == -1  # no expiry
    assert space.redis.zscore(queue.failed_job_registry.key, failed) == -1  # RQ: never cleaned up
    assert failed in queue.failed_job_registry.get_job_ids()
    assert 0 < space.redis.ttl(Job.key_for(done)) <= space.settings.rq_job_ttl_seconds
    assert jobs.delete(failed) and not space.redis.exists(Job.key_for(failed))


def test_the_in_process_runner_retries_and_refuses_unknown_parents() -> None:
    runner = InProcessRunner()
    jobs = BackgroundJob(runner)
    with pytest.raises(JobNotFound):
        jobs.continue_job_with("hf-missing", app_jobs.add, 1, 1)
    unlucky = jobs.enqueue(app_jobs.unlucky, "again")
    assert runner.run_until_idle(max_wait_seconds=0) == 1
    assert jobs.state(unlucky) is JobState.Scheduled


def test_the_class_form_enqueues_over_the_settings_runner_as_hangfire_static_methods_do(
    space: Space, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``BackgroundJob.enqueue(...)`` with no client built: the runner of the environment's settings."""
    from flowjobs import hangfire

    monkeypatch.setattr(hangfire, "_defaults", {})  # this test's environment, not an earlier one's
    for name, value in {
        "REDIS_URL": space.settings.redis_url,
        "FLOWJOBS_QUEUE": space.settings.queue,
        "FLOWJOBS_KEY_PREFIX": space.settings.key_prefix,
    }.items():
        monkeypatch.setenv(name, value)
    job_id = BackgroundJob.enqueue(app_jobs.add, 2, 3)
    later = BackgroundJob.schedule(app_jobs.add, timedelta(hours=1), 1, 1)
    assert job_id in queue.get_job_ids()
    assert BackgroundJob.state(later) is JobState.Scheduled
    assert BackgroundJob.delete(later)
    space.drain()
    assert BackgroundJob.state(job_id) is JobState.Succeeded and result(space, job_id) == 5
    assert BackgroundJob().state(job_id) is JobState.Succeeded, "the instance form alongside"
    RecurringJob.add_or_update("class-form", app_jobs.add, "0 6 * * *", 1, 2)
    assert [info.id for info in RecurringJob.list()] == ["class-form"]
    assert RecurringJob.remove_if_exists("class-form")
