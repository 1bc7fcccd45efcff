"""Recovery against RQ's hand-over of a job: from the queue list to a worker's intermediate list,
then its started registry, then flowjobs' claim. A job on its way to a live worker is never taken
for lost; one left there by a dead worker is recovered within a lease and a few passes."""

from __future__ import annotations

from datetime import timedelta

from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from flowjobs import RunStatus, StepStatus
from flowjobs.client import FlowClient, RunHandle
from flowjobs.core.clock import utcnow
from flowjobs.core.job_calls import step_job_id
from flowjobs.engine import Engine
from flowjobs.jobs import install_engine
from flowjobs.recovery import recover
from flowjobs.worker import FlowWorkerBase, build_worker
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry

#: How long a test waits for a run that a dead worker left behind: far below RQ's own clean-up of
#: its intermediate list (two maintenance passes a minute apart, every 10 minutes) and of its
#: started registry (heartbeat TTL of 60 s or more), far above the space's lease (2 s) and recovery
#: interval (0.5 s).
RECOVERED_WITHIN = 20.0


def _queue(space: Space) -> Queue:
    return Queue(space.settings.queue, connection=space.redis, serializer=JSONSerializer)


def _take(space: Space, job_id: str) -> None:
    """What RQ's dequeue does with a single queue (``BLMOVE`` into the intermediate list), for one job."""
    queue = _queue(space)
    assert space.redis.lrem(queue.key, 1, job_id) == 1, f"{job_id} was not queued"
    space.redis.rpush(queue.intermediate_queue_key, job_id)


def _dispatched(space: Space, client: FlowClient, name: str) -> RunHandle:
    """A Running run of flow ``name`` whose first step ``a`` is dispatched (its job queued)."""
    handle = client.trigger(name)
    engine = space.engine()
    started = engine.store.runs.start_run(str(handle.run_id))
    assert started is not None
    engine.continue_run(str(handle.run_id), started[1])
    _queue(space).remove(str(handle.background_job_id))  # the trigger job did its work above
    return handle


def _executions(space: Space, key: str) -> list[str]:
    return [entry.decode() for entry in space.redis.lrange(key, 0, -1)]


def _flaky(space: Space, name: str) -> tuple[FlowClient, str]:
    """A flow whose one step ``a`` fails its first attempt and counts its executions under the key."""
    key = f"{space.token}:calls"
    steps = {"a": {"type": "Flaky", "inputs": {"key": key, "succeed_on": 2}}}
    return space.client(registry(flow(name, steps))), key


def _worker(space: Space, name: str) -> FlowWorkerBase:
    """A real RQ worker of this space in the test process, registered as RQ registers its workers."""
    worker = build_worker(space.redis, space.settings.queue, simple=True, name=f"{space.token}-{name}")
    worker.register_birth()
    return worker


def _overdue(space: Space, engine: Engine) -> None:
    """Wait until the dispatched step is older than the lease: recovery's grace is over."""
    lease = timedelta(seconds=space.settings.claim_lease_seconds)
    wait_until(
        lambda: engine.store.overdue.overdue_pending(utcnow() - lease),
        timeout=10,
        what="the step to be overdue",
    )


def _no_retry(space: Space, client: FlowClient, handle: RunHandle, key: str) -> None:
    """The step's handler ran once, its failure stands: no attempt 2, no "retry requested"."""
    assert handle.wait(timeout=10).status is RunStatus.Failed
    assert space.redis.get(key) == b"1", "the handler ran exactly once"
    events = space.engine().store.history.events(handle.run_id)
    assert not [e for e in events if e.type.value == "step.retried"], events
    detail = client.get_run_detail(handle.run_id)
    assert detail is not None
    assert [(s.status, s.attempt_count) for s in detail.steps or []] == [(StepStatus.Failed, 1)]


def test_a_step_job_a_live_worker_started_but_has_not_claimed_is_not_taken_for_lost(space: Space) -> None:
    """800 runs behind one worker once gave 53 steps a second execution ("retry requested"): a step
    job dequeued but not yet claimed was queued again as lost, and the refused copy taken for a
    requeue by hand. Here a live worker holds the job at that point while recovery passes run."""
    client, key = _flaky(space, "held")
    handle = _dispatched(space, client, "held")
    engine = space.engine()
    worker = _worker(space, "live")
    taken = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert taken is not None
    job, queue = taken
    # RQ's started registry in the worker's name, the job `started`: its job function comes next.
    worker.prepare_execution(job)
    worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
    _overdue(space, engine)
    for _ in range(3):
        worker.heartbeat()  # alive, about to claim
        assert recover(engine) == 0
    assert _queue(space).get_job_ids() == [], "no second copy of the job was queued"

    install_engine(engine)
    try:
        worker.perform_job(job, queue)  # claims attempt 1, which fails
        space.drain()
    finally:
        install_engine(None)
    _no_retry(space, client, handle, key)


def test_a_second_copy_of_an_attempts_job_is_refused_without_a_retry(space: Space) -> None:
    """Recovery cannot tell a worker frozen past its bounds from a dead one: the copy it then
    queues, refused once the original ran, must not read as rq-dashboard's Requeue."""
    client, key = _flaky(space, "copied")
    handle = _dispatched(space, client, "copied")
    engine = space.engine()
    frozen = _worker(space, "frozen")
    taken = frozen.dequeue_job_and_maintain_ttl(timeout=1)
    assert taken is not None
    job, queue = taken
    _overdue(space, engine)
    # Recovery takes the job for lost once it stayed dequeued past DEQUEUED_SECONDS.
    wait_until(lambda: recover(engine) == 1, timeout=10, what="recovery to queue a copy")
    assert _queue(space).get_job_ids() == [job.id]

    install_engine(engine)
    try:
        frozen.execute_job(job, queue)  # the frozen worker wakes up: attempt 1 is claimed and fails
        space.drain()  # the copy: refused
    finally:
        install_engine(None)
    _no_retry(space, client, handle, key)


def test_a_trigger_job_taken_by_a_worker_that_died_is_recovered(space: Space) -> None:
    client = space.client(registry(flow("taken-trigger", {"a": {"type": "Noop"}})))
    handle = client.trigger("taken-trigger")
    # A worker moved the trigger job into RQ's intermediate list and was SIGKILLed before starting it.
    _take(space, str(handle.background_job_id))
    space.start_worker("rescuer")

    run = handle.wait(timeout=RECOVERED_WITHIN)
    assert run.status is RunStatus.Succeeded
    assert str(handle.background_job_id) not in _queue(space).intermediate_queue.get_job_ids()


def test_a_step_job_taken_by_a_worker_that_died_is_recovered_and_runs_once(space: Space) -> None:
    key = f"{space.token}:executions"
    client = space.client(registry(flow("taken-step", {"a": {"type": "Record", "inputs": {"key": key}}})))
    handle = _dispatched(space, client, "taken-step")
    _take(space, step_job_id(str(handle.run_id), "a", 1))
    space.start_worker("rescuer")

    run = handle.wait(timeout=RECOVERED_WITHIN)
    assert run.status is RunStatus.Succeeded
    assert [entry.rsplit(":", 1)[0] for entry in _executions(space, key)] == [f"{handle.run_id}:a"]
    detail = client.get_run_detail(handle.run_id)
    assert detail is not None
    assert [(s.status, s.attempt_count) for s in detail.steps or []] == [(StepStatus.Succeeded, 1)]


def test_a_step_job_started_by_a_worker_that_died_before_claiming_it_is_recovered(space: Space) -> None:
    key = f"{space.token}:executions"
    client = space.client(registry(flow("started-step", {"a": {"type": "Record", "inputs": {"key": key}}})))
    handle = _dispatched(space, client, "started-step")
    job_id = step_job_id(str(handle.run_id), "a", 1)
    # A real RQ worker dequeues the job and starts it (its started registry, the job `started`, its
    # own heartbeat), then dies before its job function runs: nothing of it beats again.
    dead = SimpleWorker([_queue(space)], connection=space.redis, serializer=JSONSerializer)
    dead.name = f"{space.token}-dead"
    dead.register_birth()
    taken = dead.dequeue_job_and_maintain_ttl(timeout=1)
    assert taken is not None and taken[0].id == job_id
    dead.prepare_execution(taken[0])
    dead.prepare_job_execution(taken[0], remove_from_intermediate_queue=True)
    assert job_id in _queue(space).started_job_registry.get_job_ids(cleanup=False)
    space.start_worker("rescuer")

    run = handle.wait(timeout=RECOVERED_WITHIN)
    assert run.status is RunStatus.Succeeded
    assert [entry.rsplit(":", 1)[0] for entry in _executions(space, key)] == [f"{handle.run_id}:a"]
    assert job_id not in _queue(space).started_job_registry.get_job_ids(cleanup=False)
