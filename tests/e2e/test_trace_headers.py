"""A trigger's ``traceparent`` over HTTP (the API and a webhook): a valid one travels to the run's
trigger job (its RQ meta, where the run's span starts); a malformed one is ignored (2xx, the run
starts a trace of its own); one past the header bounds is refused as any header is (the API's 413,
the webhook's 431)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from flowjobs.web.app import create_app
from tests.conftest import Space, served
from tests.integration.flows import flow, registry

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MALFORMED = "00-not-a-trace-context-01"


@pytest.fixture
def http(space: Space) -> Iterator[httpx.Client]:
    """The web app for a flow with a manual trigger and an open webhook ``traced``."""
    flows = registry(
        flow(
            "traced",
            {"a": {"type": "Noop"}},
            triggers={
                "manual": {"type": "Manual"},
                "hook": {"type": "Webhook", "inputs": {"webhookSlug": "traced", "webhookAuth": "none"}},
            },
        )
    )
    with ExitStack() as stack:
        yield stack.enter_context(served(create_app(space.settings, space.client(flows))))


def trigger_meta(space: Space, reply: httpx.Response) -> dict[str, Any]:
    assert reply.status_code == 202, reply.text
    job = Job.fetch(reply.json()["backgroundJobId"], connection=space.redis, serializer=JSONSerializer)
    return dict(job.meta)


@pytest.mark.parametrize("route", ["/flows/api/flows/traced/trigger", "/flows/api/webhook/traced"])
def test_a_valid_traceparent_reaches_the_trigger_job(space: Space, http: httpx.Client, route: str) -> None:
    reply = http.post(route, json={}, headers={"traceparent": VALID, "tracestate": "vendor=1"})
    meta = trigger_meta(space, reply)
    assert (meta["traceparent"], meta["tracestate"]) == (VALID, "vendor=1")


@pytest.mark.parametrize("route", ["/flows/api/flows/traced/trigger", "/flows/api/webhook/traced"])
@pytest.mark.parametrize("value", [MALFORMED, "ff" + VALID[2:], "00-" + "0" * 32 + "-00f067aa0ba902b7-01"])
def test_a_malformed_traceparent_is_ignored(space: Space, http: httpx.Client, route: str, value: str) -> None:
    meta = trigger_meta(space, http.post(route, json={}, headers={"traceparent": value, "tracestate": "a=b"}))
    assert "traceparent" not in meta and "tracestate" not in meta


@pytest.mark.parametrize(
    ("route", "status"), [("/flows/api/flows/traced/trigger", 413), ("/flows/api/webhook/traced", 431)]
)
def test_a_traceparent_past_the_header_bound_is_refused_as_any_header(
    space: Space, http: httpx.Client, route: str, status: int
) -> None:
    reply = http.post(route, json={}, headers={"traceparent": VALID + "-" + "x" * 9000})
    assert reply.status_code == status, reply.text
    assert "FLOWJOBS_MAX_TRIGGER_HEADER_BYTES" in reply.text
