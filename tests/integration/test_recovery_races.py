"""Recovery against RQ's hand-over of a job: from the queue list to a worker's intermediate list,
then its started registry, then flowjobs' claim. A job on its way to a live worker is never taken
for lost; one left there by a dead worker is recovered within a lease and a few passes."""

from __future__ import annotations

from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from flowjobs import RunStatus, StepStatus
from flowjobs.client import FlowClient, RunHandle
from flowjobs.runtime.base import step_job_id
from tests.conftest import Space
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
    started = engine.store.start_run(str(handle.run_id))
    assert started is not None
    engine.continue_run(str(handle.run_id), started[1])
    _queue(space).remove(str(handle.background_job_id))  # the trigger job did its work above
    return handle


def _executions(space: Space, key: str) -> list[str]:
    return [entry.decode() for entry in space.redis.lrange(key, 0, -1)]


def test_a_backlog_behind_one_worker_runs_each_step_once_with_no_retry(space: Space) -> None:
    """800 runs behind one worker once gave 53 steps a second execution ("retry requested"): a step
    job dequeued but not yet claimed was re-queued as lost, and the refused copy taken for a requeue."""
    key = f"{space.token}:executions"
    client = space.client(registry(flow("backlog", {"a": {"type": "Record", "inputs": {"key": key}}})))
    runs = 240
    # Every run is Running with its step queued before the worker starts: the queue holds a backlog
    # of several seconds (several leases), so each step is overdue long before a worker takes it.
    handles = [_dispatched(space, client, "backlog") for _ in range(runs)]
    space.start_worker("only")
    space.start("scheduler")  # the duties, every 0.5 s, beside the worker's own

    assert {h.wait(timeout=240, poll_interval=0.2).status for h in handles} == {RunStatus.Succeeded}
    executions = _executions(space, key)
    assert sorted(entry.rsplit(":", 1)[0] for entry in executions) == sorted(
        f"{h.run_id}:a" for h in handles
    ), "each step's handler ran exactly once"
    store = space.engine().store
    for handle in handles:
        events = store.events(handle.run_id)
        assert not [e for e in events if e.type.value == "step.retried"], events
        detail = client.get_run_detail(handle.run_id)
        assert detail is not None
        assert [s.attempt_count for s in detail.steps or []] == [1]


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
