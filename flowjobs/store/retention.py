"""Retention: deleting finished runs older than a cutoff with every key of theirs, in batches.

Candidates come from the per-status indexes of the terminal statuses (``Keys.status_runs``,
scored by ``started_at``): a run finishes after it starts, so only ids scored at or before the
cutoff can qualify, and each is kept unless its ``completed_at`` is at or before the cutoff too.
Each batch is read in two pipelined round-trips (run fields, steps hashes: the job ids come from
them) and deleted by one script (``flowjobs/lua/purge_runs.lua``) that
checks, atomically with the deletes, that the run is still terminal and closed at the time read,
so an active run — or one a retried step re-opened meanwhile — is never deleted. A closed run whose
job still runs on a worker (a step that outlived its run's deadline or cancel) is kept for a later
purge: deleted now, its job's keys would be written again by RQ when the job ends.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis import Redis

from flowjobs.core.clock import epoch_score, utcnow
from flowjobs.core.job_calls import StoredJobs, step_job_id, trigger_job_id
from flowjobs.core.keys import Keys, step_member
from flowjobs.core.statuses import RunStatus
from flowjobs.store.base import StorePart
from flowjobs.store.codec import from_hash, legacy_steps, split_steps, text
from flowjobs.store.scripts import check_keys, script_call, script_source

#: Runs per page of candidates and per deleting script call: each call blocks Redis for its
#: duration, ~0.06 ms a 3-step run on a quick machine, ~0.18 ms on a slow one (a few ms a call).
DEFAULT_BATCH = 50
#: Runs per pipelined read of ``stored_job_ids``.
_CLEANUP_PAGE = 500
TERMINAL = tuple(status for status in RunStatus if status.is_terminal)
_RUN_FIELDS = (
    "status",
    "completed_at",
    "flow_id",
    "trigger_key",
    "idempotency_key",
    "background_job_id",
    "source_run_id",
)


@dataclass
class PurgeResult:
    """What a purge did (or, dry, would do)."""

    runs: int = 0
    """Runs deleted; with ``dry_run``, runs that qualify."""
    batches: int = 0
    """Deleting script calls."""
    batch_seconds: list[float] = field(default_factory=list)
    """Wall time of each deleting script call (round-trip included)."""

    @property
    def max_batch_seconds(self) -> float:
        """The longest single deleting call."""
        return max(self.batch_seconds, default=0.0)


@dataclass(frozen=True)
class _Candidate:
    """A run read as finished before the cutoff, with the fields its keys are named from."""

    run_id: str
    completed_at: str
    fields: dict[str, str]


class Retention(StorePart):
    """Deleting runs that finished longer ago than the retention, with every key of theirs."""

    def purge_finished(
        self,
        before: datetime,
        *,
        jobs: StoredJobs | None,
        dry_run: bool = False,
        batch_size: int = DEFAULT_BATCH,
    ) -> PurgeResult:
        """Delete every run that finished at or before ``before`` — its hash, steps, attempts,
        events, loops, signals, re-run index, index entries (its source's re-run index too),
        reverse-index entries and idempotency key, and its jobs' keys in the job system
        (``jobs``) — ``batch_size`` runs per script call. A run with a job still started is kept.
        With ``dry_run``, delete nothing and count the runs that qualify by age."""
        result = PurgeResult()
        cutoff_score = epoch_score(before)
        script = self.redis.register_script(script_source("purge_runs", check_keys()))
        for status in TERMINAL:
            index = self.keys.status_runs(status.value)
            offset = 0
            while True:
                page = [
                    text(member)
                    for member in self.redis.zrangebyscore(
                        index, "-inf", cutoff_score, start=offset, num=batch_size
                    )
                ]
                if not page:
                    break
                candidates = self._candidates(page, before)
                if dry_run or not candidates:
                    result.runs += len(candidates)
                    offset += len(page)
                    continue
                args = self._purge_args(candidates, jobs)
                started = time.perf_counter()
                script_keys, script_args = script_call(args)
                purged = script(keys=script_keys, args=script_args)
                result.batch_seconds.append(time.perf_counter() - started)
                result.batches += 1
                result.runs += len(purged)
                # What stays in this index (closed after the cutoff, or skipped) is passed over.
                offset += len(page) - len(purged)
        return result

    def purge_older_than(
        self, older_than: timedelta, *, jobs: StoredJobs | None, dry_run: bool = False
    ) -> PurgeResult:
        """``purge_finished`` of the runs that finished more than ``older_than`` ago."""
        return self.purge_finished(utcnow() - older_than, jobs=jobs, dry_run=dry_run)

    def _candidates(self, run_ids: Sequence[str], before: datetime) -> list[_Candidate]:
        """The runs of ``run_ids`` that are terminal and completed at or before ``before``."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hmget(self.keys.run(run_id), _RUN_FIELDS)
            rows = pipe.execute()
        found: list[_Candidate] = []
        for run_id, row in zip(run_ids, rows, strict=True):
            fields = {name: text(value) for name, value in zip(_RUN_FIELDS, row, strict=True) if value}
            completed = fields.get("completed_at")
            if fields.get("status") not in TERMINAL or not completed:
                continue
            if datetime.fromisoformat(completed) <= before:
                found.append(_Candidate(run_id, completed, fields))
        return found

    def _purge_args(self, candidates: Sequence[_Candidate], jobs: StoredJobs | None) -> dict[str, Any]:
        """``purge_runs.lua``'s argument: every key, index entry and job id of each candidate, from
        its steps and each step's attempt numbers (one pipelined read of the steps hashes)."""
        keys = self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            for c in candidates:
                pipe.hgetall(keys.run_steps(c.run_id))
            records = [
                split_steps(c.run_id, from_hash(found))
                for c, found in zip(candidates, pipe.execute(), strict=True)
            ]
        runs = []
        for c, steps in zip(candidates, records, strict=True):
            job_ids = run_job_ids(c.run_id, c.fields.get("background_job_id"), steps)
            flow_id = c.fields.get("flow_id", "")
            idempotency = c.fields.get("idempotency_key")
            runs.append(
                {
                    "id": c.run_id,
                    "run_key": keys.run(c.run_id),
                    "completed_at": c.completed_at,
                    "run_keys": [
                        *keys.run_owned(c.run_id),
                        *(keys.legacy_step(c.run_id, step_key) for step_key in legacy_steps(steps)),
                    ],
                    "job_keys": [
                        key for job_id in sorted(job_ids) for key in (jobs.keys(job_id) if jobs else ())
                    ],
                    "status": c.fields["status"],
                    "index_keys": [
                        keys.runs(),
                        keys.deadlines(),
                        keys.flow_runs(flow_id),
                        keys.status_runs(c.fields["status"]),
                        keys.flow_status_runs(flow_id, c.fields["status"]),
                        *([keys.derived_runs(source)] if (source := c.fields.get("source_run_id")) else []),
                    ],
                    "members": [step_member(c.run_id, step_key) for step_key in steps],
                    "job_ids": sorted(job_ids),
                    "idempotency_key": (
                        keys.idempotency(flow_id, c.fields.get("trigger_key", ""), idempotency)
                        if idempotency
                        else None
                    ),
                }
            )
        return {
            "terminal": [status.value for status in TERMINAL],
            "jobs_key": keys.jobs(),
            "leases_key": keys.leases(),
            "pending_key": keys.pending(),
            "registry_keys": list(jobs.registries) if jobs else [],
            "runs": runs,
        }


def run_job_ids(
    run_id: str, background_job_id: str | None, steps: Mapping[str, Mapping[str, str]]
) -> set[str]:
    """Every job id of a run, from its run hash's ``background_job_id`` and its steps
    (``split_steps``): the trigger job's and each step attempt's. The reverse job index
    (``Keys.jobs``) holds none of them that names its run (``run_of_job``)."""
    job_ids = {trigger_job_id(run_id)}
    if background_job_id:
        job_ids.add(background_job_id)
    for step_key, fields in steps.items():
        job_ids.update(_step_job_ids(run_id, step_key, fields.get("attempt", ""), fields.get("job_id", "")))
    return job_ids


def stored_job_ids(redis: Redis, keys: Keys) -> set[str]:
    """Every job id of every run under ``keys``' prefix (``run_job_ids``, read in pipelined pages)
    and every one in the reverse job index: what a test's or a benchmark's cleanup deletes RQ's
    keys of."""
    found = {text(job_id) for job_id in redis.hkeys(keys.jobs())}
    # A cleanup outlives a run index that is not a sorted set (a test corrupts it on purpose).
    listed = redis.type(keys.runs()) in (b"zset", "zset")
    run_ids = [text(run_id) for run_id in redis.zrange(keys.runs(), 0, -1)] if listed else []
    for start in range(0, len(run_ids), _CLEANUP_PAGE):
        page = run_ids[start : start + _CLEANUP_PAGE]
        with redis.pipeline(transaction=False) as pipe:
            for run_id in page:
                pipe.hget(keys.run(run_id), "background_job_id")
                pipe.hgetall(keys.run_steps(run_id))
            replies = pipe.execute()
        for i, run_id in enumerate(page):
            background, steps = replies[2 * i], replies[2 * i + 1]
            found |= run_job_ids(
                run_id, text(background) if background else None, split_steps(run_id, from_hash(steps))
            )
    return found


def _step_job_ids(run_id: str, step_key: str, attempt: str, job_id: str) -> set[str]:
    """Every job id a step had: one per attempt number up to its latest (job ids are
    deterministic, ``step_job_id``), and the job id of its latest attempt as recorded."""
    highest = int(attempt) if attempt.isdigit() else 0
    ids = {step_job_id(run_id, step_key, n) for n in range(1, highest + 1)}
    if job_id:
        ids.add(job_id)
    return ids
