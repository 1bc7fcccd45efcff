"""The application's side: trigger runs and read their history."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import structlog
from redis import Redis

from flowjobs.control import retry_failed_step
from flowjobs.core.clock import iso, utcnow
from flowjobs.core.errors import (
    FlowDisabled,
    InvalidSignalPayload,
    InvalidTriggerData,
    RunNotActive,
    RunNotFound,
    ScheduleNotFound,
    SignalAlreadyDelivered,
    SignalBusy,
    SignalNotFound,
    TriggerNotAdmitted,
    TriggerNotFound,
)
from flowjobs.core.job_calls import JobCall, step_call, step_job_id, trigger_call, trigger_job_id
from flowjobs.core.keys import Keys
from flowjobs.core.limits import RunSeconds, check_json_limits, number_problem
from flowjobs.core.manifest import FlowDefinition
from flowjobs.core.records import EventType, FlowRunRecord, RunLineage
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.schedules import (
    SCHEDULE_HEADER,
    TICK_HEADER,
    Fired,
    ScheduleKind,
    ScheduleState,
    SyncReport,
    cron_trigger_data,
    override_cron,
    pause,
    resume,
    tick_idempotency_key,
)
from flowjobs.core.statuses import RunStatus
from flowjobs.core.trigger_headers import (
    IDEMPOTENCY_HEADER,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    HeaderLimits,
    shown,
    trigger_headers,
)
from flowjobs.queries import Queries
from flowjobs.runtime.base import JobRunner
from flowjobs.runtime.recurring import fire_recurring_job
from flowjobs.runtime.rq import RQJobRunner
from flowjobs.settings import Settings
from flowjobs.store.async_runs import AsyncRunWrites
from flowjobs.store.base import StoreContext
from flowjobs.store.replicas import ReplicaWait
from flowjobs.store.run_store import RunStore
from flowjobs.store.schedules import ScheduleStore, prune_flow_schedules, sync_flow_schedules
from flowjobs.store.transitions import (
    Admission,
    AdmissionRefusal,
    CancelRefusal,
    Created,
    Delivered,
    NewRun,
    Refused,
    SignalRefusal,
    SignalResume,
)
from flowjobs.tracing import caller_trace

log = structlog.get_logger("flowjobs.client")
#: Every setting's default, read from neither the environment nor the config file: what a client
#: built without settings uses.
_DEFAULTS = Settings.model_construct()
#: Deliveries tried while steps keep parking on the signal between the read and the write.
_SIGNAL_TRIES = 10


@dataclass(frozen=True)
class PreparedTrigger:
    """A checked trigger and the run it writes (``FlowClient.prepare_trigger``)."""

    definition: FlowDefinition
    manifest_hash: str
    new: NewRun
    enqueue_after: JobCall | None
    """The trigger job, for a runner whose jobs are not in the store's Redis (enqueued once the
    run is written); None when its enqueue is part of the run's script."""


class RunHandle:
    """A triggered run: its ids, and ways to follow it."""

    def __init__(
        self, client: FlowClient, run_id: UUID, background_job_id: str, *, created: bool = True
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.background_job_id = background_job_id
        self.created = created
        """False when an idempotency key returned an earlier run (nothing was written)."""

    def status(self) -> RunStatus:
        """The run's current status."""
        return self.record().status

    def record(self) -> FlowRunRecord:
        """The run record (without steps)."""
        run = self.client.get_run(self.run_id)
        if run is None:
            raise RunNotFound(f"run {self.run_id} no longer exists")
        return run

    def detail(self) -> FlowRunRecord:
        """The run with its steps and their attempts."""
        run = self.client.get_run_detail(self.run_id)
        if run is None:
            raise RunNotFound(f"run {self.run_id} no longer exists")
        return run

    def wait(self, timeout: float = 60.0, poll_interval: float = 0.05) -> FlowRunRecord:
        """Poll until the run is terminal; ``TimeoutError`` if it is not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.record()
            if run.status.is_terminal:
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} is still {run.status.value} after {timeout:g}s")
            time.sleep(poll_interval)

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id}, background_job_id={self.background_job_id!r})"


class RetriedStep(RunHandle):
    """A run whose Failed step ``FlowClient.retry_step`` queued again: the run's handle, and the
    attempt it queued (known when queued, so no caller re-reads the step while a worker may already
    be running it)."""

    def __init__(self, client: FlowClient, run_id: UUID, step_key: str, attempt: int) -> None:
        super().__init__(client, run_id, trigger_job_id(run_id))
        self.step_key = step_key
        self.attempt = attempt
        """The number of the attempt queued."""
        self.job_id = step_job_id(run_id, step_key, attempt)
        """The job of that attempt."""


class FlowClient:
    """Triggers flows and reads run history from one Redis."""

    def __init__(
        self,
        redis: Redis,
        flows: FlowRegistry | None = None,
        queue_name: str = _DEFAULTS.queue,
        *,
        key_prefix: str = _DEFAULTS.key_prefix,
        runner: JobRunner | None = None,
        retention_seconds: int = _DEFAULTS.retention_seconds,
        max_run_events: int = _DEFAULTS.max_run_events,
        run_timeout_seconds: float | None = _DEFAULTS.run_timeout_seconds,
        max_data_depth: int = _DEFAULTS.max_data_depth,
        max_data_bytes: int = _DEFAULTS.max_data_bytes,
        rq_job_ttl_seconds: int = _DEFAULTS.rq_job_ttl_seconds,
        header_limits: HeaderLimits = _DEFAULTS.trigger_header_limits,
        job_timeout_seconds: int = _DEFAULTS.job_timeout_seconds,
        replica_wait: ReplicaWait | None = None,
    ) -> None:
        """A client of one Redis; each value defaults to its setting's default (``from_settings``
        reads them all from the settings). Without a runner, jobs go to RQ's ``queue_name``. With
        ``replica_wait``, a trigger returns once that many replicas hold the new run, else raises
        ``ReplicasNotAcknowledged``."""
        self.redis = redis
        self.flows = flows if flows is not None else FlowRegistry()
        self.store = RunStore(
            StoreContext(
                redis,
                Keys(key_prefix),
                retention_seconds=retention_seconds,
                max_run_events=max_run_events,
                replica_wait=replica_wait,
            )
        )
        self.schedules = ScheduleStore(redis, Keys(key_prefix))
        #: What the operator adapters (web API, flows UI, CLI) read.
        self.queries = Queries(redis, self.store)
        self.runner = runner or RQJobRunner(
            redis,
            queue_name,
            keep_seconds=min(rq_job_ttl_seconds, retention_seconds),
            default_timeout_seconds=job_timeout_seconds,
            schedules=self.schedules,
        )
        self.run_timeout_seconds = run_timeout_seconds
        self.max_data_depth = max_data_depth
        self.max_data_bytes = max_data_bytes
        self.header_limits = header_limits

    @classmethod
    def from_settings(cls, settings: Settings | None = None, flows: FlowRegistry | None = None) -> FlowClient:
        """A client for ``REDIS_URL`` and the other settings; flows from ``FLOWJOBS_FLOWS_DIR`` by default.

        A bad file of that folder does not stop the others: it is kept, with its problems, in
        ``flows.invalid_files`` (and logged as a warning).
        """
        from flowjobs.factory import client_from_settings  # the composition root builds clients

        return client_from_settings(settings, flows)

    def trigger(
        self,
        flow: UUID | str,
        trigger_key: str = "manual",
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
        source_run_id: UUID | str | None = None,
        admission: Admission | None = None,
    ) -> RunHandle:
        """Start a run: store it as Pending and enqueue its trigger job, in one script.

        A repeated idempotency key (argument or ``Idempotency-Key`` header; per flow and
        trigger key) returns the first run's handle and writes nothing. ``InvalidTriggerData``
        (``DataTooLarge`` past ``max_data_depth``/``max_data_bytes``, ``TriggerHeadersTooLarge``
        past ``header_limits``, ``InvalidIdempotencyKey``) also writes nothing, as do
        ``FlowDisabled`` and ``TriggerNotAdmitted`` (``admission``: a rate limit's token bucket
        and a key that must be new, checked after the flow's enabled flag, as the webhook
        receiver uses them). The run keeps ``headers`` less credentials (``Authorization``,
        ``Cookie``…); ``flowjobs.core.trigger_headers`` has the rules.

        The run's trace (``flowjobs.tracing``) is a child of a well-formed W3C ``traceparent``
        (with ``tracestate``) in ``headers``, else of the span current here, if any; a malformed
        traceparent is kept as a header but not followed.
        """
        return self.commit_trigger(
            self.prepare_trigger(
                flow,
                trigger_key,
                data,
                headers,
                idempotency_key=idempotency_key,
                source_run_id=source_run_id,
                admission=admission,
            )
        )

    def prepare_trigger(
        self,
        flow: UUID | str,
        trigger_key: str = "manual",
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
        source_run_id: UUID | str | None = None,
        admission: Admission | None = None,
    ) -> PreparedTrigger:
        """``trigger``'s checks and the run it would write, without I/O: commit it with
        ``commit_trigger`` or, on an event loop, ``commit_trigger_async``."""
        definition = self.flows.get(flow)
        if trigger_key not in definition.manifest.triggers:
            known = ", ".join(sorted(definition.manifest.triggers)) or "none"
            raise TriggerNotFound(
                f"flow {definition.name!r} has no trigger {trigger_key!r} (triggers: {known})"
            )
        try:
            data_json = check_json_limits(
                data, max_depth=self.max_data_depth, max_bytes=self.max_data_bytes, what="trigger data"
            )
        except (TypeError, ValueError) as error:
            raise InvalidTriggerData(f"trigger data is not JSON-serialisable: {error}") from error
        kept = trigger_headers(headers, idempotency_key, self.header_limits)
        now = utcnow()
        timeout_at = self._deadline(data, now)
        manifest_hash = definition.manifest.content_hash()
        run_id = uuid4()
        trace = caller_trace(kept.trace)
        run = FlowRunRecord(
            id=run_id,
            flow_id=definition.id,
            flow_name=definition.name,
            status=RunStatus.Pending,
            trigger_key=trigger_key,
            trigger_data_json=data_json,
            trigger_headers=kept.headers,
            background_job_id=trigger_job_id(run_id),
            started_at=now,
            source_run_id=parse_run_id(source_run_id) if source_run_id else None,
            flow_version=definition.version,
            manifest_hash=manifest_hash,
            idempotency_key=kept.idempotency_key,
            timeout_at=timeout_at,
            traceparent=trace.get(TRACEPARENT_HEADER),
            tracestate=trace.get(TRACESTATE_HEADER),
        )
        call = trigger_call(str(run_id), str(definition.id), definition.name, trace)
        commands = self.runner.enqueue_commands([call])
        new = self.store.runs.new_run(
            run,
            setup=self.store.flows.flow_commands(definition, manifest_hash),
            enqueue=commands[0] if commands is not None else (),
            admission=admission,
        )
        return PreparedTrigger(definition, manifest_hash, new, None if commands is not None else call)

    def commit_trigger(self, prepared: PreparedTrigger) -> RunHandle:
        """Write a prepared run (one script call); see ``trigger``."""
        return self._committed(prepared, self.store.runs.create_run(prepared.new))

    async def commit_trigger_async(self, prepared: PreparedTrigger, runs: AsyncRunWrites) -> RunHandle:
        """``commit_trigger`` through ``runs``, an asyncio client of this client's Redis."""
        return self._committed(prepared, await runs.create_run(prepared.new))

    def _committed(self, prepared: PreparedTrigger, answer: Created | Refused[AdmissionRefusal]) -> RunHandle:
        definition = prepared.definition
        self.store.flows.note_flow_saved(definition, prepared.manifest_hash)
        if isinstance(answer, Refused):
            if answer.reason is AdmissionRefusal.disabled:
                raise FlowDisabled(f"flow {definition.name!r} is disabled")
            if answer.reason is AdmissionRefusal.rate_limited:
                raise TriggerNotAdmitted(
                    answer.reason.value,
                    f"too many runs of flow {definition.name!r}",
                    retry_after_ms=int(answer.detail),
                )
            raise TriggerNotAdmitted(answer.reason.value, "this trigger was already received")
        if answer.created and prepared.enqueue_after is not None:
            self.runner.enqueue(prepared.enqueue_after)
        run_id = UUID(answer.run_id)
        return RunHandle(self, run_id, trigger_job_id(run_id), created=answer.created)

    def _deadline(self, data: Any, now: datetime) -> datetime | None:
        """The run's ``timeoutAt``: ``runTimeoutSeconds`` of the trigger data when present (a bad
        value is refused, not ignored, so a caller never loses a deadline unknowingly), else
        the client's default."""
        seconds = self.run_timeout_seconds
        if isinstance(data, dict) and "runTimeoutSeconds" in data:
            seconds = data["runTimeoutSeconds"]
            why = number_problem(seconds, RunSeconds)
            if why:
                raise InvalidTriggerData(f"runTimeoutSeconds in the trigger data {why}, not {seconds!r}")
        return now + timedelta(seconds=seconds) if seconds else None

    def get_run(self, run_id: UUID | str) -> FlowRunRecord | None:
        """The run record (``steps`` is None), or None; ``RunNotFound`` for an id that is not a UUID."""
        return self.store.history.get_run(parse_run_id(run_id))

    def get_run_detail(self, run_id: UUID | str) -> FlowRunRecord | None:
        """The run with every step and its attempts (one Redis round-trip), or None; ``RunNotFound``
        for an id that is not a UUID."""
        return self.store.history.get_run_detail(parse_run_id(run_id))

    def list_runs(
        self,
        *,
        flow_id: UUID | str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        before: UUID | str | datetime | None = None,
        since: datetime | None = None,
        skip: int = 0,
    ) -> list[FlowRunRecord]:
        """Runs newest first; pass the last run's id as ``before`` for the next page (or ``skip``
        runs; ``RunNotFound`` if it is not a UUID); ``since`` keeps the runs started at or after it."""
        if before is not None and not isinstance(before, datetime):
            before = parse_run_id(before)
        return self.store.history.list_runs(
            flow_id=flow_id, status=status, limit=limit, before=before, since=since, skip=skip
        )

    def signal(self, run_id: UUID | str, signal_name: str, payload: Any = None) -> str:
        """Deliver a signal to a run: every step of it parked on that name resumes at once, with the
        payload as its output, and a step that parks on it later consumes it without waiting.

        Delivery and the resume jobs are written in one script, so no failure between them can
        leave a step waiting. Returns ``"resumed"``, or ``"kept"`` when no step has parked on it
        yet. ``SignalNotFound``: no such active run, or no step of it can consume that name: not a
        literal ``signalName`` of the flow, no step parked on it, and no step named by an expression
        left to park (until each has parked or ended, the run keeps the signal);
        ``SignalAlreadyDelivered``: the name was signalled before; ``RunNotFound``: the id is not a UUID.
        """
        run_id = parse_run_id(run_id)
        try:
            payload_json = json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise InvalidSignalPayload(f"signal payload is not JSON-serialisable: {error}") from error
        run_fields = self.store.history.run_fields(run_id)
        if "manifest_hash" not in run_fields:
            raise SignalNotFound(f"no run with id {run_id}")
        manifest = self.store.flows.load_manifest(run_fields["manifest_hash"])
        declared = signal_name in manifest.signal_names()
        open_waits = manifest.expression_signal_waits()
        answer: Delivered | Refused[SignalRefusal] = Refused(SignalRefusal.changed)
        for _ in range(_SIGNAL_TRIES):
            waiters = self.store.signals.signal_waiters(run_id, signal_name)
            calls = {key: step_call(str(run_id), run_fields, key, n) for key, n in waiters.items()}
            commands = self.runner.enqueue_commands(list(calls.values())) if calls else None
            resumes = {
                key: SignalResume(waiters[key], call.job_id, commands[i] if commands is not None else ())
                for i, (key, call) in enumerate(calls.items())
            }
            answer = self.store.signals.deliver_signal(
                run_id, signal_name, payload_json, declared=declared, resumes=resumes, open_waits=open_waits
            )
            if not (isinstance(answer, Refused) and answer.reason is SignalRefusal.changed):
                break
        if isinstance(answer, Refused):
            if answer.reason is SignalRefusal.already:
                raise SignalAlreadyDelivered(
                    f"signal {signal_name!r} was already delivered to run {run_id} at {answer.detail}"
                )
            if answer.reason is SignalRefusal.not_active:
                raise SignalNotFound(f"run {run_id} is {answer.detail}; it waits for no signal")
            if answer.reason is SignalRefusal.changed:
                raise SignalBusy(f"steps of run {run_id} kept parking on {signal_name!r}; signal again")
            raise SignalNotFound(f"no step of run {run_id} waits for signal {signal_name!r}")
        if not answer.resumed:
            return "kept"
        if commands is None:
            self.runner.enqueue_many([calls[key] for key in answer.resumed])
        return "resumed"

    def find_run_by_job(self, job_id: str) -> FlowRunRecord | None:
        """The run an RQ job (trigger or step attempt) belongs to."""
        run_id = self.store.history.find_run_id_by_job(job_id)
        return self.store.history.get_run(run_id) if run_id else None

    def purge(self, older_than: timedelta, dry_run: bool = False) -> int:
        """Delete the runs that finished more than ``older_than`` ago, with every key of theirs
        and their RQ jobs' hashes and results (``FLOWJOBS_RETENTION_DAYS``); active runs never. Returns
        how many were deleted, or with ``dry_run`` how many would be (nothing is deleted)."""
        return self.store.retention.purge_older_than(
            older_than, jobs=self.runner.stored_jobs(), dry_run=dry_run
        ).runs

    # -- flows and schedules -----------------------------------------------------------------

    def set_flow_enabled(self, flow: UUID | str, enabled: bool) -> FlowDefinition:
        """Enable or disable a flow (persisted on its flow record, surviving restarts and deploys).

        A disabled flow refuses every trigger (``FlowDisabled``) and its Cron schedules do not fire.
        """
        definition = self.flows.get(flow)
        self.store.flows.save_flow(definition)
        self.store.flows.set_flow_enabled(definition.id, enabled)
        log.info("flow.enabled" if enabled else "flow.disabled", flow_id=str(definition.id))
        return definition

    def sync_schedules(self) -> SyncReport:
        """Declare this client's flows' Cron triggers as schedules: add new ones, update changed
        expressions and zones; remove none (other processes may have other flows)."""
        return sync_flow_schedules(self.schedules, self.flows, utcnow())

    def prune_schedules(self, *, dry_run: bool = False) -> list[str]:
        """Remove the flow schedules whose flow or Cron trigger is not in this client's flows (with
        ``dry_run``, only list them): run it once every process has the flows this client has."""
        return prune_flow_schedules(self.schedules, self.flows, utcnow(), dry_run=dry_run)

    def list_schedules(self) -> list[ScheduleState]:
        """Every schedule: flows' Cron triggers and applications' recurring jobs, by id."""
        return self.schedules.all()

    def pause_schedule(self, schedule_id: str) -> ScheduleState:
        """Stop a schedule firing (persisted); ticks while paused are not caught up."""
        return self.schedules.update(schedule_id, lambda state: pause(state, utcnow()))

    def resume_schedule(self, schedule_id: str) -> ScheduleState:
        """Fire again from the next tick."""
        return self.schedules.update(schedule_id, lambda state: resume(state, utcnow()))

    def set_schedule_cron(self, schedule_id: str, expression: str | None) -> ScheduleState:
        """Override the schedule's expression at runtime (persisted; wins over the flow file until
        cleared with None). ``InvalidCron`` stores nothing."""
        return self.schedules.update(schedule_id, lambda state: override_cron(state, expression, utcnow()))

    def trigger_schedule(self, schedule_id: str) -> Fired:
        """Fire a schedule once now, paused or not, keeping its schedule (``FlowDisabled`` for a
        disabled flow's)."""
        return self.fire_schedule(self.schedules.require(schedule_id), None)

    def fire_schedule(self, state: ScheduleState, tick: datetime | None) -> Fired:
        """Fire one tick of a schedule (None: an extra fire now).

        A flow's tick triggers a run with the trigger's ``inputs`` (minus ``cronExpression``) as its
        data, headers naming the schedule and the tick, and the tick's identity
        (``<schedule id>@<tick>``) as idempotency key: the run and its trigger job are written in
        one transaction only if that key is new, so a duplicate fire returns the first run.
        """
        if state.kind is ScheduleKind.job:
            return fire_recurring_job(self.schedules, self.runner, state, tick)
        if state.flow_id is None or state.trigger_key is None:
            raise ScheduleNotFound(f"schedule {state.schedule_id!r} names no flow trigger")
        definition = self.flows.get(state.flow_id)
        trigger = definition.manifest.triggers.get(state.trigger_key)
        if trigger is None:
            raise TriggerNotFound(f"flow {definition.name!r} has no trigger {state.trigger_key!r}")
        key = tick_idempotency_key(state.schedule_id, tick) if tick is not None else None
        headers = {SCHEDULE_HEADER: state.schedule_id, TICK_HEADER: iso(tick) if tick is not None else "now"}
        handle = self.trigger(
            definition.id, state.trigger_key, cron_trigger_data(trigger), headers, idempotency_key=key
        )
        return Fired(handle.background_job_id, handle.run_id, new=key is None or handle.created)

    # -- control actions ---------------------------------------------------------------------

    def cancel(self, run_id: UUID | str, reason: str | None = None) -> FlowRunRecord:
        """Cancel an active run: its queued and parked steps are skipped (their jobs cancelled in RQ)
        and nothing new starts; steps running on a worker finish (``ctx.cancel_requested`` tells
        them), then the run closes as ``Cancelled``, once — at once if none is running.

        ``RunNotFound``; ``RunNotActive`` for a finished run (nothing is changed).
        """
        run_id = parse_run_id(run_id)
        answer = self.store.runs.cancel_run(run_id, reason or "cancelled on request")
        if isinstance(answer, Refused):
            if answer.reason is CancelRefusal.not_active:
                raise RunNotActive(
                    f"run {run_id} is {answer.detail}; only a Pending or Running run can be cancelled"
                )
            raise RunNotFound(f"no run with id {run_id}")
        for job_id in answer.job_ids:
            # Best effort: a job that runs anyway finds its step skipped and is refused at its claim.
            self.runner.cancel(job_id)
        return self._run(run_id)

    def rerun(self, run_id: UUID | str) -> RunHandle:
        """A new run of the same flow and trigger with the source run's data and headers (its
        idempotency key and trace context dropped: the re-run belongs to the trace of whoever
        re-runs it) and ``source_run_id`` set; the source run's history notes it.

        The new run is planned against the flow as registered now (as any new trigger is), not the
        source run's pinned manifest. ``RunNotFound``; ``FlowNotFound``/``FlowDisabled`` as for
        ``trigger``.
        """
        source = self._run(run_id)
        data = json.loads(source.trigger_data_json) if source.trigger_data_json else None
        headers = {
            name: value
            for name, value in (source.trigger_headers or {}).items()
            if name.lower() not in (IDEMPOTENCY_HEADER, TRACEPARENT_HEADER, TRACESTATE_HEADER)
        }
        handle = self.trigger(
            source.flow_id, source.trigger_key or "manual", data, headers, source_run_id=source.id
        )
        self.store.runs.note_event(source.id, EventType.run_rerun, f"re-run as {handle.run_id}")
        return handle

    def lineage(self, run_id: UUID | str) -> RunLineage:
        """The runs a run was re-run from (nearest first) and the runs re-run from it (breadth first)."""
        run = self._run(run_id)
        ancestors: list[FlowRunRecord] = []
        seen = {run.id}
        source = run.source_run_id
        while source is not None and source not in seen:
            seen.add(source)
            parent = self.store.history.get_run(source)
            if parent is None:
                break
            ancestors.append(parent)
            source = parent.source_run_id
        descendants: list[FlowRunRecord] = []
        level = [str(run.id)]
        while level:
            children = [child for parent_id in level for child in self.store.runs.derived_run_ids(parent_id)]
            level = []
            for child_id in children:
                child = self.store.history.get_run(child_id)
                if child is not None and child.id not in seen:
                    seen.add(child.id)
                    descendants.append(child)
                    level.append(child_id)
        return RunLineage(run_id=run.id, ancestors=ancestors, descendants=descendants)

    def retry_step(self, run_id: UUID | str, step_key: str, *, clear_cancel: bool = False) -> RetriedStep:
        """Queue a new attempt of a Failed step as its own job: its Skipped descendants are reset and
        planned again, a closed run returns to Running and closes again, once, with its new status.

        ``StepNotRetryable``: the step is not Failed (another retry may have won), or is a ForEach
        step or part of one; ``RunCancelled``: the run's cancel was requested — pass
        ``clear_cancel=True`` to clear it and retry; ``RunNotFound``, ``StepNotFound``. The handle
        it returns names the attempt queued (``attempt``, ``job_id``).
        """
        run_id = parse_run_id(run_id)
        attempt = retry_failed_step(self.store, self.runner, run_id, step_key, clear_cancel=clear_cancel)
        return RetriedStep(self, run_id, step_key, attempt)

    def _run(self, run_id: UUID | str) -> FlowRunRecord:
        run = self.store.history.get_run(parse_run_id(run_id))
        if run is None:
            raise RunNotFound(f"no run with id {run_id}")
        return run


def parse_run_id(run_id: UUID | str) -> UUID:
    """A run id as the UUID it must be, before it names any key: its canonical text only (lower-case
    hex in 8-4-4-4-12 groups, as flowjobs writes it), so one run has one spelling. ``RunNotFound``
    otherwise: a text like ``<uuid>:step:wait`` would address another key of the run."""
    if isinstance(run_id, UUID):
        return run_id
    try:
        parsed = UUID(run_id)
    except (TypeError, ValueError, AttributeError):
        parsed = None
    if parsed is None or str(parsed) != run_id:
        raise RunNotFound(f"no run with id {shown(run_id)}: a run id is a UUID")
    return parsed
