"""The web process as an attacker meets it: ``flowjobs web`` started as a subprocess (the real CLI,
the real uvicorn server) with a worker, for this test's corner of Redis and flow files."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flowjobs.client import FlowClient
from flowjobs.core.registry import FlowRegistry
from tests.conftest import ROOT, Space, free_port, http_status, wait_parked, wait_until

pytestmark = pytest.mark.slow


@dataclass
class Web:
    """A running ``flowjobs web``: its base URL, a client of the same Redis and flows, the space."""

    base: str
    client: FlowClient
    space: Space
    process: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        """Absolute URL of a path of the web process."""
        return f"{self.base}{path}"

    def parked(self, flow: str, step_key: str = "wait") -> str:
        """A new run of ``flow`` once its WaitForSignal step ``step_key`` is parked; its id."""
        handle = self.client.trigger(flow)
        wait_parked(self.client, handle.run_id, step_key)
        return str(handle.run_id)

    def http(self, **options: Any) -> httpx.Client:
        """An HTTP client for it (no Origin header: as curl and scripts send)."""
        return httpx.Client(base_url=self.base, timeout=15, **options)


StartWeb = Callable[..., Web]


@pytest.fixture
def start_web(space: Space, tmp_path: Path) -> StartWeb:
    """``start_web(flows, env=None, worker=True, health_headers=None, health_status=200,
    output=None, host="127.0.0.1")``: write ``flows`` (name → flow-file body; a fresh ``id`` unless
    it has one) to a folder, start a ``flowjobs worker`` (unless ``worker=False``) and ``flowjobs
    web --host HOST --port P`` with this space's settings plus ``env`` (its stdout and stderr to
    the file ``output`` if given); returns once ``/flows/api/health`` answers ``health_status`` on
    127.0.0.1 (sent with ``health_headers``, for a Host or auth the process requires)."""

    def start(
        flows: dict[str, dict[str, Any]],
        env: dict[str, str] | None = None,
        worker: bool = True,
        health_headers: dict[str, str] | None = None,
        health_status: int = 200,
        output: Path | None = None,
        host: str = "127.0.0.1",
    ) -> Web:
        flows_dir = tmp_path / "flows"
        flows_dir.mkdir(exist_ok=True)
        for name, body in flows.items():
            flow = {"id": str(uuid.uuid4()), "name": name, **body}
            (flows_dir / f"{name}.yaml").write_text(yaml.safe_dump(flow))
        space.settings = space.settings.model_copy(update={"flows_dir": flows_dir})
        registry = FlowRegistry()
        registry.load_dir(flows_dir)
        client = space.client(registry)
        if worker:
            space.start_worker("web")
        port = free_port()
        log = output.open("ab") if output is not None else None
        process = subprocess.Popen(
            [sys.executable, "-m", "flowjobs", "web", "--host", host, "--port", str(port)],
            env={**space.env(), **(env or {})},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        if log is not None:
            log.close()  # the process holds its own copy
        space.processes.append(process)
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, f"flowjobs web exited with {process.returncode}"
            return http_status(f"{base}/flows/api/health", health_headers) == health_status

        wait_until(healthy, timeout=30, what="flowjobs web")
        return Web(base, client, space, process)

    return start
