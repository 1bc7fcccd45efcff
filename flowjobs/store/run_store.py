"""``RunStore``: the one store object callers hold, composed of one part per noun."""

from __future__ import annotations

from flowjobs.store.flows import FlowRecords
from flowjobs.store.history import History
from flowjobs.store.metrics import MetricRecords
from flowjobs.store.overdue import OverdueQueries
from flowjobs.store.retention import Retention
from flowjobs.store.runs import RunWrites
from flowjobs.store.signals import SignalRecords


class RunStore(FlowRecords, RunWrites, SignalRecords, History, OverdueQueries, Retention, MetricRecords):
    """All reads and writes of flowjobs' records in one Redis, under one key prefix."""
