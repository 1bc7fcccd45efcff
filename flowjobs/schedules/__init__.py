"""The schedules duty: flows' Cron triggers and applications' recurring jobs, fired once per tick
by every worker (and ``flowjobs scheduler``).

The pure parts live in the core (``flowjobs.core.cron``: next fire times and missed ticks;
``flowjobs.core.schedules``: the record and its transitions), the Redis part in the store
(``flowjobs.store.schedules``). Here: ``sync`` derives flow schedules from the flow registry,
``firing`` is the duty.
"""
