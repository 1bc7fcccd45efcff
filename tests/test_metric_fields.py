"""Reading the metrics hash: a step attempt's one field counts into two series, and adds up with
the fields versions before wrote for each."""

from __future__ import annotations

from flowjobs.core.metrics import ATTEMPT_BUCKET, metric_field, parse_fields


def _values(fields: dict[str, str]) -> dict[tuple[str, tuple[str, ...], str | None], float]:
    return {(s.family.name, s.labels, s.bucket): s.value for s in parse_fields(fields)}


def test_an_attempt_bucket_field_counts_the_attempt_and_its_duration() -> None:
    fields = {
        metric_field(ATTEMPT_BUCKET, "f", "a", "Succeeded", "3"): "2",
        metric_field(ATTEMPT_BUCKET, "f", "b", "Succeeded", "3"): "1",
        metric_field(ATTEMPT_BUCKET, "f", "a", "Failed", "5"): "1",
        metric_field("step_duration_seconds", "f", "sum_ms"): "40",
    }
    assert _values(fields) == {
        ("step_attempts", ("f", "a", "Succeeded"), None): 2,
        ("step_attempts", ("f", "b", "Succeeded"), None): 1,
        ("step_attempts", ("f", "a", "Failed"), None): 1,
        ("step_duration_seconds", ("f",), "3"): 3,
        ("step_duration_seconds", ("f",), "5"): 1,
        ("step_duration_seconds", ("f",), "sum_ms"): 40,
    }


def test_fields_written_before_add_up_with_the_attempt_buckets() -> None:
    fields = {
        metric_field("step_attempts", "f", "a", "Succeeded"): "5",
        metric_field("step_duration_seconds", "f", "3"): "5",
        metric_field(ATTEMPT_BUCKET, "f", "a", "Succeeded", "3"): "2",
        metric_field(ATTEMPT_BUCKET, "f", "a"): "9",  # not its shape: left out
    }
    assert _values(fields) == {
        ("step_attempts", ("f", "a", "Succeeded"), None): 7,
        ("step_duration_seconds", ("f",), "3"): 7,
    }
