"""``JobRunner`` on RQ: queues, delayed jobs via RQ's scheduler, JSON payloads, job hashes kept a
short window after they finish."""

from __future__ import annotations

import json
import math
import time
import zlib
from base64 import b64encode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import WatchError
from rq import Queue, get_current_job
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Callback, Job, JobStatus, Retry, _job_stack
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat, utcparse
from rq.worker import BaseWorker, WorkerStatus

from flowjobs.core.clock import utcnow
from flowjobs.core.errors import JobNotFound
from flowjobs.core.job_calls import (
    RUN_STEP,
    RUN_TRIGGER,
    JobCall,
    JobFailed,
    JobState,
    JobWrites,
    StoredJobs,
    job_result,
)
from flowjobs.runtime.base import RecurringJobStore

_STATES = {
    JobStatus.CREATED: JobState.Enqueued,
    JobStatus.QUEUED: JobState.Enqueued,
    JobStatus.SCHEDULED: JobState.Scheduled,
    JobStatus.DEFERRED: JobState.Awaiting,
    JobStatus.STARTED: JobState.Processing,
    JobStatus.FINISHED: JobState.Succeeded,
    JobStatus.FAILED: JobState.Failed,
    JobStatus.STOPPED: JobState.Deleted,
    JobStatus.CANCELED: JobState.Deleted,
}

DELETED_FIELD = "flowjobs_deleted"
"""Field of an RQ job hash that marks a job deleted while a worker ran it (its value is the reason):
RQ's worker writes the whole hash back when the job ends, but leaves fields it does not know."""

CONTINUATION_NOT_MET = "Continuation condition was not met"
"""Why a continuation is deleted with its parent (Hangfire's words)."""

# KEYS: job hashes. ARGV: ``DELETED_FIELD``. Reply: each one's ``status`` (nil when the job is gone,
# ``canceled`` when it is marked deleted), in order. One command instead of one HGET per job: a pass
# over thousands of jobs costs the client far less.
_STATUSES_LUA = """
local statuses = {}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HMGET', key, 'status', ARGV[1])
  statuses[i] = (fields[2] and 'canceled') or fields[1]
end
return statuses
"""

# KEYS: the queue's intermediate list, its started registry. ARGV: now (epoch seconds), RQ's
# job, execution and worker key prefixes, then job ids. Reply per job: its hash's ``status`` (false when
# the job is gone), then false, or {'started', worker or false, the worker's last heartbeat or
# false, the job's started-registry entries...} when a worker started it, or {'dequeued', first
# seen} when a worker moved it off the queue without starting it. RQ keeps both structures as
# short as its workers are few; the first sighting of a dequeued job is RQ's own ``first_seen``
# key (its maintenance uses it the same way, a minute later).
_WHEREABOUTS_LUA = """
local dequeued = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do dequeued[id] = true end
local started = {}
for _, entry in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local id = string.match(entry, '^(.*):[^:]*$')
  if id then
    started[id] = started[id] or {}
    table.insert(started[id], entry)
  end
end
local replies = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local taken = false
  if started[id] then
    local worker = redis.call('HGET', ARGV[3] .. started[id][1], 'worker_name')
    local beat = worker and redis.call('HGET', ARGV[4] .. worker, 'last_heartbeat')
    taken = {'started', worker or false, beat or false, unpack(started[id])}
  elseif dequeued[id] then
    local seen = KEYS[1] .. ':first_seen:' .. id
    redis.call('SET', seen, ARGV[1], 'NX', 'EX', 86400)
    taken = {'dequeued', redis.call('GET', seen)}
  end
  replies[i - 4] = {redis.call('HGET', ARGV[2] .. id, 'status') or false, taken}
end
return replies
"""

_EXECUTION_PREFIX = "rq:execution:"
"""How ``rq.executions.Execution.key`` spells an execution's hash, before ``<job id>:<execution id>``."""


@dataclass(frozen=True)
class TakenJob:
    """A job a worker moved off the queue and has not finished: in RQ's intermediate list (dequeued,
    not started yet) or in its started registry."""

    worker: str | None
    """The RQ worker that started it; None while it is only dequeued (RQ records no taker then)."""
    since: datetime | None
    """A started job: its worker's last heartbeat (None once the worker's key is gone). A dequeued
    job: when it was first seen dequeued."""
    entries: tuple[str, ...] = ()
    """Its entries in the started registry (``<job id>:<execution id>``)."""


@dataclass(frozen=True)
class Whereabouts:
    """A job's state, and the worker that took it, if one did."""

    state: JobState
    taken: TakenJob | None


class RQJobRunner:
    """Runs flowjobs' jobs on one RQ queue with the JSON serializer.

    A finished job's hash and its ``rq:results:<id>`` stream expire ``keep_seconds`` after it
    ends (RQ's ``result_ttl``/``failure_ttl``, ``FLOWJOBS_RQ_JOB_TTL_SECONDS``): they are the bulk
    of a run's memory. Job ids outlive them in flowjobs' own records (the ``jobs`` reverse index,
    step and attempt records), which are kept as long as the run.
    """

    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        *,
        keep_seconds: int,
        default_timeout_seconds: int,
        schedules: RecurringJobStore,
    ) -> None:
        self.redis = redis
        #: Recurring jobs live beside flowjobs' schedules (``FLOWJOBS_KEY_PREFIX``) and are fired
        #: by the schedules duty of every worker, once per tick.
        self.schedules = schedules
        self.queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
        self._statuses = redis.register_script(_STATUSES_LUA)
        self._whereabouts = redis.register_script(_WHEREABOUTS_LUA)
        self.keep_seconds = keep_seconds
        self.default_timeout_seconds = default_timeout_seconds

    def _job(self, call: JobCall, *, depends_on: str | None = None) -> Job:
        """The RQ job of a call: every job this runner queues is built here."""
        timeout = call.timeout_seconds or self.default_timeout_seconds
        retry = (
            Retry(max=len(call.retry_delays), interval=list(call.retry_delays)) if call.retry_delays else None
        )
        return self.queue.create_job(
            call.func,
            args=list(call.args),
            kwargs=dict(call.kwargs),
            job_id=call.job_id,
            description=call.description,
            meta=dict(call.meta),
            # RQ takes whole seconds; rounding up never kills a handler before its declared timeout.
            timeout=math.ceil(timeout),
            result_ttl=self.keep_seconds,
            failure_ttl=-1 if call.keep_failed else self.keep_seconds,  # RQ: -1 keeps it
            depends_on=depends_on,
            retry=retry,
            on_failure=Callback(f"{__name__}.{failed_after_delete.__name__}")
            if retry or call.keep_failed
            else None,
        )

    def enqueue(self, call: JobCall) -> str:
        """Queue a job now."""
        return self._enqueue_on(call, None)

    def _enqueue_on(self, call: JobCall, pipeline: Pipeline | None) -> str:
        """RQ's enqueue; with a pipeline it joins that transaction."""
        return str(self.queue.enqueue_job(self._job(call), pipeline=pipeline).id)

    def enqueue_many(self, calls: Sequence[JobCall]) -> list[str]:
        """Queue several jobs in one MULTI/EXEC."""
        if not calls:
            return []
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()
            ids = [self._enqueue_on(call, pipe) for call in calls]
            pipe.execute()
        return ids

    def enqueue_commands(self, calls: Sequence[JobCall]) -> list[list[list[bytes]]] | None:
        """RQ's enqueue of each call as the commands RQ sends: for a call without retries or
        callbacks (every step attempt's), the queue's entry in RQ's set of queues, the job hash with
        the fields RQ's ``Job.to_dict`` gives such a job, and its push on the queue, built directly;
        for any other, RQ's own enqueue recorded on a pipeline that is never sent."""
        if not all(_plain(call) for call in calls):
            return self._recorded_enqueue(calls)
        queue = self.queue
        queue_key, queues_key = queue.key.encode(), queue.redis_queues_keys.encode()
        moment = utcformat(now()).encode()
        # A job this process is performing came off this queue, which RQ's enqueue of it entered
        # in the set of queues: the entry is there already.
        working = get_current_job()
        registered = working is not None and working.origin == queue.name
        return [
            [
                *([] if registered else [[b"SADD", queues_key, queue_key]]),
                [b"HSET", Job.key_for(call.job_id).encode(), *self._job_fields(call, moment)],
                [b"RPUSH", queue_key, call.job_id.encode()],
            ]
            for call in calls
        ]

    def _job_fields(self, call: JobCall, moment: bytes) -> list[bytes]:
        """The fields of a queued job's hash for a call without retries or callbacks, as RQ's
        ``Job.to_dict`` writes them (``moment``: its creation and enqueue time, RQ's format)."""
        timeout = call.timeout_seconds or self.default_timeout_seconds
        data = json.dumps([call.func, None, list(call.args), dict(call.kwargs)]).encode()
        keep = str(self.keep_seconds).encode()
        fields = [b"created_at", moment, b"data", zlib.compress(data)]
        for empty in _EMPTY_JOB_FIELDS:
            fields += [empty, b""]
        fields += [b"origin", self.queue.name.encode(), b"description", call.description.encode()]
        fields += [b"enqueued_at", moment, b"timeout", str(math.ceil(timeout)).encode()]
        fields += [b"result_ttl", keep, b"failure_ttl", keep, b"status", JobStatus.QUEUED.value.encode()]
        if call.meta:
            fields += [b"meta", json.dumps(call.meta).encode()]
        return fields

    def _recorded_enqueue(self, calls: Sequence[JobCall]) -> list[list[list[bytes]]]:
        """RQ's own enqueue of each call, recorded on a pipeline that is never sent."""
        encoder = self.redis.get_encoder()
        recorded: list[list[list[bytes]]] = []
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.multi()
            for call in calls:
                start = len(pipe.command_stack)
                self._enqueue_on(call, pipe)
                stack = pipe.command_stack[start:]
                recorded.append([[encoder.encode(arg) for arg in args] for args, _ in stack])  # type: ignore[no-untyped-call]
            pipe.reset()
        return recorded

    def schedule(self, call: JobCall, delay: timedelta) -> str:
        """Put a job in RQ's scheduled registry; a worker running with the scheduler enqueues it when due."""
        if delay <= timedelta(0):
            return self.enqueue(call)
        return str(self.queue.schedule_job(self._job(call), utcnow() + delay).id)

    def continue_with(self, parent_id: str, call: JobCall) -> str:
        """Queue a job that RQ runs after ``parent_id`` succeeds; ``JobNotFound`` if RQ has no such job
        (RQ would run it at once). Deleted with the parent, or at once if the parent is deleted."""
        if not self.redis.exists(Job.key_for(parent_id)):
            raise JobNotFound(f"cannot add a continuation: parent job {parent_id!r} does not exist")
        job_id = str(self.queue.enqueue_job(self._job(call, depends_on=parent_id)).id)
        # Checked after the child is registered, so a parent deleted meanwhile is not missed.
        if self.state(parent_id) is JobState.Deleted:
            self._cancel_continuations([job_id])
        return job_id

    def stored_jobs(self) -> StoredJobs:
        """RQ's keys of a job (``job_keys``) and the registries of this runner's queue. The queue's
        list is left out (removing from it is O(n)): a finished run's jobs are no longer queued,
        and a worker skips a queued id whose hash is gone."""
        queue = self.queue
        registries = (
            queue.started_job_registry,
            queue.finished_job_registry,
            queue.failed_job_registry,
            queue.deferred_job_registry,
            queue.scheduled_job_registry,
            queue.canceled_job_registry,
        )
        return StoredJobs(keys=job_keys, registries=tuple(registry.key for registry in registries))

    def _fetch(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            return None

    def delete(self, job_id: str) -> bool:
        """Delete the job and take it off its queue or registry; False if there is none.

        A job a worker runs is marked instead (``DELETED_FIELD``): it runs to its end, as in Hangfire,
        but stays Deleted and a failure of it is not retried. Its continuations, and theirs, are
        cancelled with the reason ``CONTINUATION_NOT_MET`` (Hangfire deletes them likewise).
        """
        job = self._fetch(job_id)
        if job is None:
            return False
        continuations = job.dependent_ids  # read first: RQ's delete drops the set
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    # Watched: a worker starting the job now would write back a hash deleted here.
                    pipe.watch(job.key)  # type: ignore[no-untyped-call]
                    started = pipe.hget(job.key, "status") == JobStatus.STARTED.encode()
                    pipe.multi()
                    if started:
                        pipe.hset(job.key, DELETED_FIELD, "deleted while processing")
                    else:
                        job.delete(pipeline=pipe)
                    pipe.execute()
                    break
                except WatchError:
                    continue
        self._cancel_continuations(continuations)
        return True

    def _cancel_continuations(self, job_ids: list[str]) -> None:
        """Cancel each of these jobs still waiting for its parent (into RQ's canceled registry, the
        reason in its meta), then theirs."""
        while job_ids:
            job = self._fetch(job_ids.pop())
            if job is None or job.get_status() != JobStatus.DEFERRED:
                continue
            job.meta["deleted_reason"] = CONTINUATION_NOT_MET
            job.save_meta()  # type: ignore[no-untyped-call]
            job.cancel()
            job_ids.extend(job.dependent_ids)

    def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job: off its queue or the scheduled registry, into RQ's canceled registry
        (rq-dashboard lists it there); False if it is missing or no longer waiting."""
        job = self._fetch(job_id)
        if job is None:
            return False
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    # Watched: a worker that starts the job meanwhile is not cancelled under, and RQ's
                    # cancel does not read the execution of a job that started since it was fetched.
                    pipe.watch(job.key)  # type: ignore[no-untyped-call]
                    status = job.get_status(refresh=True)
                    if status not in (JobStatus.QUEUED, JobStatus.SCHEDULED):
                        return False
                    pipe.multi()
                    if status == JobStatus.SCHEDULED:
                        self.queue.scheduled_job_registry.remove(job, pipeline=pipe)
                    job.cancel(pipeline=pipe)
                    pipe.execute()
                    return True
                except WatchError:
                    continue

    def requeue(self, job_id: str) -> bool:
        """Requeue a failed job, or re-push a job whose id is no longer in any queue."""
        job = self._fetch(job_id)
        if job is None:
            return False
        self.redis.hdel(job.key, DELETED_FIELD)  # requeued, it is no longer deleted (Hangfire's rule)
        try:
            job.requeue()
        except InvalidJobOperation:
            self.queue.enqueue_job(job)
        return True

    def state(self, job_id: str) -> JobState:
        """Hangfire state name of the RQ job; ``Deleted`` when RQ no longer has it."""
        return self.states([job_id])[job_id]

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """States of many jobs in one round-trip."""
        ids = list(job_ids)
        statuses = (
            self._statuses(keys=[Job.key_for(job_id) for job_id in ids], args=[DELETED_FIELD]) if ids else []
        )
        return {
            job_id: _state(raw.decode() if raw else None) for job_id, raw in zip(ids, statuses, strict=True)
        }

    def whereabouts(self, job_ids: Iterable[str]) -> dict[str, Whereabouts]:
        """States of many jobs, with whether a worker took each off the queue, in one round-trip.

        RQ says ``queued`` from the enqueue until a worker starts the job, also after its dequeue
        moved it to the intermediate list; a job said to be queued that no worker took is taken to
        be in the queue's list (not checked: finding it there costs a scan of the list per job).
        """
        ids = list(job_ids)
        if not ids:
            return {}
        queue = self.queue
        replies = self._whereabouts(
            keys=[queue.intermediate_queue_key, queue.started_job_registry.key],
            args=[
                utcnow().timestamp(),
                Job.redis_job_namespace_prefix,
                _EXECUTION_PREFIX,
                BaseWorker.redis_worker_namespace_prefix,
                *ids,
            ],
        )
        return {
            job_id: Whereabouts(_state(status.decode() if status else None), _taken(taken))
            for job_id, (status, taken) in zip(ids, replies, strict=True)
        }

    def reuse(self, job_id: str, pipeline: Pipeline) -> None:
        """Clear the expiry of a job queued again under its id (recovery's re-enqueue), as part of
        the caller's MULTI/EXEC: its new hash is written over the earlier one, whose end may have
        set one, and a worker clears it before the job runs only when the hash says it may have one
        (``FlowJob.may_expire``)."""
        pipeline.persist(Job.key_for(job_id))

    def release(self, job_id: str, taken: TakenJob, pipeline: Pipeline) -> None:
        """Forget that a worker took the job (a dead one: its intermediate-list and started-registry
        entries), as part of the caller's MULTI/EXEC; RQ's maintenance would otherwise fail the job
        later as stuck or abandoned, whatever became of it meanwhile."""
        queue = self.queue
        pipeline.lrem(queue.intermediate_queue_key, 0, job_id)
        pipeline.delete(queue.intermediate_queue.get_first_seen_key(job_id))
        if taken.entries:
            pipeline.zrem(queue.started_job_registry.key, *taken.entries)


#: RQ's bookkeeping of a job's end as a script of its own (``RQJobBooks.returned``). KEYS: the
#: books' keys of the end (``rq_jobs.lua``), then the job's dependents set. ARGV[1]: the books'
#: arguments (JSON). Reply: 1, or 0 (nothing written) when jobs depend on this one.
RQ_JOB_END_LUA = (
    (Path(__file__).resolve().parent.parent / "lua" / "rq_jobs.lua").read_text()
    + """
if redis.call('SCARD', KEYS[#KEYS]) > 0 then return 0 end
local b = cjson.decode(ARGV[1])
b.books_keys = KEYS
rq_job_ended(b)
return 1
"""
)

#: Fields RQ's ``Job.to_dict`` writes empty for a job that has not run and has no callbacks.
_EMPTY_JOB_FIELDS = (
    b"success_callback_name",
    b"failure_callback_name",
    b"stopped_callback_name",
    b"started_at",
    b"ended_at",
    b"last_heartbeat",
    b"worker_name",
    b"group_id",
)


def _plain(call: JobCall) -> bool:
    """Whether RQ's job of the call has no retries and no callbacks (``RQJobRunner._job``)."""
    return not call.retry_delays and not call.keep_failed


def is_step_job(job: Job) -> bool:
    """Whether an RQ job runs a flow step (``flowjobs.jobs.run_step``)."""
    return job.func_name == RUN_STEP


def is_flow_job(job: Job) -> bool:
    """Whether an RQ job runs a flow step or a run's trigger: its scripts can write its start."""
    return job.func_name in (RUN_STEP, RUN_TRIGGER)


@dataclass(frozen=True)
class QueueRegistries:
    """The keys of a queue's intermediate list and of its started, finished and failed registries."""

    intermediate: str
    started: str
    finished: str
    failed: str


_REGISTRIES: dict[str, QueueRegistries] = {}


def queue_registries(queue: Queue) -> QueueRegistries:
    """The registry keys of ``queue``, as RQ names them (built once per queue name)."""
    known = _REGISTRIES.get(queue.name)
    if known is None:
        known = _REGISTRIES[queue.name] = QueueRegistries(
            queue.intermediate_queue_key,
            queue.started_job_registry.key,
            queue.finished_job_registry.key,
            queue.failed_job_registry.key,
        )
    return known


class FlowJob(Job):
    """RQ's job as flowjobs' workers load it: one whose start a script writes (``persist_in_claim``)
    has its hash's expiry cleared there too (``rq_jobs.lua``), instead of by a round-trip of its own
    before it runs, and only if its hash can have one (``may_expire``). A job refused before its
    claim ends by RQ's own path, which sets that expiry itself. Loading one costs less Python: see
    ``__init__`` and ``restore``."""

    persist_in_claim = False
    #: When (monotonic) the job was loaded with fields that say its hash has no expiry (``restore``).
    _loaded_unexpiring: float | None = None

    def __init__(
        self, id: str | None = None, connection: Redis | None = None, serializer: Any = None
    ) -> None:
        # RQ checks the serializer of every job it loads against its Protocol (two walks of the
        # Protocol's MRO, tens of µs); flowjobs' own is known to be one.
        known = serializer is JSONSerializer
        super().__init__(id, connection, None if known else serializer)
        if known:
            self.serializer = JSONSerializer

    def restore(self, raw_data: dict[bytes, bytes]) -> None:
        """RQ's ``restore``, its times parsed by ``datetime.fromisoformat`` (RQ's ``strptime`` costs
        far more; both read RQ's format, and the older one without microseconds)."""
        raw = dict(raw_data)
        created = raw.get(b"created_at")
        unexpiring = created and created == raw.get(b"enqueued_at") and b"ttl" not in raw
        self._loaded_unexpiring = time.monotonic() if unexpiring else None
        times = {name: raw.pop(name.encode(), None) for name in _JOB_TIMES}
        super().restore(raw)
        for name, value in times.items():
            if value:
                setattr(self, name, datetime.fromisoformat(value.decode()))

    @property
    def may_expire(self) -> bool:
        """Whether the job's hash may carry an expiry, which its start must clear.

        Only a job's ends (finished, failed, stopped: RQ's and the scripts') and its own ``ttl``
        set one, and only RQ's re-enqueue (requeue, retry, scheduler, dependents) puts an ended job
        back on a queue, enqueuing it anew after its creation. A hash whose enqueue is its creation,
        to the microsecond, and has no ``ttl`` was written whole by one enqueue (flowjobs'
        ``enqueue_commands``) under an id that had no hash, or whose earlier hash recovery's
        re-enqueue persisted (``RQJobRunner.reuse``). Such a job gets an end before it starts only
        from RQ's maintenance, which fails a dequeued job still unstarted a minute on (its
        intermediate list): one loaded ``_UNSTARTED_SECONDS`` ago or more is taken to have one."""
        loaded = self._loaded_unexpiring
        return loaded is None or time.monotonic() - loaded >= _UNSTARTED_SECONDS

    def perform(self) -> Any:
        """RQ's ``Job.perform``, without its ``PERSIST`` when the claim sends it."""
        if not self.persist_in_claim:
            return super().perform()
        # RQ's steps after its PERSIST: the job is RQ's current job (get_current_job) while it runs.
        _job_stack.push(self)  # type: ignore[no-untyped-call]
        try:
            self._result = self._execute()
        finally:
            assert self is _job_stack.pop()  # type: ignore[no-untyped-call]
        return self._result


#: Half of the minute RQ's maintenance leaves a dequeued job unstarted before it fails it.
_UNSTARTED_SECONDS = 30.0
#: The times of a job hash RQ's ``Job.restore`` parses (``created_at`` defaults to now there).
_JOB_TIMES = ("created_at", "enqueued_at", "started_at", "ended_at", "last_heartbeat")


@dataclass
class WorkerTally:
    """What a worker's hash lacks of the jobs whose ends scripts wrote in this process: their counts
    (``successful_job_count``, ``failed_job_count``, ``total_working_time``) and, after the last
    one, the worker idle with no current job. It goes with the worker's next heartbeat (at most a
    second apart while it works), before it waits for work and when it stops, instead of with every
    job's end; a job's start that writes the worker busy overwrites the state and current job
    anyway."""

    successful: int = 0
    failed: int = 0
    working_time: float = 0.0
    idle: bool = False

    def add(self, counter: str, working_time: float) -> None:
        """Count a job's end (``counter``: ``successful_job_count`` or ``failed_job_count``)."""
        if counter == _SUCCESSFUL_COUNTER:
            self.successful += 1
        else:
            self.failed += 1
        self.working_time += working_time
        self.idle = True

    @property
    def pending(self) -> bool:
        """Whether the hash lacks anything."""
        return self.idle or bool(self.successful or self.failed)

    def write(self, pipeline: Pipeline, worker_key: str, *, idle: bool) -> bool:
        """Add what the hash lacks to it in ``pipeline``: the counts, and the idle state unless
        the worker is no longer idle (``idle``: its state now; a job it started wrote its own).
        Returns whether it writes the idle state."""
        if self.successful:
            pipeline.hincrby(worker_key, _SUCCESSFUL_COUNTER, self.successful)
        if self.failed:
            pipeline.hincrby(worker_key, _FAILED_COUNTER, self.failed)
        if self.successful or self.failed:
            pipeline.hincrbyfloat(worker_key, "total_working_time", self.working_time)
        idled = self.idle and idle
        if idled:
            pipeline.hdel(worker_key, "current_job")
            pipeline.hset(worker_key, "state", WorkerStatus.IDLE.value)
        self.successful = self.failed = 0
        self.working_time = 0.0
        self.idle = False
        return idled


_SUCCESSFUL_COUNTER = "successful_job_count"
_FAILED_COUNTER = "failed_job_count"


class RQJobBooks:
    """RQ's bookkeeping of one step job, left by flowjobs' worker to the step's claim (the job's
    start) and to the completion that ends the step (its end): ``flowjobs/lua/rq_jobs.lua`` writes
    the keys and fields RQ's worker would (the job hash, its execution, the started, finished and
    failed registries, the results stream, the worker hash and its counters), so RQ and
    rq-dashboard read the job as RQ leaves it, one round-trip each instead of several. With a
    ``tally`` (a worker running jobs in its own process), the job's end in the worker hash (idle,
    its counters) is the worker's to write, with its next heartbeat (``WorkerTally``).

    The worker writes whatever the scripts did not (``started_written``, ``ended_written``): a job
    refused before its claim, or one that ends with a retry, goes RQ's own way from there.
    """

    def __init__(
        self,
        job: Job,
        execution: Execution,
        queue: Queue,
        *,
        worker_name: str,
        worker_key: str,
        heartbeat_ttl: int,
        default_result_ttl: int,
        worker_expires_in: float = 0.0,
        tally: WorkerTally | None = None,
        write_worker: bool = True,
    ) -> None:
        self.job = job
        self.job_id = str(job.id)
        self.execution = execution
        self.registries = queue_registries(queue)
        self.worker_name = worker_name
        self.worker_key = worker_key
        self.heartbeat_ttl = heartbeat_ttl
        self.default_result_ttl = default_result_ttl
        #: Seconds the worker hash lives on as far as the worker knows (its last heartbeat's TTL).
        self.worker_expires_in = worker_expires_in
        #: Where the job's end is counted when it ends in the worker's own process (None: the
        #: script counts it in the worker hash, as from a forking worker's work-horse).
        self.tally = tally
        #: Whether the job's start writes the worker hash busy with it (False: it shows the worker
        #: busy already, and the worker writes the job as its current one if it is still running
        #: when that write is a second old).
        self.write_worker = write_worker
        self.started_written = False
        self.ended_written = False
        self._started_at: datetime | None = None
        self._counted: tuple[str, float] | None = None

    def _keys(self) -> tuple[str, ...]:
        """The keys both ends touch, in ``rq_jobs.lua``'s order."""
        return (
            self.job.key,
            self.execution.key,
            ExecutionRegistry.key_template.format(self.job_id),
            self.registries.started,
            self.worker_key,
        )

    def started(self) -> JobWrites | None:
        """``prepare_execution`` and ``prepare_job_execution``: the execution and its registries,
        the job started on this worker, the worker busy with it (``write_worker``), the job off the
        intermediate list; None when the worker wrote them itself."""
        if self.started_written:
            return None
        moment = now()
        job, formatted = self.job, utcformat(moment)
        job.worker_name, job.last_heartbeat, job.started_at = self.worker_name, moment, moment
        job._status = JobStatus.STARTED
        self._started_at = moment
        self.started_written = True
        stamp = moment.timestamp()
        args: dict[str, Any] = {
            "job_id": self.job_id,
            "execution_id": self.execution.id,
            "worker_name": self.worker_name,
            "now": formatted,
            "ts": repr(stamp),
            "ttl": self.heartbeat_ttl,
            "expires": int(stamp) + self.heartbeat_ttl,
        }
        if not isinstance(job, FlowJob) or job.may_expire:
            args["persist"] = True
        # RQ expires a job's executions set with its execution, for when its worker dies with it
        # (its end removes the execution, and the set with it). A step job's set goes with its run
        # (``job_keys``, retention): a reader sees the same either way, RQ's ExecutionRegistry
        # dropping the executions past their score (that expiry) before it reads.
        if not is_step_job(job):
            args["executions_ttl"] = self.heartbeat_ttl + 60
        if self.write_worker:
            args["worker_busy"] = True
        # RQ sets the worker hash's TTL to the job's heartbeat TTL; only one that would outlive the
        # TTL the hash has is worth a command (RQ's would often shorten it, until its next heartbeat).
        if self.heartbeat_ttl > self.worker_expires_in:
            args["worker_ttl"] = self.heartbeat_ttl
        return JobWrites(keys=(*self._keys(), self.registries.intermediate), args=args)

    def ended(self, output_json: str | None, failure: str | None) -> JobWrites | None:
        """``handle_job_success`` (the step's output as the job's result) or ``handle_job_failure``
        (``failure`` as its exception info, raised as ``JobFailed``); None when RQ would delete the
        job at once (a result TTL of 0), which RQ's own path does."""
        return self._end(job_result(output_json) if failure is None else None, failure)

    def returned(self, value: Any, script: Script) -> bool:
        """``handle_job_success`` of a job whose end no transition's script wrote (a run's trigger
        job, a step job whose attempt is retried or polled), ``value`` its result, in one call of
        ``script`` (``RQ_JOB_END_LUA``); False, nothing written, when RQ's own path must write it:
        a result TTL of 0, or jobs that depend on this one (RQ enqueues them)."""
        writes = self._end(value, None)
        if writes is None or not script(
            keys=[*writes.keys, self.job.dependents_key], args=[json.dumps(writes.args)]
        ):
            return False
        self.ended_by_script()
        return True

    def _end(self, value: Any, failure: str | None) -> JobWrites | None:
        """The job's end: succeeded with ``value`` as its result, or failed (``ended``)."""
        job, started = self.job, self._started_at
        kept = job.get_result_ttl(self.default_result_ttl) if failure is None else job.failure_ttl
        ttl = DEFAULT_FAILURE_TTL if kept is None else kept
        if started is None or ttl == 0:
            return None
        moment = now()
        stamp = moment.timestamp()
        fields = ["worker_name", self.worker_name, "execution_id", self.execution.id]
        fields += ["execution_started_at", repr(started.timestamp()), "execution_ended_at", repr(stamp)]
        if failure is None:
            status, registry, counter = JobStatus.FINISHED, self.registries.finished, "successful"
            score: int | str = "+inf" if ttl == -1 else int(stamp) + ttl
            fields = ["type", str(Result.Type.SUCCESSFUL.value), *fields]
            if value is not None:
                fields += ["return_value", b64encode(json.dumps(value).encode()).decode()]
        else:
            status, registry, counter = JobStatus.FAILED, self.registries.failed, "failed"
            score = ttl if ttl < 0 else int(stamp) + ttl
            exc_string = f"{JobFailed.__module__}.{JobFailed.__name__}: {failure}"
            fields = ["type", str(Result.Type.FAILED.value), *fields]
            fields += ["exc_string", b64encode(zlib.compress(exc_string.encode())).decode()]
        job.ended_at = moment
        job._status = status
        args: dict[str, Any] = {
            "job_id": self.job_id,
            "execution_id": self.execution.id,
            "status": status.value,
            "now": utcformat(moment),
            "result": fields,
            "score": score,
            "ttl": ttl,
        }
        counted = (f"{counter}_job_count", (moment - started).total_seconds())
        if self.tally is None:
            args["counter"], args["working_time"] = counted[0], repr(counted[1])
        else:
            self._counted = counted
        return JobWrites(
            keys=(*self._keys(), Result.get_key(self.job_id), registry),  # type: ignore[no-untyped-call]
            args=args,
        )

    def ended_by_script(self) -> None:
        """The completion script wrote the job's end (counted in the tally, if it is kept)."""
        self.ended_written = True
        if self.tally is not None and self._counted is not None:
            self.tally.add(*self._counted)


def failed_after_delete(job: Job, connection: Redis, *exc_info: object) -> None:
    """RQ failure callback of application jobs: a job deleted while it ran is neither retried nor
    kept as Failed, only for the window of ended jobs (RQ decides both from the job it holds, which
    the callback changes before RQ looks)."""
    if connection.hexists(job.key, DELETED_FIELD):
        job.retries_left = 0
        job.failure_ttl = job.result_ttl


def job_keys(job_id: str) -> list[str]:
    """Every key RQ keeps for one job: its hash, its results stream, its dependents and
    dependencies sets (the latter spelled as ``Job.dependencies_key`` spells it) and its
    executions registry."""
    return [
        Job.key_for(job_id),
        Result.get_key(job_id),  # type: ignore[no-untyped-call]
        Job.dependents_key_for(job_id),
        f"{Job.redis_job_namespace_prefix}:{job_id}:dependencies",
        ExecutionRegistry.key_template.format(job_id),
    ]


def _taken(reply: list[bytes | None] | None) -> TakenJob | None:
    """A ``_WHEREABOUTS_LUA`` reply's taker, decoded."""
    if not reply:
        return None
    kind, *rest = (item.decode() if item else None for item in reply)
    if kind == "started":
        worker, beat, *entries = rest
        return TakenJob(worker, utcparse(beat) if beat else None, tuple(e for e in entries if e))
    (seen,) = rest
    return TakenJob(None, datetime.fromtimestamp(float(seen), UTC) if seen else None)


def _state(status: str | None) -> JobState:
    """Hangfire state name of an RQ status; ``Deleted`` for no job or a status RQ may add later."""
    try:
        return _STATES[JobStatus(status)]
    except (KeyError, ValueError):
        return JobState.Deleted
