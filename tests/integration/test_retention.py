"""Retention: finished runs older than the cutoff go with every key of theirs and their
RQ jobs' keys; younger runs and active runs stay, whatever their age."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from flowjobs import FlowClient, RunStatus
from flowjobs.core.clock import epoch_score, iso, utcnow
from flowjobs.duties import flow_duties
from flowjobs.store.retention import Retention
from tests.conftest import Space
from tests.integration.flows import flow, registry

#: Every kind of record a run can have: loop items, a delivered signal, a retried (failed) step
#: whose first attempt is archived, an error handler, an idempotency key.
FULL = {
    "loop": {"type": "ForEach", "for_each": [1, 2], "steps": {"item": {"type": "Noop"}}},
    "wait": {"type": "WaitForSignal", "inputs": {"signalName": "go"}},
    "boom": {"type": "Boom", "retry": {"max_attempts": 2}},
    "handle": {"type": "Noop", "run_after": {"boom": ["Failed"]}},
}


def _finish(space: Space, client: FlowClient, run_id: Any) -> None:
    """Run a FULL run to its end: park on the signal, deliver it, run the rest."""
    space.drain()
    client.signal(run_id, "go", {"ok": True})
    space.drain()
    run = client.get_run(run_id)
    assert run is not None and run.status.is_terminal, run


def _traces(space: Space, run_id: str) -> list[str]:
    """Every place under the space's prefix that still names the run: a key, a sorted-set member,
    a hash field or value, a string value."""
    redis, found = space.redis, []
    for raw in redis.scan_iter(match=f"{space.settings.key_prefix}*", count=1000):
        key = raw.decode()
        if run_id in key:
            found.append(key)
            continue
        kind = redis.type(key).decode()
        if kind == "zset":
            found += [f"{key} {m!r}" for m in redis.zrange(key, 0, -1) if run_id.encode() in m]
        elif kind == "hash":
            found += [f"{key} {f!r}" for f, v in redis.hgetall(key).items() if run_id.encode() in f + v]
        elif kind == "string" and run_id.encode() in (redis.get(key) or b""):
            found.append(key)
    return found


def _rq_keys(space: Space, job_ids: list[str]) -> list[str]:
    """RQ's job hashes and result streams of these jobs that exist, and registry entries."""
    keys = [f"rq:{kind}:{job_id}" for job_id in job_ids for kind in ("job", "results")]
    present = [key for key in keys if space.redis.exists(key)]
    queue = space.settings.queue
    for registry_key in (f"rq:finished:{queue}", f"rq:failed:{queue}"):
        present += [f"{registry_key} {j}" for j in job_ids if space.redis.zscore(registry_key, j) is not None]
    return present


def _job_ids(space: Space, run_id: str) -> list[str]:
    """The run's job ids: RQ's job hashes whose id names the run, and the jobs reverse index's
    entries of it (ids that do not name their run)."""
    named = {
        key.decode().removeprefix("rq:job:")
        for key in space.redis.scan_iter(match=f"rq:job:*{run_id}*", count=1000)
    }
    return sorted(named | set(_indexed(space, run_id)))


def _indexed(space: Space, run_id: str) -> list[str]:
    """The job ids the jobs reverse index maps to the run."""
    index = space.redis.hgetall(space.keys.jobs())
    return sorted(job_id.decode() for job_id, owner in index.items() if owner.decode() == run_id)


def _snapshot(space: Space, run_id: str) -> dict[str, Any]:
    """The run's keys with their contents (to show a purge left it untouched)."""
    keys = sorted(k.decode() for k in space.redis.scan_iter(match=f"*{run_id}*", count=1000))
    return {key: space.redis.dump(key) for key in keys}


def _age(space: Space, run_id: str, days: float) -> None:
    """Move a finished run's start and end ``days`` into the past (its hash and its status index)."""
    keys, then = space.keys, utcnow() - timedelta(days=days)
    fields = {"started_at": iso(then), "completed_at": iso(then), "started_score": str(epoch_score(then))}
    space.redis.hset(keys.run(run_id), mapping=fields)
    status = space.redis.hget(keys.run(run_id), "status")
    assert status is not None
    space.redis.zadd(keys.status_runs(status.decode()), {run_id: epoch_score(then)}, xx=True)


def test_a_purge_deletes_every_trace_of_an_old_finished_run_and_nothing_of_younger_or_active_runs(
    space: Space,
) -> None:
    client = space.client(registry(flow("full", FULL)))
    old = str(client.trigger("full", idempotency_key="k1").run_id)
    active = str(client.trigger("full").run_id)  # parks on its signal: Running, older than the cutoff
    _finish(space, client, old)
    cutoff = utcnow()
    young = str(client.trigger("full").run_id)
    _finish(space, client, young)

    old_jobs = _job_ids(space, old)
    assert len(old_jobs) >= 7  # trigger, loop, 2 items, wait, boom twice, handle
    # Plain job ids name their run and are not indexed; the version before indexed every one.
    assert _indexed(space, old) == []
    space.redis.hset(space.keys.jobs(), mapping=dict.fromkeys(old_jobs, old))
    assert _rq_keys(space, old_jobs)
    assert _traces(space, old)
    kept = {run_id: _snapshot(space, run_id) for run_id in (young, active)}
    before = _snapshot(space, old)

    assert client.purge(utcnow() - cutoff, dry_run=True) == 1
    assert _snapshot(space, old) == before  # a dry run deletes nothing

    assert client.purge(utcnow() - cutoff) == 1
    assert _traces(space, old) == []
    assert _rq_keys(space, old_jobs) == []
    assert client.get_run(old) is None
    assert {run_id: _snapshot(space, run_id) for run_id in (young, active)} == kept
    assert client.purge(utcnow() - cutoff) == 0

    # The active run, though old, finishes normally afterwards.
    client.signal(active, "go")
    space.drain()
    finished = client.get_run(active)
    assert finished is not None and finished.status is RunStatus.Succeeded


def test_a_run_reopened_between_the_read_and_the_delete_is_kept(
    space: Space, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = space.client(registry(flow("one", {"a": {"type": "Noop"}})))
    run_id = str(client.trigger("one").run_id)
    space.drain()
    snapshot = _snapshot(space, run_id)
    original = Retention._purge_args

    def reopen_first(self: Retention, *args: Any, **kwargs: Any) -> Any:
        space.redis.hset(space.keys.run(run_id), "status", "Running")  # as a retried step would
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Retention, "_purge_args", reopen_first)
    result = client.store.retention.purge_finished(utcnow(), jobs=client.runner.stored_jobs())
    assert result.runs == 0 and result.batches == 1
    space.redis.hset(space.keys.run(run_id), "status", "Succeeded")
    assert _snapshot(space, run_id) == snapshot


def test_the_cli_purges_runs_older_than_days_with_dry_run_and_json(space: Space) -> None:
    client = space.client(registry(flow("one", {"a": {"type": "Noop"}})))
    old, young = (str(client.trigger("one").run_id) for _ in range(2))
    space.drain()
    _age(space, old, days=10)

    dry = space.cli("runs", "purge", "--older-than", "7", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"runs": 1, "dryRun": True, "olderThanDays": 7}
    assert client.get_run(old) is not None

    done = space.cli("runs", "purge", "--older-than", "7", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"runs": 1, "dryRun": False, "olderThanDays": 7}
    assert client.get_run(old) is None and client.get_run(young) is not None

    text = space.cli("runs", "purge", "--older-than", "7")
    assert text.returncode == 0 and text.stdout.strip() == "0 run(s) deleted", text
    refused = space.cli("runs", "purge", "--older-than", "0")
    assert refused.returncode == 2, refused


def test_the_retention_duty_purges_runs_older_than_the_setting(space: Space) -> None:
    client = space.client(registry(flow("one", {"a": {"type": "Noop"}})))
    old, young = (str(client.trigger("one").run_id) for _ in range(2))
    space.drain()
    _age(space, old, days=8)
    settings = space.settings.model_copy(update={"retention_days": 7})
    duties = flow_duties(space.engine(), settings, owner="test")
    assert "retention" in [d.name for d in duties.duties]
    assert duties.run_due(force=True)["retention"] == 1
    assert client.get_run(old) is None and client.get_run(young) is not None


def test_purge_result_reports_batches(space: Space) -> None:
    client = space.client(registry(flow("one", {"a": {"type": "Noop"}})))
    for _ in range(5):
        client.trigger("one")
    space.drain()
    result = client.store.retention.purge_finished(utcnow(), jobs=client.runner.stored_jobs(), batch_size=2)
    assert (result.runs, result.batches) == (5, 3)
    assert 0 < result.max_batch_seconds == max(result.batch_seconds)
