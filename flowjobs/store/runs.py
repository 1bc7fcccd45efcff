"""Run and step writes: creating and starting runs, applying plans, claiming, renewing and
completing attempts, expanding loops, ending runs, and the raw reads these transitions need.

Every transition is one Lua script that checks the expected current status, so no run is closed
twice and no attempt's outcome is recorded twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from flowjobs.core.clock import epoch_ms, epoch_score, iso, utcnow
from flowjobs.core.job_calls import JobWrites, plain_step_job_id, run_of_job
from flowjobs.core.keys import step_member
from flowjobs.core.records import EventType, FlowRunRecord
from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.core.transitions import RUN_RULES
from flowjobs.store.base import StorePart
from flowjobs.store.codec import STEP_FIELD_CODES, command_slices, encode_run, step_field, text, with_job
from flowjobs.store.transitions import (
    Admission,
    AdmissionRefusal,
    AppliedPlan,
    Cancelled,
    CancelRefusal,
    Claim,
    ClaimRefusal,
    Continuation,
    Created,
    FenceRefusal,
    NewRun,
    NextAttempt,
    Park,
    Refused,
    RetryRefusal,
    RunSnapshot,
    Signalled,
    StateScope,
)


class RunWrites(StorePart):
    """The run lifecycle and step transitions."""

    def new_run(
        self,
        run: FlowRunRecord,
        *,
        setup: Sequence[Sequence[bytes]] = (),
        enqueue: Sequence[Sequence[bytes]] = (),
        admission: Admission | None = None,
    ) -> NewRun:
        """The Pending run ready for ``create_run``: ``setup`` commands run first (the flow record,
        ``FlowRecords.flow_commands``), ``enqueue`` commands (RQ's enqueue of its trigger job) run
        with the run's own writes. An idempotency key of the run already used (per flow and trigger
        key) writes nothing but ``setup`` and answers the first run's id."""
        run_id = str(run.id)
        score = str(epoch_score(run.started_at)).encode()
        member = run_id.encode()
        fields = {**encode_run(run), "started_score": score.decode()}
        writes: list[Sequence[bytes]] = [
            [b"HSET", self.keys.run(run_id).encode(), *(v.encode() for pair in fields.items() for v in pair)]
        ]
        indexes = [
            self.keys.runs(),
            self.keys.flow_runs(run.flow_id),
            self.keys.status_runs(run.status.value),
            self.keys.flow_status_runs(run.flow_id, run.status.value),
        ]
        if run.source_run_id is not None:
            indexes.append(self.keys.derived_runs(run.source_run_id))
        writes += [[b"ZADD", key.encode(), score, member] for key in indexes]
        if run.background_job_id and run_of_job(run.background_job_id) != run_id:
            # The reverse job index holds only ids that do not name their run (run_of_job).
            writes.append([b"HSET", self.keys.jobs().encode(), run.background_job_id.encode(), member])
        if run.timeout_at is not None:
            due = str(epoch_ms(run.timeout_at)).encode()
            writes.append([b"ZADD", self.keys.deadlines().encode(), due, member])
        writes += enqueue
        argv: list[bytes] = []
        args: dict[str, Any] = {
            "run_id": run_id,
            "flow_key": self.keys.flow(run.flow_id),
            "setup": command_slices(argv, setup),
            "writes": command_slices(argv, writes),
        }
        if run.idempotency_key:
            key = self.keys.idempotency(run.flow_id, run.trigger_key or "", run.idempotency_key)
            args["idempotency"] = {"idempotency_key": key, "seconds": self.context.retention_seconds}
        if admission is not None and admission.bucket is not None:
            bucket = admission.bucket
            args["bucket"] = {"bucket_key": bucket.key, "rate": bucket.per_second, "burst": bucket.burst}
        if admission is not None and admission.once_key is not None:
            args["once"] = {"once_key": admission.once_key, "seconds": admission.once_seconds}
        if admission is not None and admission.counted is not None:
            args["count"] = {"count_key": self.keys.metrics(), "fields": dict(admission.counted)}
        return NewRun(run_id, args, argv)

    def create_run(self, new: NewRun) -> Created | Refused[AdmissionRefusal]:
        """Write a run built by ``new_run`` (``create_run.lua``): refused when its flow is disabled
        (``disabled``) or its admission fails (``rate_limited``, ``replayed``); nothing but its
        setup is written then. With ``replica_wait``, ``ReplicasNotAcknowledged`` when too few
        replicas hold the new run in time."""
        return self.scripts.create_run(new, self.context.replica_wait)

    def start_run(
        self,
        run_id: UUID | str,
        trace: Mapping[str, str] | None = None,
        job: JobWrites | None = None,
        flow: Mapping[str, str] | None = None,
    ) -> tuple[RunStatus, RunSnapshot] | None:
        """Move a Pending run to Running (once), or to Cancelled if its flow was disabled since it
        was triggered. ``trace`` (the run span's ``traceparent``/``tracestate``) is stored on the run
        as it starts, in the same script. ``job``: the job system's writes of the trigger job's
        start, done first. ``flow``: the run's ``flow_id`` and ``flow_name`` as its hash holds them,
        when the caller knows them (the trigger job's arguments), so they are not read first.

        Returns the status it had before and the run's snapshot after; None if there is no such run.
        """
        if flow is not None:
            self.context.note_run_flow(run_id, flow)
        args = self.context.flow_args(run_id)
        args["steps_key"] = self.keys.run_steps(run_id)
        args["loops_key"] = self.keys.loops(run_id)
        args["loop_items_key"] = self.keys.loop_items(run_id)
        args["flow_key"] = self.keys.flow(self.context.run_flow(run_id).flow_id)
        args["listeners_key"] = self.keys.listeners()
        if trace:
            args["trace"] = dict(trace)
        _put_job_books(args, "job_started", job)
        started = self.scripts.start_run(args)
        if started is not None:
            self.context.note_run_flow(run_id, started[1].run)
        return started

    def apply_plan(self, run_id: UUID | str, continuation: Continuation) -> AppliedPlan | RunSnapshot:
        """Record skips and dispatches (each step once, with their jobs' enqueue commands), advance
        ForEach counters and close the run if every step is final — if the continuation's
        ``version`` is still current; otherwise nothing is written and the snapshot of
        ``continuation.scope`` read now comes back, to plan again."""
        args, argv = self._continuation_args(run_id, continuation)
        return self.scripts.apply_plan(args, argv, continuation.scope)

    def _continuation_args(
        self, run_id: UUID | str, plan: Continuation, *, ahead: bool = False
    ) -> tuple[dict[str, Any], list[bytes]]:
        """The JSON argument of a continuation, and the flattened job commands it points into.
        ``ahead``: planned ahead for ``complete``, which applies it only if it cannot close the run
        without saying so (``close``), so it goes without the status indexes otherwise."""
        now = utcnow()
        argv: list[bytes] = []
        args = self.context.flow_args(run_id, moves_status=not ahead or plan.close is not None)
        args.update(
            {
                "steps_key": self.keys.run_steps(run_id),
                "jobs_key": self.keys.jobs(),
                "pending_key": self.keys.pending(),
                "loops_key": self.keys.loops(run_id),
                "loop_items_key": self.keys.loop_items(run_id),
                "scope": scope_arg(plan.scope),
                "loops": [
                    {
                        "key": advance.loop_key,
                        "started": advance.started,
                        "finals": [
                            [index, outcome.value] for index, outcome in sorted(advance.finals.items())
                        ],
                    }
                    for advance in plan.loops
                ],
                "skip": [
                    {
                        "step_key": s.step_key,
                        "step_type": s.step_type,
                        "reason": s.reason,
                        "trace": s.trace_json,
                    }
                    for s in plan.skip
                ],
                "dispatch": [
                    {
                        "step_key": d.step_key,
                        "step_type": d.step_type,
                        "attempt": d.attempt,
                        "job_id": d.job_id,
                        "member": step_member(run_id, d.step_key),
                        "due_ms": epoch_ms(d.due or now),
                        "commands": command_slices(argv, plan.job_commands.get(d.step_key, ())),
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
        scope: StateScope | None = None,
        job: JobWrites | None = None,
    ) -> Claim | Refused[ClaimRefusal]:
        """Claim the attempt for this worker with a lease; refused when it is not the current one.

        Reads, in the same script, the run's fields (without the trigger data unless
        ``with_trigger``), the referenced steps and, for a ForEach child, its iteration's item
        (``loop_item_field`` is ``<loop>.<index>``), and the snapshot of ``scope`` (None: the
        whole run) to plan the continuation ahead. ``job``: the job system's writes of the job's
        start, done first whatever the claim's outcome.
        """
        args = self._step_args(run_id, step_key, attempt)
        args.update(
            {
                "job_id": job_id,
                "worker": worker,
                "lease_until_ms": epoch_ms(lease_until),
                "refs": list(refs),
                "loop_items_key": self.keys.loop_items(run_id),
                "loop_item_field": loop_item_field,
                "with_trigger": with_trigger,
                "scope": scope_arg(scope),
            }
        )
        _put_job_books(args, "job_started", job)
        claim = self.scripts.claim(args, refs, scope)
        if isinstance(claim, Claim):
            self.context.note_run_flow(run_id, claim.run)
        return claim

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
                    "steps_key": self.keys.run_steps(run_id),
                    "step_key": step_key,
                    "member": step_member(run_id, step_key),
                    "attempt": attempt,
                }
                for run_id, step_key, attempt in leases
            ],
        }
        return self.scripts.renew_many(args)

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
        crashed: bool = False,
        park: Park | None = None,
        then: Continuation | None = None,
        scope: StateScope | None = None,
        seen: RunSnapshot | None = None,
        timed_out: bool = False,
        job: JobWrites | None = None,
    ) -> RunSnapshot | Refused[FenceRefusal] | Signalled:
        """Record the attempt's outcome if it is still the current, running one.

        ``lease_expired_before`` (recovery) counts the attempt in the step's ``lost_attempts``,
        ``crashed`` in its ``crashed_attempts``, ``timed_out`` as a timeout (metrics). With
        ``park`` (a WaitForSignal step), nothing is recorded if the signal already arrived: its
        payload comes back as ``Signalled`` instead. With ``then``, a continuation planned at
        ``then.version`` is applied in the same script if no plan-changing write happened since
        (``RunSnapshot.applied``); otherwise the snapshot of ``scope`` (None: the whole run)
        comes back, read right after the outcome. ``seen``: the snapshot the attempt's claim read;
        while the run's plan version is still its, the script takes the run's status and
        cancellation from it instead of reading the run hash. ``job``: the job system's writes of
        the job's end, done when the outcome is recorded.
        """
        # The run's status moves only in the continuation (``plan``), which carries the indexes.
        args = self._step_args(run_id, step_key, attempt, flow=True, moves_status=False)
        args.update(
            {
                "status": status.value,
                "input_json": input_json,
                "output_json": output_json,
                "error": error,
                "jobs_key": self.keys.jobs(),
                "scope": scope_arg(scope),
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
        if seen is not None and "status" in seen.run:
            args["seen"] = {
                "version": seen.version,
                "status": seen.run["status"],
                "cancelled": seen.run.get("cancel_requested") == "1",
            }
        if timed_out:
            args["timed_out"] = True
        if lease_expired_before is not None:
            args["lease_expired_before_ms"] = epoch_ms(lease_expired_before)
        if crashed:
            args["crashed"] = True
        if park is not None:
            args["park"] = {
                "signals_key": self.keys.signals(run_id),
                "name": park.signal_name,
                "expires_at": iso(park.expires_at) if park.expires_at else None,
            }
        argv: list[bytes] = []
        if then is not None:
            args["plan"], argv = self._continuation_args(run_id, then, ahead=True)
        _put_job_books(args, "job_ended", job)
        return self.scripts.complete(args, argv, scope)

    def expand_loop(
        self,
        run_id: UUID | str,
        step_key: str,
        attempt: int,
        *,
        items: Sequence[Any],
        input_json: str | None,
        scope: StateScope | None = None,
    ) -> RunSnapshot | Refused[FenceRefusal]:
        """Record a claimed ForEach step's items and release its lease; it stays Running meanwhile.
        Returns the snapshot of ``scope`` (None: the whole run) after."""
        args = self._step_args(run_id, step_key, attempt)
        args.update(
            {
                "count": len(items),
                "items": [json.dumps(item) for item in items],
                "input_json": input_json,
                "scope": scope_arg(scope),
            }
        )
        return self.scripts.expand_loop(args, scope)

    def end_run(self, run_id: UUID | str, status: RunStatus, reason: str) -> RunStatus | None:
        """Close an active run as ``status`` (a target of the ``abort`` rule), skipping its queued
        and parked steps with ``reason``."""
        if status not in RUN_RULES["abort"].target:
            raise ValueError(f"a run is not ended as {status}")
        args = self.context.flow_args(run_id)
        args.update(
            {
                "status": status.value,
                "reason": reason,
                "steps_key": self.keys.run_steps(run_id),
                "pending_key": self.keys.pending(),
                "loops_key": self.keys.loops(run_id),
            }
        )
        return self.scripts.end_run(args)

    def cancel_run(self, run_id: UUID | str, reason: str) -> Cancelled | Refused[CancelRefusal]:
        """Request cancellation: skip the run's queued and parked steps, and close it as Cancelled
        now if no step runs on a worker (else the last running step's continuation closes it)."""
        args = self.context.flow_args(run_id)
        args.update(
            {
                "reason": reason,
                "steps_key": self.keys.run_steps(run_id),
                "pending_key": self.keys.pending(),
                "loops_key": self.keys.loops(run_id),
            }
        )
        return self.scripts.cancel_run(args)

    def retry_step(
        self,
        run_id: UUID | str,
        step_key: str,
        attempt: int,
        *,
        job_id: str,
        commands: Sequence[Sequence[bytes]],
        reset: Sequence[str],
        clear_cancel: bool = False,
        deadline: Mapping[str, Any] | None = None,
    ) -> int | Refused[RetryRefusal]:
        """Queue a new attempt of a step that is Failed at ``attempt`` (with its job's enqueue
        ``commands``, in the same script), reset its Skipped descendants ``reset``, and reopen a
        closed run, with ``deadline`` if it has one (``retry_step.lua``). Returns the new attempt
        number."""
        argv: list[bytes] = []
        args = self._step_args(run_id, step_key, attempt, flow=True)
        args.update(
            {
                "jobs_key": self.keys.jobs(),
                "job_id": job_id,
                "now_ms": epoch_ms(utcnow()),
                "clear_cancel": clear_cancel,
                "deadline": deadline,
                "reset": list(reset),
                "commands": command_slices(argv, commands),
            }
        )
        return self.scripts.retry_step(args, argv)

    def note_event(
        self, run_id: UUID | str, kind: EventType, message: str | None = None, step_key: str | None = None
    ) -> bool:
        """Add an entry to the run's history for an action taken from outside its steps."""
        args = self.context.run_args(run_id)
        args.update({"kind": kind.value, "message": message, "step_key": step_key})
        return self.scripts.note_event(args)

    def cancel_requested(self, run_id: UUID | str) -> bool:
        """Whether cancellation of the run was requested (read live, for ``StepContext``)."""
        return self.redis.hget(self.keys.run(run_id), "cancel_requested") == b"1"

    def derived_run_ids(self, run_id: UUID | str) -> list[str]:
        """Ids of the runs re-run from this one, oldest first."""
        return [text(member) for member in self.redis.zrange(self.keys.derived_runs(run_id), 0, -1)]

    def _step_args(
        self,
        run_id: UUID | str,
        step_key: str,
        attempt: int,
        *,
        flow: bool = False,
        moves_status: bool = True,
    ) -> dict[str, Any]:
        """The JSON fields of every script that moves one attempt of one step; with ``flow``, of
        one that counts the run's metrics and, with ``moves_status``, may move its status too
        (``StoreContext.flow_args``)."""
        args = (
            self.context.flow_args(run_id, moves_status=moves_status)
            if flow
            else self.context.run_args(run_id)
        )
        args.update(
            {
                "step_key": step_key,
                "attempt": attempt,
                "member": step_member(run_id, step_key),
                "steps_key": self.keys.run_steps(run_id),
                "leases_key": self.keys.leases(),
                "pending_key": self.keys.pending(),
                "attempts_key": self.keys.attempts(run_id),
                "loops_key": self.keys.loops(run_id),
                "loop_items_key": self.keys.loop_items(run_id),
            }
        )
        return args

    def trigger_data_json(self, run_id: UUID | str) -> str | None:
        """The run's trigger data as JSON (left out of claims of steps that do not reference it)."""
        value = self.redis.hget(self.keys.run(run_id), "trigger_data_json")
        return text(value) if value is not None else None

    def manifest_hash_of(self, run_id: UUID | str) -> str | None:
        """The content hash of the manifest the run is pinned to."""
        value = self.redis.hget(self.keys.run(run_id), "manifest_hash")
        return text(value) if value is not None else None

    def run_state(self, run_id: UUID | str, scope: StateScope | None = None) -> RunSnapshot:
        """The snapshot of ``scope`` (None: every step and loop of the run), read atomically."""
        return self.scripts.read_state(
            {
                "run_key": self.keys.run(run_id),
                "steps_key": self.keys.run_steps(run_id),
                "loops_key": self.keys.loops(run_id),
                "loop_items_key": self.keys.loop_items(run_id),
                "scope": scope_arg(scope),
            },
            scope,
        )

    def loop_outcomes(self, run_id: UUID | str, loop_key: str, count: int) -> list[RunStatus | None]:
        """Each iteration's recorded outcome, in index order (None where none is recorded yet)."""
        fields = [f"{loop_key}.{index}.outcome" for index in range(count)]
        values = self.redis.hmget(self.keys.loop_items(run_id), fields) if fields else []
        return [RunStatus(text(value)) if value else None for value in values]

    def step_watch(
        self, run_id: UUID | str, step_key: str, expected: Mapping[str, str]
    ) -> tuple[str, dict[str, str | None]]:
        """The hash and its fields (None: absent) that hold a step record's ``expected`` fields (by
        name), for ``OverdueRecords.write_if_unchanged``: the run's steps hash."""
        fields: dict[str, str | None] = {}
        for name, value in expected.items():
            plain = name == "job_id" and value == plain_step_job_id(
                run_id, step_key, expected.get("attempt", "")
            )
            fields[step_field(step_key, name)] = None if plain else value
        return self.keys.run_steps(run_id), fields

    def step_fields(self, run_id: UUID | str, step_key: str) -> dict[str, str]:
        """Every field of one step record by name (claim fields included), for recovery."""
        names = list(STEP_FIELD_CODES)
        values = self.redis.hmget(
            self.keys.run_steps(run_id), [step_field(step_key, n) for n in ["status", *names]]
        )
        fields = {name: text(v) for name, v in zip(["status", *names], values, strict=True) if v is not None}
        return with_job(run_id, step_key, fields) if fields else fields

    def step_fields_many(
        self, pairs: Sequence[tuple[str, str]], fields: Sequence[str]
    ) -> list[dict[str, str]]:
        """``fields`` (those present; ``job_id`` whenever ``attempt`` is) of each (run id, step key)'s record,
        in order, in one round-trip (for recovery passes over many steps)."""
        if not pairs:
            return []
        known = [name for name in fields if name == "status" or name in STEP_FIELD_CODES]  # others: absent
        found = self.scripts.read_hashes(
            [self.keys.run_steps(run_id) for run_id, _ in pairs],
            [[step_field(step_key, name) for name in known] for _, step_key in pairs],
        )
        return [
            with_job(run_id, step_key, _present(known, values))
            for (run_id, step_key), values in zip(pairs, found, strict=True)
        ]

    def run_fields_many(self, run_ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, str]]:
        """``fields`` (those present) of each run's hash, in order, in one round-trip (for recovery
        passes over many runs)."""
        if not run_ids:
            return []
        found = self.scripts.read_hashes(
            [self.keys.run(run_id) for run_id in run_ids], [list(fields)] * len(run_ids)
        )
        return [_present(fields, values) for values in found]


def _present(names: Sequence[str], values: Sequence[str | None]) -> dict[str, str]:
    """``names`` paired with their values, those present."""
    return {name: value for name, value in zip(names, values, strict=True) if value is not None}


def scope_arg(scope: StateScope | None) -> dict[str, Any] | None:
    """A snapshot scope as the scripts read it (common.lua, ``read_state``)."""
    if scope is None:
        return None
    loop = None
    if scope.loop is not None:
        outcome = f"{scope.loop}.{scope.index}.outcome" if scope.index is not None else None
        loop = {"key": scope.loop, "outcome_field": outcome}
    return {"keys": list(scope.keys), "loop": loop}


def _put_job_books(args: dict[str, Any], name: str, job: JobWrites | None) -> None:
    """Put a job system's writes in a script's arguments as ``name`` (``rq_jobs.lua``), their keys
    as ``books_keys`` (declared in KEYS like every key field)."""
    if job is not None:
        args[name] = {**job.args, "books_keys": list(job.keys)}
