"""Redis run store: run, step and attempt records, indexes, the dispatch ledger and claims.

Every state transition is one Lua script (``flowjobs/lua``) that checks the expected current
status, so no run is closed twice and no attempt's outcome is recorded twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any
from uuid import UUID

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from flowjobs.clock import epoch_ms, epoch_score, iso, utcnow
from flowjobs.keys import Keys, split_step_member, step_member
from flowjobs.manifest import FlowDefinition, FlowManifest
from flowjobs.records import FlowRunRecord, FlowStepAttemptRecord, FlowStepRecord, RunEvent
from flowjobs.statuses import RunStatus, StepStatus

_JSON_RUN_FIELDS = ("trigger_headers",)
_LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StepDispatch:
    """One attempt of a step to put in the dispatch ledger (and then on the queue)."""

    step_key: str
    step_type: str
    attempt: int
    job_id: str
    due: datetime | None = None


@dataclass(frozen=True)
class StepSkip:
    """A step to record as Skipped, with the reason and, for When clauses, the evaluation trace."""

    step_key: str
    step_type: str
    reason: str
    trace_json: str | None = None


@dataclass(frozen=True)
class Continuation:
    """A planned continuation: dispatches, skips, and the run's close when all will be final."""

    dispatch: Sequence[StepDispatch] = ()
    skip: Sequence[StepSkip] = ()
    close: RunStatus | None = None
    required: Sequence[str] = ()
    """Step keys that must all be final for the run to close (the manifest's top-level steps)."""
    job_commands: Mapping[str, Sequence[Sequence[bytes]]] = field(default_factory=dict)
    """Per step key, the Redis commands that enqueue its job, run in the same script if dispatched."""
    version: int | None = None
    """With ``complete``: the ``steps_version`` the plan was made at; applied only if still current."""


@dataclass(frozen=True)
class AppliedPlan:
    """What ``apply_plan`` did: the steps it dispatched, and the status it closed the run with."""

    dispatched: list[str]
    closed: RunStatus | None
    run_status: RunStatus | None


@dataclass(frozen=True)
class StepView:
    """Status, output JSON and error of a step, as read for expressions."""

    status: StepStatus | None
    output_json: str | None
    error: str | None


@dataclass(frozen=True)
class Claim:
    """A granted claim: the run's fields and the referenced steps, read in the same script."""

    run: dict[str, str]
    snapshot: Completion
    """Step statuses, run fields and loops at claim time, to plan the continuation ahead."""
    refs: dict[str, StepView] = field(default_factory=dict)
    first_started_at: datetime | None = None
    """When the step's first attempt was claimed (polling and signal timeouts count from it)."""
    loop_item_json: str | None = None
    """For a ForEach child: its iteration's item, as JSON."""


@dataclass(frozen=True)
class Refused:
    """A claim or completion that was refused, and why (stale attempt, closed run)."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Completion:
    """The recorded outcome: every step's status and the run's fields, for the continuation."""

    statuses: dict[str, StepStatus]
    run: dict[str, str]
    loops: dict[str, int] = field(default_factory=dict)
    """Iteration count of every expanded ForEach step."""
    applied: AppliedPlan | None = None
    """The continuation ``complete`` applied in the same script, if it was still current (then
    ``statuses``, ``run`` and ``loops`` are left empty: the caller planned from them already)."""

    @property
    def version(self) -> int:
        """``steps_version`` of the run when this was read."""
        return int(self.run.get("steps_version", "0"))


@dataclass(frozen=True)
class Park:
    """Park a WaitForSignal step: record its waiter, unless the signal was already delivered."""

    signal_name: str
    expires_at: datetime | None


@dataclass(frozen=True)
class Signalled:
    """The signal a parking step waited for had already arrived: its payload."""

    payload_json: str


@dataclass(frozen=True)
class SignalResume:
    """The attempt that resumes a step parked on a signal, and its job's enqueue commands."""

    attempt: int
    job_id: str
    commands: Sequence[Sequence[bytes]] = ()


@dataclass(frozen=True)
class NextAttempt:
    """Queue the step again as this attempt instead of making it final."""

    attempt: int
    job_id: str
    due: datetime
    event: str = "step.retried"
    message: str | None = None


@cache
def _script_source(name: str) -> str:
    lua = files("flowjobs") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class RunStore:
    """All reads and writes of flowjobs' records in one Redis, under one key prefix."""

    def __init__(
        self, redis: Redis, keys: Keys | None = None, *, retention_seconds: int = 14 * 86400
    ) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self.retention_seconds = retention_seconds
        self._scripts = {
            name: redis.register_script(_script_source(name))
            for name in (
                "start_run",
                "apply_plan",
                "claim",
                "complete",
                "renew_many",
                "run_detail",
                "expand_loop",
                "deliver_signal",
                "end_run",
                "idle_runs",
            )
        }
        self._status_keys = {status.value: self.keys.status_runs(status.value) for status in RunStatus}
        self._manifests: dict[str, FlowManifest] = {}
        self._saved_flows: set[tuple[UUID, str]] = set()

    def _run(self, script: str, args: Mapping[str, Any], argv: Sequence[bytes] = ()) -> Any:
        return self._scripts[script](args=[json.dumps(args), *argv])

    def _run_args(self, run_id: UUID | str) -> dict[str, Any]:
        return {
            "run_id": str(run_id),
            "run_key": self.keys.run(run_id),
            "events_key": self.keys.events(run_id),
            "status_keys": self._status_keys,
            "flow_status_template": self.keys.flow_status_template(),
            "deadlines_key": self.keys.deadlines(),
            "now": iso(utcnow()),
        }

    # -- flows ---------------------------------------------------------------------------------

    def save_flow(self, definition: FlowDefinition) -> str:
        """Store the flow record and pin its manifest under its content hash; returns the hash."""
        manifest_hash = definition.manifest.content_hash()
        if (definition.id, manifest_hash) in self._saved_flows:
            return manifest_hash
        now = iso(utcnow())
        key = self.keys.flow(definition.id)
        with self.redis.pipeline() as pipe:
            pipe.set(self.keys.manifest(manifest_hash), definition.manifest.canonical_json(), nx=True)
            pipe.hset(
                key,
                mapping={
                    "id": str(definition.id),
                    "name": definition.name,
                    "version": definition.version,
                    "manifest_hash": manifest_hash,
                    "updated_at": now,
                },
            )
            pipe.hsetnx(key, "created_at", now)
            pipe.hsetnx(key, "is_enabled", "1")
            pipe.sadd(self.keys.flows(), str(definition.id))
            pipe.execute()
        self._saved_flows.add((definition.id, manifest_hash))
        self._manifests[manifest_hash] = definition.manifest
        return manifest_hash

    def flow_enabled(self, flow_id: UUID | str) -> bool:
        """False only when the flow was explicitly disabled."""
        return self.redis.hget(self.keys.flow(flow_id), "is_enabled") != b"0"

    def load_manifest(self, manifest_hash: str) -> FlowManifest:
        """The pinned manifest a run plans against (immutable, so cached in-process)."""
        manifest = self._manifests.get(manifest_hash)
        if manifest is None:
            raw = self.redis.get(self.keys.manifest(manifest_hash))
            if raw is None:
                raise LookupError(f"manifest {manifest_hash} is not stored")
            manifest = FlowManifest.model_validate_json(raw)
            self._manifests[manifest_hash] = manifest
        return manifest

    # -- runs ----------------------------------------------------------------------------------

    def create_run(
        self,
        run: FlowRunRecord,
        enqueue: Callable[[Pipeline], None],
        *,
        idempotency_key: str | None = None,
    ) -> UUID:
        """Write the Pending run and enqueue its trigger job in one MULTI/EXEC.

        With an idempotency key already used (per flow and trigger key), writes nothing and
        returns the existing run's id.
        """
        idem = (
            self.keys.idempotency(run.flow_id, run.trigger_key or "", idempotency_key)
            if idempotency_key
            else None
        )
        score = epoch_score(run.started_at)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    if idem is not None:
                        pipe.watch(idem)  # type: ignore[no-untyped-call]
                        existing = pipe.get(idem)
                        if existing is not None:
                            return UUID(_text(existing))
                    # Explicit MULTI: RQ's enqueue joins a transaction only if one is already open.
                    pipe.multi()
                    if idem is not None:
                        pipe.set(idem, str(run.id), ex=self.retention_seconds)
                    fields = {**encode_run(run), "started_score": str(score)}
                    pipe.hset(self.keys.run(run.id), mapping=fields)  # type: ignore[arg-type]
                    pipe.zadd(self.keys.runs(), {str(run.id): score})
                    pipe.zadd(self.keys.flow_runs(run.flow_id), {str(run.id): score})
                    pipe.zadd(self.keys.status_runs(run.status.value), {str(run.id): score})
                    pipe.zadd(self.keys.flow_status_runs(run.flow_id, run.status.value), {str(run.id): score})
                    if run.background_job_id:
                        pipe.hset(self.keys.jobs(), run.background_job_id, str(run.id))
                    if run.timeout_at is not None:
                        pipe.zadd(self.keys.deadlines(), {str(run.id): epoch_ms(run.timeout_at)})
                    enqueue(pipe)
                    pipe.execute()
                    return run.id
                except WatchError:
                    continue

    def start_run(self, run_id: UUID | str) -> tuple[RunStatus, Completion] | None:
        """Move a Pending run to Running (once).

        Returns the status it had before and, as for a completion, the step statuses and run
        fields after; None if there is no such run.
        """
        args = self._run_args(run_id)
        args["steps_key"] = self.keys.run_steps(run_id)
        args["loops_key"] = self.keys.loops(run_id)
        result = self._run("start_run", args)
        if not result:
            return None
        return RunStatus(_text(result[0])), _completion(result[2:])

    def apply_plan(self, run_id: UUID | str, continuation: Continuation) -> AppliedPlan:
        """Record skips and dispatches (each step once, with their jobs' enqueue commands) and close
        the run if every step is final."""
        args, argv = self._continuation_args(run_id, continuation)
        return _applied(self._run("apply_plan", args, argv))

    def _continuation_args(
        self, run_id: UUID | str, plan: Continuation
    ) -> tuple[dict[str, Any], list[bytes]]:
        """The JSON argument of a continuation, and the flattened job commands it points into."""
        now = utcnow()
        argv: list[bytes] = []
        args = self._run_args(run_id)
        args.update(
            {
                "steps_key": self.keys.run_steps(run_id),
                "jobs_key": self.keys.jobs(),
                "pending_key": self.keys.pending(),
                "skip": [
                    {
                        "step_key": s.step_key,
                        "hash_key": self.keys.step(run_id, s.step_key),
                        "step_type": s.step_type,
                        "reason": s.reason,
                        "trace": s.trace_json,
                    }
                    for s in plan.skip
                ],
                "dispatch": [
                    {
                        "step_key": d.step_key,
                        "hash_key": self.keys.step(run_id, d.step_key),
                        "step_type": d.step_type,
                        "attempt": d.attempt,
                        "job_id": d.job_id,
                        "member": step_member(run_id, d.step_key),
                        "due_ms": epoch_ms(d.due or now),
                        "commands": _command_slices(argv, plan.job_commands.get(d.step_key, ())),
                    }
                    for d in plan.dispatch
                ],
            }
        )
        if plan.close is not None:
            args["close"] = {"status": plan.close.value, "required": list(plan.required)}
        if plan.version is not None:
            args["version"] = plan.version
        return args, argv

    def claim(
        self,
        run_id: UUID | str,
        step_key: str,
        attempt: int,
        *,
        job_id: str,
        worker: str,
        lease_until: datetime,
        refs: Sequence[str] = (),
        loop_item_field: str | None = None,
        with_trigger: bool = True,
    ) -> Claim | Refused:
        """Claim the attempt for this worker with a lease; refused when it is not the current one.

        Reads, in the same script, the run's fields (without the trigger data unless
        ``with_trigger``), the referenced steps and, for a ForEach child, its iteration's item
        (``loop_item_field`` is ``<loop>.<index>``).
        """
        args = self._step_args(run_id, step_key, attempt)
        args.update(
            {
                "job_id": job_id,
                "worker": worker,
                "lease_until_ms": epoch_ms(lease_until),
                "refs": [self.keys.step(run_id, ref) for ref in refs],
                "loop_items_key": self.keys.loop_items(run_id),
                "loop_item_field": loop_item_field,
                "with_trigger": with_trigger,
            }
        )
        result = self._run("claim", args)
        if result[0] != b"ok":
            return Refused(_text(result[0]), _text(result[1]))
        views = {ref: _view(values) for ref, values in zip(refs, result[2], strict=True)}
        first_started, loop_item = result[3]
        return Claim(
            run=_pairs(result[1]),
            refs=views,
            first_started_at=datetime.fromisoformat(_text(first_started)) if first_started else None,
            loop_item_json=_text(loop_item) if loop_item else None,
            snapshot=_completion([result[4], result[1], result[5]]),
        )

    def renew(self, run_id: UUID | str, step_key: str, attempt: int, lease_until: datetime) -> bool:
        """Extend a running attempt's lease; False once the attempt is fenced out."""
        return self.renew_many([(str(run_id), step_key, attempt)], lease_until)[0]

    def renew_many(self, leases: Sequence[tuple[str, str, int]], lease_until: datetime) -> list[bool]:
        """Extend the leases of several running attempts (run id, step key, attempt) in one script
        call; per lease, False once its attempt is fenced out or holds no lease any more."""
        if not leases:
            return []
        args = {
            "leases_key": self.keys.leases(),
            "lease_until_ms": epoch_ms(lease_until),
            "leases": [
                {
                    "hash_key": self.keys.step(run_id, step_key),
                    "member": step_member(run_id, step_key),
                    "attempt": attempt,
                }
                for run_id, step_key, attempt in leases
            ],
        }
        return [bool(renewed) for renewed in self._run("renew_many", args)]

    def complete(
        self,
        run_id: UUID | str,
        step_key: str,
        attempt: int,
        *,
        status: StepStatus,
        input_json: str | None = None,
        output_json: str | None = None,
        error: str | None = None,
        next_attempt: NextAttempt | None = None,
        lease_expired_before: datetime | None = None,
        park: Park | None = None,
        then: Continuation | None = None,
    ) -> Completion | Refused | Signalled:
        """Record the attempt's outcome if it is still the current, running one.

        With ``park`` (a WaitForSignal step), nothing is recorded if the signal already arrived:
        its payload comes back as ``Signalled`` instead. With ``then``, a continuation planned
        at ``then.version`` is applied in the same script if no plan-changing write happened
        since (``Completion.applied``).
        """
        args = self._step_args(run_id, step_key, attempt)
        args.update(
            {
                "status": status.value,
                "input_json": input_json,
                "output_json": output_json,
                "error": error,
                "jobs_key": self.keys.jobs(),
            }
        )
        if next_attempt is not None:
            args["next"] = {
                "attempt": next_attempt.attempt,
                "job_id": next_attempt.job_id,
                "due_ms": epoch_ms(next_attempt.due),
                "event": next_attempt.event,
                "message": next_attempt.message,
            }
        if lease_expired_before is not None:
            args["lease_expired_before_ms"] = epoch_ms(lease_expired_before)
        if park is not None:
            args["park"] = {
                "signals_key": self.keys.signals(run_id),
                "name": park.signal_name,
                "expires_at": iso(park.expires_at) if park.expires_at else None,
            }
        argv: list[bytes] = []
        if then is not None:
            args["plan"], argv = self._continuation_args(run_id, then)
        result = self._run("complete", args, argv)
        if result[0] == b"signalled":
            return Signalled(_text(result[1]))
        if result[0] != b"ok":
            return Refused(_text(result[0]), _text(result[1]))
        return _completion(result[1:])

    def expand_loop(
        self, run_id: UUID | str, step_key: str, attempt: int, *, items: Sequence[Any], input_json: str | None
    ) -> Completion | Refused:
        """Record a claimed ForEach step's items and release its lease; it stays Running meanwhile."""
        args = self._step_args(run_id, step_key, attempt)
        args.update(
            {
                "count": len(items),
                "items": [json.dumps(item) for item in items],
                "input_json": input_json,
                "loop_items_key": self.keys.loop_items(run_id),
            }
        )
        result = self._run("expand_loop", args)
        if result[0] != b"ok":
            return Refused(_text(result[0]), _text(result[1]))
        return _completion(result[1:])

    def deliver_signal(
        self,
        run_id: UUID | str,
        name: str,
        payload_json: str,
        *,
        declared: bool,
        resumes: Mapping[str, SignalResume],
    ) -> list[str]:
        """Deliver a signal once and, in the same script, resume every step parked on it.

        ``resumes`` are the waiters the caller read (``signal_waiters``), each with its resume job.
        Returns ``["resumed", step_key, ...]``, ``["kept"]`` (no step parked on it yet), or a
        refusal: ``changed`` (the waiters moved since they were read: nothing written),
        ``no_run``, ``not_active``, ``unknown`` (no step of the run waits for that name),
        ``already``.
        """
        argv: list[bytes] = []
        now = utcnow()
        args = self._run_args(run_id)
        args.update(
            {
                "name": name,
                "payload_json": payload_json,
                "declared": declared,
                "signals_key": self.keys.signals(run_id),
                "step_prefix": self.keys.step_prefix(run_id),
                "jobs_key": self.keys.jobs(),
                "pending_key": self.keys.pending(),
                "now_ms": epoch_ms(now),
                "expected": {
                    key: {
                        "attempt": resume.attempt,
                        "job_id": resume.job_id,
                        "member": step_member(run_id, key),
                        "commands": _command_slices(argv, resume.commands),
                    }
                    for key, resume in resumes.items()
                },
            }
        )
        return [_text(part) for part in self._run("deliver_signal", args, argv)]

    def signal_waiters(self, run_id: UUID | str, name: str) -> dict[str, int]:
        """Steps parked on a signal name: step key → the attempt that resumes it."""
        record = self.signal_record(run_id, name) or {}
        return {key: int(w["attempt"]) for key, w in (record.get("waiters") or {}).items()}

    def signal_record(self, run_id: UUID | str, name: str) -> dict[str, Any] | None:
        """The signal record (waiter, expiry, delivery, payload) of one signal name."""
        raw = self.redis.hget(self.keys.signals(run_id), name)
        return dict(json.loads(raw)) if raw else None

    def end_run(self, run_id: UUID | str, status: RunStatus, reason: str) -> RunStatus | None:
        """Close an active run as ``status``, skipping its queued and parked steps with ``reason``."""
        args = self._run_args(run_id)
        args.update(
            {
                "status": status.value,
                "reason": reason,
                "steps_key": self.keys.run_steps(run_id),
                "step_prefix": self.keys.step_prefix(run_id),
                "pending_key": self.keys.pending(),
                "loops_key": self.keys.loops(run_id),
            }
        )
        closed = self._run("end_run", args)
        return RunStatus(_text(closed)) if closed else None

    def overdue_runs(self, now: datetime) -> list[str]:
        """Ids of runs whose deadline passed before ``now``."""
        return [
            _text(m) for m in self.redis.zrangebyscore(self.keys.deadlines(), "-inf", f"({epoch_ms(now)}")
        ]

    def step_views(self, run_id: UUID | str, step_keys: Sequence[str]) -> dict[str, StepView]:
        """Status, output and error of some steps, in one round-trip (for When clauses)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for key in step_keys:
                pipe.hmget(self.keys.step(run_id, key), "status", "output_json", "error_message")
            rows = pipe.execute()
        return {key: _view(row) for key, row in zip(step_keys, rows, strict=True)}

    def _step_args(self, run_id: UUID | str, step_key: str, attempt: int) -> dict[str, Any]:
        args = self._run_args(run_id)
        args.update(
            {
                "step_key": step_key,
                "attempt": attempt,
                "member": step_member(run_id, step_key),
                "hash_key": self.keys.step(run_id, step_key),
                "steps_key": self.keys.run_steps(run_id),
                "leases_key": self.keys.leases(),
                "pending_key": self.keys.pending(),
                "attempts_key": self.keys.attempts(run_id),
                "loops_key": self.keys.loops(run_id),
            }
        )
        return args

    def run_fields(self, run_id: UUID | str) -> dict[str, str]:
        """Raw fields of the run hash (empty when there is no such run)."""
        return _pairs_dict(self.redis.hgetall(self.keys.run(run_id)))

    def trigger_data_json(self, run_id: UUID | str) -> str | None:
        """The run's trigger data as JSON (left out of claims of steps that do not reference it)."""
        value = self.redis.hget(self.keys.run(run_id), "trigger_data_json")
        return _text(value) if value is not None else None

    def manifest_hash_of(self, run_id: UUID | str) -> str | None:
        """The content hash of the manifest the run is pinned to."""
        value = self.redis.hget(self.keys.run(run_id), "manifest_hash")
        return _text(value) if value is not None else None

    def run_state(self, run_id: UUID | str) -> Completion:
        """Step statuses, run fields and loops of a run, read in one round-trip (for recovery)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.run_steps(run_id))
            pipe.hgetall(self.keys.run(run_id))
            pipe.hgetall(self.keys.loops(run_id))
            steps, run, loops = pipe.execute()
        return Completion(
            statuses={_text(k): StepStatus(_text(v)) for k, v in steps.items()},
            run=_pairs_dict(run),
            loops={_text(k): int(v) for k, v in loops.items()},
        )

    def step_fields(self, run_id: UUID | str, step_key: str) -> dict[str, str]:
        """Raw fields of one step hash (claim fields included), for recovery."""
        return _pairs_dict(self.redis.hgetall(self.keys.step(run_id, step_key)))

    # -- reads ---------------------------------------------------------------------------------

    def get_run(self, run_id: UUID | str) -> FlowRunRecord | None:
        """The run record without steps, or None."""
        fields = self.run_fields(run_id)
        return decode_run(fields) if fields else None

    def get_run_detail(self, run_id: UUID | str) -> FlowRunRecord | None:
        """The run with every step and its attempts, read in one round-trip."""
        result = self._run(
            "run_detail",
            {
                "run_key": self.keys.run(run_id),
                "steps_key": self.keys.run_steps(run_id),
                "step_prefix": self.keys.step_prefix(run_id),
                "attempts_key": self.keys.attempts(run_id),
            },
        )
        if not result:
            return None
        run_fields, step_hashes, attempt_pairs = result
        attempts: dict[str, list[FlowStepAttemptRecord]] = {}
        for value in _pairs(attempt_pairs).values():
            record = FlowStepAttemptRecord.model_validate_json(value)
            attempts.setdefault(record.step_key, []).append(record)
        steps = []
        for pairs in step_hashes:
            fields = _pairs(pairs)
            history = sorted(attempts.get(fields["step_key"], []), key=lambda a: a.attempt)
            steps.append(FlowStepRecord.model_validate({**fields, "attempts": history}))
        steps.sort(key=lambda s: (s.started_at or s.completed_at or _LATEST, s.step_key))
        return decode_run(_pairs(run_fields)).model_copy(update={"steps": steps})

    def list_runs(
        self,
        *,
        flow_id: UUID | str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        before: UUID | str | datetime | None = None,
    ) -> list[FlowRunRecord]:
        """Runs newest first; ``before`` (a run id or a time) pages past the runs already seen.

        Reads the narrowest index for the filters (all runs, per flow, per status, or per flow and
        status), so at most three round-trips whatever the history size: the ``before`` run's
        score, one page of ids, their hashes.
        """
        if limit < 1:
            return []
        if flow_id is not None and status is not None:
            index = self.keys.flow_status_runs(flow_id, status.value)
        elif status is not None:
            index = self.keys.status_runs(status.value)
        elif flow_id is not None:
            index = self.keys.flow_runs(flow_id)
        else:
            index = self.keys.runs()
        upper: str = "+inf"
        if isinstance(before, datetime):
            upper = f"({epoch_score(before)}"
        elif before is not None:
            score = self.redis.zscore(self.keys.runs(), str(before))
            if score is None:
                return []
            upper = f"({score}"
        ids = self.redis.zrevrangebyscore(index, upper, "-inf", start=0, num=limit)
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(self.keys.run(_text(run_id)))
            rows = pipe.execute()
        # Every index entry has its hash (both are written and moved together), so no refill.
        return [decode_run(_pairs_dict(raw)) for raw in rows if raw]

    def find_run_id_by_job(self, job_id: str) -> str | None:
        """The run an RQ job belongs to (trigger job or any step attempt)."""
        run_id = self.redis.hget(self.keys.jobs(), job_id)
        return _text(run_id) if run_id else None

    def events(self, run_id: UUID | str) -> list[RunEvent]:
        """The run's event history, oldest first."""
        return [
            RunEvent.model_validate_json(raw) for raw in self.redis.lrange(self.keys.events(run_id), 0, -1)
        ]

    def expired_leases(self, now: datetime) -> list[tuple[str, str]]:
        """(run id, step key) of claimed steps whose lease ran out before ``now``."""
        members = self.redis.zrangebyscore(self.keys.leases(), "-inf", f"({epoch_ms(now)}")
        return [split_step_member(_text(m)) for m in members]

    def overdue_pending(self, due_before: datetime) -> list[tuple[str, str]]:
        """(run id, step key) of dispatched steps that were due before ``due_before`` and are unclaimed."""
        members = self.redis.zrangebyscore(self.keys.pending(), "-inf", f"({epoch_ms(due_before)}")
        return [split_step_member(_text(m)) for m in members]

    def idle_runs(self, started_before: datetime, batch: int = 500) -> list[tuple[str, RunStatus]]:
        """Active runs started before ``started_before`` with nothing in flight: Pending ones, and
        Running ones whose steps are all final (or expanded ForEach steps). Two round-trips per batch."""
        found: list[tuple[str, RunStatus]] = []
        for status in (RunStatus.Pending, RunStatus.Running):
            ids = [
                _text(m)
                for m in self.redis.zrangebyscore(
                    self.keys.status_runs(status.value), "-inf", f"({epoch_score(started_before)}"
                )
            ]
            for start in range(0, len(ids), batch):
                runs = [
                    {
                        "run_id": run_id,
                        "run_key": self.keys.run(run_id),
                        "steps_key": self.keys.run_steps(run_id),
                        "loops_key": self.keys.loops(run_id),
                    }
                    for run_id in ids[start : start + batch]
                ]
                reply = self._run("idle_runs", {"runs": runs})
                found.extend(
                    (_text(reply[i]), RunStatus(_text(reply[i + 1]))) for i in range(0, len(reply), 2)
                )
        return found


def encode_run(run: FlowRunRecord) -> dict[str, str]:
    """Hash fields of a run record (``None`` fields are left out)."""
    data = run.model_dump(mode="json", exclude={"steps"}, exclude_none=True)
    out: dict[str, str] = {}
    for name, value in data.items():
        if name in _JSON_RUN_FIELDS:
            out[name] = json.dumps(value)
        elif isinstance(value, bool):
            out[name] = "1" if value else "0"
        else:
            out[name] = str(value)
    return out


def decode_run(fields: Mapping[str, str]) -> FlowRunRecord:
    """A run record from its hash fields."""
    data: dict[str, Any] = dict(fields)
    for name in _JSON_RUN_FIELDS:
        if name in data:
            data[name] = json.loads(data[name])
    return FlowRunRecord.model_validate(data)


def _completion(parts: Sequence[Any]) -> Completion:
    """A Completion from a script's (step statuses, run hash, loops hash[, applied plan]) replies."""
    statuses = {k: StepStatus(v) for k, v in _pairs(parts[0]).items()}
    loops = {k: int(v) for k, v in _pairs(parts[2]).items()}
    applied = _applied(parts[3]) if len(parts) > 3 and parts[3] else None
    return Completion(statuses=statuses, run=_pairs(parts[1]), loops=loops, applied=applied)


def _command_slices(argv: list[bytes], commands: Sequence[Sequence[bytes]]) -> list[list[int]]:
    """Append Redis commands to a script's ARGV; their ``{offset, count}`` slices for ``run_commands``."""
    out = []
    for command in commands:
        out.append([len(argv) + 2, len(command)])  # ARGV[1] is the JSON document
        argv.extend(command)
    return out


def _applied(reply: Sequence[Any]) -> AppliedPlan:
    dispatched, closed, status = reply
    return AppliedPlan(
        dispatched=[_text(key) for key in dispatched],
        closed=RunStatus(_text(closed)) if closed else None,
        run_status=RunStatus(_text(status)) if status else None,
    )


def _view(values: Sequence[Any]) -> StepView:
    return StepView(
        status=StepStatus(_text(values[0])) if values[0] else None,
        output_json=_text(values[1]) if values[1] else None,
        error=_text(values[2]) if values[2] else None,
    )


def _pairs(flat: Sequence[bytes]) -> dict[str, str]:
    """A Lua HGETALL reply (flat key, value list) as a dict."""
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def _pairs_dict(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    """A Redis reply (bytes, as the client does not decode) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
