"""Cron arithmetic, free of Redis: next fire times and what a due schedule fires after a downtime.

Every instant is a timezone-aware UTC datetime. A schedule's expression is read in its time zone
(``timeZone``, an IANA name; UTC by default) by ``croniter`` over ``zoneinfo``, which handles the
daylight-saving changes: a wall time skipped in spring fires at the first instant after the gap
(02:30 on a 02:00→03:00 night fires at 03:00), a wall time repeated in autumn fires at both
occurrences. Five fields are minute precision; a sixth field is seconds (``* * * * * */10``).

An expression must fire within ``HORIZON_YEARS`` of any instant it is asked about: one that parses
but names a date no calendar has (``0 0 30 2 *``, ``30 2 31 4 *``) or only years past is
``InvalidCron``, refused when it comes in and reported by the duty for one stored before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from flowjobs.core.errors import InvalidCron

#: How far from an instant an expression's next (or previous) tick may be: the longest gap between
#: two leap days (2096-02-29 to 2104-02-29), so ``0 0 29 2 *`` always passes.
HORIZON_YEARS = 8


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


def check_cron(expression: object, time_zone: str | None, now: datetime) -> str:
    """``expression`` if croniter reads it, the zone exists and it fires within ``HORIZON_YEARS``
    after ``now``; else ``InvalidCron``."""
    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise InvalidCron(f"cronExpression {expression!r} does not parse")
    next_fire(expression, now, time_zone)
    return expression


def next_fire(expression: str, after: datetime, time_zone: str | None = None) -> datetime:
    """The first tick strictly after ``after``, in UTC; ``InvalidCron`` if none is within
    ``HORIZON_YEARS``."""
    return _tick(expression, after, time_zone, backwards=False)


def latest_tick(expression: str, at: datetime, time_zone: str | None = None) -> datetime:
    """The last tick at or before ``at``, in UTC; ``InvalidCron`` if none is within
    ``HORIZON_YEARS``."""
    # croniter works in whole seconds and its get_prev is strict: start just after ``at``'s second.
    return _tick(expression, at.replace(microsecond=0) + timedelta(seconds=1), time_zone, backwards=True)


def _tick(expression: str, start: datetime, time_zone: str | None, *, backwards: bool) -> datetime:
    """croniter's next (or previous) tick from ``start``, searched ``HORIZON_YEARS`` far."""
    local = start.astimezone(zone(time_zone))
    try:
        found = croniter(expression, local, max_years_between_matches=HORIZON_YEARS)
        moment: datetime = found.get_prev(datetime) if backwards else found.get_next(datetime)
    except CroniterError as error:
        side = "before" if backwards else "after"
        raise InvalidCron(
            f"cronExpression {expression!r} never fires: no tick in the {HORIZON_YEARS} years {side} "
            f"{local:%Y-%m-%d %H:%M:%S %Z} (a day its months do not have, such as 30 February?)"
        ) from error
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
