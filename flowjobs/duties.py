"""Duties: the periodic work every worker process does besides jobs (Hangfire's server model).

Recovery of expired leases, lost jobs and idle runs, the run-deadline sweep, and retention. Each of
these is guarded by a Redis lock with a TTL of its period, so however many processes run the duties,
each runs about once per period. The lock moves between processes: a process that held it for the
last period leaves the next one to a process that found it held and is waiting for it, and takes
it again only when no other process is waiting (alone, it runs the duty every period). The
schedules duty has no lock: every process fires the schedules of the flows it has (each tick once
across processes by its identity), so a process without a flow never keeps another from firing it.
A worker runs the duties on a background thread (in the parent process of a forking worker, never
in a work-horse); ``flowjobs scheduler`` runs the same duties in the foreground without taking
jobs, and is optional.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum, StrEnum

import structlog
from redis import Redis

from flowjobs.core.keys import Keys
from flowjobs.engine import Engine
from flowjobs.factory import firer_from_settings
from flowjobs.instruments import instruments
from flowjobs.recovery import recover_claims, recover_jobs, recover_runs, sweep_deadlines
from flowjobs.settings import Settings
from flowjobs.store.base import REDIS_DOWN

log = structlog.get_logger("flowjobs.duties")

#: Period of the retention duty (finished runs older than ``FLOWJOBS_RETENTION_DAYS`` go).
RETENTION_PERIOD_SECONDS = 3600.0
#: Longest wait between passes while Redis is unreachable.
MAX_BACKOFF_SECONDS = 30.0

#: Takes the free duty locks of one process in one call. KEYS: per duty its lock and its waiting
#: key; ARGV: the owner, then per duty the lock's TTL, ``1`` if this process took it last, and the
#: waiting key's TTL (ms). Per duty, a ``Take``.
TAKE_DUTIES = """
local owner = ARGV[1]
local result = {}
for i = 1, #KEYS / 2 do
  local lock, waiting = KEYS[2 * i - 1], KEYS[2 * i]
  local ttl, took_last, wait_ttl = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local holder = redis.call('GET', lock)
  local waiter = redis.call('GET', waiting)
  if holder == owner then
    result[i] = 0
  elseif holder then
    redis.call('SET', waiting, owner, 'PX', wait_ttl)
    result[i] = 3
  elseif took_last == '1' and waiter and waiter ~= owner then
    result[i] = 2
  else
    redis.call('SET', lock, owner, 'PX', ttl)
    if waiter == owner then redis.call('DEL', waiting) end
    result[i] = 1
  end
end
return result
"""


class Take(IntEnum):
    """What ``TAKE_DUTIES`` did with one duty's lock."""

    held_here = 0
    """This process holds it (its period is not over)."""
    taken = 1
    """This process took it: it runs the duty now."""
    left = 2
    """Free, but this process took it last and another is waiting for it: left to that one."""
    held_elsewhere = 3
    """Another process holds it; this one now waits for it."""


def next_backoff(previous: float) -> float:
    """The wait after ``previous`` (0: the first failure): 1 s, doubling up to 30 s."""
    return min(max(previous * 2, 1.0), MAX_BACKOFF_SECONDS)


class FlowDuty(StrEnum):
    """The duties of every flowjobs process (``flow_duties``), by the name their lock carries."""

    #: Ends every run past its deadline as TimedOut (``recovery.sweep_deadlines``).
    deadlines = "deadlines"
    #: Attempts whose claim lease expired (a dead worker) get their next one (``recover_claims``).
    leases = "leases"
    #: Dispatched steps whose job is gone or held by a dead worker are queued again (``recover_jobs``).
    lost_jobs = "lost-jobs"
    #: Pending runs without a trigger job restart; Running runs with nothing in flight are planned
    #: again (``recover_runs``).
    idle_runs = "idle-runs"
    #: Due schedules, fired (every process, unlocked).
    schedules = "schedules"
    #: Runs past the retention, deleted.
    retention = "retention"


#: The duty whose lock, while alive, says some process ran the duties within the last period
#: (``GET /health``): locked, and run every ``recovery_interval_seconds``.
HEARTBEAT_DUTY = FlowDuty.leases


@dataclass(frozen=True)
class Duty:
    """A named piece of periodic work; ``run`` returns how many things it did."""

    name: str
    period_seconds: float
    run: Callable[[], int]
    locked: bool = True
    """Guarded by a Redis lock (once per period across processes); False: every process runs it
    every pass."""


class Duties:
    """Runs a list of duties: one pass (``run_due``), a blocking loop, or a background thread."""

    def __init__(self, redis: Redis, keys: Keys, duties: Sequence[Duty], *, owner: str) -> None:
        self.redis = redis
        self.keys = keys
        self.duties = list(duties)
        self.owner = owner
        # Ticking at half the shortest period, a duty whose lock expired is picked up within that.
        self.tick_seconds = max(min((d.period_seconds for d in self.duties), default=1.0) / 2, 0.05)
        self._take = redis.register_script(TAKE_DUTIES)
        #: The locked duties this process took last (no other process took them since, as it saw).
        self._took_last: set[str] = set()

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
                instruments().duty_ran(duty.name, failed=True)
                raise
            except Exception as error:
                log.exception("duty.failed", duty=duty.name, error=repr(error))
                instruments().duty_ran(duty.name, failed=True)
            else:
                instruments().duty_ran(duty.name, failed=False)
        return done

    def _acquire(self) -> list[Duty]:
        """The duties due in this process: the unlocked ones, and those whose lock it took now
        (all locks in one script call)."""
        locked = [d for d in self.duties if d.locked]
        keys: list[str] = []
        args: list[str | int] = [self.owner]
        for duty in locked:
            lock = self.keys.duty_lock(duty.name)
            # A waiting process refreshes its claim every pass: it lasts a period and two passes.
            wait_ms = int((duty.period_seconds + 2 * self.tick_seconds) * 1000)
            keys += [lock, f"{lock}:waiting"]
            args += [max(int(duty.period_seconds * 1000), 1), int(duty.name in self._took_last), wait_ms]
        outcomes = self._take(keys=keys, args=args) if locked else []
        mine: set[str] = set()
        for duty, outcome in zip(locked, outcomes, strict=True):
            if outcome == Take.taken:
                mine.add(duty.name)
                self._took_last.add(duty.name)
            elif outcome == Take.held_elsewhere:
                self._took_last.discard(duty.name)
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
    return engine.store.retention.purge_older_than(retention, jobs=engine.runner.stored_jobs()).runs


def flow_duties(engine: Engine, settings: Settings, *, owner: str, extra: Sequence[Duty] = ()) -> Duties:
    """The duties of a flowjobs process, each every ``recovery_interval_seconds`` (retention every
    ``RETENTION_PERIOD_SECONDS``), plus ``extra``."""
    period = settings.recovery_interval_seconds
    duties = [
        Duty(FlowDuty.deadlines, period, lambda: sweep_deadlines(engine)),
        Duty(
            FlowDuty.leases,
            period,
            lambda: recover_claims(engine, max_lost_attempts=settings.max_lost_attempts),
        ),
        Duty(FlowDuty.lost_jobs, period, lambda: recover_jobs(engine)),
        Duty(FlowDuty.idle_runs, period, lambda: recover_runs(engine)),
        Duty(
            FlowDuty.schedules,
            settings.schedule_interval_seconds,
            firer_from_settings(settings).run,
            locked=False,
        ),
        Duty(FlowDuty.retention, RETENTION_PERIOD_SECONDS, lambda: purge_expired(engine, settings)),
        *extra,
    ]
    return Duties(engine.store.redis, engine.store.keys, duties, owner=owner)
