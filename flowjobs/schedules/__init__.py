"""Cron schedules: flows' Cron triggers and applications' recurring jobs, fired once per tick by a
duty every worker (and ``flowjobs scheduler``) runs.

``cron`` (next fire times, missed ticks) and ``state`` (the record and its transitions) are pure;
``store`` keeps states in Redis, changing each atomically; ``sync`` derives flow schedules from the
flow registry; ``recurring`` fires an application's recurring job; ``firing`` is the duty.
"""

from flowjobs.schedules.state import Fired, ScheduleKind, ScheduleState, flow_schedule_id
from flowjobs.schedules.store import ScheduleStore

__all__ = ["Fired", "ScheduleKind", "ScheduleState", "ScheduleStore", "flow_schedule_id"]
