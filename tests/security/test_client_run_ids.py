"""Run ids at the library's door (issue 12, item 6): every ``FlowClient`` method and ``flowjobs runs``
command that takes one parses it as a UUID, and answers "no run" before any Redis call, so a text
like ``<run id>:step:wait`` never addresses another key of the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from flowjobs.client import FlowClient
from flowjobs.core.errors import RunNotFound
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry
from tests.security.conftest import StartWeb

WAITING = {"wait": {"type": "WaitForSignal", "inputs": {"signalName": "go"}}}


def bad_ids(run_id: UUID) -> dict[str, str]:
    """Ids that are not UUIDs, some naming another key of a real run."""
    return {
        "step": f"{run_id}:step:wait",
        "events": f"{run_id}:events",
        "colon": ":",
        "glob": "*",
        "braces": "{}",
        "long": "7" * 100_000,
        "not-utf8": "\udcff",  # how Python decodes the byte 0xff of a command line
        "braced": f"{{{run_id}}}",  # a UUID, but not as flowjobs writes it
    }


def parked(space: Space) -> tuple[FlowClient, UUID]:
    """A client and a run whose step ``wait`` is parked on a signal (its step hash exists)."""
    client = space.client(registry(flow("waits", WAITING)))
    run_id = client.trigger("waits").run_id
    space.drain()
    assert client.store.signals.signal_waiters(run_id, "go").keys() == {"wait"}
    return client, run_id


def snapshot(space: Space) -> dict[Any, Any]:
    """Every key of this test with the step hashes' content, but the duties' locks (a worker's
    duties take and release them meanwhile)."""
    keys = [key for key in space.redis.keys(f"{space.token}*") if b":duty:" not in key]
    return {key: space.redis.hgetall(key) if b":step:" in key else None for key in keys}


CALLS: dict[str, Callable[[FlowClient, str], object]] = {
    "get_run": lambda client, run_id: client.get_run(run_id),
    "get_run_detail": lambda client, run_id: client.get_run_detail(run_id),
    "cancel": lambda client, run_id: client.cancel(run_id),
    "rerun": lambda client, run_id: client.rerun(run_id),
    "retry_step": lambda client, run_id: client.retry_step(run_id, "wait"),
    "signal": lambda client, run_id: client.signal(run_id, "go"),
    "lineage": lambda client, run_id: client.lineage(run_id),
    "list_runs": lambda client, run_id: client.list_runs(before=run_id),
}


def test_every_client_method_refuses_a_bad_run_id_before_any_redis_call(
    space: Space, round_trips: list[str]
) -> None:
    client, run_id = parked(space)
    before = snapshot(space)
    round_trips.clear()
    for method, call in CALLS.items():
        for name, bad in bad_ids(run_id).items():
            with pytest.raises(RunNotFound, match="a run id is a UUID") as refused:
                call(client, bad)
            assert len(str(refused.value)) < 200, (method, name)
    assert round_trips == []
    assert snapshot(space) == before


def test_a_run_id_has_one_spelling(space: Space) -> None:
    client, run_id = parked(space)
    for form in (str(run_id).upper(), f"{{{run_id}}}", run_id.hex, f"urn:uuid:{run_id}", f" {run_id}"):
        with pytest.raises(RunNotFound):
            client.get_run(form)
    run = client.get_run(str(run_id))
    assert run is not None and run.id == run_id


@pytest.mark.parametrize(
    "command",
    [
        ("show", "{id}"),
        ("cancel", "{id}"),
        ("rerun", "{id}"),
        ("retry-step", "{id}", "wait"),
        ("signal", "{id}", "go"),
        ("lineage", "{id}"),
    ],
    ids=lambda command: command[0],
)
def test_runs_commands_answer_one_line_for_a_bad_run_id_and_write_nothing(
    space: Space, command: tuple[str, ...]
) -> None:
    _, run_id = parked(space)
    before = snapshot(space)
    for name, bad in bad_ids(run_id).items():
        answer = space.cli("runs", *(bad if arg == "{id}" else arg for arg in command))
        assert answer.returncode == 2, (name, answer.stderr[-500:])
        assert answer.stderr.count("\n") == 1 and answer.stderr.startswith("error: no run with id"), name
        assert "a run id is a UUID" in answer.stderr and len(answer.stderr) < 200, name
    assert snapshot(space) == before


def test_the_api_refuses_a_cancel_addressed_at_a_step_hash(start_web: StartWeb) -> None:
    web = start_web({"waits": {"steps": WAITING}})
    with web.http() as http:
        run_id = http.post("/flows/api/flows/waits/trigger", json={}).json()["runId"]
        wait_until(lambda: web.client.store.signals.signal_waiters(run_id, "go"), what="the step parked")
        before = snapshot(web.space)
        answer = http.post(f"/flows/api/runs/{run_id}:step:wait/cancel")
    assert (answer.status_code, answer.json()["error"]) == (404, "RunNotFound")
    assert snapshot(web.space) == before
