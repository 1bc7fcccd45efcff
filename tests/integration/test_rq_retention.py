"""RQ's keys of finished jobs expire after FLOWJOBS_RQ_JOB_TTL_SECONDS; job ids outlive them in
flowjobs' own records (the jobs index, step attempts), as long as the run is retained."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowjobs import FlowClient, RunStatus
from flowjobs.core.errors import InvalidSettings
from flowjobs.core.job_calls import JobCall, JobState
from flowjobs.core.records import FlowRunRecord
from flowjobs.settings import load_settings
from tests.conftest import Space
from tests.integration.flows import flow, registry

TTL = 600


def _job_ids(run: FlowRunRecord) -> list[str]:
    """The trigger job and every attempt's job of a run, from its record."""
    ids = [run.background_job_id or ""]
    ids += [a.job_id or "" for step in run.steps or [] for a in step.attempts or []]
    assert all(ids)
    return ids


def _ttls(space: Space, job_ids: list[str]) -> list[int]:
    with space.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.ttl(f"rq:job:{job_id}")
            pipe.ttl(f"rq:results:{job_id}")
        return list(pipe.execute())


def test_a_finished_runs_rq_keys_expire_within_the_setting_and_its_job_ids_stay_resolvable(
    space: Space,
) -> None:
    space.settings = space.settings.model_copy(update={"rq_job_ttl_seconds": TTL})  # the workers' side
    definition = flow("kept", {"a": {"type": "Noop"}, "b": {"type": "Boom", "run_after": ["a"]}})
    client = FlowClient.from_settings(space.settings, registry(definition))  # the trigger job's side
    handle = client.trigger("kept")
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed
    job_ids = _job_ids(run)
    assert len(job_ids) == 3
    ttls = _ttls(space, job_ids)
    assert all(0 < ttl <= TTL for ttl in ttls), ttls  # job hashes and result streams alike

    space.redis.delete(*[f"rq:{kind}:{j}" for j in job_ids for kind in ("job", "results")])
    assert client.runner.states(job_ids) == dict.fromkeys(job_ids, JobState.Deleted)
    for job_id in job_ids:
        found = client.find_run_by_job(job_id)
        assert found is not None and found.id == handle.run_id
    again = client.get_run_detail(handle.run_id)
    assert again is not None and _job_ids(again) == job_ids
    shown = space.cli("runs", "show", str(handle.run_id))
    assert shown.returncode == 0, shown.stderr
    assert all(job_id in shown.stdout for job_id in job_ids)
    # No printed link leads nowhere: the gone jobs are named, not linked.
    assert "/view/job/" not in shown.stdout
    assert shown.stdout.count("(gone from RQ)") == len(job_ids)


def test_a_job_that_fails_in_rq_expires_after_the_same_window(space: Space) -> None:
    runner = space.runner(rq_job_ttl_seconds=TTL)
    job_id = runner.enqueue(
        JobCall(func="tests.handlers.no_such_function", args=(), job_id=f"{space.token}-x", description="x")
    )
    try:
        space.drain()
        assert runner.state(job_id) is JobState.Failed
        ttls = _ttls(space, [job_id])
        assert all(0 < ttl <= TTL for ttl in ttls), ttls
    finally:
        space.redis.delete(f"rq:job:{job_id}", f"rq:results:{job_id}")


def test_the_rq_job_ttl_is_positive_and_at_most_the_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWJOBS_CONFIG", str(tmp_path / "none.toml"))
    assert load_settings().rq_job_ttl_seconds == 86400
    assert load_settings(retention_days=1, rq_job_ttl_seconds=86400).rq_job_ttl_seconds == 86400
    for value in (0, 86401, "inf"):
        with pytest.raises(InvalidSettings, match="FLOWJOBS_RQ_JOB_TTL_SECONDS"):
            load_settings(retention_days=1, rq_job_ttl_seconds=value)
