"""A worker's start-up: it waits for a Redis that is not up yet, and a bad REDIS_URL or a handler
module that exits at import is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from flowjobs import RunStatus
from tests.conftest import ROOT, Space, wait_until
from tests.integration.flows import flow, registry
from tests.integration.test_redis_outage import ThrowawayRedis, _free_port


@pytest.fixture
def absent_redis(tmp_path: Path) -> ThrowawayRedis:
    """A free port where no Redis runs yet (the test starts it); killed after the test."""
    return ThrowawayRedis(_free_port(), tmp_path)


def test_a_worker_started_before_redis_waits_for_it_then_runs_flows(
    absent_redis: ThrowawayRedis, space: Space, tmp_path: Path
) -> None:
    late = replace(
        space,
        redis=Redis.from_url(absent_redis.url),
        settings=space.settings.model_copy(update={"redis_url": absent_redis.url}),
        processes=space.processes,
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "flowjobs", "worker", "--name", f"{space.token}-late"],
            env=late.env(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    late.processes.append(worker)
    try:
        wait_until(
            lambda: "worker.waiting_for_redis" in log.read_text() or worker.poll() is not None,
            timeout=30,
            what="the worker to say it waits for Redis",
        )
        assert worker.poll() is None, log.read_text()
        assert "Traceback" not in log.read_text()
        absent_redis.start()
        client = late.client(registry(flow("late", {"a": {"type": "Noop"}})))
        assert client.trigger("late").wait(timeout=60).status is RunStatus.Succeeded
        assert worker.poll() is None
    finally:
        late.stop_processes()
        absent_redis.kill()


@pytest.mark.parametrize("command", [("runs", "list"), ("worker",), ("scheduler",)])
def test_a_bad_redis_url_is_one_line(space: Space, command: tuple[str, ...]) -> None:
    result = space.cli(*command, env={"REDIS_URL": "notaurl"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: invalid settings: REDIS_URL: Redis URL must specify one of the following schemes "
        "(redis://, rediss://, unix://)"
    ]


def test_an_unreachable_redis_is_one_line_for_a_command(space: Space) -> None:
    result = space.cli("runs", "list", env={"REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"})
    assert result.returncode == 4
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: Redis is unreachable (REDIS_URL): Error 111 connecting to 127.0.0.1:")


def test_a_handler_module_exiting_at_import_stops_the_worker_with_one_line(
    space: Space, tmp_path: Path
) -> None:
    (tmp_path / "exiting_handlers.py").write_text("import sys\n\nsys.exit(5)\n")
    result = space.cli(
        "worker",
        env={"FLOWJOBS_HANDLER_MODULES": "exiting_handlers", "PYTHONPATH": f"{ROOT}:{tmp_path}"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: cannot import handler module 'exiting_handlers' (FLOWJOBS_HANDLER_MODULES): SystemExit: 5"
    ]
