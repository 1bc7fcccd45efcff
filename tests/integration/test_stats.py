"""Per-flow health read from real Redis after real runs (SimpleWorker, in-process): counts, success
rate, run duration percentiles and the slowest steps equal what the run records say; the sampling
bounds hold; ``flowjobs stats`` prints the same figures."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import yaml

from flowjobs import FlowClient, FlowDefinition, RunStatus
from flowjobs.core.clock import utcnow
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.stats import SAMPLE_RUNS, hour_edges, percentile
from flowjobs.web.app import create_app
from tests.conftest import Space, served

#: A flow name as hostile as flow files allow: markup, quotes, an escape sequence.
HOSTILE = "<img src=x onerror=alert(1)> & \"st'ats\" \x1b[31m"
OK, FAILING = 3, 2


def _definition() -> dict[str, object]:
    """``pick`` echoes ``fail``; ``explode`` (Boom) runs only when it is true, ``done`` always:
    a run Succeeds without ``fail`` and Fails with it."""
    return {
        "id": "5b0e7c1a-0000-4000-8000-00000000051a",
        "name": HOSTILE,
        "steps": {
            "pick": {"type": "Echo", "inputs": {"fail": "@triggerBody()?.fail"}},
            "explode": {
                "type": "Boom",
                "run_after": {
                    "pick": {"statuses": ["Succeeded"], "when": "@steps('pick').output.inputs.fail"}
                },
            },
            "done": {"type": "Noop", "run_after": ["pick"]},
        },
    }


def _run_flows(space: Space, tmp_path: Path) -> tuple[FlowClient, FlowDefinition]:
    """The flow in a flows folder (for the CLI too), OK + FAILING runs drained to their end."""
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "stats.yaml").write_text(yaml.safe_dump(_definition()))
    space.settings = space.settings.model_copy(update={"flows_dir": folder})
    registry = FlowRegistry()
    registry.load_dir(folder)
    client = space.client(registry)
    for i in range(OK + FAILING):
        client.trigger(HOSTILE, data={"fail": i >= OK})
    space.drain()
    return client, registry.get(HOSTILE)


def test_figures_equal_the_run_records(space: Space, tmp_path: Path) -> None:
    client, definition = _run_flows(space, tmp_path)
    before = utcnow()
    pending = client.trigger(HOSTILE, data={})  # not drained: counted, not finished
    queue = client.queries.queue_health(space.settings.queue)
    assert (queue.name, queue.depth, queue.workers) == (space.settings.queue, 1, 0)
    assert 0 <= queue.oldest_age_seconds <= (utcnow() - before).total_seconds()
    runs = [r for r in client.list_runs(flow_id=definition.id, limit=50) if r.id != pending.run_id]
    assert sorted(r.status for r in runs) == sorted([RunStatus.Succeeded] * OK + [RunStatus.Failed] * FAILING)

    stats = client.queries.flow_stats(definition)
    assert stats.flow_name == HOSTILE
    assert stats.totals == {
        **dict.fromkeys(RunStatus, 0),
        RunStatus.Succeeded: OK,
        RunStatus.Failed: FAILING,
        RunStatus.Pending: 1,
    }
    assert (stats.runs, stats.finished) == (OK + FAILING + 1, OK + FAILING)
    assert stats.success_rate == OK / (OK + FAILING)
    assert [h.total for h in stats.hours] == [0] * 23 + [OK + FAILING + 1], "all started this hour"

    seconds = [(r.completed_at - r.started_at).total_seconds() for r in runs if r.completed_at]
    assert not stats.sampled and stats.run_durations.count == OK + FAILING
    assert stats.run_durations.p50_seconds == percentile(seconds, 0.5)
    assert stats.run_durations.p95_seconds == percentile(seconds, 0.95) == max(seconds)

    step_seconds: dict[str, list[float]] = {}
    for run in runs:
        detail = client.get_run_detail(run.id)
        assert detail is not None
        for step in detail.steps or []:
            if step.status.value in ("Succeeded", "Failed") and step.started_at and step.completed_at:
                took = (step.completed_at - step.started_at).total_seconds()
                step_seconds.setdefault(step.step_key, []).append(took)
    by_step = {row.step: row for row in stats.slowest_steps}
    assert {step: row.count for step, row in by_step.items()} == {"pick": 5, "done": 5, "explode": 2}
    for step, values in step_seconds.items():
        assert by_step[step].p95_seconds == percentile(values, 0.95)
        assert by_step[step].max_seconds == max(values)
    assert stats.steps_read == 12 and not stats.steps_sampled
    p95s = [row.p95_seconds or 0.0 for row in stats.slowest_steps]
    assert p95s == sorted(p95s, reverse=True)


def test_the_window_moves_with_now(space: Space, tmp_path: Path) -> None:
    client, definition = _run_flows(space, tmp_path)
    later = client.queries.flow_stats(definition, now=utcnow() + timedelta(hours=2))
    assert [h.total for h in later.hours] == [0] * 21 + [OK + FAILING] + [0] * 2
    gone = client.queries.flow_stats(definition, now=utcnow() + timedelta(hours=25))
    assert (gone.runs, gone.success_rate, gone.run_durations.count, gone.slowest_steps) == (0, None, 0, [])


def test_reads_stop_at_their_bounds(space: Space, tmp_path: Path) -> None:
    client, definition = _run_flows(space, tmp_path)
    finished = client.list_runs(flow_id=definition.id, limit=50)  # newest first
    edges = hour_edges(utcnow())
    window = client.store.stats.flow_window(definition.id, edges, sample_runs=2, sample_steps=4)
    assert [r.started_at for r in window.runs] == [r.started_at for r in finished[:2]], "the newest two"
    assert sum(window.hour_counts[-1].values()) == OK + FAILING, "counts are exact whatever the sample"
    # Each run holds three step records: the second run would pass four, so only the newest is read.
    assert not window.steps_complete
    newest = client.get_run_detail(finished[0].id)
    assert newest is not None
    ran = sorted(s.step_key for s in newest.steps or [] if s.status.value in ("Succeeded", "Failed"))
    assert sorted(s.step_key for s in window.steps) == ran
    assert client.queries.flow_stats(definition).sample_runs == SAMPLE_RUNS


def test_cli_prints_the_same_figures(space: Space, tmp_path: Path) -> None:
    client, definition = _run_flows(space, tmp_path)
    stats = client.queries.flow_stats(definition)

    shown = space.cli("stats", "--flow", str(definition.id), "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["windowHours"] == 24 and len(report["flows"]) == 1
    flow = report["flows"][0]
    assert flow["flowName"] == HOSTILE and flow["flowId"] == str(definition.id)
    assert flow["totals"]["Succeeded"] == OK and flow["totals"]["Failed"] == FAILING
    assert flow["successRate"] == OK / (OK + FAILING) and flow["finished"] == OK + FAILING
    assert flow["runDurations"] == stats.run_durations.model_dump(mode="json", by_alias=True)
    assert len(flow["hours"]) == 24 and flow["hours"][-1]["counts"]["Failed"] == FAILING
    assert {s["step"]: s["count"] for s in flow["slowestSteps"]} == {"pick": 5, "done": 5, "explode": 2}
    assert (flow["sampled"], flow["sampleRuns"], flow["stepsSampled"]) == (False, SAMPLE_RUNS, False)

    every = space.cli("stats", "--json")
    assert every.returncode == 0 and [f["flowName"] for f in json.loads(every.stdout)["flows"]] == [HOSTILE]

    table = space.cli("stats")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout, "a name's escape sequence is shown, not sent to the terminal"
    assert "flow <img src=x onerror=alert(1)> & \"st'ats\" \\x1b[31m" in table.stdout
    assert "success rate    60.0 % of 5 finished" in table.stdout
    assert f"Succeeded {OK}  Failed {FAILING}" in table.stdout
    assert "explode" in table.stdout and f"({OK + FAILING} runs)" in table.stdout

    unknown = space.cli("stats", "--flow", "no-such-flow")
    assert unknown.returncode == 2 and "no flow with id or name 'no-such-flow'" in unknown.stderr
    assert unknown.stdout == ""


def test_the_api_answers_the_same_figures(space: Space, tmp_path: Path) -> None:
    client, definition = _run_flows(space, tmp_path)
    stats = client.queries.flow_stats(definition)
    with served(create_app(space.settings, client), lifespan="off") as http:
        answered = http.get(f"/flows/api/flows/{definition.id}/stats")
        unknown = http.get("/flows/api/flows/no-such-flow/stats")
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["flowName"] == HOSTILE and body["successRate"] == OK / (OK + FAILING)
    assert body["totals"]["Succeeded"] == OK and body["totals"]["Failed"] == FAILING
    assert body["runDurations"] == stats.run_durations.model_dump(mode="json", by_alias=True)
    assert [row["step"] for row in body["slowestSteps"]] == [row.step for row in stats.slowest_steps]
    assert unknown.status_code == 404 and unknown.json()["error"]
