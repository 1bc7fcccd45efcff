"""A crashed step told from a killed worker (issue 13 §1), with real ``flowjobs worker`` processes: a
step that kills its own work-horse fails after a few crashes while the worker lives on; a worker
killed with its whole process tree, restarted one after another (SIGTERM) or shut down cold never
fails a healthy run, and each step is recorded Succeeded once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import timedelta
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from flowjobs import RunStatus, StepStatus
from flowjobs.client import FlowClient, RunHandle
from flowjobs.core.job_calls import step_job_id
from flowjobs.engine import COLD_SHUTDOWN_REASON
from flowjobs.worker import build_worker
from tests.conftest import Space, shut_down_cold, wait_until
from tests.integration.flows import flow, registry

#: A flow of sequential steps, each ``seconds`` long.
CHAIN = ("a", "b", "c", "d")


def chain(name: str, seconds: float) -> Any:
    steps: dict[str, Any] = {}
    for index, key in enumerate(CHAIN):
        steps[key] = {"type": "Sleep", "inputs": {"seconds": seconds}}
        if index:
            steps[key]["run_after"] = [CHAIN[index - 1]]
    return flow(name, steps)


def running_step(space: Space, handle: RunHandle) -> str:
    """The key of the run's step whose attempt a worker holds now."""
    store = space.engine().store

    def holder() -> str | None:
        for key in CHAIN:
            fields = store.runs.step_fields(str(handle.run_id), key)
            if fields.get("status") == "Running" and "lease_until_ms" in fields:
                return key
        return None

    return str(wait_until(holder, timeout=30, what="a step to run"))


def horse_of(space: Space, worker: subprocess.Popen[bytes]) -> int:
    """The pid of the worker's work-horse (a child in its own process group)."""

    def child() -> int | None:
        found = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True, check=False)
        pids = [int(pid) for pid in found.stdout.split()]
        # RQ's scheduler process is a child too, in the worker's group; the horse has its own. The
        # previous step's horse may not be reaped yet (the worker goes on once a horse is done).
        horses = [pid for pid in pids if _alive(pid) and os.getpgid(pid) == pid]
        return horses[0] if horses else None

    return int(wait_until(child, timeout=30, what="the work-horse"))


def assert_recorded_once(client: FlowClient, handles: list[RunHandle]) -> None:
    """Every run Succeeded, each of its steps with exactly one Succeeded attempt in its record."""
    for handle in handles:
        run = handle.wait(timeout=120)
        assert run.status is RunStatus.Succeeded, (handle.run_id, run.status)
        detail = client.get_run_detail(handle.run_id)
        assert detail is not None
        for step in detail.steps or []:
            succeeded = [a for a in step.attempts or [] if a.status is StepStatus.Succeeded]
            assert step.status is StepStatus.Succeeded and len(succeeded) == 1, (handle.run_id, step)


@pytest.mark.parametrize(
    ("inputs", "retry", "attempts", "cause"),
    [
        ({}, {"max_attempts": 10, "backoff_seconds": 0.1}, 3, "Work-horse killed by SIGKILL"),
        ({"exit_code": 3}, {"max_attempts": 10}, 3, "Work-horse exited with code 3"),
        ({}, None, 1, "Work-horse killed by SIGKILL"),
        ({}, {"max_attempts": 2}, 2, "Work-horse killed by SIGKILL"),
    ],
    ids=["sigkill", "exit-code", "no-retry", "retry-below-limit"],
)
def test_a_step_that_kills_its_work_horse_fails_after_the_bounded_crashes_and_the_worker_goes_on(
    space: Space, inputs: dict[str, Any], retry: dict[str, Any] | None, attempts: int, cause: str
) -> None:
    calls = f"{space.token}:calls"
    poison: dict[str, Any] = {"type": "KillHorse", "inputs": {**inputs, "key": calls}}
    if retry is not None:
        poison["retry"] = retry
    client = space.client(
        registry(
            flow("poison", {"poison": poison, "after": {"type": "Noop", "run_after": ["poison"]}}),
            chain("healthy", 0.05),
        )
    )
    worker = space.start_worker("crashes")
    poisoned = client.trigger("poison")
    healthy = [client.trigger("healthy") for _ in range(3)]

    run = poisoned.wait(timeout=60)

    assert run.status is RunStatus.Failed
    detail = client.get_run_detail(run.id)
    assert detail is not None
    steps = {s.step_key: s for s in detail.steps or []}
    step = steps["poison"]
    assert step.status is StepStatus.Failed and step.attempt_count == attempts
    errors = [a.error_message or "" for a in step.attempts or []]
    assert all(error.startswith(cause) for error in errors), errors
    if attempts == space.settings.max_step_crashes:
        assert errors[-1] == f"{cause}: the step crashed its work-horse {attempts} times; not retried."
    assert not any("Claim lease expired" in error for error in errors), "a crash is not a lost worker"
    assert steps["after"].status is StepStatus.Skipped
    fields = space.engine().store.runs.step_fields(str(run.id), "poison")
    assert fields.get("crashed_attempts") == str(attempts) and "lost_attempts" not in fields
    assert [int(n) for n in space.redis.lrange(calls, 0, -1)] == list(range(1, attempts + 1))
    assert_recorded_once(client, healthy)
    assert worker.poll() is None, "the worker lives on"


def test_a_worker_killed_with_its_process_tree_mid_step_loses_no_run(space: Space) -> None:
    client = space.client(registry(chain("killed", 1.0)))
    doomed = space.start_worker("doomed")
    handle = client.trigger("killed")
    key = running_step(space, handle)
    horse = horse_of(space, doomed)

    # A container or node loss: the worker's group (RQ's scheduler with it) and its work-horse.
    os.killpg(doomed.pid, signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    doomed.wait()
    space.start_worker("rescuer")

    assert_recorded_once(client, [handle])
    fields = space.engine().store.runs.step_fields(str(handle.run_id), key)
    assert fields.get("lost_attempts") == "1" and "crashed_attempts" not in fields, fields

    # The lost attempt's job keeps its execution in RQ's executions set until its run is purged
    # (RQ's maintenance fails the abandoned job first, once its heartbeat lapses: here, at once).
    executions = f"rq:executions:{step_job_id(handle.run_id, key, 1)}"
    assert space.redis.zcard(executions) == 1
    queue = Queue(space.settings.queue, connection=space.redis, serializer=JSONSerializer)
    queue.started_job_registry.cleanup(timestamp=time.time() + 3600)
    assert client.purge(timedelta(seconds=-1)) == 1
    assert not space.redis.exists(executions)


def test_a_rolling_restart_of_every_worker_fails_no_run(space: Space) -> None:
    client = space.client(registry(chain("rolling", 0.2)))
    workers = [space.start_worker(f"w{n}") for n in range(3)]
    handles = [client.trigger("rolling") for _ in range(40)]
    store = space.engine().store
    wait_until(
        lambda: any(store.runs.step_fields(str(h.run_id), "b") for h in handles),
        timeout=30,
        what="runs to flow",
    )

    for generation in range(len(workers)):
        old = workers[generation]
        old.send_signal(signal.SIGTERM)  # a deploy: warm shutdown, the running step finishes
        assert old.wait(timeout=30) == 0
        workers.append(space.start_worker(f"w{generation}-new"))

    assert_recorded_once(client, handles)
    for handle in handles:
        for key in CHAIN:
            fields = store.runs.step_fields(str(handle.run_id), key)
            assert fields["attempt"] == "1", (handle.run_id, key, fields)


def test_a_warm_shutdown_lets_the_running_step_finish(space: Space) -> None:
    client = space.client(registry(flow("one", {"nap": {"type": "Sleep", "inputs": {"seconds": 2}}})))
    worker = space.start_worker("warm")
    handle = client.trigger("one")
    wait_until(
        lambda: space.engine().store.runs.step_fields(str(handle.run_id), "nap").get("status") == "Running",
        timeout=30,
        what="the step to run",
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    run = handle.wait(timeout=5)
    assert run.status is RunStatus.Succeeded
    detail = client.get_run_detail(run.id)
    assert detail is not None and [s.attempt_count for s in detail.steps or []] == [1]


@pytest.mark.parametrize("simple", [False, True], ids=["forking", "simple"])
def test_a_step_cut_off_by_a_cold_shutdown_is_handed_over_not_lost(space: Space, simple: bool) -> None:
    # A --simple worker raises inside the handler: not the handler's failure either.
    client = space.client(registry(flow("one", {"nap": {"type": "Sleep", "inputs": {"seconds": 30}}})))
    worker = space.start_worker("cold", simple=simple)
    handle = client.trigger("one")
    store = space.engine().store
    wait_until(
        lambda: store.runs.step_fields(str(handle.run_id), "nap").get("status") == "Running",
        timeout=30,
        what="the step to run",
    )
    shut_down_cold(worker)  # the warm shutdown would wait for the step; the cold one cuts it off

    fields = store.runs.step_fields(str(handle.run_id), "nap")
    # Handed over at once (no worker is left to wait for its lease): attempt 2 queued, nothing counted.
    assert fields["status"] == "Pending" and fields["attempt"] == "2", fields
    assert fields["error_message"] == f"Handed over: {COLD_SHUTDOWN_REASON}."
    assert "lost_attempts" not in fields and "crashed_attempts" not in fields


def test_a_worker_dequeues_on_connections_with_rqs_socket_timeout(space: Space, redis_url: str) -> None:
    # redis-py 8 gives a connection 5 s when its pool names no timeout; RQ raises only the pool's
    # setting above its blocking dequeue (405 s). A connection made before the worker (as
    # ``wait_for_redis`` pings) timed the dequeue out after 5 s idle: seen as a rescuer's work loop
    # restarting ("Redis connection timeout, quitting...") instead of taking the lost step's job.
    redis = Redis.from_url(redis_url)
    redis.ping()
    worker = build_worker(redis, space.settings.queue, name=f"{space.token}-timeouts")
    connection = redis.connection_pool.get_connection()
    try:
        assert connection.socket_timeout is not None
        assert connection.socket_timeout > worker.dequeue_timeout
    finally:
        redis.connection_pool.release(connection)


def test_idle_workers_stop_promptly_on_sigterm(space: Space) -> None:
    # redis-py 8's pubsub thread, once RQ unsubscribed it, waited up to RQ's 60 s to be subscribed
    # again while RQ's teardown joined it without a bound: an idle worker's warm shutdown hung.
    workers = {f"{space.token}-idle{n}": space.start_worker(f"idle{n}") for n in range(4)}

    def idle() -> bool:
        channels = [f"rq:pubsub:{name}" for name in workers]
        subscribed = all(count == 1 for _, count in space.redis.pubsub_numsub(*channels))
        # "idle" is written in RQ's loop, once its signal handlers are installed.
        return subscribed and all(
            space.redis.hget(f"rq:worker:{name}", "state") == b"idle" for name in workers
        )

    wait_until(idle, timeout=60, what="the workers to wait for jobs, listening for RQ's commands")
    for worker in workers.values():
        worker.send_signal(signal.SIGTERM)
    for name, worker in workers.items():
        # A deadline, not a measure: a hung teardown waits 60 s; a supervisor kills before that.
        assert worker.wait(timeout=30) == 0, name


@pytest.mark.parametrize("simple", [False, True], ids=["forking", "simple"])
def test_rqs_scheduler_process_ends_with_its_killed_worker(space: Space, simple: bool) -> None:
    # RQ's scheduler runs in a process the worker forks, in the worker's process group; a worker
    # SIGKILLed alone (an OOM kill) left it orphaned, polling Redis and keeping its queue's lock.
    worker = space.start_worker("orphaning", simple=simple)

    def scheduler() -> int | None:
        found = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True, check=False)
        pids = [int(pid) for pid in found.stdout.split() if os.getpgid(int(pid)) == worker.pid]
        return pids[0] if pids else None

    pid = int(wait_until(scheduler, timeout=30, what="RQ's scheduler process"))
    lock = f"rq:scheduler-lock:{space.settings.queue}"
    assert space.redis.exists(lock)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()

    wait_until(lambda: not _alive(pid), timeout=10, what="the orphaned scheduler to exit")
    assert not space.redis.exists(lock), "its queue's lock released, for another worker's scheduler"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no one reaps has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
