"""Sentinels that require a password, and Sentinels reached only over TLS.

Each test starts its own primary and one Sentinel (quorum 1) on free ports; the CLI and a worker
reach the primary through that Sentinel with ``FLOWJOBS_REDIS_SENTINEL_PASSWORD`` /
``FLOWJOBS_REDIS_SENTINEL_TLS``, and without the credential a command is one line and exit 4.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis import Redis
from redis.exceptions import RedisError

from flowjobs import RunStatus
from flowjobs.core.keys import Keys
from flowjobs.factory import connect
from tests.conftest import ROOT, Space, free_port, wait_until
from tests.integration.test_sentinel import Node, _binary

MASTER = "flowjobs-auth"
PASSWORD = "sentinel-only-secret"
FLOW_FILE = """\
id: 0b5e8f3c-6d1a-4c2e-9f47-3a8d2b6c1e90
name: through-sentinel
triggers:
  manual: {type: Manual}
steps:
  first: {type: Echo, inputs: {said: hello}}
  second: {type: Noop, run_after: [first]}
"""


def _certificates(folder: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1 (Debian's openssl)."""
    paths = {name: folder / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")}
    san = folder / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    commands = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=flowjobs test CA",
         "-keyout", paths["ca.key"], "-out", paths["ca.crt"]],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", paths["server.key"], "-out", paths["server.csr"]],
        ["x509", "-req", "-days", "1", "-in", paths["server.csr"], "-CA", paths["ca.crt"],
         "-CAkey", paths["ca.key"], "-CAcreateserial", "-extfile", san, "-out", paths["server.crt"]],
    ]
    for command in commands:
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)
    return paths


class LoneSentinel:
    """A primary and one Sentinel watching it, the Sentinel with a password and optionally TLS only."""

    def __init__(self, folder: Path, *, tls: bool) -> None:
        self.folder = folder
        self.tls = _certificates(folder) if tls else None
        self.primary = Node(free_port(), folder / "primary.conf")
        self.sentinel = Node(free_port(), folder / "sentinel.conf", sentinel=True)
        self.primary.config.write_text(f"port {self.primary.port}\nbind 127.0.0.1\nsave ''\ndir {folder}\n")
        listen = f"port {self.sentinel.port}\n"
        if self.tls is not None:
            listen = (
                f"port 0\ntls-port {self.sentinel.port}\ntls-cert-file {self.tls['server.crt']}\n"
                f"tls-key-file {self.tls['server.key']}\ntls-ca-cert-file {self.tls['ca.crt']}\n"
                "tls-auth-clients no\n"
            )
        self.sentinel.config.write_text(
            f"{listen}bind 127.0.0.1\ndir {folder}\nrequirepass {PASSWORD}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 1\n"
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sentinel.port}"

    def sentinel_client(self) -> Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls["ca.crt"])} if self.tls is not None else {}
        return Redis(
            host="127.0.0.1", port=self.sentinel.port, password=PASSWORD, socket_connect_timeout=0.5,
            socket_timeout=2, **tls,
        )

    def start(self) -> None:
        binary = _binary()
        self.primary.start(binary)
        self.sentinel.start(binary)
        wait_until(self._names_the_primary, timeout=20, what="the Sentinel to name the primary")

    def _names_the_primary(self) -> bool:
        try:
            address = self.sentinel_client().sentinel_get_master_addr_by_name(MASTER)
        except RedisError:
            return False
        return bool(address) and int(address[1]) == self.primary.port

    def stop(self) -> None:
        self.sentinel.kill()
        self.primary.kill()


@pytest.fixture(params=[False, True], ids=["password", "password+tls"])
def lone(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoneSentinel]:
    server = LoneSentinel(tmp_path, tls=request.param)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _through(lone: LoneSentinel, space: Space) -> Space:
    flows_dir = lone.folder / "flows"
    flows_dir.mkdir(exist_ok=True)
    (flows_dir / "through-sentinel.yaml").write_text(FLOW_FILE)
    settings = space.settings.model_copy(
        update={
            "flows_dir": flows_dir,
            "redis_sentinels": lone.address,
            "redis_sentinel_master": MASTER,
            "redis_sentinel_password": SecretStr(PASSWORD),
            "redis_sentinel_tls": lone.tls is not None,
            "redis_sentinel_tls_ca_file": lone.tls["ca.crt"] if lone.tls is not None else None,
        }
    )
    return replace(space, redis=connect(settings), settings=settings, processes=space.processes)


def test_runs_go_through_sentinels_that_require_a_password_and_tls(space: Space, lone: LoneSentinel) -> None:
    through = _through(lone, space)
    through.start("worker")
    answer = through.cli("trigger", "through-sentinel", "--wait", "--timeout", "60", "--json")
    assert answer.returncode == 0, answer.stderr
    run = json.loads(answer.stdout)
    assert run["status"] == RunStatus.Succeeded.value, run
    run_id = run["id"]
    primary = lone.primary.client()
    assert primary.exists(Keys(space.settings.key_prefix).run(run_id)), "the run is on the Sentinel's primary"


def test_without_the_sentinels_credential_a_command_is_one_line_and_exit_4(
    space: Space, lone: LoneSentinel
) -> None:
    through = _through(lone, space)
    answer = through.cli("runs", "list", env={"FLOWJOBS_REDIS_SENTINEL_PASSWORD": "wrong-password"})
    assert answer.returncode == 4, (answer.stdout, answer.stderr)
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1 and "Redis is unreachable (FLOWJOBS_REDIS_SENTINELS)" in lines[0], answer.stderr
    assert PASSWORD not in answer.stderr and "wrong-password" not in answer.stderr


def test_a_worker_refused_by_the_sentinels_says_which_it_waits_for(
    space: Space, lone: LoneSentinel, tmp_path: Path
) -> None:
    through = _through(lone, space)
    log = tmp_path / "worker.log"
    env = {**through.env(), "FLOWJOBS_REDIS_SENTINEL_PASSWORD": "wrong-password"}
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "flowjobs", "worker", "--name", f"{space.token}-refused"],
            env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    through.processes.append(worker)
    wait_until(
        lambda: "worker.waiting_for_redis" in log.read_text() or worker.poll() is not None,
        timeout=30,
        what="the worker to say it waits for Redis",
    )
    assert worker.poll() is None, log.read_text()
    (line,) = [line for line in log.read_text().splitlines() if "worker.waiting_for_redis" in line][:1]
    assert f"master={MASTER}" in line and lone.address in line, line
    assert "no Sentinel named a primary that is up" in line and "host=None" not in line, line
    assert "wrong-password" not in log.read_text() and PASSWORD not in log.read_text()
