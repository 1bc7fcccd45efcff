"""A cron expression that parses but never fires (``0 0 30 2 *``) is refused where it comes in
(``flows validate``, ``PUT /flows/api/schedules/{id}/cron``), and one stored before that refusal
existed breaks only its own schedule: the duty marks it and every other schedule still fires."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from flowjobs.client import FlowClient
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.schedules import flow_schedule_id
from tests.conftest import Space, wait_until
from tests.security.conftest import StartWeb

NEVER = "0 0 30 2 *"


def cron_flow(cron: str, **inputs: str) -> dict[str, Any]:
    """A flow-file body with a Cron trigger ``tick`` and one no-op step."""
    return {
        "triggers": {"tick": {"type": "Cron", "inputs": {"cronExpression": cron, **inputs}}},
        "steps": {"a": {"type": "Noop"}},
    }


def write_flows(folder: Path, flows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Write flow files (name → body) with fresh ids; returns name → flow id."""
    folder.mkdir(exist_ok=True)
    ids = {}
    for name, body in flows.items():
        ids[name] = str(uuid.uuid4())
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"id": ids[name], "name": name, **body}))
    return ids


def test_flows_validate_refuses_a_cron_with_no_fire_and_keeps_leap_day_crons(
    space: Space, tmp_path: Path
) -> None:
    write_flows(tmp_path / "bad", {"never": cron_flow(NEVER), "april": cron_flow("30 2 31 4 *")})
    bad = space.cli("flows", "validate", str(tmp_path / "bad"))
    assert bad.returncode != 0, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    for cron in (NEVER, "30 2 31 4 *"):
        assert f"trigger 'tick': cronExpression {cron!r} never fires" in bad.stderr, bad.stderr

    write_flows(tmp_path / "good", {"leap": cron_flow("0 0 29 2 *", timeZone="Pacific/Kiritimati")})
    good = space.cli("flows", "validate", str(tmp_path / "good"))
    assert good.returncode == 0, good.stdout + good.stderr


def test_put_cron_refuses_a_cron_with_no_fire_with_422_on_active_and_paused_schedules(
    start_web: StartWeb,
) -> None:
    web = start_web({"sec-cron": cron_flow("*/5 * * * *")}, worker=False)
    web.client.sync_schedules()
    (state,) = web.client.list_schedules()
    path = f"/flows/api/schedules/{state.schedule_id}"
    with web.http() as http:
        for paused in (False, True):
            if paused:
                assert http.post(f"{path}/pause").status_code == 200
            before = web.client.schedules.require(state.schedule_id)
            answer = http.put(f"{path}/cron", json={"cronExpression": NEVER})
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"] == "InvalidCron"
            assert "never fires" in answer.json()["detail"]
            assert web.client.schedules.require(state.schedule_id) == before  # nothing stored
        resumed = http.post(f"{path}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["cron"] == "*/5 * * * *" and resumed.json()["nextExecution"]


def test_resume_of_a_schedule_with_a_stored_never_firing_override_answers_422(start_web: StartWeb) -> None:
    web = start_web({"sec-cron": cron_flow("*/5 * * * *")}, worker=False)
    web.client.sync_schedules()
    (state,) = web.client.list_schedules()
    path = f"/flows/api/schedules/{state.schedule_id}"
    with web.http() as http:
        assert http.post(f"{path}/pause").status_code == 200
        # What an older release stored for a paused schedule's ``set-cron``.
        web.space.redis.hset(web.space.keys.schedule(state.schedule_id), "cron_override", NEVER)
        answer = http.post(f"{path}/resume")
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "InvalidCron"
        assert web.client.schedules.require(state.schedule_id).is_paused
        listed = {s["jobId"]: s for s in http.get("/flows/api/schedules").json()}
        assert listed[state.schedule_id]["cronOverride"] == NEVER


def client_for(space: Space, folder: Path) -> FlowClient:
    registry = FlowRegistry()
    registry.load_dir(folder, strict=False)
    return space.client(registry)


def test_a_flow_file_whose_cron_never_fires_leaves_the_other_schedules_firing(
    space: Space, tmp_path: Path
) -> None:
    folder = tmp_path / "flows"
    ids = write_flows(folder, {"every-second": cron_flow("* * * * * *"), "never": cron_flow(NEVER)})
    space.settings = space.settings.model_copy(update={"flows_dir": folder})
    client = client_for(space, folder)
    space.start_worker("cron")
    wait_until(lambda: client.list_runs(flow_id=ids["every-second"]), timeout=30, what="a good run")

    listed = space.cli("schedules", "list", "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "never fires" in listed.stderr  # the invalid file's warning
    assert [s["flowName"] for s in json.loads(listed.stdout)] == ["every-second"]


def test_a_stored_never_firing_override_is_marked_and_the_other_schedules_fire(
    space: Space, tmp_path: Path
) -> None:
    folder = tmp_path / "flows"
    ids = write_flows(folder, {"good": cron_flow("* * * * * *"), "poisoned": cron_flow("* * * * * *")})
    space.settings = space.settings.model_copy(update={"flows_dir": folder})
    client = client_for(space, folder)
    client.sync_schedules()
    poisoned = flow_schedule_id(ids["poisoned"], "tick")
    # An active schedule whose override never fires, as no check refused it before.
    space.redis.hset(space.keys.schedule(poisoned), "cron_override", NEVER)
    space.start_worker("cron")
    wait_until(lambda: client.list_runs(flow_id=ids["good"]), timeout=30, what="a run of the good flow")

    def marked() -> bytes | None:
        error: bytes | None = space.redis.hget(space.keys.schedule(poisoned), "error")
        return error

    error = wait_until(marked, timeout=30, what="the poisoned schedule marked")
    assert isinstance(error, bytes) and b"never fires" in error
    runs_of_good = len(client.list_runs(flow_id=ids["good"]))
    wait_until(
        lambda: len(client.list_runs(flow_id=ids["good"])) > runs_of_good,
        timeout=30,
        what="the good schedule firing on after the poisoned one was marked",
    )
    assert client.list_runs(flow_id=ids["poisoned"]) == []

    listed = space.cli("schedules", "list", "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    summaries = {s["jobId"]: s for s in json.loads(listed.stdout)}
    assert "never fires" in summaries[poisoned]["error"]
    assert summaries[poisoned]["nextExecution"] is None
    assert summaries[flow_schedule_id(ids["good"], "tick")]["error"] is None
    text = space.cli("schedules", "list")
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    (line,) = [line for line in text.stdout.splitlines() if line.startswith(poisoned)]
    assert "never fires" in line
