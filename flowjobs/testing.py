"""``FlowTestHost``: run flows in-process with the real engine and a real Redis, for users' flow tests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from redis import Redis

from flowjobs.core.errors import RunNotFound
from flowjobs.core.handlers import HandlerRegistry, default_handlers
from flowjobs.core.keys import Keys
from flowjobs.core.records import FlowRunRecord
from flowjobs.core.registry import FlowRegistry
from flowjobs.factory import client_from_settings, engine_from_settings
from flowjobs.jobs import install_engine
from flowjobs.runtime.inprocess import InProcessRunner
from flowjobs.settings import Settings


class FlowTestHost:
    """Triggers flows and runs every job they cause in this process, until the run settles.

    Keys go under a fresh prefix (``flowjobs-test:<random>:``) unless one is given; ``close()``
    deletes them again.
    """

    def __init__(
        self,
        redis: Redis,
        flows: FlowRegistry,
        handlers: HandlerRegistry | None = None,
        *,
        key_prefix: str | None = None,
    ) -> None:
        self.redis = redis
        self.keys = Keys(key_prefix or f"flowjobs-test:{uuid.uuid4().hex[:8]}:")
        self.runner = InProcessRunner()
        # Every other setting at its default: a host reads neither the environment nor a config file.
        settings = Settings.model_construct(key_prefix=self.keys.prefix)
        self.client = client_from_settings(settings, flows, redis=redis, runner=self.runner)
        self.engine = engine_from_settings(
            settings,
            redis=redis,
            handlers=handlers or default_handlers,
            runner=self.runner,
            worker_name="flow-test-host",
        )

    def trigger(
        self,
        flow: UUID | str,
        trigger_key: str = "manual",
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> FlowRunRecord:
        """Trigger a run, execute it to the end, and return its detail."""
        handle = self.client.trigger(flow, trigger_key, data, headers)
        self.run_until_idle()
        return handle.detail()

    def signal(self, run_id: UUID | str, signal_name: str, payload: Any = None) -> FlowRunRecord:
        """Deliver a signal, run what it resumes, and return the run's detail."""
        self.client.signal(run_id, signal_name, payload)
        self.run_until_idle()
        run = self.client.get_run_detail(run_id)
        if run is None:
            raise RunNotFound(f"no run with id {run_id}")
        return run

    def run_until_idle(self, max_wait_seconds: float = 5.0) -> int:
        """Execute queued jobs (and those they queue) with this host's engine, waiting for delayed
        ones due within ``max_wait_seconds``."""
        install_engine(self.engine)
        try:
            return self.runner.run_until_idle(max_wait_seconds)
        finally:
            install_engine(None)

    def close(self) -> None:
        """Delete every key this host wrote."""
        for key in self.redis.scan_iter(match=f"{self.keys.prefix}*", count=1000):
            self.redis.delete(key)

    def __enter__(self) -> FlowTestHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
