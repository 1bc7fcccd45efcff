"""Prometheus metrics on real processes: a ``flowjobs worker`` subprocess runs flows of known
outcome, the web app (uvicorn) serves ``/metrics``, and after N runs each counter reads N. The
output passes ``promtool check metrics`` (Debian's ``prometheus`` package: required, not skipped)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from flowjobs import FlowClient, RunStatus
from flowjobs.core.clock import utcnow
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.schedules import flow_schedule_id
from flowjobs.schedules.firing import ScheduleFirer
from flowjobs.web.app import create_app
from tests.conftest import Space, free_port, served, wait_until
from tests.integration.flows import flow, registry

TOKEN = "metrics-token"
CRON = {"type": "Cron", "inputs": {"cronExpression": "*/5 * * * *"}}
N = 3

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _flows(space: Space) -> FlowRegistry:
    return registry(
        flow("mx-ok", {"a": {"type": "Noop"}, "b": {"type": "Noop", "run_after": ["a"]}}),
        flow("mx-fail", {"a": {"type": "Boom"}}),
        flow(
            "mx-retry",
            {
                "a": {
                    "type": "Flaky",
                    "inputs": {"key": f"{space.token}:flaky", "succeed_on": 2},
                    "retry": {"max_attempts": 2, "backoff_seconds": 0.05},
                }
            },
        ),
        flow("mx-slow", {"a": {"type": "Sleep", "inputs": {"seconds": 30}, "timeout_seconds": 1}}),
        flow("mx-cron", {"a": {"type": "Noop"}}, triggers={"tick": CRON}),
        flow(
            "mx-each",
            {"each": {"type": "ForEach", "for_each": list(range(N)), "steps": {"child": {"type": "Noop"}}}},
        ),
        flow(
            "mx-hook",
            {"a": {"type": "Noop"}},
            triggers={
                "hook": {"type": "Webhook", "inputs": {"webhookSlug": "mx-hook", "webhookSecret": "k" * 24}}
            },
        ),
    )


@pytest.fixture
def web(space: Space) -> Iterator[tuple[FlowClient, httpx.Client, Any]]:
    """A client of the flows, and the web app serving them (with a token) on a uvicorn server."""
    client = space.client(_flows(space))
    settings = space.settings.model_copy(update={"web_token": SecretStr(TOKEN)})
    with served(create_app(settings, client)) as http:
        yield client, http, settings


def _scrape(http: httpx.Client) -> tuple[str, Samples]:
    response = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return response.text, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_read_n_after_n_runs_and_promtool_accepts_the_output(
    space: Space, web: tuple[FlowClient, httpx.Client, Any]
) -> None:
    client, http, settings = web
    assert http.get("/metrics").status_code == 401, "behind the API's auth by default"
    space.start_worker("w")
    handles = [
        *(client.trigger("mx-ok") for _ in range(N)),
        *(client.trigger("mx-fail") for _ in range(N)),
        *(client.trigger("mx-retry") for _ in range(N)),
        client.trigger("mx-slow"),
        client.trigger("mx-each"),
    ]
    statuses = [h.wait(timeout=60).status for h in handles]
    expected = [RunStatus.Succeeded] * N + [RunStatus.Failed] * N + [RunStatus.Succeeded] * N
    assert statuses == [*expected, RunStatus.Failed, RunStatus.Succeeded]
    for _ in range(N):
        assert (
            http.post("/flows/api/webhook/mx-hook", headers={"X-Webhook-Key": "wrong"}, json={}).status_code
            == 401
        )
    key = {"X-Webhook-Key": "k" * 24}
    accepted = http.post("/flows/api/webhook/mx-hook", headers={**key, "Idempotency-Key": "one"}, json={})
    assert accepted.status_code == 202, accepted.text
    again = http.post("/flows/api/webhook/mx-hook", headers={**key, "Idempotency-Key": "one"}, json={})
    assert again.status_code == 200, again.text
    too_large = b"[" + b"0," * settings.webhook_max_body_bytes + b"0]"
    assert http.post("/flows/api/webhook/mx-hook", headers=key, content=too_large).status_code == 413
    assert http.post("/flows/api/webhook/no-such-hook", headers=key, json={}).status_code == 404

    text, samples = _scrape(http)
    for name in ("mx-ok", "mx-fail", "mx-retry"):
        assert _value(samples, "flowjobs_runs_started_total", flow=name) == N
    assert _value(samples, "flowjobs_runs_finished_total", flow="mx-ok", status="Succeeded") == N
    assert _value(samples, "flowjobs_runs_finished_total", flow="mx-fail", status="Failed") == N
    assert _value(samples, "flowjobs_runs_finished_total", flow="mx-retry", status="Succeeded") == N
    assert _value(samples, "flowjobs_runs_finished_total", flow="mx-slow", status="Failed") == 1
    for step in ("a", "b"):
        assert (
            _value(samples, "flowjobs_step_attempts_total", flow="mx-ok", step=step, outcome="Succeeded") == N
        )
    assert _value(samples, "flowjobs_step_attempts_total", flow="mx-fail", step="a", outcome="Failed") == N
    # Each mx-retry run: attempt 1 fails and is retried, attempt 2 succeeds.
    assert _value(samples, "flowjobs_step_attempts_total", flow="mx-retry", step="a", outcome="Failed") == N
    assert (
        _value(samples, "flowjobs_step_attempts_total", flow="mx-retry", step="a", outcome="Succeeded") == N
    )
    assert _value(samples, "flowjobs_step_retries_total", flow="mx-retry", step="a") == N
    assert _value(samples, "flowjobs_step_retries_total", flow="mx-fail", step="a") == 0
    assert _value(samples, "flowjobs_step_timeouts_total", flow="mx-slow", step="a") == 1
    assert _value(samples, "flowjobs_step_timeouts_total", flow="mx-fail", step="a") == 0
    # ForEach children count under `<loop>.<child>`, never one series per item.
    assert (
        _value(
            samples, "flowjobs_step_attempts_total", flow="mx-each", step="each.child", outcome="Succeeded"
        )
        == N
    )
    assert not [key for key in samples if ("step", "each.0.child") in key[1]]
    assert _value(samples, "flowjobs_webhook_deliveries_total", flow="mx-hook", outcome="401") == N
    assert _value(samples, "flowjobs_webhook_deliveries_total", flow="mx-hook", outcome="accepted") == 1
    assert _value(samples, "flowjobs_webhook_deliveries_total", flow="mx-hook", outcome="duplicate") == 1
    assert _value(samples, "flowjobs_webhook_deliveries_total", flow="mx-hook", outcome="413") == 1
    assert _value(samples, "flowjobs_webhook_deliveries_total", flow="", outcome="404") == 1

    # Histograms: one observation per closed run and per ended attempt, in cumulative buckets.
    assert _value(samples, "flowjobs_run_duration_seconds_count", flow="mx-ok") == N
    assert _value(samples, "flowjobs_run_duration_seconds_bucket", flow="mx-ok", le="+Inf") == N
    assert _value(samples, "flowjobs_step_duration_seconds_count", flow="mx-ok") == 2 * N
    assert _value(samples, "flowjobs_step_duration_seconds_count", flow="mx-retry") == 2 * N
    assert _value(samples, "flowjobs_step_duration_seconds_bucket", flow="mx-slow", le="0.5") == 0
    assert _value(samples, "flowjobs_step_duration_seconds_bucket", flow="mx-slow", le="30") == 1
    assert _value(samples, "flowjobs_step_duration_seconds_sum", flow="mx-slow") >= 1

    queue = space.settings.queue
    assert _value(samples, "flowjobs_workers", queue=queue) == 1
    wait_until(lambda: space.redis.llen(f"rq:queue:{queue}") == 0, what="the webhook run's jobs taken")
    _, samples = _scrape(http)
    assert _value(samples, "flowjobs_queue_depth", queue=queue) == 0
    assert _value(samples, "flowjobs_queue_oldest_job_age_seconds", queue=queue) == 0

    _promtool_accepts(text)


def test_queue_depth_and_oldest_job_age_with_no_worker(
    space: Space, web: tuple[FlowClient, httpx.Client, Any]
) -> None:
    client, http, _ = web
    for _ in range(N):
        client.trigger("mx-ok")
    queue = space.settings.queue
    wait_until(
        lambda: _value(_scrape(http)[1], "flowjobs_queue_oldest_job_age_seconds", queue=queue) > 0,
        what="the oldest job ageing",
    )
    _, samples = _scrape(http)
    assert _value(samples, "flowjobs_queue_depth", queue=queue) == N
    assert _value(samples, "flowjobs_workers", queue=queue) == 0
    assert _value(samples, "flowjobs_runs_started_total", flow="mx-ok") == 0


def test_schedule_lag_is_the_time_a_due_tick_waits(
    space: Space, web: tuple[FlowClient, httpx.Client, Any]
) -> None:
    client, http, _ = web
    client.sync_schedules()
    definition = client.flows.get("mx-cron")
    schedule = flow_schedule_id(str(definition.id), "tick")
    _, samples = _scrape(http)
    assert _value(samples, "flowjobs_schedule_lag_seconds", schedule=schedule) == 0, "not due yet"
    # No scheduler for ten minutes: the tick waits.
    owed = utcnow() - timedelta(minutes=10)
    client.schedules.change(schedule, lambda s: s and s.model_copy(update={"next_fire_at": owed}))
    _, samples = _scrape(http)
    assert 600 <= _value(samples, "flowjobs_schedule_lag_seconds", schedule=schedule) < 660
    assert ScheduleFirer(client, grace_seconds=3600).fire_due() == 1
    _, samples = _scrape(http)
    assert _value(samples, "flowjobs_schedule_lag_seconds", schedule=schedule) == 0


def test_metrics_open_setting_serves_metrics_without_credentials(space: Space) -> None:
    settings = space.settings.model_copy(update={"web_token": SecretStr(TOKEN), "metrics_open": True})
    with served(create_app(settings, space.client(_flows(space)))) as http:
        assert http.get("/metrics").status_code == 200
        assert http.get("/flows/api/flows").status_code == 401, "only /metrics is opened"


def _promtool_accepts(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (scripts/test.sh installs it as root)"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_worker_serves_its_own_figures_on_its_metrics_port(space: Space) -> None:
    client = space.client(
        registry(
            flow("mx-ok", {"a": {"type": "Noop"}, "b": {"type": "Noop", "run_after": ["a"]}}),
            flow("mx-fail", {"a": {"type": "Boom"}}),
            # Longer than a third of the 2 s lease: the worker's parent renews it while the horse sleeps.
            flow("mx-long", {"a": {"type": "Sleep", "inputs": {"seconds": 1.6}}}),
        )
    )
    port = free_port()
    space.start("worker", "--name", f"{space.token}-w", "--metrics-port", str(port))
    handles = [
        *(client.trigger("mx-ok") for _ in range(N)),
        client.trigger("mx-fail"),
        client.trigger("mx-long"),
    ]
    assert [h.wait(timeout=60).status for h in handles] == [RunStatus.Succeeded] * N + [
        RunStatus.Failed,
        RunStatus.Succeeded,
    ]
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    # Counted in the forked work-horses, summed by the worker's endpoint.
    assert _value(samples, "flowjobs_worker_steps_executed_total", flow="mx-ok", outcome="Succeeded") == 2 * N
    assert _value(samples, "flowjobs_worker_steps_executed_total", flow="mx-fail", outcome="Failed") == 1
    assert _value(samples, "flowjobs_worker_handler_seconds_count", flow="mx-ok") == 2 * N
    assert _value(samples, "flowjobs_worker_handler_seconds_sum", flow="mx-long") >= 1.6
    assert _value(samples, "flowjobs_worker_lease_renewals_total") >= 1
    assert _value(samples, "flowjobs_worker_lease_losses_total") == 0
    assert _value(samples, "flowjobs_worker_duty_runs_total", duty="deadlines") >= 1
    assert _value(samples, "flowjobs_worker_duty_failures_total", duty="deadlines") == 0
    _promtool_accepts(response.text)
