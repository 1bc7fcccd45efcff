"""What is overdue, for the recovery duties (``flowjobs.recovery``): expired leases, overdue
dispatches and deadlines, idle runs; and the one guarded write those duties make."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from redis.client import Pipeline
from redis.exceptions import WatchError

from flowjobs.core.clock import epoch_ms, epoch_score
from flowjobs.core.keys import split_step_member
from flowjobs.core.statuses import RunStatus
from flowjobs.store.base import StorePart
from flowjobs.store.codec import text


class OverdueQueries(StorePart):
    """What ``flowjobs.recovery`` looks for: work that something should have moved by now."""

    def expired_leases(self, now: datetime) -> list[tuple[str, str]]:
        """(run id, step key) of claimed steps whose lease ran out before ``now``."""
        members = self.redis.zrangebyscore(self.keys.leases(), "-inf", f"({epoch_ms(now)}")
        return [split_step_member(text(m)) for m in members]

    def overdue_pending(self, due_before: datetime) -> list[tuple[str, str]]:
        """(run id, step key) of dispatched steps that were due before ``due_before`` and are unclaimed."""
        members = self.redis.zrangebyscore(self.keys.pending(), "-inf", f"({epoch_ms(due_before)}")
        return [split_step_member(text(m)) for m in members]

    def overdue_runs(self, now: datetime) -> list[str]:
        """Ids of runs whose deadline passed before ``now``."""
        return [text(m) for m in self.redis.zrangebyscore(self.keys.deadlines(), "-inf", f"({epoch_ms(now)}")]

    def idle_runs(self, started_before: datetime, batch: int = 500) -> list[tuple[str, RunStatus]]:
        """Active runs started before ``started_before`` with nothing in flight: Pending ones, and
        Running ones whose steps are all final (or expanded ForEach steps). One round-trip per batch."""
        found: list[tuple[str, RunStatus]] = []
        for status in (RunStatus.Pending, RunStatus.Running):
            ids = [
                text(m)
                for m in self.redis.zrangebyscore(
                    self.keys.status_runs(status.value), "-inf", f"({epoch_score(started_before)}"
                )
            ]
            for start in range(0, len(ids), batch):
                run_ids = ids[start : start + batch]
                found.extend(
                    self.scripts.idle_runs(
                        {
                            "run_ids": run_ids,
                            "run_keys": [self.keys.run(run_id) for run_id in run_ids],
                            "steps_keys": [self.keys.run_steps(run_id) for run_id in run_ids],
                            "loops_keys": [self.keys.loops(run_id) for run_id in run_ids],
                        }
                    )
                )
        return found

    def write_if_unchanged(
        self, key: str, expected: Mapping[str, str | None], write: Callable[[Pipeline], None]
    ) -> bool:
        """Run ``write`` on a MULTI/EXEC that applies only while the hash ``key`` still holds the
        ``expected`` fields (None: absent) (WATCH); False when it no longer does, or changed
        meanwhile."""
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                current = [text(v) if v is not None else None for v in pipe.hmget(key, list(expected))]
                if current != list(expected.values()):
                    return False
                pipe.multi()
                write(pipe)
                pipe.execute()
            except WatchError:
                return False
        return True
