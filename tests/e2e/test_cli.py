"""The flowjobs command against a real Redis and a real worker: trigger, wait, list, show, flows."""

from __future__ import annotations

import json

from tests.conftest import Space


def test_trigger_wait_list_and_show(space: Space) -> None:
    space.settings = space.settings.model_copy(update={"handler_modules": "tests.handlers,workers.handlers"})
    space.start_worker("cli", simple=True)

    done = space.cli("trigger", "hello-flow", "--data", '{"name": "Grace"}', "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "Succeeded" and run["backgroundJobId"] == f"fj-{run['id']}-trigger"
    summary = next(s for s in run["steps"] if s["stepKey"] == "summarize")
    assert json.loads(summary["outputJson"])["summary"] == "Hello, Grace! (5 letters)"

    failed = space.cli(
        "trigger", "order-fulfillment", "--data", '{"orderId": 1, "failShipping": true}', "--wait"
    )
    assert failed.returncode == 0, "a handled failure is a Succeeded run"
    assert "step ship" in failed.stdout and "carrier rejected the parcel" in failed.stdout

    listed = space.cli("runs", "list", "--json")
    assert listed.returncode == 0
    assert [r["flowName"] for r in json.loads(listed.stdout)] == ["order-fulfillment", "hello-flow"]
    only = space.cli("runs", "list", "--flow", "hello-flow", "--status", "Succeeded")
    assert only.returncode == 0 and run["id"] in only.stdout and "order-fulfillment" not in only.stdout

    unknown = space.cli("runs", "show", run["id"])
    assert unknown.returncode == 0 and "links           unknown: set FLOWJOBS_WEB_BASE_URL" in unknown.stdout
    assert "/view/job/" not in unknown.stdout and ":8000" not in unknown.stdout, "no guessed address"
    # The address `flowjobs web --port 9123` (or `up`) gives the processes it starts.
    shown = space.cli("runs", "show", run["id"], "--events", env={"FLOWJOBS_WEB_BASE_URL": "http://127.0.0.1:9123"})
    assert shown.returncode == 0
    assert f"run {run['id']}  Succeeded" in shown.stdout
    assert f"page            http://127.0.0.1:9123/flows/runs/{run['id']}" in shown.stdout
    for step in run["steps"]:
        assert f"http://127.0.0.1:9123/rq/0/view/job/{step['jobId']}" in shown.stdout
    assert "run.started" in shown.stdout and "run.completed" in shown.stdout
    events = json.loads(space.cli("runs", "show", run["id"], "--json", "--events").stdout)["events"]
    assert events[0]["type"] == "run.started" and events[-1]["type"] == "run.completed"

    missing = space.cli("runs", "show", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 2 and "no run with id" in missing.stderr


def test_wait_exits_3_when_the_run_does_not_succeed(space: Space) -> None:
    space.start_worker("cli", simple=True)
    failed = space.cli(
        "trigger", "image-batch", "--data", '{"images": "not-a-list"}', "--wait", "--timeout", "60"
    )
    assert failed.returncode == 3, failed.stderr
    assert "Failed" in failed.stdout and "did not resolve to a list" in failed.stdout


def test_flows_list_and_show(space: Space) -> None:
    listed = space.cli("flows", "list", "--json")
    assert listed.returncode == 0
    names = {f["name"] for f in json.loads(listed.stdout)}
    assert names == {"hello-flow", "order-fulfillment", "order-approval", "image-batch"}
    shown = space.cli("flows", "show", "order-fulfillment")
    assert shown.returncode == 0
    assert "step compensate: Compensate after ship:Failed" in shown.stdout
    assert "trigger nightly: Cron" in shown.stdout
