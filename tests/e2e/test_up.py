"""``flowjobs up`` as a person runs it: one command, a flow triggered through its API succeeds, and
Ctrl-C (or SIGTERM) leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Space, wait_until
from tests.e2e.test_api import free_port

HELLO = "0b6c1f2e-5a43-4c8e-9d7a-2f1e3c4b5a60"


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: fields follow its last ")".
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    level = [pid]
    while level:
        level = [child for parent in level for child in children.get(parent, [])]
        found.update(level)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _get(http: httpx.Client, path: str) -> httpx.Response | None:
    try:
        return http.get(path)
    except httpx.HTTPError:
        return None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "stop_with"),
    [("running", signal.SIGINT), ("embedded", signal.SIGTERM)],
    ids=["redis-at-REDIS_URL-ctrl-c", "embedded-server-sigterm"],
)
def test_up_serves_runs_flows_and_stops_everything(
    space: Space, tmp_path: Path, where: str, stop_with: int
) -> None:
    port = free_port()
    env = {**space.env(), "FLOWJOBS_HANDLER_MODULES": "workers.handlers", "FLOWJOBS_LOG_LEVEL": "info"}
    if where == "embedded":
        env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing answers there: `up` starts its own server
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowjobs", "up", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        # A file, not a pipe: a full pipe nobody reads would block the processes writing to it.
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    space.processes.append(proc)  # stopped by the fixture if an assertion fails first
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10) as http:
        health = wait_until(
            lambda: (r := _get(http, "/flows/api/health")) is not None and r.json()["workers"] >= 1 and r,
            timeout=60,
            what="flowjobs up to serve with a worker",
        )
        assert isinstance(health, httpx.Response) and health.json()["redis"] is True
        # RQ registers the worker before it forks its scheduler: wait for both (and the embedded
        # server, if any) rather than reading /proc once.
        expected = 3 if where == "embedded" else 2
        children = wait_until(
            lambda: len(found := _descendants(proc.pid)) >= expected and found,
            timeout=30,
            what="a worker and its RQ scheduler (and the embedded server, if any) below `up`",
        )
        assert isinstance(children, set)

        triggered = http.post(f"/flows/api/flows/{HELLO}/trigger", json={"name": "up"})
        assert triggered.status_code == 202, triggered.text
        run_id = triggered.json()["runId"]
        # Links come from the address `up --port` serves, in the web process and in the worker it
        # started (FLOWJOBS_WEB_BASE_URL), never the default port.
        assert triggered.headers["X-Job-Url-Template"] == f"{base}/rq/0/view/job/{{jobId}}"
        environs = [Path(f"/proc/{pid}/environ").read_bytes() for pid in children if _alive(pid)]
        assert any(f"FLOWJOBS_WEB_BASE_URL={base}\0".encode() in e for e in environs)
        done = wait_until(
            lambda: (run := http.get(f"/flows/api/runs/{run_id}").json())["status"] == "Succeeded" and run,
            timeout=60,
            what="the run to succeed",
        )
        assert isinstance(done, dict) and {s["stepKey"] for s in done["steps"]} == {
            "greet",
            "count",
            "summarize",
        }
        assert http.get("/flows/").status_code == 200
        assert http.get(f"/rq/0/view/job/{done['backgroundJobId']}").status_code == 200

    os.kill(proc.pid, stop_with)
    proc.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert f"flows UI: {base}/flows/" in text
    assert ("embedded server" in text) is (where == "embedded")
    wait_until(lambda: not any(_alive(pid) for pid in children), timeout=15, what="every child to exit")
