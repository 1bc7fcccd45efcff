"""The flows UI's forms and run routes against hostile input: JSON nested too deep or numbers too
long refused as bad input, run ids that are not UUIDs answered 404 before Redis is touched."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.security.conftest import StartWeb

FLOWS: dict[str, dict[str, Any]] = {
    "in-wait": {
        "steps": {
            "quote": {"type": "Noop"},
            "wait": {"type": "WaitForSignal", "run_after": ["quote"], "inputs": {"signalName": "approved"}},
        }
    },
}
DEEP = "[" * 2000 + "]" * 2000
LONG_NUMBER = "1" * 4301


@pytest.mark.parametrize("text", [DEEP, f'{{"n": {LONG_NUMBER}}}'], ids=["deep", "long-number"])
def test_trigger_and_signal_forms_refuse_hostile_json(start_web: StartWeb, text: str) -> None:
    web = start_web(FLOWS, worker=False)
    flow_id = next(iter(web.client.flows.all())).id
    run_id = str(web.client.trigger("in-wait").run_id)
    with web.http(headers={"Origin": web.base}) as http:
        answer = http.post(f"/flows/flows/{flow_id}/trigger", data={"body": text})
        assert answer.status_code == 400
        assert "The body is" in answer.text and 'role="alert"' in answer.text
        answer = http.post(f"/flows/runs/{run_id}/signal", data={"name": "approved", "payload": text})
        assert answer.status_code == 400 and "location" not in answer.headers
        assert "The payload is" in answer.text and 'id="signal-error"' in answer.text
    assert [str(r.id) for r in web.client.list_runs()] == [run_id]  # no run triggered


def test_run_routes_answer_404_for_ids_that_are_not_uuids(start_web: StartWeb) -> None:
    web = start_web(FLOWS, worker=False)
    run_id = str(web.client.trigger("in-wait").run_id)
    space = web.space
    bad_ids = [f"{run_id}:step:quote", f"{run_id}:step:wait", "*", "{}", f"{run_id}*", "x" * 5000, "%FF%FE"]
    before = set(space.redis.keys(f"{space.token}*"))
    with web.http(headers={"Origin": web.base}) as http:
        for bad in bad_ids:
            path = f"/flows/runs/{bad if bad.startswith('%') else quote(bad, safe='')}"
            answers = {
                "page": http.get(path),
                "cancel": http.post(f"{path}/cancel"),
                "rerun": http.post(f"{path}/rerun"),
                "retry": http.post(f"{path}/steps/quote/retry"),
                "signal": http.post(f"{path}/signal", data={"name": "approved"}),
            }
            for route, answer in answers.items():
                assert answer.status_code == 404, (bad[:60], route, answer.status_code)
                assert answer.headers["content-type"].startswith("text/html"), (bad[:60], route)
                assert "Run not found" in answer.text
    assert set(space.redis.keys(f"{space.token}*")) == before
    run = web.client.get_run_detail(run_id)
    assert run is not None and not run.cancel_requested
