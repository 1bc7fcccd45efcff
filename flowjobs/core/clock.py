"""UTC time in the three forms flowjobs stores: aware datetimes, ISO text and epoch numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    """Timezone-aware now, in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 text of an aware datetime, as stored in Redis hashes."""
    return moment.astimezone(UTC).isoformat()


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch (lease and due-time scores)."""
    return int(moment.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    """The aware UTC datetime of ``epoch_ms`` (exact: no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def epoch_score(moment: datetime) -> float:
    """Seconds since the epoch with microseconds: the ``started_at`` score of the run indexes."""
    return round(moment.timestamp(), 6)
