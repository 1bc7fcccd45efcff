"""Duties: the periodic work every worker process does besides jobs (Hangfire's server model).

Recovery of expired leases, lost jobs and idle runs, the run-deadline sweep, and retention. Each duty is
guarded by a Redis lock with a TTL of its period (``SET NX PX``), so however many processes run
the duties, each duty runs about once per period. A worker runs them on a background thread (in
the parent process of a forking worker, never in a work-horse); ``flowjobs scheduler`` runs the
same duties in the foreground without taking jobs, and is optional.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from redis import Redis

from flowjobs.engine import Engine
from flowjobs.keys import Keys
from flowjobs.recovery import (
    REDIS_DOWN,
    recover_claims,
    recover_jobs,
    recover_runs,
    sweep_deadlines,
)
from flowjobs.schedules.firing import ScheduleFirer
from flowjobs.settings import Settings

log = structlog.get_logger("flowjobs.duties")

#: Period of the retention duty (finished runs older than ``FLOWJOBS_RETENTION_DAYS`` go).
RETENTION_PERIOD_SECONDS = 3600.0
#: Longest wait between passes while Redis is unreachable.
MAX_BACKOFF_SECONDS = 30.0


def next_backoff(previous: float) -> float:
    """The wait after ``previous`` (0: the first failure): 1 s, doubling up to 30 s."""
    return min(max(previous * 2, 1.0), MAX_BACKOFF_SECONDS)


@dataclass(frozen=True)
class Duty:
    """A named piece of periodic work; ``run`` returns how many things it did."""

    name: str
    period_seconds: float
    run: Callable[[], int]
    locked: bool = True
    """Guarded by a Redis lock (once per period across processes); False: every process runs it."""


class Duties:
    """Runs a list of duties: one pass (``run_due``), a blocking loop, or a background thread."""

    def __init__(self, redis: Redis, keys: Keys, duties: Sequence[Duty], *, owner: str) -> None:
        self.redis = redis
        self.keys = keys
        self.duties = list(duties)
        self.owner = owner
        # Ticking at half the shortest period, a duty whose lock expired is picked up within that.
        self.tick_seconds = max(min((d.period_seconds for d in self.duties), default=1.0) / 2, 0.05)

    def run_due(self, *, force: bool = False) -> dict[str, int]:
        """One pass: run every duty whose lock this process takes (all of them with ``force``).

        Returns what each duty that ran did. A duty that raises is logged and the others still
        run; Redis being unreachable raises (the caller backs off).
        """
        due = self.duties if force else self._acquire()
        done: dict[str, int] = {}
        for duty in due:
            try:
                done[duty.name] = duty.run()
            except REDIS_DOWN:
                raise
            except Exception as error:
                log.exception("duty.failed", duty=duty.name, error=repr(error))
        return done

    def _acquire(self) -> list[Duty]:
        """The duties due in this process: the unlocked ones, and those whose lock it took now
        (all locks in one round-trip)."""
        locked = [d for d in self.duties if d.locked]
        with self.redis.pipeline(transaction=False) as pipe:
            for duty in locked:
                pipe.set(
                    self.keys.duty_lock(duty.name),
                    self.owner,
                    nx=True,
                    px=max(int(duty.period_seconds * 1000), 1),
                )
            taken = pipe.execute()
        mine = {duty.name for duty, ok in zip(locked, taken, strict=True) if ok}
        return [d for d in self.duties if not d.locked or d.name in mine]

    def run_forever(self, stop: threading.Event) -> None:
        """Run passes every tick until ``stop`` is set; while Redis is unreachable, log and back off
        (1 s doubling up to 30 s), then resume."""
        backoff = 0.0
        while not stop.is_set():
            try:
                done = self.run_due()
            except REDIS_DOWN as error:
                backoff = next_backoff(backoff)
                log.warning("duties.redis_unavailable", error=repr(error), retry_in_seconds=backoff)
                stop.wait(backoff)
                continue
            if backoff:
                log.info("duties.resumed")
                backoff = 0.0
            if any(done.values()):
                log.info("duties.done", **{name: n for name, n in done.items() if n})
            stop.wait(self.tick_seconds)

    def start(self) -> DutyThread:
        """Run the loop on a daemon thread of this process."""
        return DutyThread(self)


class DutyThread:
    """The duty loop on a background thread; ``stop()`` ends it."""

    def __init__(self, duties: Duties) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=duties.run_forever, args=(self._stop,), name="flowjobs-duties", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to stop and wait (at most ``timeout``) for the pass in progress."""
        self._stop.set()
        self._thread.join(timeout)


def purge_expired(engine: Engine, settings: Settings) -> int:
    """The retention duty: delete the runs that finished more than ``retention_days`` ago."""
    retention = timedelta(seconds=settings.retention_seconds)
    return engine.store.purge_older_than(retention, jobs=engine.runner.stored_jobs()).runs


def flow_duties(engine: Engine, settings: Settings, *, owner: str, extra: Sequence[Duty] = ()) -> Duties:
    """The duties of a flowjobs process, each every ``recovery_interval_seconds`` (retention every
    ``RETENTION_PERIOD_SECONDS``), plus ``extra``."""
    period = settings.recovery_interval_seconds
    duties = [
        Duty("deadlines", period, lambda: sweep_deadlines(engine)),
        Duty("leases", period, lambda: recover_claims(engine, max_lost_attempts=settings.max_lost_attempts)),
        Duty("lost-jobs", period, lambda: recover_jobs(engine)),
        Duty("idle-runs", period, lambda: recover_runs(engine)),
        Duty("schedules", settings.schedule_interval_seconds, ScheduleFirer.from_settings(settings).run),
        Duty("retention", RETENTION_PERIOD_SECONDS, lambda: purge_expired(engine, settings)),
        *extra,
    ]
    return Duties(engine.store.redis, engine.store.keys, duties, owner=owner)
