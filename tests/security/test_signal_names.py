"""Signals over HTTP on a real ``flowjobs web``: a name no step of the run can consume is refused
once every expression-named wait is known."""

from __future__ import annotations

from tests.conftest import wait_until
from tests.security.conftest import StartWeb

API = "/flows/api"
DYNAMIC = {
    "steps": {
        "wait": {"type": "WaitForSignal", "inputs": {"signalName": "@triggerBody()?.sig"}},
        "after": {"type": "Noop", "run_after": ["wait"]},
    }
}


def test_a_signal_no_step_can_consume_is_404_and_not_kept(start_web: StartWeb) -> None:
    web = start_web({"dynamic": DYNAMIC})
    with web.http() as http:
        run_id = http.post(f"{API}/flows/dynamic/trigger", json={"sig": "approve-42"}).json()["runId"]
        wait_until(
            lambda: web.client.store.signals.signal_waiters(run_id, "approve-42"), what="the step to park"
        )
        typo = http.post(f"{API}/runs/{run_id}/signals/typo", json={"ok": True})
        assert typo.status_code == 404 and typo.json()["error"] == "SignalNotFound", typo.text
        assert web.client.store.signals.signal_record(run_id, "typo") is None

        resumed = http.post(f"{API}/runs/{run_id}/signals/approve-42", json={"ok": True})
        assert resumed.status_code == 200 and resumed.json()["delivery"] == "resumed", resumed.text
        wait_until(
            lambda: (run := web.client.get_run(run_id)) is not None and run.status.value == "Succeeded",
            what="the run to succeed",
        )


def test_a_signal_name_resolving_to_nothing_fails_the_step(start_web: StartWeb) -> None:
    web = start_web({"dynamic": DYNAMIC})
    with web.http() as http:
        run_id = http.post(f"{API}/flows/dynamic/trigger", json={}).json()["runId"]
        wait_until(
            lambda: (run := web.client.get_run(run_id)) is not None and run.status.value == "Failed",
            what="the run to fail (not to wait under the name 'None')",
        )
        steps = http.get(f"{API}/runs/{run_id}").json()["steps"]
        wait = next(step for step in steps if step["stepKey"] == "wait")
        assert "a signal name must be a non-empty string" in wait["errorMessage"]
        assert http.post(f"{API}/runs/{run_id}/signals/None").status_code == 404
