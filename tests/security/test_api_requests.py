"""The HTTP API against hostile requests, on a real ``flowjobs web``: bodies not declared JSON,
run ids that are not UUIDs, integers too long to read, and what its error answers disclose."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Space, free_port, wait_until
from tests.security.conftest import StartWeb, Web

API = "/flows/api"
JSON = {"content-type": "application/json"}
ECHO = {"steps": {"echo": {"type": "Echo", "inputs": {"x": "@triggerBody()?.x"}}}}
APPROVAL = {
    "steps": {
        "approval": {"type": "WaitForSignal", "inputs": {"signalName": "go"}},
        "after": {"type": "Noop", "run_after": ["approval"]},
    }
}


def _finished_run(web: Web, http: httpx.Client, flow: str) -> str:
    """A run of ``flow``, triggered over HTTP and waited for until it is no longer active."""
    answer = http.post(f"{API}/flows/{flow}/trigger", json={"x": 1})
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["runId"]
    wait_until(
        lambda: (run := web.client.get_run(run_id)) is not None and run.status.value == "Succeeded",
        what=f"run {run_id} to succeed",
    )
    return run_id


def _is_error(answer: httpx.Response, status: int, error: str) -> bool:
    body: dict[str, Any] = answer.json()
    return answer.status_code == status and body["error"] == error and isinstance(body["detail"], str)


def test_a_body_not_declared_json_is_refused_with_415_and_changes_nothing(start_web: StartWeb) -> None:
    web = start_web({"echo-flow": ECHO, "approval": APPROVAL})
    as_text = {"content-type": "text/plain"}
    as_form = {"content-type": "application/x-www-form-urlencoded"}
    with web.http() as http:
        # What a cross-site page can send without a preflight: text/plain, a form, no type at all.
        for headers in (as_text, as_form, {}):
            refused = http.post(f"{API}/flows/echo-flow/trigger", content=b'{"x": 1}', headers=headers)
            assert _is_error(refused, 415, "UnsupportedMediaType"), (headers, refused.text)
        assert web.client.list_runs() == []
        disabled = http.post(f"{API}/flows/echo-flow/disable", content=b"x=1", headers=as_form)
        assert _is_error(disabled, 415, "UnsupportedMediaType")
        assert http.get(f"{API}/flows/echo-flow").json()["isEnabled"] is True

        waiting = http.post(f"{API}/flows/approval/trigger").json()["runId"]
        wait_until(
            lambda: web.client.store.signals.signal_waiters(waiting, "go"), what="the run to wait for 'go'"
        )
        for path in (f"runs/{waiting}/signals/go", f"runs/{waiting}/cancel"):
            refused = http.post(f"{API}/{path}", content=b"{}", headers=as_text)
            assert _is_error(refused, 415, "UnsupportedMediaType"), path
        cron = http.put(f"{API}/schedules/any/cron", content=b'{"cronExpression": null}', headers=as_text)
        assert _is_error(cron, 415, "UnsupportedMediaType")
        assert web.client.get_run(waiting).status.value == "Running"  # type: ignore[union-attr]

        # JSON in any of its declared forms is read; no body needs no Content-Type.
        signalled = http.post(
            f"{API}/runs/{waiting}/signals/go",
            content=b"{}",
            headers={"content-type": "application/json; charset=utf-8"},
        )
        assert signalled.status_code == 200, signalled.text
        vendor = {"content-type": "application/vnd.flowjobs+json"}
        assert (
            http.post(f"{API}/flows/echo-flow/trigger", content=b'{"x": 2}', headers=vendor).status_code
            == 202
        )
        finished = _finished_run(web, http, "echo-flow")
        assert http.post(f"{API}/runs/{finished}/rerun").status_code == 202  # curl -X POST …/rerun
        assert http.post(f"{API}/flows/echo-flow/disable").status_code == 200


BAD_RUN_IDS = ("*", "{}", "x" * 5000, "%FF%FE", "%2E%2E", "00000000-0000-0000-0000-00000000000G")
RUN_ROUTES = (
    ("GET", ""),
    ("GET", "/steps"),
    ("GET", "/events"),
    ("GET", "/lineage"),
    ("POST", "/cancel"),
    ("POST", "/rerun"),
    ("POST", "/steps/echo/retry"),
    ("POST", "/signals/go"),
)


def test_run_ids_that_are_not_uuids_answer_404_and_touch_no_key(start_web: StartWeb) -> None:
    web = start_web({"echo-flow": ECHO})
    redis, prefix = web.space.redis, web.space.settings.key_prefix
    with web.http() as http:
        run_id = _finished_run(web, http, "echo-flow")
        step_hash = web.client.store.keys.run_steps(run_id)
        keys_before, step_before = set(redis.keys(f"{prefix}*")), redis.hgetall(step_hash)
        # `<run>:step:echo` was the key of the run's step hash once the prefix `run:` was added.
        for bad in (*BAD_RUN_IDS, f"{run_id}:step:echo", f"{run_id}:events", f"{run_id}:"):
            for method, tail in RUN_ROUTES:
                answer = http.request(
                    method, f"{API}/runs/{bad}{tail}", json={} if method == "POST" else None
                )
                assert _is_error(answer, 404, "RunNotFound"), (method, bad[:50], tail, answer.text[:300])
        assert {k for k in set(redis.keys(f"{prefix}*")) - keys_before if b":duty:" not in k} == set()
        assert redis.hgetall(step_hash) == step_before
        # A cursor is a run id too.
        assert _is_error(http.get(f"{API}/runs", params={"before": f"{run_id}:x"}), 422, "ValidationError")


def test_an_integer_too_long_to_read_is_invalid_json(start_web: StartWeb) -> None:
    web = start_web({"echo-flow": ECHO}, worker=False)
    body = b'{"x": ' + b"7" * 5000 + b"}"
    with web.http() as http:
        for path in ("flows/echo-flow/trigger", f"runs/{uuid.uuid4()}/signals/go"):
            answer = http.post(f"{API}/{path}", content=body, headers=JSON)
            assert _is_error(answer, 400, "InvalidJson"), (path, answer.text[:300])
            assert "digits" in answer.json()["detail"]
        assert web.client.list_runs() == []


def test_a_redis_error_that_is_not_an_outage_is_a_500_with_an_error_id_in_body_and_log(
    start_web: StartWeb, tmp_path: Path
) -> None:
    log = tmp_path / "web.log"
    web = start_web({"echo-flow": ECHO}, worker=False, output=log)
    web.space.redis.set(web.client.store.keys.runs(), "not a sorted set")  # WRONGTYPE for the run index
    corrupt = str(uuid.uuid4())
    web.space.redis.hset(web.client.store.keys.run(corrupt), mapping={"status": "Bogus", "started_at": "x"})
    error_ids: list[str] = []
    with web.http() as http:
        for path in ("runs", f"runs/{corrupt}"):
            answer = http.get(f"{API}/{path}")
            assert answer.status_code == 500, answer.text
            assert answer.headers["content-type"] == "application/json" and "Traceback" not in answer.text
            body = answer.json()
            assert body["error"] == "InternalError" and body["errorId"] in body["detail"]
            error_ids.append(body["errorId"])
    wait_until(lambda: all(i in log.read_text() for i in error_ids), what="the error ids in the log")
    logged = log.read_text()
    assert "WRONGTYPE" in logged and "Traceback" in logged


def test_an_unreachable_redis_is_a_503_that_does_not_disclose_its_address(space: Space) -> None:
    space.settings = space.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    port = free_port()
    web = space.start("web", "--host", "127.0.0.1", "--port", str(port))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:

        def health() -> httpx.Response | None:
            assert web.poll() is None, "flowjobs web exited"
            try:
                return http.get(f"{API}/health")
            except httpx.TransportError:
                return None

        answer = wait_until(health, timeout=30, what="flowjobs web on a dead Redis")
        assert isinstance(answer, httpx.Response) and answer.status_code == 503
        assert answer.json()["status"] == "down" and "127.0.0.1" not in answer.text
        runs = http.get(f"{API}/runs")
        assert _is_error(runs, 503, "RedisUnavailable") and "127.0.0.1" not in runs.text


def test_the_docs_page_is_not_served_and_the_openapi_document_is(start_web: StartWeb) -> None:
    web = start_web({"echo-flow": ECHO}, worker=False)
    with web.http() as http:
        assert http.get(f"{API}/docs").status_code == 404
        document = http.get(f"{API}/openapi.json").json()
    trigger = document["paths"][f"{API}/flows/{{flow}}/trigger"]["post"]["responses"]
    assert {"400", "404", "409", "413", "415", "422", "500", "503"} <= set(trigger)
    assert trigger["415"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApiError"
    }
