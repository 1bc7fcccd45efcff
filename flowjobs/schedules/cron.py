"""Cron arithmetic, free of Redis: next fire times and what a due schedule fires after a downtime.

Every instant is a timezone-aware UTC datetime. A schedule's expression is read in its time zone
(``timeZone``, an IANA name; UTC by default) by ``croniter`` over ``zoneinfo``, which handles the
daylight-saving changes: a wall time skipped in spring fires at the first instant after the gap
(02:30 on a 02:00→03:00 night fires at 03:00), a wall time repeated in autumn fires at both
occurrences. Five fields are minute precision; a sixth field is seconds (``* * * * * */10``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from flowjobs.errors import InvalidCron


def zone(time_zone: str | None) -> ZoneInfo:
    """The zone a schedule's expression is read in; ``InvalidCron`` for an unknown name."""
    try:
        return ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InvalidCron(f"unknown time zone {time_zone!r}") from error


def known_zone(time_zone: str) -> bool:
    """Whether ``zoneinfo`` knows the IANA zone name."""
    try:
        zone(time_zone)
    except InvalidCron:
        return False
    return True


def check_cron(expression: object, time_zone: str | None = None) -> str:
    """``expression`` if croniter reads it (and the zone exists); else ``InvalidCron``."""
    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise InvalidCron(f"cron expression {expression!r} does not parse")
    zone(time_zone)
    return expression


def next_fire(expression: str, after: datetime, time_zone: str | None = None) -> datetime:
    """The first tick strictly after ``after``, in UTC."""
    moment: datetime = croniter(expression, after.astimezone(zone(time_zone))).get_next(datetime)
    return moment.astimezone(UTC)


def latest_tick(expression: str, at: datetime, time_zone: str | None = None) -> datetime:
    """The last tick at or before ``at``, in UTC."""
    # croniter works in whole seconds and its get_prev is strict: start just after ``at``'s second.
    start = at.replace(microsecond=0) + timedelta(seconds=1)
    moment: datetime = croniter(expression, start.astimezone(zone(time_zone))).get_prev(datetime)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class FirePlan:
    """What one pass does with a due schedule."""

    tick: datetime | None
    """The tick to fire (the latest one due), or None when it is older than the grace window."""
    next_fire: datetime
    """The schedule's next fire time after this pass (always after ``now``)."""
    skipped: int
    """Earlier due ticks not fired (capped at ``MAX_COUNTED``): a downtime fires once, not a storm."""


#: Missed ticks counted for the log; a per-second schedule down for a day is not iterated through.
MAX_COUNTED = 1000


def plan_fire(
    expression: str,
    time_zone: str | None,
    due: datetime,
    now: datetime,
    grace_seconds: float,
) -> FirePlan:
    """Which tick a schedule due at ``due`` fires at ``now``, and its next fire time.

    The latest tick at or before ``now`` fires if it is at most ``grace_seconds`` old, whatever
    number of ticks were missed before it (they are skipped, never replayed); past the grace
    window nothing fires. A tick before ``due`` never fires: ``due`` is the first tick the
    schedule owes (computed when it was created or its expression changed).
    """
    following = next_fire(expression, now, time_zone)
    if due > now:
        return FirePlan(None, due, 0)
    tick = latest_tick(expression, now, time_zone)
    if tick < due:
        return FirePlan(None, following, 0)
    skipped = _count_ticks(expression, time_zone, due, tick)
    if (now - tick).total_seconds() > grace_seconds:
        return FirePlan(None, following, skipped + 1)
    return FirePlan(tick, following, skipped)


def _count_ticks(expression: str, time_zone: str | None, first: datetime, before: datetime) -> int:
    """Ticks from ``first`` (included) to ``before`` (excluded), at most ``MAX_COUNTED``."""
    count = 0
    moment = first
    while moment < before and count < MAX_COUNTED:
        count += 1
        moment = next_fire(expression, moment, time_zone)
    return count
