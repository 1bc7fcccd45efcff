"""Keeps the claim leases of the attempts this process is executing alive, from one thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import structlog

from flowjobs.clock import utcnow
from flowjobs.store import RunStore

log = structlog.get_logger("flowjobs.leases")


class LeaseKeeper:
    """Renews every held lease every ``lease_seconds / 3``; one daemon thread per process.

    A thread per attempt would cost more than a no-op step itself. The thread is (re)started
    lazily in the process that holds a lease, so a forked work-horse gets its own.
    """

    def __init__(self, store: RunStore, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None

    @contextmanager
    def holding(self, run_id: str, step_key: str, attempt: int) -> Iterator[None]:
        """Keep this attempt's lease alive for the duration of the block."""
        with self._lock:
            self._held[(run_id, step_key)] = attempt
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._renew_forever, name="flowjobs-leases", daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop((run_id, step_key), None)

    def _renew_forever(self) -> None:
        while True:
            self._wake.wait(self.lease_seconds / 3)
            with self._lock:
                held = list(self._held.items())
            for (run_id, step_key), attempt in held:
                lease_until = utcnow() + timedelta(seconds=self.lease_seconds)
                try:
                    renewed = self.store.renew(run_id, step_key, attempt, lease_until)
                except Exception as error:  # a Redis blip must not kill the thread: retry next round
                    log.warning("lease.renew_failed", run_id=run_id, step_key=step_key, error=repr(error))
                    continue
                if not renewed:
                    log.warning("lease.lost", run_id=run_id, step_key=step_key, attempt=attempt)
                    with self._lock:
                        if self._held.get((run_id, step_key)) == attempt:
                            del self._held[(run_id, step_key)]
