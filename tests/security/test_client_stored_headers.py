"""What a request makes flowjobs store (issue 12, item 4): trigger headers within bounds, the
idempotency key checked and hashed into its key name — over HTTP against a real ``flowjobs web``
and through the CLI (``test_client_trigger_bounds`` has the sizes no HTTP server would pass)."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Space
from tests.security.conftest import StartWeb, Web

API = "/flows/api"
MANUAL: dict[str, Any] = {"steps": {"a": {"type": "Noop"}}}
OPEN_HOOK: dict[str, Any] = {
    "steps": {"a": {"type": "Noop"}},
    "triggers": {"hook": {"type": "Webhook", "inputs": {"webhookSlug": "open-hook", "webhookAuth": "none"}}},
}


def stored_keys(space: Space) -> set[Any]:
    """Every key of this test's corner of Redis."""
    return set(space.redis.keys(f"{space.token}*"))


def run_keys(space: Space) -> list[Any]:
    """Every run hash, run index entry and idempotency key of this test."""
    prefix = space.settings.key_prefix
    return [*space.redis.keys(f"{prefix}run:*"), *space.redis.keys(f"{prefix}idem:*")]


def refused(web: Web, headers: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The API trigger's and the open webhook's answers (status and JSON) to one set of headers;
    asserts that neither wrote a key."""
    before = stored_keys(web.space)
    with web.http() as http:
        api = http.post(f"{API}/flows/manual/trigger", json={"n": 1}, headers=headers)
        hook = http.post(f"{API}/webhook/open-hook", json={"n": 1}, headers=headers)
    assert stored_keys(web.space) == before
    assert run_keys(web.space) == []
    return {"status": api.status_code, **api.json()}, {"status": hook.status_code, **hook.json()}


def test_a_long_header_value_is_refused_with_a_reason_and_nothing_is_stored(start_web: StartWeb) -> None:
    web = start_web({"manual": MANUAL, "hook": OPEN_HOOK}, worker=False)
    api, hook = refused(web, [("X-Long", "a" * 9000)])
    assert (api["status"], api["error"]) == (413, "TriggerHeadersTooLarge")
    assert (hook["status"], hook["reason"]) == (431, "headers_too_large")
    for answer in (api, hook):
        assert "FLOWJOBS_MAX_TRIGGER_HEADER_BYTES" in answer["detail"] and "'x-long'" in answer["detail"]


def test_header_count_and_total_follow_their_settings(start_web: StartWeb) -> None:
    web = start_web(
        {"manual": MANUAL, "hook": OPEN_HOOK},
        env={"FLOWJOBS_MAX_TRIGGER_HEADERS": "12", "FLOWJOBS_MAX_TRIGGER_HEADERS_BYTES": "3000"},
        worker=False,
    )
    many = [(f"X-H{i}", "v") for i in range(12)]  # with httpx's own (Host, Accept…): more than 12
    api, hook = refused(web, many)
    assert (api["status"], hook["status"], hook["reason"]) == (413, 431, "headers_too_large")
    assert all("(FLOWJOBS_MAX_TRIGGER_HEADERS)" in answer["detail"] for answer in (api, hook))
    large = [("X-A", "a" * 1500), ("X-B", "b" * 1500)]
    api, hook = refused(web, large)
    assert (api["status"], hook["status"], hook["reason"]) == (413, 431, "headers_too_large")
    assert "FLOWJOBS_MAX_TRIGGER_HEADERS_BYTES" in api["detail"] + hook["detail"]

    # Within the bounds, the run stores the headers (less credentials) as sent.
    with web.http() as http:
        accepted = http.post(
            f"{API}/webhook/open-hook", json={}, headers={"X-A": "a" * 1000, "Authorization": "Bearer s"}
        )
    assert accepted.status_code == 202
    run = web.client.get_run(accepted.json()["runId"])
    assert run is not None and run.trigger_headers is not None
    assert run.trigger_headers["x-a"] == "a" * 1000 and "authorization" not in run.trigger_headers


def test_an_idempotency_key_is_bounded_and_named_by_its_hash(start_web: StartWeb) -> None:
    web = start_web({"manual": MANUAL, "hook": OPEN_HOOK}, worker=False)
    api, hook = refused(web, [("Idempotency-Key", "k" * 300)])
    assert (api["status"], api["error"]) == (422, "InvalidIdempotencyKey")
    assert (hook["status"], hook["reason"]) == (422, "invalid_idempotency_key")
    assert "255" in api["detail"] and "k" * 100 not in api["detail"]

    longest = "order:" + "7" * 249  # 255 characters, ":" included
    with web.http() as http:
        first = http.post(f"{API}/flows/manual/trigger", json={"n": 1}, headers={"Idempotency-Key": longest})
        again = http.post(f"{API}/flows/manual/trigger", json={"n": 2}, headers={"Idempotency-Key": longest})
        hook_first = http.post(f"{API}/webhook/open-hook", json={}, headers={"Idempotency-Key": "evt-1"})
        hook_again = http.post(f"{API}/webhook/open-hook", json={}, headers={"Idempotency-Key": "evt-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["runId"] == first.json()["runId"]
    assert (hook_first.status_code, hook_again.status_code) == (202, 200)
    assert hook_again.json()["runId"] == hook_first.json()["runId"]
    run = web.client.get_run(first.json()["runId"])
    assert run is not None and run.idempotency_key == longest
    names = [str(key, "utf-8") for key in run_keys(web.space) if b":idem:" in key]
    assert len(names) == 2 and not any(longest in name or "evt-1" in name for name in names)
    assert web.space.keys.idempotency(run.flow_id, "manual", longest) in names


def test_a_rerun_does_not_copy_headers_past_the_bounds(start_web: StartWeb) -> None:
    web = start_web({"manual": MANUAL}, worker=False)
    with web.http() as http:
        run_id = http.post(f"{API}/flows/manual/trigger", json={}).json()["runId"]
        # As an earlier version stored them: 16 MiB of one header.
        huge = json.dumps({"x-huge": "h" * (16 * 1024 * 1024)})
        web.space.redis.hset(web.space.keys.run(run_id), "trigger_headers", huge)
        before = stored_keys(web.space)
        answer = http.post(f"{API}/runs/{run_id}/rerun")
    assert (answer.status_code, answer.json()["error"]) == (413, "TriggerHeadersTooLarge")
    assert stored_keys(web.space) == before
    assert [str(r.id) for r in web.client.list_runs()] == [run_id]


def test_the_cli_trigger_refuses_headers_past_the_bounds_in_one_line(space: Space) -> None:
    answer = space.cli("trigger", "hello-flow", "--header", f"X-Long={'a' * 9000}")
    assert answer.returncode == 2
    assert answer.stderr.count("\n") == 1 and "FLOWJOBS_MAX_TRIGGER_HEADER_BYTES" in answer.stderr
    assert run_keys(space) == []
