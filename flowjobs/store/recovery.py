"""Recovery queries: expired leases, overdue dispatches and deadlines, idle runs."""

from __future__ import annotations

from datetime import datetime

from flowjobs.clock import epoch_ms, epoch_score
from flowjobs.keys import split_step_member
from flowjobs.statuses import RunStatus
from flowjobs.store.base import StoreBase
from flowjobs.store.codec import text


class RecoveryQueries(StoreBase):
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
        Running ones whose steps are all final (or expanded ForEach steps). Two round-trips per batch."""
        found: list[tuple[str, RunStatus]] = []
        for status in (RunStatus.Pending, RunStatus.Running):
            ids = [
                text(m)
                for m in self.redis.zrangebyscore(
                    self.keys.status_runs(status.value), "-inf", f"({epoch_score(started_before)}"
                )
            ]
            for start in range(0, len(ids), batch):
                runs = [
                    {
                        "run_id": run_id,
                        "run_key": self.keys.run(run_id),
                        "steps_key": self.keys.run_steps(run_id),
                        "loops_key": self.keys.loops(run_id),
                    }
                    for run_id in ids[start : start + batch]
                ]
                found.extend(self.scripts.idle_runs({"runs": runs}))
        return found
