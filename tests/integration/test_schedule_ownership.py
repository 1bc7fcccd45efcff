"""Who changes and who fires the schedules, on real processes: a CLI call reads or toggles and never
removes a schedule, only ``schedules prune`` does; a process without a flow leaves its ticks to the
processes that have it; duty locks move between processes."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from flowjobs.core.clock import utcnow
from flowjobs.core.cron import latest_tick
from flowjobs.core.schedules import TICK_HEADER, flow_schedule_id
from flowjobs.duties import HEARTBEAT_DUTY
from tests.conftest import Space, wait_until
from tests.integration.test_schedules import FLOW_ID, SCHEDULE, client_for, write_flow

OTHER_ID = "6f1c2a9e-0000-4000-8000-0000000c0003"


def start_with_flows(space: Space, folder: Path, *args: str) -> None:
    """Start ``flowjobs ARGS`` with FLOWJOBS_FLOWS_DIR=folder; the space keeps its own folder."""
    own = space.settings
    space.settings = own.model_copy(update={"flows_dir": folder})
    try:
        space.start(*args)
    finally:
        space.settings = own


def runs_of(space: Space, folder: Path) -> int:
    return len(client_for(space, folder).list_runs(flow_id=FLOW_ID, limit=1000))


@pytest.fixture
def deployed(space: Space, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The deployment's flows folder (a one-second schedule), a folder of another flow beside it."""
    folder = tmp_path / "deployed"
    folder.mkdir()
    write_flow(folder, "* * * * * *")
    other = tmp_path / "other"
    other.mkdir()
    write_flow(other, "0 3 * * *", name="other", flow_id=OTHER_ID)
    space.settings = space.settings.model_copy(update={"flows_dir": folder})
    monkeypatch.setenv("FLOWJOBS_SCHEDULE_INTERVAL_SECONDS", "0.2")
    return folder


@pytest.mark.parametrize(
    "command",
    [("schedules", "list"), ("flows", "disable", "other"), ("schedules", "pause", "flow-nope-tick")],
    ids=["list", "disable", "pause"],
)
def test_a_cli_call_with_another_flows_folder_leaves_the_live_schedules_firing(
    space: Space, deployed: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    space.start_worker("a")
    space.start("scheduler")
    wait_until(lambda: runs_of(space, deployed), timeout=30, what="the schedule's first run")

    result = space.cli(*command, env={"FLOWJOBS_FLOWS_DIR": str(tmp_path / "other")})

    assert "Traceback" not in result.stderr, result.stderr
    assert space.redis.exists(space.keys.schedule(SCHEDULE)), "a CLI call removed a live schedule"
    assert not space.redis.exists(space.keys.schedule(flow_schedule_id(OTHER_ID, "tick"))), (
        "a CLI call declared its folder's schedules"
    )
    fired = runs_of(space, deployed)
    wait_until(lambda: runs_of(space, deployed) >= fired + 3, timeout=30, what="the schedule firing on")


def test_only_schedules_prune_removes_schedules_and_only_those_its_folder_lacks(
    space: Space, deployed: Path, tmp_path: Path
) -> None:
    write_flow(deployed, "*/5 * * * *")
    write_flow(deployed, "0 3 * * *", name="other", flow_id=OTHER_ID)
    assert space.cli("scheduler", "--once").returncode == 0  # a worker's first pass declares them
    kept = flow_schedule_id(OTHER_ID, "tick")
    client = client_for(space, deployed)
    assert {s.schedule_id for s in client.list_schedules()} == {SCHEDULE, kept}

    # The release drops ticker's trigger: the processes that have that release leave its tick (a
    # process of the release before may fire it) and remove nothing.
    write_flow(deployed, None)
    due = latest_tick("*/5 * * * *", utcnow())
    client.schedules.change(SCHEDULE, lambda s: s and s.model_copy(update={"next_fire_at": due}))
    assert space.cli("scheduler", "--once").returncode == 0
    assert client.schedules.require(SCHEDULE).next_fire_at == due, "the tick was consumed unfired"

    missing = space.cli("schedules", "prune", env={"FLOWJOBS_FLOWS_DIR": str(tmp_path / "nowhere")})
    assert missing.returncode == 2 and "nowhere" in missing.stderr, missing
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.yaml").write_text("id: [\n")
    refused = space.cli("schedules", "prune", env={"FLOWJOBS_FLOWS_DIR": str(broken)})
    assert refused.returncode == 2 and "bad.yaml" in refused.stderr, refused

    dry = space.cli("schedules", "prune", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"removed": [SCHEDULE], "dryRun": True}
    assert {s.schedule_id for s in client.list_schedules()} == {SCHEDULE, kept}

    pruned = space.cli("schedules", "prune")
    assert pruned.returncode == 0 and SCHEDULE in pruned.stdout, pruned
    assert {s.schedule_id for s in client.list_schedules()} == {kept}
    assert json.loads(space.cli("schedules", "prune", "--json").stdout) == {"removed": [], "dryRun": False}


def test_a_scheduler_without_the_flows_folder_leaves_cron_to_the_workers(
    space: Space, deployed: Path, tmp_path: Path
) -> None:
    start_with_flows(space, tmp_path / "nowhere", "scheduler")
    wait_until(
        lambda: (space.redis.get(space.keys.duty_lock(HEARTBEAT_DUTY)) or b"").startswith(b"scheduler:"),
        timeout=30,
        what="the scheduler without flows running the duties",
    )
    space.start_worker("a")
    client = client_for(space, deployed)
    wait_until(lambda: runs_of(space, deployed) >= 8, timeout=30, what="8 ticks fired by the worker")

    ticks = sorted(run.trigger_headers[TICK_HEADER] for run in client.list_runs(flow_id=FLOW_ID, limit=1000))
    first, last = (utcnow().fromisoformat(t) for t in (ticks[0], ticks[-1]))
    assert len(ticks) == len(set(ticks)) == int((last - first).total_seconds()) + 1, "ticks skipped"


def test_duty_locks_move_between_processes(space: Space, deployed: Path) -> None:
    for _ in range(2):
        space.start("scheduler")
    lock = space.keys.duty_lock(HEARTBEAT_DUTY)
    takes: list[bytes] = []  # the owner of each take of the lock, as sampled
    last_ttl = 0

    def sample() -> bool:
        nonlocal last_ttl
        owner, ttl = space.redis.get(lock), space.redis.pttl(lock)
        if owner is not None:
            if not takes or takes[-1] != owner or ttl > last_ttl + 50:  # a new owner, or a fresh TTL
                takes.append(owner)
            last_ttl = ttl
        return len(takes) >= 12

    wait_until(sample, timeout=60, what="12 takes of the leases duty lock")
    handovers = sum(1 for before, after in pairwise(takes) if before != after)
    assert len(set(takes)) == 2
    # The holder leaves the next period to the other process, which is waiting for it (before: the
    # holder retook its lock at expiry about 4 times in 5).
    assert handovers >= len(takes) // 2, takes
