"""Cron schedules on real processes: once per tick across schedulers, missed ticks, runtime
overrides persisted, flow files driving schedules, and disabled flows."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from flowjobs.client import FlowClient
from flowjobs.core.clock import iso, utcnow
from flowjobs.core.cron import latest_tick
from flowjobs.core.errors import FlowDisabled, InvalidCron
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.schedules import SCHEDULE_HEADER, TICK_HEADER, flow_schedule_id
from flowjobs.schedules.firing import ScheduleFirer
from tests.conftest import Space, wait_until

FLOW_ID = "6f1c2a9e-0000-4000-8000-0000000c0001"


def calm_cron() -> str:
    """An hourly cron whose latest tick was a minute or two ago and whose next is an hour away, for
    a test that fires schedules twice: no new tick falls due in between (with "*/5 * * * *" one
    did, when the test straddled a multiple of five minutes)."""
    return f"{(utcnow().minute - 1) % 60} * * * *"


def write_flow(
    folder: Path, cron: str | None, *, name: str = "ticker", extra_inputs: str = "", flow_id: str = FLOW_ID
) -> Path:
    """One flow file with a Cron trigger ``tick`` (none with ``cron=None``) and a no-op step."""
    trigger = f'  tick: {{type: Cron, inputs: {{cronExpression: "{cron}"{extra_inputs}}}}}\n' if cron else ""
    path = folder / f"{name}.yaml"
    path.write_text(
        f"id: {flow_id}\nname: {name}\nversion: '1'\ntriggers:\n  manual: {{type: Manual}}\n{trigger}"
        "steps:\n  a: {type: Noop}\n"
    )
    return path


@pytest.fixture
def flows_dir(space: Space, tmp_path: Path) -> Path:
    space.settings = space.settings.model_copy(update={"flows_dir": tmp_path})
    return tmp_path


def client_for(space: Space, folder: Path) -> FlowClient:
    registry = FlowRegistry()
    registry.load_dir(folder)
    return space.client(registry)


SCHEDULE = flow_schedule_id(FLOW_ID, "tick")


def test_three_schedulers_fire_a_one_second_schedule_exactly_once_per_tick(
    space: Space, flows_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_flow(flows_dir, "* * * * * *", extra_inputs=", region: eu")
    monkeypatch.setenv("FLOWJOBS_SCHEDULE_INTERVAL_SECONDS", "0.2")
    for _ in range(3):
        space.start("scheduler")
    client = client_for(space, flows_dir)
    ticks_wanted = 5
    wait_until(lambda: len(client.list_runs(flow_id=FLOW_ID)) >= ticks_wanted, timeout=30, what="5 ticks")
    space.stop_processes()

    runs = client.list_runs(flow_id=FLOW_ID, limit=1000)
    ticks = sorted(run.trigger_headers[TICK_HEADER] for run in runs)
    assert len(ticks) == len(set(ticks)), "a tick started two runs"
    # Consecutive seconds from the first tick to the last: no tick skipped, none doubled.
    first, last = (utcnow().fromisoformat(t) for t in (ticks[0], ticks[-1]))
    assert len(ticks) == int((last - first).total_seconds()) + 1
    run = runs[0]
    assert run.trigger_key == "tick"
    assert json.loads(run.trigger_data_json or "null") == {"region": "eu"}
    assert run.trigger_headers[SCHEDULE_HEADER] == SCHEDULE
    assert run.idempotency_key == f"{SCHEDULE}@{run.trigger_headers[TICK_HEADER]}"
    assert run.background_job_id == f"fj-{run.id}-trigger"
    state = client.schedules.require(SCHEDULE)
    assert state.last_run_id in {r.id for r in runs}


def test_a_duplicate_fire_of_a_tick_returns_the_first_run(space: Space, flows_dir: Path) -> None:
    write_flow(flows_dir, "*/5 * * * *")
    client = client_for(space, flows_dir)
    client.sync_schedules()
    state = client.schedules.require(SCHEDULE)
    tick = latest_tick(state.cron, utcnow())
    first = client.fire_schedule(state, tick)
    again = client.fire_schedule(state, tick)
    assert first.new and not again.new
    assert (again.run_id, again.job_id) == (first.run_id, first.job_id)
    assert len(client.list_runs(flow_id=FLOW_ID)) == 1

    # Two firers that both read the schedule due (an injected clock): one run for the tick.
    due = tick + timedelta(minutes=5)
    client.schedules.change(SCHEDULE, lambda s: s and s.model_copy(update={"next_fire_at": due}))
    firers = [
        ScheduleFirer(client, grace_seconds=60, clock=lambda: due + timedelta(seconds=1)) for _ in range(2)
    ]
    assert sum(firer.fire_one(SCHEDULE, due + timedelta(seconds=1)) for firer in firers) == 1
    assert len(client.list_runs(flow_id=FLOW_ID)) == 2


def test_after_a_downtime_a_schedule_fires_once_for_its_latest_missed_tick(
    space: Space, flows_dir: Path
) -> None:
    cron = calm_cron()
    write_flow(flows_dir, cron)
    client = client_for(space, flows_dir)
    client.sync_schedules()
    # No process for five hours: the schedule still owes the tick of five hours ago.
    owed = latest_tick(cron, utcnow() - timedelta(hours=5))
    client.schedules.change(SCHEDULE, lambda s: s and s.model_copy(update={"next_fire_at": owed}))

    for _ in range(2):
        result = space.cli("scheduler", "--once")
        assert result.returncode == 0, result.stderr

    runs = client.list_runs(flow_id=FLOW_ID)
    assert len(runs) == 1, "one run for the latest missed tick, never a storm"
    expected = latest_tick(cron, utcnow())
    assert runs[0].trigger_headers[TICK_HEADER] == iso(expected)
    assert client.schedules.require(SCHEDULE).next_fire_at == expected + timedelta(hours=1)


def test_pause_resume_and_cron_override_are_persisted_and_flow_files_drive_schedules(
    space: Space, flows_dir: Path
) -> None:
    path = write_flow(flows_dir, "0 3 * * *")
    assert space.cli("scheduler", "--once").returncode == 0  # the duty declares the file's schedule
    listed = json.loads(space.cli("schedules", "list", "--json").stdout)
    assert [(s["jobId"], s["cron"], s["paused"]) for s in listed] == [(SCHEDULE, "0 3 * * *", False)]

    paused = json.loads(space.cli("schedules", "pause", SCHEDULE, "--json").stdout)
    assert paused["paused"] and paused["nextExecution"] is None
    bad = space.cli("schedules", "set-cron", SCHEDULE, "not a cron")
    assert bad.returncode == 2 and "does not parse" in bad.stderr
    overridden = json.loads(space.cli("schedules", "set-cron", SCHEDULE, "*/10 * * * *", "--json").stdout)
    assert (overridden["cron"], overridden["cronOverride"], overridden["paused"]) == ("*/10 * * * *",) * 2 + (
        True,
    )

    # Editing the flow file updates the declared expression; the override and the pause stay.
    write_flow(flows_dir, "0 4 * * *")
    assert space.cli("scheduler", "--once").returncode == 0
    listed = json.loads(space.cli("schedules", "list", "--json").stdout)
    assert (listed[0]["declaredCron"], listed[0]["cron"], listed[0]["paused"]) == (
        "0 4 * * *",
        "*/10 * * * *",
        True,
    )

    resumed = json.loads(space.cli("schedules", "resume", SCHEDULE, "--json").stdout)
    assert not resumed["paused"] and resumed["nextExecution"] is not None
    cleared = json.loads(space.cli("schedules", "set-cron", SCHEDULE, "--clear", "--json").stdout)
    assert (cleared["cron"], cleared["cronOverride"]) == ("0 4 * * *", None)
    assert cleared["nextExecution"].endswith("04:00:00+00:00")

    fired = json.loads(space.cli("schedules", "trigger", SCHEDULE, "--json").stdout)
    client = client_for(space, flows_dir)
    run = client.get_run(fired["runId"])
    assert run is not None and run.background_job_id == fired["jobId"]
    assert run.trigger_headers[TICK_HEADER] == "now"

    missing = space.cli("schedules", "pause", "flow-nope-tick")
    assert missing.returncode == 2 and "no schedule" in missing.stderr

    # A removed trigger's schedule stays until an operator prunes it.
    write_flow(flows_dir, None)
    assert space.cli("scheduler", "--once").returncode == 0
    assert [s["jobId"] for s in json.loads(space.cli("schedules", "list", "--json").stdout)] == [SCHEDULE]
    assert space.cli("schedules", "prune").returncode == 0
    assert json.loads(space.cli("schedules", "list", "--json").stdout) == []
    path.unlink()


def test_a_disabled_flow_refuses_triggers_and_its_schedules_do_not_fire(
    space: Space, flows_dir: Path
) -> None:
    write_flow(flows_dir, "*/5 * * * *")
    client_for(space, flows_dir).sync_schedules()
    result = space.cli("flows", "disable", "ticker", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["enabled"] is False
    client = client_for(space, flows_dir)
    with pytest.raises(FlowDisabled, match="'ticker'"):
        client.trigger("ticker")
    with pytest.raises(FlowDisabled, match="'ticker'"):
        client.trigger_schedule(SCHEDULE)
    refused = space.cli("trigger", "ticker")
    assert refused.returncode == 2 and "ticker" in refused.stderr and "disabled" in refused.stderr
    listed = json.loads(space.cli("schedules", "list", "--json").stdout)
    assert listed[0]["flowEnabled"] is False

    due = latest_tick("*/5 * * * *", utcnow())  # a tick owed now
    client.schedules.change(SCHEDULE, lambda s: s and s.model_copy(update={"next_fire_at": due}))
    assert space.cli("scheduler", "--once").returncode == 0
    assert client.list_runs(flow_id=FLOW_ID) == []
    assert client.schedules.require(SCHEDULE).next_fire_at > utcnow()  # the tick was consumed, not fired

    assert space.cli("flows", "enable", "ticker").returncode == 0
    assert client.trigger("ticker").created


def test_unknown_flow_in_this_process_leaves_the_tick_to_another(space: Space, flows_dir: Path) -> None:
    write_flow(flows_dir, "*/5 * * * *")
    client = client_for(space, flows_dir)
    client.sync_schedules()
    due = latest_tick("*/5 * * * *", utcnow())  # a tick owed now
    client.schedules.change(SCHEDULE, lambda s: s and s.model_copy(update={"next_fire_at": due}))
    stranger = FlowClient(
        space.redis, FlowRegistry(), space.settings.queue, key_prefix=space.settings.key_prefix
    )
    assert ScheduleFirer(stranger, grace_seconds=600).fire_due() == 0
    assert client.schedules.require(SCHEDULE).next_fire_at == due
    assert ScheduleFirer(client, grace_seconds=600).fire_due() == 1


def test_a_schedule_that_cannot_be_planned_is_marked_the_others_fire_and_an_override_repairs_it(
    space: Space, flows_dir: Path
) -> None:
    other_id = "6f1c2a9e-0000-4000-8000-0000000c0002"
    write_flow(flows_dir, "*/5 * * * *")
    write_flow(flows_dir, "*/5 * * * *", name="other", flow_id=other_id)
    client = client_for(space, flows_dir)
    client.sync_schedules()
    other = flow_schedule_id(other_id, "tick")
    due = latest_tick("*/5 * * * *", utcnow())  # both owe a tick now
    for schedule_id in (SCHEDULE, other):
        client.schedules.change(schedule_id, lambda s: s and s.model_copy(update={"next_fire_at": due}))
    # An override with no tick, as a release before the check stored it.
    space.redis.hset(space.keys.schedule(SCHEDULE), "cron_override", "30 2 31 4 *")

    firer = ScheduleFirer(client, grace_seconds=600)
    assert firer.fire_due() == 1
    marked = client.schedules.require(SCHEDULE)
    assert marked.error and "never fires" in marked.error and marked.next_fire_at is None
    assert len(client.list_runs(flow_id=other_id)) == 1 and client.list_runs(flow_id=FLOW_ID) == []
    assert SCHEDULE not in client.schedules.due(utcnow()), "a marked schedule is not retried every pass"

    with pytest.raises(InvalidCron, match="never fires"):
        client.resume_schedule(SCHEDULE)
    assert client.schedules.require(SCHEDULE) == marked
    repaired = client.set_schedule_cron(SCHEDULE, None)
    assert repaired.error is None and repaired.next_fire_at is not None
    assert SCHEDULE in client.schedules.due(repaired.next_fire_at), "back in the due index"
