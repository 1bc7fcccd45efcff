"""The cluster-wide metrics flowjobs keeps in Redis: their names, labels and histogram buckets.

The Lua scripts that make a transition count it in one hash (``Keys.metrics``) in the same call,
so every process reads the same figures and none are lost with a process. A field is
``<family>`` and its label values joined by ``FIELD_SEPARATOR``; a histogram observation adds 1 to
the field of the first bucket whose bound holds it (``<family>|<labels>|<bucket index, 1-based>``,
the index past the last bound meaning +Inf) and the whole milliseconds to ``<family>|<labels>|sum_ms``
(an integer, so HINCRBY; versions before kept float seconds in ``...|sum``, still read).
A step attempt with a duration is counted in one field for two series (``ATTEMPT_BUCKET``), so its
end costs one HINCRBY less; fields written before (``step_attempts|...`` and the duration's
buckets apart) still read, and add up with these.
Labels are flow names, step keys, statuses and outcomes: never run or job ids, so the number of
series is bounded by the flows deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Joins a field's family and label values (a control character no flow or step name holds).
FIELD_SEPARATOR = "\x1f"

#: Upper bounds (seconds) of the run and step duration histograms: milliseconds to hours.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400,
)  # fmt: skip


@dataclass(frozen=True)
class Family:
    """One metric family kept in Redis: its name (without ``flowjobs_``), labels and help."""

    name: str
    labels: tuple[str, ...]
    help: str
    histogram: bool = False


FAMILIES: tuple[Family, ...] = (
    Family("runs_started", ("flow",), "Runs that moved from Pending to Running."),
    Family("runs_finished", ("flow", "status"), "Runs closed, by final status (a retried run closes again)."),
    Family("step_attempts", ("flow", "step", "outcome"), "Step attempts ended, by outcome."),
    Family("step_retries", ("flow", "step"), "Failed attempts followed by a retry."),
    Family("step_timeouts", ("flow", "step"), "Attempts whose handler ran past the step's timeout."),
    Family("lease_expiries", ("flow", "step"), "Attempts recovered after their worker's lease expired."),
    Family(
        "recoveries",
        ("kind",),
        "Repairs by the recovery duties: lost_job, lost_trigger (requeued), replanned (idle run). "
        "Expired leases count in lease_expiries, timed-out runs in runs_finished.",
    ),
    Family("webhook_deliveries", ("flow", "outcome"), "Webhook deliveries, by HTTP outcome."),
    Family("run_duration_seconds", ("flow",), "Run time from trigger to close.", histogram=True),
    Family("step_duration_seconds", ("flow",), "Step attempt time from claim to outcome.", histogram=True),
)

BY_NAME = {family.name: family for family in FAMILIES}

#: ``<ATTEMPT_BUCKET>|<flow>|<step>|<outcome>|<bucket index>``: one step attempt, read as
#: ``step_attempts{flow, step, outcome}`` + 1 and ``step_duration_seconds{flow}`` bucket + 1 (its
#: ``sum_ms`` stays a field of its own). Not a family: never exposed under this name.
ATTEMPT_BUCKET = "step_attempt_bucket"


def metric_field(family: str, *labels: str) -> str:
    """The hash field of one counter series (as the Lua helpers spell it)."""
    return FIELD_SEPARATOR.join((family, *labels))


@dataclass(frozen=True)
class Series:
    """One counter value read back from the metrics hash."""

    family: Family
    labels: tuple[str, ...]
    value: float
    bucket: str | None = None
    """For histograms: the 1-based bucket index, ``"sum_ms"`` (milliseconds) or ``"sum"`` (seconds,
    written by versions before); None for counters."""


def parse_fields(fields: dict[str, str]) -> list[Series]:
    """The series of a metrics hash, each (family, labels, bucket) once: fields that count into the
    same series add up (``ATTEMPT_BUCKET``). Fields of unknown families or shapes are left out (a
    newer flowjobs may have written them)."""
    totals: dict[tuple[Family, tuple[str, ...], str | None], float] = {}

    def add(family: Family, labels: tuple[str, ...], value: float, bucket: str | None = None) -> None:
        totals[family, labels, bucket] = totals.get((family, labels, bucket), 0.0) + value

    for field, raw in fields.items():
        name, *rest = field.split(FIELD_SEPARATOR)
        try:
            value = float(raw)
        except ValueError:
            continue
        if name == ATTEMPT_BUCKET:
            if len(rest) == 4:
                flow, step, outcome, bucket = rest
                add(BY_NAME["step_attempts"], (flow, step, outcome), value)
                add(BY_NAME["step_duration_seconds"], (flow,), value, bucket)
            continue
        family = BY_NAME.get(name)
        if family is None:
            continue
        width = len(family.labels) + (1 if family.histogram else 0)
        if len(rest) != width:
            continue
        if family.histogram:
            add(family, tuple(rest[:-1]), value, rest[-1])
        else:
            add(family, tuple(rest), value)
    return [Series(family, labels, value, bucket) for (family, labels, bucket), value in totals.items()]


def metric_constants() -> str:
    """Lua constants the scripts' metric helpers use (prepended to ``common.lua``): the bucket
    bounds in milliseconds, as the scripts observe durations."""
    bounds = ", ".join(repr(float(b) * 1000) for b in DURATION_BUCKETS)
    # Lua 5.1 strings know decimal escapes only.
    separator = f"'\\{ord(FIELD_SEPARATOR)}'"
    return (
        f"local METRIC_BUCKETS = {{{bounds}}}\nlocal METRIC_SEPARATOR = {separator}\n"
        f"local METRIC_ATTEMPT_BUCKET = '{ATTEMPT_BUCKET}'\n"
    )
