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

_RUN_ID = "\x00run-id\x00"
"""Stands for a run id in a key template (no run id or prefix holds a NUL)."""


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
        # Each key as the text around the run id: the script spells the keys of a batch itself,
        # which costs far less than sending three keys per run.
        named = {"run_key": self.keys.run, "steps_key": self.keys.run_steps, "loops_key": self.keys.loops}
        templates = {name: list(key(_RUN_ID).partition(_RUN_ID)[::2]) for name, key in named.items()}
        found: list[tuple[str, RunStatus]] = []
        for status in (RunStatus.Pending, RunStatus.Running):
            ids = [
                text(m)
                for m in self.redis.zrangebyscore(
                    self.keys.status_runs(status.value), "-inf", f"({epoch_score(started_before)}"
                )
            ]
            for start in range(0, len(ids), batch):
                found.extend(self.scripts.idle_runs({**templates, "run_ids": ids[start : start + batch]}))
        return found

    def write_if_unchanged(
        self, key: str, expected: Mapping[str, str], write: Callable[[Pipeline], None]
    ) -> bool:
        """Run ``write`` on a MULTI/EXEC that applies only while the hash ``key`` still holds the
        ``expected`` fields (WATCH); False when it no longer does, or changed meanwhile."""
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
