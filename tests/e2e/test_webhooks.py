"""Webhooks over real HTTP: the web app (``create_app``) served by uvicorn on a free port, real Redis,
real payloads signed per scheme — good, bad, stale, replayed, rotated, oversized, not JSON — plus
the disabled flow, the rate limit (under concurrency), idempotency, and a fuzz that finds no 500."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from flowjobs import RunStatus
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.webhooks.schemes import SCHEMES, Scheme, sign
from flowjobs.web.app import create_app
from tests.conftest import Space, served
from tests.integration.flows import flow, registry

NEW = "new-secret-0123456789"
OLD = "old-secret-9876543210"
BODY = b'{"orderId": 42}'
TIMESTAMPED = [s for s in Scheme if SCHEMES[s].timestamped]
HMAC_SCHEMES = [s for s in Scheme if s is not Scheme.key]
#: Every status the route documents; anything else (a 500 above all) is a bug.
DOCUMENTED = {200, 202, 400, 401, 403, 404, 409, 413, 429, 503}



def hooked(name: str, **inputs: Any) -> Any:
    """A one-step flow whose Webhook trigger ``hook`` has these inputs (slug: the flow's name)."""
    return flow(
        name,
        {"a": {"type": "Noop"}},
        triggers={"hook": {"type": "Webhook", "inputs": {"webhookSlug": name, **inputs}}},
    )


Serve = Callable[..., httpx.Client]


@pytest.fixture
def serve(space: Space) -> Iterator[Serve]:
    """``serve(flows, **settings)``: the web app for these flows on a uvicorn server, and an HTTP
    client for it. The web API is behind a token: the webhook route must not need it."""
    with ExitStack() as stack:

        def start(flows: FlowRegistry, **overrides: Any) -> httpx.Client:
            token = SecretStr("web-only-token")
            settings = space.settings.model_copy(update={"web_token": token, **overrides})
            return stack.enter_context(served(create_app(settings, space.client(flows))))

        yield start


def headers_for(
    scheme: Scheme, secret: str, body: bytes = BODY, timestamp: int | None = None
) -> dict[str, str]:
    """What a sender of ``scheme`` sends with ``body``."""
    spec = SCHEMES[scheme]
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {"Content-Type": "application/json", spec.header: sign(scheme, secret.encode(), body, stamp)}
    if spec.timestamp_header:
        headers[spec.timestamp_header] = str(stamp)
    return headers


def post(http: httpx.Client, slug: str, body: bytes = BODY, **headers: str) -> httpx.Response:
    return http.post(f"/flows/api/webhook/{slug}", content=body, headers=headers)


def runs_of(space: Space, flows: FlowRegistry, name: str) -> int:
    return len(space.client(flows).list_runs(flow_id=flows.get(name).id))


# -- per scheme ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", list(Scheme))
def test_a_signed_delivery_starts_a_run_and_says_where_it_is(
    space: Space, serve: Serve, scheme: Scheme
) -> None:
    flows = registry(hooked("hook", webhookScheme=scheme.value, webhookSecret=NEW))
    http = serve(flows)
    sensitive = {
        "Authorization": "Bearer someone",
        "Cookie": "session=1",
        "Proxy-Authorization": "Basic eA==",
        "X-Webhook-Key": "not-this-trigger's",
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
    }
    sensitive = {k: v for k, v in sensitive.items() if k.lower() != SCHEMES[scheme].header}
    headers = {**sensitive, **headers_for(scheme, NEW), "X-Delivery-Note": "kept"}
    reply = post(http, "hook", **headers)

    assert reply.status_code == 202, reply.text
    body = reply.json()
    run_id = body["runId"]
    assert body["url"] == f"/flows/runs/{run_id}" == reply.headers["location"]
    assert body["backgroundJobId"] and body["created"] is True
    run = space.client(flows).get_run(run_id)
    assert run is not None and run.trigger_key == "hook" and run.background_job_id == body["backgroundJobId"]
    assert run.trigger_data_json == '{"orderId":42}' or '"orderId"' in run.trigger_data_json
    kept = {name.lower() for name in run.trigger_headers}
    assert "x-delivery-note" in kept
    assert not kept & {name.lower() for name in sensitive}
    assert SCHEMES[scheme].header not in kept


@pytest.mark.parametrize("scheme", list(Scheme))
def test_a_delivery_signed_with_another_secret_is_refused(space: Space, serve: Serve, scheme: Scheme) -> None:
    flows = registry(hooked("hook", webhookScheme=scheme.value, webhookSecret=NEW))
    reply = post(serve(flows), "hook", **headers_for(scheme, "somebody-else"))
    assert (reply.status_code, reply.json()["reason"]) == (401, "bad_signature")
    assert runs_of(space, flows, "hook") == 0


@pytest.mark.parametrize("scheme", list(Scheme))
def test_the_previous_secret_is_accepted_during_rotation(space: Space, serve: Serve, scheme: Scheme) -> None:
    flows = registry(hooked("hook", webhookScheme=scheme.value, webhookSecrets=[NEW, OLD]))
    http = serve(flows)
    assert post(http, "hook", **headers_for(scheme, OLD)).status_code == 202
    body = b'{"orderId": 43}'
    assert post(http, "hook", body, **headers_for(scheme, NEW, body)).status_code == 202


@pytest.mark.parametrize("scheme", TIMESTAMPED)
def test_a_stale_timestamp_is_refused_as_a_replay(space: Space, serve: Serve, scheme: Scheme) -> None:
    flows = registry(hooked("hook", webhookScheme=scheme.value, webhookSecret=NEW))
    stale = int(time.time()) - 301  # built, not waited for
    reply = post(serve(flows), "hook", **headers_for(scheme, NEW, timestamp=stale))
    assert (reply.status_code, reply.json()["reason"]) == (409, "stale_timestamp")


@pytest.mark.parametrize("scheme", HMAC_SCHEMES)
def test_a_replayed_delivery_is_refused(space: Space, serve: Serve, scheme: Scheme) -> None:
    flows = registry(hooked("hook", webhookScheme=scheme.value, webhookSecret=NEW))
    http = serve(flows)
    headers = headers_for(scheme, NEW)
    assert post(http, "hook", **headers).status_code == 202
    again = post(http, "hook", **headers)
    assert (again.status_code, again.json()["reason"]) == (409, "replayed")
    assert runs_of(space, flows, "hook") == 1


@pytest.mark.parametrize("scheme", list(Scheme))
def test_a_signed_body_that_is_not_json_is_refused(space: Space, serve: Serve, scheme: Scheme) -> None:
    flows = registry(hooked("hook", webhookScheme=scheme.value, webhookSecret=NEW))
    body = b"orderId=42&note=form-encoded"
    reply = post(serve(flows), "hook", body, **headers_for(scheme, NEW, body))
    assert (reply.status_code, reply.json()["reason"]) == (400, "invalid_json")


# -- the body cap ----------------------------------------------------------------------------------


def test_an_oversized_body_is_refused_whether_declared_or_streamed(space: Space, serve: Serve) -> None:
    flows = registry(hooked("hook", webhookSecret=NEW))
    http = serve(flows, webhook_max_body_bytes=2048)
    big = b'{"pad": "' + b"x" * 3000 + b'"}'
    declared = post(http, "hook", big, **{"X-Webhook-Key": NEW})
    assert (declared.status_code, declared.json()["reason"]) == (413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to check first
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    streamed = http.post("/flows/api/webhook/hook", content=chunks(), headers={"X-Webhook-Key": NEW})
    assert "content-length" not in streamed.request.headers
    assert (streamed.status_code, streamed.json()["reason"]) == (413, "body_too_large")
    small = b'{"pad": "' + b"x" * 1000 + b'"}'
    assert post(http, "hook", small, **{"X-Webhook-Key": NEW}).status_code == 202


# -- targets, flows, keys --------------------------------------------------------------------------


def test_slugs_match_in_any_case_and_a_flow_id_names_its_first_webhook(space: Space, serve: Serve) -> None:
    definition = flow(
        "two-hooks",
        {"a": {"type": "Noop"}},
        triggers={
            "manual": {"type": "Manual"},
            "first": {"type": "Webhook", "inputs": {"webhookSlug": "First-Hook", "webhookSecret": NEW}},
            "second": {"type": "Webhook", "inputs": {"webhookSlug": "second-hook", "webhookSecret": OLD}},
        },
    )
    flows = registry(definition)
    http = serve(flows)
    client = space.client(flows)
    by_slug = post(http, "SECOND-hook", **{"X-Webhook-Key": OLD})
    by_id = post(http, str(definition.id), b"{}", **{"X-Webhook-Key": NEW})
    assert by_slug.status_code == by_id.status_code == 202
    assert client.get_run(by_slug.json()["runId"]).trigger_key == "second"  # type: ignore[union-attr]
    assert client.get_run(by_id.json()["runId"]).trigger_key == "first"  # type: ignore[union-attr]
    unknown = post(http, "no-such-hook", **{"X-Webhook-Key": NEW})
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "not_found")
    assert post(http, str(uuid.uuid4()), **{"X-Webhook-Key": NEW}).status_code == 404


def test_a_disabled_flow_refuses_deliveries_with_403(space: Space, serve: Serve) -> None:
    flows = registry(hooked("hook", webhookScheme="github", webhookSecret=NEW))
    http = serve(flows)
    space.client(flows).set_flow_enabled("hook", False)
    headers = headers_for(Scheme.github, NEW)
    reply = post(http, "hook", **headers)
    assert (reply.status_code, reply.json()["reason"]) == (403, "flow_disabled")
    assert "is disabled" in reply.json()["detail"]
    space.client(flows).set_flow_enabled("hook", True)
    # Refused before the replay memory: the sender's retry of the same delivery goes through.
    assert post(http, "hook", **headers).status_code == 202


def test_deliveries_to_a_disabled_flow_spend_no_rate_token(space: Space, serve: Serve) -> None:
    flows = registry(hooked("hook", webhookScheme="github", webhookSecret=NEW))
    http = serve(flows, webhook_rate_per_second=0.001, webhook_rate_burst=1)

    def deliver(n: int) -> httpx.Response:
        body = b'{"n": %d}' % n
        return post(http, "hook", body, **headers_for(Scheme.github, NEW, body))

    space.client(flows).set_flow_enabled("hook", False)
    refused = [deliver(n) for n in range(3)]
    assert [(r.status_code, r.json()["reason"]) for r in refused] == [(403, "flow_disabled")] * 3
    space.client(flows).set_flow_enabled("hook", True)
    assert deliver(3).status_code == 202  # the one token of the burst is still there
    limited = deliver(4)
    assert (limited.status_code, limited.json()["reason"]) == (429, "rate_limited")


def test_an_unauthenticated_caller_learns_nothing_about_the_flow(space: Space, serve: Serve) -> None:
    flows = registry(hooked("hook", webhookSecret=NEW))
    http = serve(flows)
    space.client(flows).set_flow_enabled("hook", False)
    reply = post(http, "hook", b"not json")
    assert (reply.status_code, reply.json()["reason"]) == (401, "missing_signature")


def test_an_open_webhook_needs_no_secret(space: Space, serve: Serve) -> None:
    flows = registry(hooked("open", webhookAuth="none"))
    reply = post(serve(flows), "open", b'{"any": "one"}')
    assert reply.status_code == 202
    space.drain()
    assert space.client(flows).get_run(reply.json()["runId"]).status is RunStatus.Succeeded  # type: ignore[union-attr]


def test_env_secrets_are_read_from_the_environment(
    space: Space, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = f"FLOWJOBS_TEST_HOOK_{space.token.upper()}"
    flows = registry(hooked("hook", webhookScheme="shopify", webhookSecret=f"env:{variable}"))
    http = serve(flows)
    unset = post(http, "hook", **headers_for(Scheme.shopify, NEW))
    assert (unset.status_code, unset.json()["reason"]) == (503, "not_configured")
    assert variable not in unset.text  # the operator's problem: in the log, not the reply
    monkeypatch.setenv(variable, NEW)
    assert post(http, "hook", **headers_for(Scheme.shopify, NEW)).status_code == 202


def test_an_idempotency_key_returns_the_first_run(space: Space, serve: Serve) -> None:
    flows = registry(hooked("hook", webhookScheme="stripe", webhookSecret=NEW))
    http = serve(flows)
    # Stripe re-signs a retry with a new timestamp: a new signature, the same event.
    first = post(http, "hook", **headers_for(Scheme.stripe, NEW), **{"Idempotency-Key": "evt_1"})
    retry = post(
        http,
        "hook",
        **headers_for(Scheme.stripe, NEW, timestamp=int(time.time()) - 5),
        **{"Idempotency-Key": "evt_1"},
    )
    assert (first.status_code, retry.status_code) == (202, 200)
    assert retry.json()["runId"] == first.json()["runId"] and retry.json()["created"] is False
    assert runs_of(space, flows, "hook") == 1


# -- rate limit ------------------------------------------------------------------------------------


def test_the_rate_limit_answers_429_with_retry_after(space: Space, serve: Serve) -> None:
    flows = registry(hooked("hook", webhookSecret=NEW))
    http = serve(flows, webhook_rate_per_second=0.01, webhook_rate_burst=2)
    replies = [post(http, "hook", b'{"n": %d}' % n, **{"X-Webhook-Key": NEW}) for n in range(3)]
    assert [r.status_code for r in replies] == [202, 202, 429]
    assert replies[2].json()["reason"] == "rate_limited"
    assert 1 <= int(replies[2].headers["retry-after"]) <= 100  # one token at 0.01/s: 100 s at most


def test_the_token_bucket_holds_under_concurrent_deliveries(space: Space, serve: Serve) -> None:
    flows = registry(hooked("hook", webhookSecret=NEW))
    http = serve(flows, webhook_rate_per_second=0.001, webhook_rate_burst=10)
    with ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(
                lambda n: post(http, "hook", b"[%d]" % n, **{"X-Webhook-Key": NEW}).status_code, range(40)
            )
        )
    assert statuses.count(202) == 10 and statuses.count(429) == 30
    assert runs_of(space, flows, "hook") == 10


# -- fuzz ------------------------------------------------------------------------------------------

#: Header values h11 will send: printable ASCII without surrounding space.
_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip)


@pytest.fixture
def fuzz_http(space: Space, serve: Serve) -> httpx.Client:
    flows = registry(
        hooked("fuzz-key", webhookSecret=NEW),
        hooked("fuzz-stripe", webhookScheme="stripe", webhookSecret=NEW),
        hooked("fuzz-slack", webhookScheme="slack", webhookSecrets=[NEW, OLD]),
    )
    return serve(flows, webhook_rate_per_second=0, webhook_max_body_bytes=4096)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    slug=st.sampled_from(["fuzz-key", "fuzz-stripe", "fuzz-slack", "FUZZ-KEY", "nope", "%20", "a" * 300]),
    body=st.binary(max_size=600) | st.just(BODY) | st.just(b"[" * 5000),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "X-Webhook-Key",
                "Stripe-Signature",
                "X-Slack-Signature",
                "X-Slack-Request-Timestamp",
                "Content-Type",
                "Idempotency-Key",
                "X-Anything",
            ]
        ),
        _TEXT | st.sampled_from([NEW, f"t={int(time.time())},v1={'ab' * 32}", "v0=", "9" * 40, "-1"]),
        max_size=5,
    ),
)
def test_fuzzed_deliveries_never_cause_a_server_error(
    fuzz_http: httpx.Client, slug: str, body: bytes, headers: dict[str, str]
) -> None:
    reply = fuzz_http.post(f"/flows/api/webhook/{slug}", content=body, headers=headers)
    assert reply.status_code in DOCUMENTED, (reply.status_code, reply.text)


def test_a_body_shorter_than_its_declared_length_is_no_server_error(space: Space, serve: Serve) -> None:
    # httpx will not send a lying Content-Length, so this one is written by hand.
    http = serve(registry(hooked("hook", webhookSecret=NEW)))
    with socket.create_connection((http.base_url.host, http.base_url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /flows/api/webhook/hook HTTP/1.1\r\nHost: x\r\nX-Webhook-Key: "
            + NEW.encode()
            + b'\r\nContent-Length: 100\r\n\r\n{"a": 1}'
        )
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(4096)
    assert not answer.startswith(b"HTTP/1.1 5")
    assert post(http, "hook", **{"X-Webhook-Key": NEW}).status_code == 202


def test_a_delivery_waiting_on_redis_holds_up_no_other_request(space: Space, serve: Serve) -> None:
    """Runs are written on the event loop without blocking it: while a delivery waits on a Redis
    that accepted its connection and never answers, the health check is served; once that Redis
    goes away, the delivery answers 503 and nothing is left half-written."""
    flows = registry(hooked("stalled", webhookScheme="github", webhookSecret=NEW))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(30)
        http = serve(flows, redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=http.base_url, timeout=30) as other:
            waiting = pool.submit(post, http, "stalled", BODY, **headers_for(Scheme.github, NEW))
            connection, _ = silent.accept()  # the delivery's write is now waiting on "Redis"
            assert other.get("/flows/api/health").status_code in (200, 503)
            assert not waiting.done()
            connection.close()
            silent.close()
            reply = waiting.result(timeout=60)
    assert (reply.status_code, reply.json()["detail"]) == (503, "Redis unavailable")
    assert runs_of(space, flows, "stalled") == 0
