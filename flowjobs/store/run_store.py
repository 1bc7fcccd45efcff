"""``RunStore``: the one store object callers hold, one object per noun over one store context."""

from __future__ import annotations

from flowjobs.store.base import StoreContext
from flowjobs.store.flows import FlowRecords
from flowjobs.store.history import History
from flowjobs.store.metrics import MetricRecords
from flowjobs.store.overdue import OverdueQueries
from flowjobs.store.retention import Retention
from flowjobs.store.runs import RunWrites
from flowjobs.store.signals import SignalRecords
from flowjobs.store.stats import StatsReads


class RunStore:
    """All reads and writes of flowjobs' records in one Redis, under one key prefix: callers name
    the noun they mean (``store.runs.claim``, ``store.history.get_run``)."""

    def __init__(self, context: StoreContext) -> None:
        self.context = context
        self.redis = context.redis
        self.keys = context.keys
        #: Flow records and the manifests runs are pinned to.
        self.flows = FlowRecords(self.context)
        #: The run lifecycle and step transitions.
        self.runs = RunWrites(self.context)
        #: Signal records: delivery and waiters.
        self.signals = SignalRecords(self.context)
        #: Reads of run history.
        self.history = History(self.context)
        #: What the recovery duties look for, and their guarded write.
        self.overdue = OverdueQueries(self.context)
        #: Deleting finished runs past the retention.
        self.retention = Retention(self.context)
        #: The cluster-wide metric counters.
        self.metrics = MetricRecords(self.context)
        #: Reads for per-flow health (runs per hour, durations, slowest steps).
        self.stats = StatsReads(self.context)
