"""Worker and scheduler processes: an RQ worker with flowjobs' engine and duties, and the duty loop alone."""

from __future__ import annotations

import _thread
import gc
import mmap
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import Any, cast
from uuid import uuid4

import structlog
from redis import BlockingConnectionPool, ConnectionPool, Redis
from redis.client import Pipeline
from redis.connection import AbstractConnection
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.serializers import JSONSerializer
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import now, utcformat
from rq.worker import BaseWorker, WorkerStatus
from structlog import _output as structlog_output

from flowjobs import tracing
from flowjobs.core.handlers import HandlerRegistry
from flowjobs.duties import Duty, flow_duties, next_backoff
from flowjobs.engine import COLD_SHUTDOWN_REASON, ColdShutdown, Engine
from flowjobs.factory import engine_from_settings
from flowjobs.jobs import install_engine, installed_engine
from flowjobs.leases import LeaseKeeper
from flowjobs.metrics import serve_process_metrics
from flowjobs.runtime.current import keeping_books
from flowjobs.runtime.rq import (
    RQ_JOB_END_LUA,
    FlowJob,
    RQJobBooks,
    WorkerTally,
    is_flow_job,
    is_step_job,
)
from flowjobs.settings import Settings
from flowjobs.store.base import REDIS_DOWN

log = structlog.get_logger("flowjobs.worker")

#: Default of ``FLOWJOBS_MAX_STEP_CRASHES``.
DEFAULT_MAX_STEP_CRASHES = 3
#: A work loop that ran this long before it ended starts its back-off over.
_HEALTHY_LOOP_SECONDS = 60.0
#: RQ's worker sends its heartbeat (``last_heartbeat``, the worker key's TTL of minutes) several
#: times around every job; one with the same TTL sent less than this ago is not sent again.
_HEARTBEAT_COALESCE_SECONDS = 1.0


class _BusyShown:
    """What a SimpleWorker's hash shows of its work, so that a job's claim writes it busy with the
    job only when a reader would otherwise miss that: the worker's state is not shown ``busy``, or
    the last write of its current job (a claim's, or this object's) is ``_HEARTBEAT_COALESCE_SECONDS``
    old. Otherwise the hash shows the previous job as current until a thread of this process
    writes the job, if it is still running once that write is so old (rq-dashboard and ``rq info``
    read ``state`` and ``current_job``)."""

    def __init__(self, connection: Redis, key: str) -> None:
        self._connection = connection
        self._key = key
        self._lock = threading.Condition()
        # Monotonic time of the last write of the state busy and a current job; None once a write
        # of another state (or of no job) may have followed.
        self._written: float | None = None
        # The job to write as current, and when; the thread's wake-up (None: it waits for a notify).
        self._due: tuple[str, float] | None = None
        self._waking: float | None = None
        # The process whose thread writes, and its generation: a stopped thread's has passed.
        self._pid: int | None = None
        self._generation = 0

    def skip(self, job_id: str) -> bool:
        """Whether the claim of ``job_id`` may leave the worker hash alone (the job is then written
        as current a second after the last such write, if it still runs); False means the claim
        writes it."""
        with self._lock:
            moment = time.monotonic()
            written = self._written
            if written is None or moment - written >= _HEARTBEAT_COALESCE_SECONDS:
                self._written = moment
                return False
            due = written + _HEARTBEAT_COALESCE_SECONDS
            self._due = (job_id, due)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                _thread.start_new_thread(self._write_when_due, (self._generation,))
            elif self._waking is None or self._waking > due:
                self._lock.notify()
            return True

    def done(self) -> None:
        """The job ended: it is no longer to be written (a write under way has ended on return)."""
        with self._lock:
            self._due = None

    def forget(self) -> None:
        """The hash may no longer show the worker busy (a state, or no current job, was written)."""
        with self._lock:
            self._written = None
            self._due = None

    def stop(self) -> None:
        """End the thread (the work loop ends; a next one starts another)."""
        with self._lock:
            self._generation += 1
            self._pid = None
            self._due = None
            self._lock.notify_all()

    def _write_when_due(self, generation: int) -> None:
        with self._lock:
            while generation == self._generation:
                due = self._due
                if due is None or due[1] > time.monotonic():
                    self._waking = None if due is None else due[1]
                    self._lock.wait(None if due is None else due[1] - time.monotonic())
                    continue
                self._due = None
                try:
                    self._connection.hset(
                        self._key,
                        mapping={
                            "state": WorkerStatus.BUSY.value,
                            "current_job": due[0],
                            "current_job_working_time": 0,
                            "last_heartbeat": utcformat(now()),
                        },
                    )
                except Exception as error:  # the thread outlives any error: the next job's claim writes
                    self._written = None
                    log.warning("worker.current_job_not_written", worker=self._key, error=repr(error))
                else:
                    self._written = time.monotonic()


class FlowWorkerBase(BaseWorker):
    """What flowjobs adds to RQ's workers: a work loop that rides out a Redis outage, and (forking
    worker) renewal of the work-horse's claim lease from the parent process."""

    job_class = FlowJob
    #: Whether jobs run in this process (SimpleWorker): the ends its scripts write are counted in
    #: the worker's tally, not in the worker hash by each script.
    _performs_in_process = False

    def __init__(
        self,
        *args: Any,
        leases: LeaseKeeper | None = None,
        engine: Engine | None = None,
        max_step_crashes: int = DEFAULT_MAX_STEP_CRASHES,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.leases = leases
        self.engine = engine
        self.max_step_crashes = max_step_crashes
        # Serialises reviving RQ's scheduler (duty thread) with RQ's own start and stop of it.
        self._scheduler_lock = threading.Lock()
        self._looping = False
        # The step job prepared last (its start and end are left to its scripts), and the one
        # being performed in this process (its books are open to the engine).
        self._books: RQJobBooks | None = None
        self._keeping: RQJobBooks | None = None
        # (monotonic time, TTL) of the last heartbeat sent; whether one in a pipeline of RQ's
        # (its suspension check) may be left out too.
        self._beat: tuple[float, int] | None = None
        self._coalesce_in_pipelines = True
        # Counts of the step jobs' ends not yet in the worker hash; when `rq suspend` was last checked.
        self._tally = WorkerTally()
        self._suspension_checked: float | None = None
        self._end_script = self.connection.register_script(RQ_JOB_END_LUA)
        # What the worker hash shows of a job this process runs (claims skip writing it busy).
        self._busy = _BusyShown(self.connection, self.key)

    def _set_connection(self, connection: Redis) -> Redis:
        """RQ's raise of the pool's socket timeout above its blocking dequeue (405 s), applied to the
        connections made before too.

        redis-py 8 gives a connection of a pool that names no timeout 5 s, and RQ changes only the
        pool's setting: a connection made earlier (``wait_for_redis``' ping, the engine's first
        reads) kept 5 s, timed the dequeue out ("Redis connection timeout, quitting") and the work
        loop restarted every few seconds without taking a job. The pool forgets them here and makes
        new ones with RQ's timeout; one in use (a caller's pubsub) works on for its holder, and is
        dropped when released."""
        connection = super()._set_connection(connection)
        pool = connection.connection_pool
        pool.disconnect(inuse_connections=False)
        pool.reset()
        return connection

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, entered again after a back-off whenever it ends for another reason than a
        stop request or a drained burst.

        RQ quits its loop on a Redis timeout and on any error outside its dequeue, which a Redis
        restart causes at any moment (heartbeats, job bookkeeping, registering the worker).
        """
        worked = restarting = False
        backoff = 0.0
        while True:
            started = time.monotonic()
            try:
                self._busy.forget()
                if restarting:
                    self._forget_registration()
                self._looping = True
                worked = super().work(burst, *args, **kwargs) or worked
            except REDIS_DOWN as error:  # raised by RQ's bootstrap or teardown, outside its own loop
                log.warning("worker.redis_unavailable", worker=self.name, error=repr(error))
            if burst or self._stopping:
                return worked
            restarting = True
            backoff = next_backoff(0.0 if time.monotonic() - started > _HEALTHY_LOOP_SECONDS else backoff)
            log.warning("worker.loop_restarting", worker=self.name, retry_in_seconds=backoff)
            try:
                time.sleep(backoff)
            except StopRequested:
                return worked
            if self._stopping:
                return worked

    @property
    def _stopping(self) -> bool:
        """A stop was requested (RQ sets ``_stop_requested`` only when a signal arrives mid-job)."""
        return self._stop_requested or self._shutdown_requested_date is not None

    def _forget_registration(self) -> None:
        """Undo what RQ's teardown may not have done with Redis away, so ``work()`` can register again:
        stop the pubsub thread, and drop this worker's key (RQ refuses a live duplicate name).
        Raises while Redis is unreachable."""
        self._stop_pubsub()
        self.pubsub = self.pubsub_thread = None
        self._release_scheduler_locks()
        # The next loop starts its own RQ scheduler and maintenance (see ``revive_rq_scheduler``).
        self.scheduler = self.last_cleaned_at = None
        self.connection.delete(self.key)

    def unsubscribe(self) -> None:
        """RQ's unsubscribe from its command channel (teardown), without its unbounded wait."""
        if self.pubsub_thread is not None:
            log.info("worker.unsubscribing", worker=self.name)
        self._stop_pubsub()

    def _stop_pubsub(self) -> None:
        """Stop the pubsub thread, then close its connection.

        redis-py 8's ``PubSubWorkerThread.stop()`` waits for the thread, and one that is no longer
        subscribed sleeps up to RQ's ``sleep_time`` (60 s) waiting to be subscribed again: RQ's
        order (unsubscribe, then stop) made the warm shutdown of an idle worker hang up to a
        minute. The thread is told to stop first, without waiting, so the unsubscribe reply that
        wakes it ends it."""
        thread, pubsub = self.pubsub_thread, self.pubsub
        if thread is not None:
            thread.stop(timeout=0)
        if pubsub is not None:
            with suppress(*REDIS_DOWN):
                pubsub.unsubscribe()  # type: ignore[no-untyped-call]
        if thread is not None:
            thread.join(timeout=1)
        if pubsub is not None:
            with suppress(*REDIS_DOWN):
                pubsub.close()

    def _release_scheduler_locks(self) -> None:
        """Release the queue locks the ended loop's RQ scheduler still holds.

        Its process is stopped by then (RQ's teardown joins it), but one that died with Redis away
        could not release them, and a restarted Redis keeps them (61 s TTL): the next loop's scheduler,
        under a new name, would leave delayed attempts waiting that long. Token-checked: a lock another
        worker's scheduler holds is left alone."""
        if self.scheduler is None:
            return
        for queue_name in self.queue_names():
            release_lock(self.connection, RQScheduler.get_locking_key(queue_name), self.scheduler.name)

    # -- a step job's RQ bookkeeping, done by its claim and completion scripts (RQJobBooks) --------

    def prepare_execution(self, job: Job) -> Execution:
        """RQ's preparation of a job's execution; a step or trigger job's is written by its claim (the
        trigger's: its start of the run), with the job's start (an unsaved ``Execution`` until then)."""
        queue = next((queue for queue in self.queues if queue.name == job.origin), None)
        if not is_flow_job(job) or queue is None:
            self._books = None
            return super().prepare_execution(job)
        self.execution = Execution(uuid4().hex, job.id, self.connection, worker_name=self.name)
        self._state = WorkerStatus.BUSY
        beat = self._beat
        self._books = RQJobBooks(
            job,
            self.execution,
            queue,
            worker_name=self.name,
            worker_key=self.key,
            heartbeat_ttl=self.get_heartbeat_ttl(job),
            default_result_ttl=self.default_result_ttl,
            worker_expires_in=beat[1] - (time.monotonic() - beat[0]) if beat is not None else 0.0,
            tally=self._tally if self._performs_in_process else None,
            # A work-horse's completion writes its worker idle: only jobs run here can skip it.
            write_worker=not (self._performs_in_process and self._busy.skip(str(job.id))),
        )
        if isinstance(job, FlowJob):
            job.persist_in_claim = True
        return self.execution

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """RQ's execution of a job (in the work-horse, or in this process); a step job's books are
        open to its scripts meanwhile. A job that is no flow's runs in a span of its own (a flow's
        trigger and step jobs make theirs in the engine)."""
        books = self._books
        if books is None or books.job_id != job.id:
            if is_flow_job(job):
                return bool(super().perform_job(job, queue))
            with tracing.job_span(job):
                return bool(super().perform_job(job, queue))
        self._keeping = books
        try:
            with keeping_books(books):
                return bool(super().perform_job(job, queue))
        finally:
            self._keeping = None
            self._busy.done()

    def _kept(self, job: Job) -> RQJobBooks | None:
        """The books of ``job`` while this process performs it; RQ's start of it written first if
        its scripts did not write it (a job refused before its claim)."""
        books = self._keeping
        if books is None or books.job_id != job.id:
            return None
        self._write_start(books, job, remove_from_intermediate_queue=len(self.queues) == 1)
        return books

    def _write_start(self, books: RQJobBooks, job: Job, *, remove_from_intermediate_queue: bool) -> None:
        """RQ's own writes of a step job's start, unless they are written already."""
        if books.started_written:
            return
        books.started_written = True
        books.execution = super().prepare_execution(job)
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's bookkeeping before a job runs; a step job's claim writes it (and RQ's preparation of
        its execution) when it runs in ``perform_job``."""
        books = self._books
        if books is None or books.job_id != job.id:
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        if self._keeping is not books:
            self._write_start(books, job, remove_from_intermediate_queue=remove_from_intermediate_queue)
            return
        self.current_job_working_time = 0
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")  # type: ignore[no-untyped-call]

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ's bookkeeping when a job's function returns; a step job's completion wrote it. A flow
        job that succeeded gets it with the rest of its end (``handle_job_success``; RQ's own save
        of the job writes these fields when it ends RQ's way)."""
        books = self._kept(job)
        if books is None:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
        elif not books.ended_written:
            if job.get_status(refresh=False) == JobStatus.FAILED:
                super().handle_execution_ended(job, queue, heartbeat_ttl)
            else:
                job.ended_at = job.last_heartbeat = now()

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry) -> None:
        """RQ's bookkeeping of a finished job; a step job's completion wrote it, and a flow job's
        that no script ended (a trigger job, a retried attempt's) is written in one script call."""
        books = self._kept(job)
        if books is not None and not books.ended_written and not job.repeats_left:
            books.returned(job._result, self._end_script)
        if books is not None and books.ended_written:
            self._ended_by_script()
            return
        super().handle_job_success(job, queue, started_job_registry)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """RQ's logging of a job's exception (and its exception handlers); recorded on the job's
        span too, if it has one."""
        if exc_info and isinstance(exc_info[1], BaseException):
            tracing.job_raised(exc_info[1])
        super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
    ) -> None:
        """RQ's bookkeeping of a failed job; a step job's completion wrote it."""
        books = self._kept(job)
        if books is not None and books.ended_written:
            self._ended_by_script()
            return
        super().handle_job_failure(job, queue, started_job_registry, exc_string)

    def _ended_by_script(self) -> None:
        """What RQ's handling of a job's end leaves in this process, after the completion script wrote
        it to Redis: no execution, the worker idle."""
        self.execution = None
        self._state = WorkerStatus.IDLE

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's check for ``rq suspend`` (with a heartbeat when one is due), not again within
        ``_HEARTBEAT_COALESCE_SECONDS``: RQ sends it before every job; a worker busy with short jobs
        now notices a suspension within that, as an idle one notices it only once its blocking
        dequeue returns."""
        checked = self._suspension_checked
        if checked is not None and time.monotonic() - checked < _HEARTBEAT_COALESCE_SECONDS:
            return
        if self._tally.pending:
            self._beat = None  # the tally rides with the check: a suspended worker's hash holds it
        engine = self.engine or installed_engine()
        if engine is None:
            super().check_for_suspension(burst)
        else:
            # RQ's check (is_suspended), with the listeners marker: whether live views follow run
            # events, so this process's scripts publish them (StoreContext.listeners).
            asked_at = time.monotonic()
            with self.connection.pipeline() as pipe:
                self.heartbeat(pipeline=pipe)
                pipe.exists(WORKERS_SUSPENDED)
                pipe.exists(engine.store.keys.listeners())
                *_, suspended, listening = pipe.execute()
            engine.store.context.listeners.note(bool(listening), asked_at)
            if suspended:
                super().check_for_suspension(burst)
        self._suspension_checked = time.monotonic()

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue; with counts in the tally, a wait for work is preceded by a look without
        waiting and, when there is none, by a heartbeat with them: an idle worker's hash holds them."""
        if timeout is not None and self._tally.pending:
            found = super().dequeue_job_and_maintain_ttl(None, max_idle_time)
            if found is not None:
                return found
            self._write_tally()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _write_tally(self) -> None:
        """Send a heartbeat now, with the tally's counts."""
        self._beat = None
        self.heartbeat()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ's worker state, written only when it changes (RQ sets idle twice between jobs)."""
        if pipeline is None and state == self._state:
            return
        if state != WorkerStatus.BUSY:
            self._busy.forget()
        super().set_state(state, pipeline=pipeline)

    def set_current_job_id(self, job_id: str | None = None, pipeline: Any = None) -> None:
        """RQ's write of the worker's current job (none: at a job's end, RQ's way)."""
        if job_id is None:
            self._busy.forget()
        super().set_current_job_id(job_id, pipeline=pipeline)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's worker heartbeat in one round-trip, and not again within
        ``_HEARTBEAT_COALESCE_SECONDS`` with the same TTL (RQ sends it four times around a job)."""
        timeout = timeout or self.worker_ttl + 60
        beat = self._beat
        recent = beat is not None and time.monotonic() - beat[0] < _HEARTBEAT_COALESCE_SECONDS
        fresh = recent and beat is not None and beat[1] == timeout
        if pipeline is not None and not (fresh and self._coalesce_in_pipelines):
            super().heartbeat(timeout, pipeline=pipeline)
            self._write_tally_in(pipeline)
        elif pipeline is None and not fresh:
            with self.connection.pipeline(transaction=False) as pipe:
                super().heartbeat(timeout, pipeline=pipe)
                self._write_tally_in(pipe)
                pipe.execute()
        else:
            return
        self._beat = (time.monotonic(), timeout)

    def _write_tally_in(self, pipeline: Pipeline) -> None:
        """The tally's writes, in ``pipeline``; one that writes the worker idle is remembered."""
        if self._tally.write(pipeline, self.key, idle=self._state == WorkerStatus.IDLE):
            self._busy.forget()

    def maintain_heartbeats(self, job: Job) -> None:
        """RQ's heartbeats while a work-horse runs, plus the renewal of its job's claim lease.

        The parent process is never blocked by the handler, so the lease outlives a handler that
        holds the GIL. A Redis error is logged, not raised: RQ would leave the horse behind.
        """
        # RQ reads the heartbeat's reply by its place in this pipeline: it is always sent here.
        self._coalesce_in_pipelines = False
        try:
            super().maintain_heartbeats(job)
        except REDIS_DOWN as error:
            log.warning("worker.heartbeat_failed", worker=self.name, error=repr(error))
        finally:
            self._coalesce_in_pipelines = True
        lease = _job_lease(job)
        if self.leases is not None and lease is not None:
            self.leases.renew({lease[:2]: lease[2]})

    def set_current_job_working_time(self, current_job_working_time: float, pipeline: Any = None) -> None:
        """RQ's bookkeeping of the running job's working time, which RQ's horse monitor does without
        a guard: a Redis error is logged instead of ending the monitor (and the worker)."""
        try:
            super().set_current_job_working_time(current_job_working_time, pipeline=pipeline)
        except REDIS_DOWN as error:
            if pipeline is not None:
                raise
            log.warning("worker.heartbeat_failed", worker=self.name, error=repr(error))

    def revive_rq_scheduler(self) -> int:
        """Start RQ's scheduler process (delayed attempts) again if it died, e.g. in a Redis outage;
        RQ itself looks only between dequeues, every maintenance interval (10 minutes)."""
        with self._scheduler_lock:
            scheduler = self.scheduler
            cleaned: object = self.last_cleaned_at  # RQ declares it None only: keep the rest checked
            # Only once RQ's loop started its scheduler itself (its first maintenance pass comes
            # after), and never while it tears down: a process started then would be orphaned.
            if scheduler is None or not self._looping or cleaned is None or self._stopping:
                return 0
            before = scheduler._process
            if before is not None and before.is_alive():
                return 0
            scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]
            return int(scheduler._process is not before)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ's cold shutdown, raised as ``ColdShutdown``: in a SimpleWorker it arrives inside the
        running handler, where the engine takes a plain ``SystemExit`` for the handler's failure."""
        try:
            super().request_force_stop(signum, frame)
        except SystemExit as stop:
            raise ColdShutdown(stop.code) from None

    def teardown(self) -> None:
        """RQ's teardown (stops its scheduler), after which the duty thread no longer revives it."""
        with self._scheduler_lock:
            self._looping = False
        if not self.is_horse and self._tally.pending:
            with suppress(*REDIS_DOWN):
                self._write_tally()
        self._busy.stop()
        super().teardown()  # type: ignore[no-untyped-call]


class FlowWorker(FlowWorkerBase, Worker):
    """RQ's forking worker (one work-horse process per job) with flowjobs' additions: it tells a
    step that crashed its work-horse (recorded at once, against ``max_step_crashes``) from a worker
    that went away (left to the lease and recovery), and hands over the attempt a cold shutdown
    cuts off.

    It also spends less than RQ's worker around each job (README, "What a forking worker spends per
    job besides the job"): a run's trigger job runs in this process, work-horses take over one
    connection this process keeps for them, and this process goes on as soon as its horse says the
    job is done, without writing again what the horse's completion script wrote."""

    def setup_work_horse_signals(self) -> None:
        """RQ's work-horse signals, and SIGTERM ignored too: a supervisor that signals the whole
        group (systemd's default ``KillMode``) must not cut off the step of a warm shutdown. The
        parent's cold shutdown takes the horse down with SIGKILL."""
        super().setup_work_horse_signals()  # type: ignore[no-untyped-call]
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One byte shared with every work-horse (an anonymous mapping is MAP_SHARED across fork):
        # set by a horse whose step's completion script wrote RQ's end of the job, the worker's
        # state included, so this process need not write them again once the horse has exited.
        self._horse_report = mmap.mmap(-1, 1)
        # The connection every work-horse starts with, made and kept by this process, which never
        # uses it: a horse that ended its job by script leaves it with no reply in flight, so the
        # next horse takes it over instead of connecting (and handshaking) again.
        self._horse_connection: AbstractConnection | None = None
        # A pipe on which the work-horse says its job is done, and a pidfd of the horse (Linux):
        # the parent goes on as soon as the horse is done instead of waiting for its exit (the
        # kernel's teardown of a forked process takes milliseconds), and reaps it after the next
        # fork. Without pidfds (other systems) the parent waits for the exit, as RQ does.
        self._horse_done: tuple[int, int] | None = None
        self._horse_pidfd: int | None = None
        self._exiting: list[int] = []
        # A cold shutdown that arrived while a trigger job ran in this process, raised after it.
        self._in_process = False
        self._deferred_force_stop: int | None = None

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, with what this process holds after its start-up moved out of the
        collector's reach (``gc.freeze``): its full collections no longer walk them, and a
        work-horse's never touch (and copy) the pages they share with this process."""
        gc.collect()
        gc.freeze()
        return super().work(burst, *args, **kwargs)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's execution in a work-horse, except a run's trigger job, which runs only flowjobs' own
        code (no handler) and is executed in this process: a fork costs more than the trigger.

        An attempt cut off by a cold shutdown (RQ has killed and reaped the horse by then) is
        handed over for another worker to run at once. A step's manifest is loaded here first, for
        every work-horse to inherit."""
        self._reap_exited(wait=False)
        if is_flow_job(job) and not is_step_job(job):
            self._execute_in_process(job, queue)
            return
        engine = self.engine or installed_engine()
        manifest_hash = job.args[3] if is_step_job(job) and len(job.args) > 3 else None
        if engine is not None and isinstance(manifest_hash, str):
            with suppress(*REDIS_DOWN):
                engine.preload_manifest(manifest_hash)
        try:
            super().execute_job(job, queue)
        except ColdShutdown:
            self._settle(
                job,
                lambda engine, run_id, step_key, attempt: engine.hand_over(
                    run_id, step_key, attempt, reason=COLD_SHUTDOWN_REASON
                ),
            )
            raise

    def _execute_in_process(self, job: Job, queue: Queue) -> None:
        """Run ``job`` here, as RQ's SimpleWorker does; a cold shutdown waits for its end (it takes
        milliseconds, and one cut off would be left to recovery as a lost trigger)."""
        self._in_process = True
        try:
            self.prepare_execution(job)
            self.perform_job(job, queue)
        finally:
            self._in_process = False
        self.set_state(WorkerStatus.IDLE)
        signum, self._deferred_force_stop = self._deferred_force_stop, None
        if signum is not None:
            self.request_force_stop(signum, None)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ's cold shutdown (the work-horse killed with this process), deferred to the end of a
        trigger job running in this process."""
        if self._in_process:
            self._deferred_force_stop = signum
            return
        super().request_force_stop(signum, frame)

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        """RQ's fork of the work-horse, with the horse's report cleared and its connection ready."""
        self._horse_report[0] = 0
        self._horse_connection = self._connection_for_horse()
        self._horse_done = os.pipe() if _PIDFDS else None
        try:
            super().fork_work_horse(job, queue)  # the horse never returns from it
        finally:
            if self._horse_done is not None:
                os.close(self._horse_done[1])
        if self._horse_done is not None:
            try:
                self._horse_pidfd = os.pidfd_open(self.horse_pid)
            except OSError:  # a kernel without them (before 5.3): wait for the exit
                os.close(self._horse_done[0])
                self._horse_done = None
        self._reap_exited()

    def _reap_exited(self, *, wait: bool = True) -> None:
        """Reap the work-horses that said they were done (exiting, or gone, by now); without
        ``wait``, only those gone already. Until then a horse that ended stays a zombie."""
        for pid in list(self._exiting):
            try:
                reaped, _ = os.waitpid(pid, 0 if wait else os.WNOHANG)
            except ChildProcessError:
                reaped = pid
            if reaped:
                self._exiting.remove(pid)

    def _connection_for_horse(self) -> AbstractConnection | None:
        """The kept connection, or a new one (None where it cannot be handed over, or Redis is away:
        the horse connects itself)."""
        if self._horse_connection is not None:
            return self._horse_connection
        pool = self.connection.connection_pool
        if not _can_adopt(pool):
            return None
        connection = pool.connection_class(**pool.connection_kwargs)
        try:
            connection.connect()
        except REDIS_DOWN:
            return None
        return cast(AbstractConnection, connection)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """The work-horse: its Redis client starts on the connection its parent made; what it
        inherited is frozen out of its collector's reach, so a collection in the horse walks only
        what the job allocates (walking the parent's objects would write to, and copy, every page
        that holds them)."""
        gc.freeze()
        if self._horse_done is not None:
            os.close(self._horse_done[0])
        if self._horse_connection is not None:
            _adopt(self.connection.connection_pool, self._horse_connection)
        super().main_work_horse(job, queue)

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """RQ's execution of the job; in a work-horse, its parent is told once it is done (the
        horse then only exits)."""
        performed = super().perform_job(job, queue)
        if self._is_horse and self._horse_done is not None:
            with suppress(OSError):  # its parent is gone
                os.write(self._horse_done[1], b"1")
        return performed

    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        """RQ's wait for the work-horse's exit (its pid, ``waitpid`` status and resource usage),
        which returns as soon as the horse says it is done, as an exit with status 0: the horse is
        reaped later (``_reap_exited``). Interrupted like RQ's by the monitor's alarm."""
        done, pidfd = self._horse_done, self._horse_pidfd
        if done is None or pidfd is None:
            return super().wait_for_horse()
        poll = select.poll()
        poll.register(done[0], select.POLLIN)
        poll.register(pidfd, select.POLLIN)
        ready = {fd for fd, _ in poll.poll()}
        said_done = done[0] in ready and os.read(done[0], 1) == b"1"
        os.close(done[0])
        os.close(pidfd)
        self._horse_done = self._horse_pidfd = None
        if not said_done:
            return super().wait_for_horse()
        self._exiting.append(self.horse_pid)
        return self.horse_pid, os.EX_OK, None

    def _ended_by_script(self) -> None:
        """In the work-horse: its parent is told that the job's end is written (see ``__init__``)."""
        super()._ended_by_script()
        if self._is_horse:
            self._horse_report[0] = 1

    def monitor_work_horse(self, job: Job, queue: Queue) -> None:
        """RQ's wait for the work-horse; when the horse's completion script wrote the job's end (and
        the worker idle) this process takes them as written instead of writing them again."""
        super().monitor_work_horse(job, queue)
        if self._horse_report[0] == 1:
            self._ended_by_script()
        elif self._horse_connection is not None:
            # The horse may have left a command's reply unread (a timeout, a kill): not kept.
            self._horse_connection.disconnect()  # type: ignore[no-untyped-call]
            self._horse_connection = None

    def set_current_job_working_time(self, current_job_working_time: float, pipeline: Any = None) -> None:
        """RQ's bookkeeping of the running job's working time; its reset to 0 after a horse whose
        script closed the job is skipped when nothing else was written since the job's claim (which
        wrote 0)."""
        if (
            current_job_working_time == 0
            and pipeline is None
            and self.current_job_working_time == 0
            and self._horse_report[0] == 1
        ):
            return
        super().set_current_job_working_time(current_job_working_time, pipeline=pipeline)

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int | None, rusage: Any) -> None:
        """RQ calls this only when the work-horse died while this process lives: the job's doing.
        Its attempt is recorded Failed at once with the signal or exit code (a lease would take
        ``FLOWJOBS_CLAIM_LEASE_SECONDS`` and count the death as a lost worker)."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[no-untyped-call]
        cause = _horse_death(ret_val)
        self._settle(
            job,
            lambda engine, run_id, step_key, attempt: engine.record_crash(
                run_id, step_key, attempt, cause=cause, max_crashes=self.max_step_crashes
            ),
        )

    def _settle(self, job: Job, settle: Callable[[Engine, str, str, int], bool]) -> None:
        """Apply ``settle`` to the step attempt of ``job`` (none for a trigger or application job).
        A failure is logged, not raised: the attempt's lease and recovery remain its net."""
        lease = _job_lease(job)
        if self.engine is None or lease is None:
            return
        run_id, step_key, attempt = lease
        try:
            settle(self.engine, run_id, step_key, attempt)
        except Exception as error:
            log.error(
                "worker.settle_failed",
                run_id=run_id,
                step_key=step_key,
                attempt=attempt,
                job_id=job.id,
                error=repr(error),
            )


class FlowSimpleWorker(FlowWorkerBase, SimpleWorker):
    """RQ's SimpleWorker (jobs run in this process) with flowjobs' additions.

    Its only lease renewer is the LeaseKeeper thread of this process: a handler that holds the GIL
    longer than the claim lease can lose its lease (README, "Leases").
    """

    _performs_in_process = True


#: Whether this system has pidfds (Linux 5.3+), which ``FlowWorker.wait_for_horse`` polls.
_PIDFDS = hasattr(os, "pidfd_open")


def _can_adopt(pool: ConnectionPool) -> bool:
    """Whether ``_adopt`` knows how ``pool`` keeps its idle connections (redis-py's plain and Sentinel
    pools, without client-side caching, whose connections are proxies)."""
    return (
        isinstance(pool, ConnectionPool)
        and not isinstance(pool, BlockingConnectionPool)
        and getattr(pool, "cache", None) is None
        and isinstance(getattr(pool, "_available_connections", None), list)
    )


def _adopt(pool: ConnectionPool, connection: AbstractConnection) -> None:
    """In a forked process: make ``connection`` (made by the parent) the only idle connection of
    this process's ``pool``, as if the pool had made it here and had it released.

    redis-py resets a pool on its first use after a fork and then connects anew; it has no public
    way to take a connection in, so this does what its ``reset`` and ``release`` do. The pool's
    own check of an idle connection (``ensure_connection``) still reconnects one found broken."""
    pool.reset()
    connection.pid = pool.pid
    pool._created_connections += 1
    pool._available_connections.append(connection)


def _job_lease(job: Job) -> tuple[str, str, int] | None:
    """(run id, step key, attempt) of a step job, from its meta; None for other jobs."""
    meta = job.meta or {}
    run_id, step_key, attempt = meta.get("run_id"), meta.get("step_key"), meta.get("attempt")
    if not run_id or not step_key or attempt is None:
        return None
    return str(run_id), str(step_key), int(attempt)


def _horse_death(status: int | None) -> str:
    """What ended a work-horse, from its ``waitpid`` status."""
    if status is not None and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"Work-horse killed by {name}"
    if status is not None and os.WIFEXITED(status):
        return f"Work-horse exited with code {os.WEXITSTATUS(status)}"
    return f"Work-horse ended unexpectedly (waitpid status {status})"


def _fresh_log_locks() -> None:
    """In a forked work-horse: drop structlog's per-file write locks, which a thread of the parent
    (the duty loop) may have held at the fork and could never release there; they are recreated on
    first use."""
    structlog_output.WRITE_LOCKS.clear()


os.register_at_fork(after_in_child=_fresh_log_locks)


class _SchedulerBinding:
    """Holder of the after-fork hook below (multiprocessing keeps its hooks by weak reference)."""


def _end_scheduler_with_its_worker(_: _SchedulerBinding) -> None:
    """In RQ's scheduler process (a ``multiprocessing`` child the worker forks): stop it once its
    worker is gone, as RQ's own stop would (SIGTERM: its loop ends, releasing its queue locks).

    A worker SIGKILLed otherwise left it running, orphaned, polling Redis and renewing its locks.
    The parent's sentinel pipe closes when the worker and every process it forked since (a
    work-horse finishing its job) have exited."""
    parent = multiprocessing.parent_process()
    if multiprocessing.current_process().name != _RQ_SCHEDULER_PROCESS or parent is None:
        return
    sentinel, pid = parent.sentinel, os.getpid()

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os.kill(pid, signal.SIGTERM)

    threading.Thread(target=watch, name="flowjobs-worker-watch", daemon=True).start()


#: The name RQ gives its scheduler's process (``RQScheduler.start``).
_RQ_SCHEDULER_PROCESS = "Scheduler"
_scheduler_binding = _SchedulerBinding()
multiprocessing.util.register_after_fork(_scheduler_binding, _end_scheduler_with_its_worker)


def build_worker(
    redis: Redis,
    queue_name: str,
    *,
    simple: bool = False,
    name: str | None = None,
    leases: LeaseKeeper | None = None,
    engine: Engine | None = None,
    max_step_crashes: int = DEFAULT_MAX_STEP_CRASHES,
) -> FlowWorkerBase:
    """An RQ worker on flowjobs' queue with the JSON serializer (forking unless ``simple``).

    With ``leases``, a forking worker's parent renews its work-horse's lease at every horse
    heartbeat, a third of the lease apart (at least 1 s: RQ's monitor uses ``alarm()``). With
    ``engine``, a forking worker records a step that crashed its work-horse at once (failing it
    for good at ``max_step_crashes``) and hands over an attempt its cold shutdown cuts off.
    """
    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    options: dict[str, Any] = {"connection": redis, "serializer": JSONSerializer, "name": name}
    if leases is not None:
        options["job_monitoring_interval"] = max(1, int(leases.lease_seconds / 3))
    worker_class: type[FlowWorkerBase] = FlowSimpleWorker if simple else FlowWorker
    return worker_class([queue], leases=leases, engine=engine, max_step_crashes=max_step_crashes, **options)


def wait_for_redis(redis: Redis) -> None:
    """Return once Redis answers, logging each failed try and backing off (1 s, doubling up to 30 s)
    in between: a worker started before its Redis (a reboot, a deploy) waits for it."""
    backoff = 0.0
    while True:
        try:
            redis.ping()
            return
        except REDIS_DOWN as error:
            backoff = next_backoff(backoff)
            where = _redis_whereabouts(redis, error)
            log.warning("worker.waiting_for_redis", **where, retry_in_seconds=backoff)
            time.sleep(backoff)


def _redis_whereabouts(redis: Redis, error: Exception) -> dict[str, Any]:
    """Where ``redis`` connects, and why it failed, in a log line's fields: the server's address, or
    through Sentinel the primary's name and the Sentinels asked (whose error would otherwise print
    every Sentinel client's repr)."""
    pool = redis.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        sentinels = [
            f"{s.connection_pool.connection_kwargs.get('host')}:{s.connection_pool.connection_kwargs.get('port')}"
            for s in pool.sentinel_manager.sentinels
        ]
        down = isinstance(error, MasterNotFoundError)
        why = "no Sentinel named a primary that is up" if down else repr(error)
        return {"master": pool.service_name, "sentinels": sentinels, "error": why}
    where = pool.connection_kwargs
    return {"host": where.get("host", where.get("path")), "port": where.get("port"), "error": repr(error)}


def run_worker(
    settings: Settings,
    *,
    simple: bool = False,
    burst: bool = False,
    name: str | None = None,
    handlers: HandlerRegistry | None = None,
    metrics: tuple[str, int] | None = None,
) -> bool:
    """Run an RQ worker (with RQ's scheduler for delayed attempts) until stopped, or drained with ``burst``.

    A thread of this process runs the duties meanwhile (recovery, deadlines; the first pass at
    once), so work lost by a dead worker is re-dispatched without any other process. A forking
    worker's work-horses do not inherit the thread.
    """
    if metrics is not None:
        serve_process_metrics(metrics[0], metrics[1])
    engine = engine_from_settings(settings, handlers=handlers)
    install_engine(engine)
    wait_for_redis(engine.store.redis)  # RQ's worker reads from Redis as it is built
    worker = build_worker(
        engine.store.redis,
        settings.queue,
        simple=simple,
        name=name,
        leases=engine.leases,
        engine=engine,
        max_step_crashes=settings.max_step_crashes,
    )
    revive = Duty(
        "rq-scheduler", settings.recovery_interval_seconds, worker.revive_rq_scheduler, locked=False
    )
    duties = flow_duties(engine, settings, owner=worker.name, extra=[revive])
    log.info("worker.starting", queue=settings.queue, simple=simple, burst=burst, worker=worker.name)
    duty_thread = duties.start()
    try:
        return bool(worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper()))
    finally:
        duty_thread.stop()


def run_scheduler(settings: Settings, *, once: bool = False, engine: Engine | None = None) -> None:
    """The duties without taking jobs, every ``recovery_interval_seconds`` (optional: every worker
    runs them too); with ``once``, one pass of every duty, ignoring the locks."""
    engine = engine or engine_from_settings(settings, handlers=HandlerRegistry())
    duties = flow_duties(engine, settings, owner=f"scheduler:{engine.worker_name}")
    if once:
        log.info("scheduler.pass", done=duties.run_due(force=True))
        return
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("scheduler.starting", interval_seconds=settings.recovery_interval_seconds)
    duties.run_forever(stop)
