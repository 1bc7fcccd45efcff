"""Every process builds its collaborators from the settings in one place, so they agree: a step
retried from the command line gets the job timeout the workers use."""

from __future__ import annotations

import json

from flowjobs import FlowClient, FlowRegistry, RunStatus, hangfire
from flowjobs.core.handlers import default_handlers
from flowjobs.factory import engine_from_settings, firer_from_settings
from flowjobs.runtime.rq import RQJobRunner
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry


def _rq_timeout(space: Space, job_id: str | None) -> int:
    """The timeout RQ kills the job's handler after (its job hash's ``timeout`` field)."""
    raw = space.redis.hget(f"rq:job:{job_id}", "timeout")
    assert raw is not None, f"job {job_id} has no hash"
    return int(raw)


def test_a_step_retried_from_the_cli_keeps_the_job_timeout_setting(space: Space) -> None:
    space.settings = space.settings.model_copy(update={"job_timeout_seconds": 600})
    client = space.client(registry(flow("timeout-on-retry", {"a": {"type": "Boom"}})))
    space.start_worker("composition", simple=True)
    handle = client.trigger("timeout-on-retry")
    wait_until(lambda: handle.status() is RunStatus.Failed, 60, "the run to fail")
    (first,) = handle.detail().steps or []
    assert _rq_timeout(space, first.job_id) == 600, "the worker dispatches with the setting"

    retried = space.cli("runs", "retry-step", str(handle.run_id), "a", "--json")

    assert retried.returncode == 0, retried.stderr
    attempt = json.loads(retried.stdout)
    assert attempt["attempt"] == 2
    assert _rq_timeout(space, attempt["jobId"]) == 600


def test_every_entry_point_reads_the_same_settings(space: Space) -> None:
    settings = space.settings.model_copy(
        update={"job_timeout_seconds": 600, "rq_job_ttl_seconds": 3600, "claim_lease_seconds": 7}
    )
    engine = engine_from_settings(settings, handlers=default_handlers)
    runners = [
        engine.runner,
        FlowClient.from_settings(settings, FlowRegistry()).runner,
        firer_from_settings(settings).client.runner,
        hangfire.runner_from_settings(settings),
    ]
    for runner in runners:
        assert isinstance(runner, RQJobRunner)
        assert (runner.queue.name, runner.default_timeout_seconds, runner.keep_seconds) == (
            settings.queue,
            600,
            3600,
        )
    assert engine.lease_seconds == 7
