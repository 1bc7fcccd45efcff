"""The HTTP API on a real uvicorn server, real Redis and real workers: every route's happy path and
its 404/409/413/422, auth, the rq-dashboard mount, and a schemathesis pass over the OpenAPI schema
(``SCHEMATHESIS_MAX_EXAMPLES`` examples per operation and generation mode; .ci/run raises it)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from pydantic import SecretStr
from rq.job import Job
from rq.serializers import JSONSerializer
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flowjobs.client import FlowClient
from flowjobs.core.manifest import FlowDefinition
from flowjobs.core.registry import FlowRegistry
from flowjobs.web.app import create_app
from tests.conftest import Space, served, wait_until
from tests.integration.flows import flow, registry

API = "/flows/api"
JSON_TYPE = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(app: FastAPI) -> AbstractContextManager[httpx.Client]:
    """``app`` on uvicorn (a thread of this process) on a free port; an HTTP client for it."""
    return served(app, lifespan="off")


@pytest.fixture
def api(space: Space) -> Iterator[Callable[..., tuple[httpx.Client, FlowClient]]]:
    """``api(registry, **settings)``: a server for this space's settings (plus overrides) and flows."""
    with_servers: list[Any] = []

    def start(flows: FlowRegistry, **overrides: Any) -> tuple[httpx.Client, FlowClient]:
        settings = space.settings.model_copy(update=overrides)
        client = FlowClient(
            space.redis,
            flows,
            settings.queue,
            key_prefix=settings.key_prefix,
            max_data_bytes=settings.max_data_bytes,
            max_data_depth=settings.max_data_depth,
        )
        server = serve(create_app(settings, client))
        with_servers.append(server)
        return server.__enter__(), client

    yield start
    for server in reversed(with_servers):
        server.__exit__(None, None, None)


def _run(http: httpx.Client, run_id: str) -> dict[str, Any]:
    response = http.get(f"{API}/runs/{run_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _steps(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = _run(http, run_id)["steps"]
    return steps


def _ticking() -> FlowDefinition:
    """A flow with a daily Cron trigger."""
    cron = {"type": "Cron", "inputs": {"cronExpression": "0 3 * * *"}}
    return flow("ticking", {"a": {"type": "Noop"}}, triggers={"manual": {"type": "Manual"}, "tick": cron})


def _terminal(http: httpx.Client, run_id: str) -> dict[str, Any]:
    done = wait_until(
        lambda: (run := _run(http, run_id))["status"] not in ("Pending", "Running") and run,
        what=f"run {run_id} to finish",
    )
    assert isinstance(done, dict)
    return done


SHOP = {
    "fetch": {"type": "Echo", "inputs": {"parcel": "@triggerBody().parcel"}},
    "ship": {"type": "Flaky", "run_after": ["fetch"], "inputs": {"key": "", "succeed_on": 2}},
}


def _shop(space: Space) -> FlowRegistry:
    steps = json.loads(json.dumps(SHOP))
    steps["ship"]["inputs"]["key"] = f"{space.token}:flaky"
    return registry(flow("shop", steps))


# -- flows -----------------------------------------------------------------------------------


def test_flow_routes_and_trigger_errors(space: Space, api: Any) -> None:
    http, _ = api(_shop(space), max_data_bytes=4096, max_data_depth=8)

    listed = http.get(f"{API}/flows")
    assert listed.status_code == 200
    [shop] = listed.json()
    assert (shop["name"], shop["isEnabled"]) == ("shop", True)
    assert set(shop["manifest"]["steps"]) == {"fetch", "ship"}
    assert listed.headers["X-Job-Url-Template"].endswith("/view/job/{jobId}")
    assert http.get(f"{API}/flows/{shop['id']}").json()["name"] == "shop"
    assert http.get(f"{API}/flows/shop").json()["id"] == shop["id"]
    missing = http.get(f"{API}/flows/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]

    assert http.post(f"{API}/flows/shop/disable").json()["isEnabled"] is False
    refused = http.post(f"{API}/flows/shop/trigger", json={"parcel": 1})
    assert refused.status_code == 409 and "disabled" in refused.json()["detail"]
    assert http.post(f"{API}/flows/shop/enable").json()["isEnabled"] is True

    first = http.post(
        f"{API}/flows/shop/trigger",
        json={"parcel": 1},
        headers={"Idempotency-Key": "k-1", "X-Source": "test", "Authorization": "Bearer x"},
    )
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["created"] is True and body["backgroundJobId"] == f"fj-{body['runId']}-trigger"
    again = http.post(f"{API}/flows/shop/trigger", json={"parcel": 2}, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json()["runId"] == body["runId"]
    run = _run(http, body["runId"])
    assert run["triggerDataJson"] == '{"parcel": 1}' and run["idempotencyKey"] == "k-1"
    assert run["triggerHeaders"]["x-source"] == "test" and "authorization" not in run["triggerHeaders"]

    assert http.post(f"{API}/flows/nope/trigger").status_code == 404
    assert http.post(f"{API}/flows/shop/trigger", params={"trigger": "webhook"}).status_code == 404
    bad = http.post(
        f"{API}/flows/shop/trigger", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and "not JSON" in bad.json()["detail"]
    assert http.post(f"{API}/flows/shop/trigger", json={"runTimeoutSeconds": -1}).status_code == 422
    large = http.post(f"{API}/flows/shop/trigger", json={"blob": "x" * 5000})
    assert large.status_code == 413 and large.json()["error"] == "DataTooLarge"
    huge = http.post(f"{API}/flows/shop/trigger", content=b"[" + b"0," * 10_000 + b"0]", headers=JSON_TYPE)
    assert huge.status_code == 413
    deep: Any = 1
    for _ in range(20):
        deep = [deep]
    assert http.post(f"{API}/flows/shop/trigger", json=deep).status_code == 413
    assert http.get(f"{API}/runs", params={"flow": shop["id"]}).headers["X-Total-Count"] == "1"


# -- runs and control ------------------------------------------------------------------------


def test_run_reads_retry_rerun_lineage_and_job_links(space: Space, api: Any) -> None:
    http, _ = api(_shop(space))
    space.start_worker("w1")
    run_id = http.post(f"{API}/flows/shop/trigger", json={"parcel": 7}).json()["runId"]
    failed = _terminal(http, run_id)
    assert failed["status"] == "Failed"
    steps = {s["stepKey"]: s for s in failed["steps"]}
    assert steps["ship"]["status"] == "Failed" and steps["ship"]["attempts"][0]["attempt"] == 1
    detail = http.get(f"{API}/runs/{run_id}")
    links = detail.headers["Link"]
    assert f'</flows/runs/{run_id}>; rel="run"' in links
    assert f"/rq/0/view/job/{steps['ship']['jobId']}>" in links and f"fj-{run_id}-trigger" in links

    assert [s["stepKey"] for s in http.get(f"{API}/runs/{run_id}/steps").json()] == ["fetch", "ship"]
    events = http.get(f"{API}/runs/{run_id}/events").json()
    assert events[0]["type"] == "run.started" and events[-1]["type"] == "run.completed"
    assert [
        e["sequence"] for e in http.get(f"{API}/runs/{run_id}/events", params={"skip": 1, "take": 2}).json()
    ] == [2, 3]
    by_job = http.get(f"{API}/jobs/{steps['ship']['jobId']}/run")
    assert by_job.status_code == 200 and by_job.json()["id"] == run_id
    assert http.get(f"{API}/jobs/nope/run").status_code == 404

    assert http.post(f"{API}/runs/{run_id}/cancel").status_code == 409
    assert http.post(f"{API}/runs/{run_id}/steps/nope/retry").status_code == 404
    assert http.post(f"{API}/runs/{run_id}/steps/fetch/retry").status_code == 409
    retried = http.post(f"{API}/runs/{run_id}/steps/ship/retry")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["attempt"], retried.json()["jobId"]) == (2, f"fj-{run_id}-s-ship-2")
    assert _terminal(http, run_id)["status"] == "Succeeded"

    rerun = http.post(f"{API}/runs/{run_id}/rerun")
    assert rerun.status_code == 202 and rerun.json()["sourceRunId"] == run_id
    child = rerun.json()["runId"]
    assert _terminal(http, child)["sourceRunId"] == run_id
    family = http.get(f"{API}/runs/{run_id}/lineage").json()
    assert family["runId"] == run_id and [r["id"] for r in family["descendants"]] == [child]
    assert [r["id"] for r in http.get(f"{API}/runs/{child}/lineage").json()["ancestors"]] == [run_id]

    for path in ("", "/steps", "/events", "/lineage"):
        missing = http.get(f"{API}/runs/00000000-0000-0000-0000-000000000000{path}")
        assert missing.status_code == 404 and missing.json()["error"] == "RunNotFound"
    for action in ("cancel", "rerun", "steps/ship/retry"):
        assert http.post(f"{API}/runs/nope/{action}").status_code == 404


def test_run_list_filters_paging_and_stats(space: Space, api: Any) -> None:
    http, client = api(_shop(space))
    ids = [http.post(f"{API}/flows/shop/trigger", json={"parcel": n}).json()["runId"] for n in range(5)]
    client.cancel(ids[0])
    newest_first = list(reversed(ids))

    page = http.get(f"{API}/runs", params={"limit": 2})
    assert [r["id"] for r in page.json()] == newest_first[:2]
    assert page.headers["X-Total-Count"] == "5" and page.headers["X-Next-Cursor"] == newest_first[1]
    following = page.headers["Link"].split(">")[0].lstrip("<")
    assert [r["id"] for r in http.get(following).json()] == newest_first[2:4]
    assert [r["id"] for r in http.get(f"{API}/runs", params={"skip": 3}).json()] == newest_first[3:]
    assert [r["id"] for r in http.get(f"{API}/runs", params={"status": "Cancelled"}).json()] == [ids[0]]
    pending = http.get(f"{API}/runs", params={"status": "Pending", "flow": "shop"})
    assert pending.headers["X-Total-Count"] == "4" and len(pending.json()) == 4
    started = [datetime.fromisoformat(_run(http, i)["startedAt"]) for i in ids]
    window = {"since": started[1].isoformat(), "until": started[3].isoformat()}
    assert [r["id"] for r in http.get(f"{API}/runs", params=window).json()] == [ids[2], ids[1]]
    assert http.get(f"{API}/runs", params=window).headers["X-Total-Count"] == "2"
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert http.get(f"{API}/runs", params={"since": later}).json() == []
    assert http.get(f"{API}/runs", params={"flow": "nope"}).status_code == 404
    for bad in ({"status": "Bogus"}, {"limit": 0}, {"limit": 501}, {"since": "yesterday"}, {"skip": -1}):
        assert http.get(f"{API}/runs", params=bad).status_code == 422, bad

    active = http.get(f"{API}/runs/active").json()
    assert [r["id"] for r in active] == newest_first[:4]
    stats = http.get(f"{API}/runs/stats").json()
    assert stats["total"] == 5 and stats["activeRuns"] == 4 and stats["totalFlows"] == 1
    assert stats["byStatus"]["Pending"] == 4 and stats["byStatus"]["Cancelled"] == 1
    assert stats["byFlow"][0]["flowName"] == "shop" and stats["byFlow"][0]["total"] == 5


APPROVAL = {
    "prepare": {"type": "Noop"},
    "approval": {"type": "WaitForSignal", "run_after": ["prepare"], "inputs": {"signalName": "approved"}},
    "ship": {"type": "Echo", "run_after": ["approval"], "inputs": {"by": "@steps('approval').output.by"}},
}


def test_signal_and_cancel(space: Space, api: Any) -> None:
    http, _ = api(registry(flow("approval", APPROVAL)))
    space.start_worker("w1", simple=True)
    run_id = http.post(f"{API}/flows/approval/trigger").json()["runId"]
    wait_until(
        lambda: any(
            s["stepKey"] == "approval" and s["attemptCount"] == 2 for s in _run(http, run_id)["steps"]
        ),
        what="the approval step to park",
    )
    assert run_id in [r["id"] for r in http.get(f"{API}/runs/active").json()]
    assert http.post(f"{API}/runs/{run_id}/signals/other", json={}).status_code == 404
    bad = http.post(
        f"{API}/runs/{run_id}/signals/approved", content=b"{", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    sent = http.post(f"{API}/runs/{run_id}/signals/approved", json={"by": "ada"})
    assert sent.status_code == 200 and sent.json()["delivery"] == "resumed" and sent.json()["delivered"]
    done = _terminal(http, run_id)
    assert done["status"] == "Succeeded"
    ship = next(s for s in done["steps"] if s["stepKey"] == "ship")
    assert json.loads(ship["outputJson"])["inputs"] == {"by": "ada"}
    again = http.post(f"{API}/runs/{run_id}/signals/approved", json={"by": "bob"})
    assert again.status_code in (404, 409), again.text  # a finished run waits for nothing

    waiting = http.post(f"{API}/flows/approval/trigger").json()["runId"]
    wait_until(lambda: _run(http, waiting)["status"] == "Running", what="the run to start")
    cancelled = http.post(f"{API}/runs/{waiting}/cancel", json={"reason": "not needed"})
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["accepted"] and body["run"]["cancelReason"] == "not needed"
    assert _terminal(http, waiting)["status"] == "Cancelled"
    assert http.post(f"{API}/runs/{waiting}/cancel").status_code == 409
    assert http.post(f"{API}/runs/{waiting}/signals/approved", json={}).status_code == 404


def test_a_second_delivery_of_a_kept_signal_is_a_conflict(space: Space, api: Any) -> None:
    http, _ = api(registry(flow("approval", APPROVAL)))
    run_id = http.post(f"{API}/flows/approval/trigger").json()["runId"]
    space.drain()  # the run starts and parks; no worker is left to resume it
    assert (
        http.post(f"{API}/runs/{run_id}/signals/approved", json={"by": "a"}).json()["delivery"] == "resumed"
    )
    second = http.post(f"{API}/runs/{run_id}/signals/approved", json={"by": "b"})
    assert second.status_code == 409 and second.json()["error"] == "SignalAlreadyDelivered"


# -- schedules and health --------------------------------------------------------------------


def test_schedules(space: Space, api: Any) -> None:
    ticking = flow(
        "ticking",
        {"a": {"type": "Noop"}},
        triggers={
            "manual": {"type": "Manual"},
            "tick": {"type": "Cron", "inputs": {"cronExpression": "0 3 * * *"}},
        },
    )
    http, client = api(registry(ticking))
    client.sync_schedules()
    schedule_id = f"flow-{ticking.id}-tick"
    [listed] = http.get(f"{API}/schedules").json()
    assert (listed["jobId"], listed["cron"], listed["paused"]) == (schedule_id, "0 3 * * *", False)
    assert http.post(f"{API}/schedules/{schedule_id}/pause").json()["paused"] is True
    assert http.post(f"{API}/schedules/{schedule_id}/resume").json()["paused"] is False
    fired = http.post(f"{API}/schedules/{schedule_id}/trigger")
    assert fired.status_code == 202 and fired.json()["runId"]
    assert _run(http, fired.json()["runId"])["triggerKey"] == "tick"
    changed = http.put(f"{API}/schedules/{schedule_id}/cron", json={"cronExpression": "*/5 * * * *"})
    assert changed.json()["cron"] == "*/5 * * * *" and changed.json()["cronOverride"]
    invalid = http.put(f"{API}/schedules/{schedule_id}/cron", json={"cronExpression": "not cron"})
    assert invalid.status_code == 422 and http.get(f"{API}/schedules").json()[0]["cron"] == "*/5 * * * *"
    for action in ("pause", "resume", "trigger"):
        assert http.post(f"{API}/schedules/nope/{action}").status_code == 404
    http.post(f"{API}/flows/ticking/disable")
    assert http.post(f"{API}/schedules/{schedule_id}/trigger").status_code == 409


def test_health(space: Space, api: Any) -> None:
    http, _ = api(_shop(space))
    alone = http.get(f"{API}/health").json()
    assert alone["redis"] is True and alone["workers"] == 0 and alone["status"] == "degraded"
    space.start_worker("w1")
    healthy = wait_until(
        lambda: (h := http.get(f"{API}/health").json())["workers"] == 1 and h, what="a worker"
    )
    assert isinstance(healthy, dict) and healthy["status"] == "ok" and healthy["flows"] == 1


def test_health_answers_503_without_redis(space: Space) -> None:
    settings = space.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with serve(create_app(settings, FlowClient.from_settings(settings, _shop(space)))) as http:
        answer = http.get(f"{API}/health")
        assert answer.status_code == 503 and answer.json()["status"] == "down"
        assert http.get(f"{API}/runs").status_code == 503


# -- auth ------------------------------------------------------------------------------------


def test_auth_bearer_and_basic_guard_everything_but_health_and_webhooks(space: Space, api: Any) -> None:
    http, _ = api(_shop(space), web_token=SecretStr("s3cret"), web_user="ada", web_password=SecretStr("pw"))
    for path in (
        f"{API}/flows",
        f"{API}/runs",
        f"{API}/openapi.json",
        "/flows/",
        "/rq/",
        "/rq/0/view/workers",
    ):
        refused = http.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
    assert http.post(f"{API}/flows/shop/trigger").status_code == 401
    assert http.get(f"{API}/flows", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get(f"{API}/flows", auth=("ada", "nope")).status_code == 401
    assert http.get(f"{API}/flows", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert http.get(f"{API}/flows", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert http.get(f"{API}/flows", auth=("ada", "pw")).status_code == 200
    assert http.get("/rq/0/view/workers", auth=("ada", "pw")).status_code == 200
    assert http.get(f"{API}/health").status_code == 200
    assert http.post(f"{API}/webhook/shop", json={}).status_code != 401  # its own checks apply


def test_token_only_auth(space: Space, api: Any) -> None:
    http, _ = api(_shop(space), web_token=SecretStr("t0k"))
    assert http.get(f"{API}/runs").headers["WWW-Authenticate"].startswith("Bearer")
    assert http.get(f"{API}/runs", auth=("any", "t0k")).status_code == 401
    assert http.get(f"{API}/runs", headers={"Authorization": "bearer t0k"}).status_code == 200


# -- rq-dashboard ----------------------------------------------------------------------------


def test_rq_dashboard_mount_shows_jobs_and_its_requeue_keeps_the_meta_json(space: Space, api: Any) -> None:
    http, _ = api(_shop(space))
    run_id = http.post(f"{API}/flows/shop/trigger", json={"parcel": 3}).json()["runId"]
    space.drain()
    run = _run(http, run_id)
    assert run["status"] == "Failed"
    ship_job = next(s for s in run["steps"] if s["stepKey"] == "ship")["jobId"]

    template = http.get(f"{API}/flows").headers["X-Job-Url-Template"]
    page = http.get(urlsplit(template.replace("{jobId}", ship_job)).path)
    assert page.status_code == 200 and ship_job in page.text
    css = http.get("/rq/static/css/main.css")
    assert css.status_code == 200 and "css" in css.headers["content-type"]
    data = http.get(f"/rq/0/data/job/{ship_job}.json").json()
    assert data["status"] == "failed"
    assert json.loads(data["metadata"])["run_url"] == f"/flows/runs/{run_id}"

    # rq-dashboard's own Requeue button, as its page posts it (a browser sends the page's Origin).
    page_origin = {"Origin": str(http.base_url).rstrip("/")}
    requeued = http.post(f"/rq/job/{ship_job}/requeue", headers=page_origin)
    assert requeued.status_code == 200 and requeued.json()["status"] == "OK"
    job = Job.fetch(ship_job, connection=space.redis, serializer=JSONSerializer)
    assert job.meta["run_url"] == f"/flows/runs/{run_id}"
    space.drain()
    assert _run(http, run_id)["status"] == "Succeeded"
    assert http.get(f"/rq/0/data/job/{ship_job}.json").status_code == 200

    # Requeue-all of a queue goes through the JSON serializer too.
    second = http.post(f"{API}/flows/shop/trigger", json={"parcel": 4}).json()["runId"]
    space.redis.delete(f"{space.token}:flaky")
    space.drain()
    assert _run(http, second)["status"] == "Failed"
    everything = http.post(f"/rq/requeue/{space.settings.queue}", headers=page_origin)
    assert everything.json() == {"status": "OK", "count": 1}
    space.drain()
    assert _run(http, second)["status"] == "Succeeded"
    assert http.post("/rq/job/nope/requeue", headers=page_origin).json()["status"] == "ERROR"


# -- schemathesis ----------------------------------------------------------------------------

#: Examples per operation and generation mode: enough to reach every route's parameters, few enough
#: to keep the suite fast (.ci/run runs this test again with more).
EXAMPLES_PER_OPERATION = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "4"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_openapi_schema_no_server_error(space: Space) -> None:
    """Every operation of the OpenAPI schema, with generated parameters and bodies, valid and
    invalid: no 5xx, every status answered is documented, and every documented response matches
    its media type and schema. (Driven by hand instead of schemathesis' pytest plugin, whose
    fixture loader does not run on this pytest.)"""
    client = space.client(registry(_ticking()))
    client.sync_schedules()
    client.trigger("ticking", data={"n": 1})
    # Starlette's test client (schemathesis' ASGI transport) sends ``Host: testserver``.
    settings = space.settings.model_copy(update={"web_allowed_hosts": "testserver"})
    schema = schemathesis.openapi.from_asgi(f"{API}/openapi.json", create_app(settings, client))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    called: dict[schemathesis.GenerationMode, set[str]] = {positive: set(), negative: set()}
    for operation in operations:
        for mode, seen in called.items():
            try:
                _exercise(operation, mode, seen)
            except hypothesis.errors.Unsatisfiable:
                # An operation without parameters or body has no invalid request to generate.
                assert mode is negative, operation.label
    assert len(called[positive]) == len(operations)
    assert len(called[negative]) >= len(operations) // 2


def _exercise(operation: Any, mode: schemathesis.GenerationMode, seen: set[str]) -> None:
    """Send an operation's generated requests of one mode, checking each answer (``CHECKS``)."""

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        database=None,
        deadline=None,
    )
    @hypothesis.given(case=operation.as_strategy(mode))
    def exercise(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)
        seen.add(f"{case.method} {case.path}")

    exercise()
