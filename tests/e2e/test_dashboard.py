"""rq-dashboard (the real package) finds every job of a run, and each job leads back to its run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from flowjobs import RunStatus
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


@pytest.fixture
def dashboard(redis_url: str) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rq_dashboard",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--json",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{base}/0/data/queues.json")[0] == 200, timeout=30, what="rq-dashboard")
        yield f"{base}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_rq_dashboard_shows_every_job_of_a_run(space: Space, dashboard: str) -> None:
    client = space.client(
        registry(
            flow(
                "visible",
                {
                    "a": {"type": "Noop"},
                    "b": {"type": "Boom", "run_after": ["a"]},
                    "c": {"type": "Noop", "run_after": {"b": ["Failed"]}},
                },
            )
        )
    )
    handle = client.trigger("visible", data={"x": 1})
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    job_ids = [run.background_job_id or "", *(s.job_id or "" for s in run.steps or [])]
    assert len(job_ids) == 4 and all(job_ids)
    for job_id in job_ids:
        status, body = _get(f"{dashboard}/data/job/{job_id}.json")
        assert status == 200, (job_id, body[:300])
        data = json.loads(body)
        assert data["id"] == job_id
        assert str(run.id) in data["description"]
        page_status, page = _get(f"{dashboard}/view/job/{job_id}")
        assert page_status == 200 and job_id.encode() in page
        back = client.find_run_by_job(job_id)
        assert back is not None and back.id == run.id
