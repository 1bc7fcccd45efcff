"""Keeps the claim leases of the attempts this process is executing alive, from one thread."""

from __future__ import annotations

import _thread
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta

import structlog

from flowjobs.core.clock import utcnow
from flowjobs.instruments import instruments
from flowjobs.store.run_store import RunStore

log = structlog.get_logger("flowjobs.leases")

#: A held lease: (run id, step key) → the attempt that holds it.
Held = Mapping[tuple[str, str], int]


class LeaseKeeper:
    """Renews every held lease every ``lease_seconds / 3``, all in one script call; one thread per
    process (which does not keep the process alive).

    A thread per attempt would cost more than a no-op step itself. The thread is (re)started
    lazily in the process that holds a lease, so a forked work-horse gets its own. A handler that
    holds the GIL longer than the lease starves this thread: a forking worker's parent process
    renews the lease of its work-horse's job as well (``flowjobs.worker.FlowWorker``).
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
                # Not ``threading.Thread.start()``, which waits until the new thread runs: a forked
                # work-horse claiming its step waited for the scheduler (3-5 ms on a busy machine).
                _thread.start_new_thread(self._renew_forever, ())
        try:
            yield
        finally:
            with self._lock:
                self._held.pop((run_id, step_key), None)

    def renew(self, held: Held) -> set[tuple[str, str]]:
        """Renew these leases now, in one round-trip; returns the ones not renewed (the attempt is
        no longer current, or not claimed yet, or released its lease).

        A Redis error is logged and nothing is reported lost: the next round retries.
        """
        if not held:
            return set()
        items = list(held.items())
        lease_until = utcnow() + timedelta(seconds=self.lease_seconds)
        try:
            renewed = self.store.runs.renew_many(
                [(run_id, step_key, attempt) for (run_id, step_key), attempt in items], lease_until
            )
        except Exception as error:  # a Redis blip must not kill the caller: retry next round
            log.warning("lease.renew_failed", leases=len(items), error=repr(error))
            return set()
        lost = {key for (key, _), ok in zip(items, renewed, strict=True) if not ok}
        instruments().leases_renewed(len(items) - len(lost), len(lost))
        return lost

    def _renew_forever(self) -> None:
        while True:
            self._wake.wait(self.lease_seconds / 3)
            with self._lock:
                held = dict(self._held)
            lost = self.renew(held)
            with self._lock:
                for key in lost:
                    if self._held.get(key) == held[key]:
                        log.warning("lease.lost", run_id=key[0], step_key=key[1], attempt=held[key])
                        del self._held[key]
