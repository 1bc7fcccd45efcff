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
from rq import Queue
from rq.serializers import JSONSerializer

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


def test_rq_dashboard_shows_failed_attempts_as_failed_jobs_and_its_requeue_retries(
    space: Space, dashboard: str
) -> None:
    flaky = {"key": f"{space.token}:flaky", "succeed_on": 2}
    client = space.client(
        registry(
            flow(
                "truthful",
                {
                    "fetch": {"type": "Echo", "inputs": {"parcel": 7}},
                    "ship": {"type": "Flaky", "run_after": ["fetch"], "inputs": flaky},
                },
            )
        )
    )
    handle = client.trigger("truthful")
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed
    steps = {s.step_key: s for s in run.steps or []}
    fetch_job, ship_job = steps["fetch"].job_id or "", steps["ship"].job_id or ""

    ship = json.loads(_get(f"{dashboard}/data/job/{ship_job}.json")[1])
    assert ship["status"] == "failed"
    assert "flaky failure on attempt 1" in ship["exc_info"]
    assert "in flaky\n" in ship["exc_info"], "the handler's own traceback is shown"
    failed_list = json.loads(_get(f"{dashboard}/data/jobs/{space.settings.queue}/failed/10/asc/1.json")[1])
    assert [job["id"] for job in failed_list["jobs"]] == [ship_job]
    fetch = json.loads(_get(f"{dashboard}/data/job/{fetch_job}.json")[1])
    assert fetch["status"] == "finished"
    assert fetch["result"] == {"inputs": {"parcel": 7}, "step": "fetch", "attempt": 1}

    # RQ's requeue of the failed attempt's job retries the step (as retry-step would). rq-dashboard
    # 0.9's Requeue button calls it without the JSON serializer and re-saves the job's meta with
    # pickle, so its job page breaks afterwards: requeue as it should, with RQ's own registry.
    failed = Queue(
        space.settings.queue, connection=space.redis, serializer=JSONSerializer
    ).failed_job_registry
    failed.requeue(ship_job)
    space.drain()
    retried = client.get_run_detail(handle.run_id)
    assert retried is not None and retried.status is RunStatus.Succeeded
    attempts = next(s for s in retried.steps or [] if s.step_key == "ship").attempts or []
    assert [(a.attempt, a.status.value) for a in attempts] == [(1, "Failed"), (2, "Succeeded")]
    note = json.loads(json.loads(_get(f"{dashboard}/data/job/{ship_job}.json")[1])["metadata"])
    assert note["flowjobs_note"] == "Requeued failed attempt: attempt 2 queued"

    # The failed job of an attempt that is no longer the step's latest is refused harmlessly and
    # says why: here attempt 1 of a step whose own retry succeeded.
    retrying = {"type": "Flaky", "inputs": {"key": f"{space.token}:again", "succeed_on": 2}}
    retrying["retry"] = {"max_attempts": 2}
    client = space.client(registry(flow("retrying", {"ship": retrying})))
    second = client.trigger("retrying")
    space.drain()
    done = client.get_run_detail(second.run_id)
    assert done is not None and done.status is RunStatus.Succeeded
    first_attempt = (done.steps or [])[0].attempts[0].job_id or ""  # type: ignore[index]
    failed.requeue(first_attempt)
    space.drain()
    after = client.get_run_detail(second.run_id)
    assert after is not None and after.status is RunStatus.Succeeded
    assert [a.attempt for a in (after.steps or [])[0].attempts or []] == [1, 2]
    note = json.loads(json.loads(_get(f"{dashboard}/data/job/{first_attempt}.json")[1])["metadata"])
    assert note["flowjobs_note"] == "Refused: the run is Succeeded"
