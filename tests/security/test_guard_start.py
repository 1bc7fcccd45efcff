"""A careless operator's start of the web process: blank credentials and an address reachable from
other machines with no auth refuse to start (one line on stderr, exit 2) — ``flowjobs web`` and
``flowjobs up`` alike, ``up`` before it starts a worker or an embedded Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from rq import Queue, Worker

from tests.conftest import ROOT, Space
from tests.security.conftest import StartWeb, free_port, http_status

pytestmark = pytest.mark.slow

FLOWS = {"sec-start": {"steps": {"a": {"type": "Noop"}}}}


def _refused(space: Space, *args: str, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``flowjobs ARGS`` and expect it to exit by itself (a server that starts instead is
    stopped, and the test fails); its exit code and stderr lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flowjobs", *args],
        env={**space.env(), **env},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)
        pytest.fail(f"flowjobs {' '.join(args)} started instead of refusing to")
    return process.returncode, stderr.splitlines()


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"FLOWJOBS_WEB_USER": "admin", "FLOWJOBS_WEB_PASSWORD": ""}, "FLOWJOBS_WEB_PASSWORD"),
        ({"FLOWJOBS_WEB_USER": "", "FLOWJOBS_WEB_PASSWORD": "s3cret"}, "FLOWJOBS_WEB_USER"),
        ({"FLOWJOBS_WEB_USER": "admin", "FLOWJOBS_WEB_PASSWORD": " \t"}, "FLOWJOBS_WEB_PASSWORD"),
        ({"FLOWJOBS_WEB_TOKEN": ""}, "FLOWJOBS_WEB_TOKEN"),
        ({"FLOWJOBS_WEB_TOKEN": "   "}, "FLOWJOBS_WEB_TOKEN"),
    ],
    ids=["empty-password", "empty-user", "blank-password", "empty-token", "blank-token"],
)
@pytest.mark.parametrize("command", ["web", "up"])
def test_blank_credentials_refuse_to_start(
    space: Space, env: dict[str, str], setting: str, command: str
) -> None:
    code, lines = _refused(space, command, "--port", str(free_port()), env=env)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid setting {setting}: is empty or blank"), (
        lines
    )


@pytest.mark.parametrize("command", ["web", "up"])
def test_a_non_loopback_address_without_auth_refuses_to_start(space: Space, command: str) -> None:
    code, lines = _refused(space, command, "--host", "0.0.0.0", "--port", str(free_port()), env={})
    assert code == 2
    assert len(lines) == 1 and "with no auth" in lines[0] and "FLOWJOBS_WEB_OPEN=true" in lines[0], lines
    # Refused before anything started: no "redis: ..." line of `up`, no worker on the queue.
    assert Worker.all(queue=Queue(space.settings.queue, connection=space.redis)) == []


@pytest.mark.parametrize(
    "env",
    [{"FLOWJOBS_WEB_OPEN": "true"}, {"FLOWJOBS_WEB_TOKEN": "t0k"}],
    ids=["explicitly-open", "with-a-token"],
)
def test_a_non_loopback_address_is_served_when_open_is_explicit_or_auth_is_set(
    start_web: StartWeb, env: dict[str, str]
) -> None:
    web = start_web(FLOWS, env=env, worker=False, host="0.0.0.0")
    # Bound to every address, it serves any Host (auth is what guards it there).
    assert http_status(web.url("/flows/api/health"), {"Host": "flows.example"}) == 200
