"""The cluster-wide metric counters (``flowjobs/core/metrics.py``): read in one round-trip, and
counted from Python where no script runs (webhook refusals, recovery repairs)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.client import Pipeline

from flowjobs.core.clock import epoch_ms, utcnow
from flowjobs.core.metrics import Series, metric_field, parse_fields
from flowjobs.store.base import StorePart
from flowjobs.store.codec import from_hash, text


@dataclass(frozen=True)
class MetricsSnapshot:
    """What one read of the metrics returns: the counters, and each schedule's lag."""

    series: list[Series]
    schedule_lag_seconds: dict[str, float]
    """Schedule id → seconds its next tick is overdue (0 when not due yet)."""


class MetricRecords(StorePart):
    """Counting and reading the metrics hash."""

    def count_metric(self, family: str, *labels: str, pipe: Pipeline | None = None) -> None:
        """Add 1 to one counter series (in ``pipe``'s transaction when given)."""
        target = pipe if pipe is not None else self.redis
        target.hincrby(self.keys.metrics(), metric_field(family, *labels), 1)

    def read_metrics(self) -> MetricsSnapshot:
        """Every counter and every schedule's due time, in one round-trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.metrics())
        pipe.zrange(self.keys.schedules_due(), 0, -1, withscores=True)
        fields, due = pipe.execute()
        now_ms = epoch_ms(utcnow())
        lag = {text(member): max(0.0, (now_ms - score) / 1000) for member, score in due}
        return MetricsSnapshot(parse_fields(from_hash(fields)), lag)
