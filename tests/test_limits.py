"""Pure tests of flowjobs.core.limits: bounded numbers and the depth/size check of JSON values."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ValidationError

from flowjobs.core.errors import DataTooLarge, InvalidTriggerData
from flowjobs.core.limits import (
    AttemptCount,
    Bounded,
    RunSeconds,
    check_json_limits,
    json_depth,
    number_problem,
)


def nested(depth: int) -> Any:
    """A list nested ``depth`` containers deep (``[[[...]]]``), built without recursion."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# ---------------------------------------------------------------- check_json_limits


def test_a_value_within_the_limits_gives_its_json_text() -> None:
    value = {"order": {"id": 42, "lines": [{"sku": "a", "qty": 2}]}, "note": "ünïcode"}
    text = check_json_limits(value, max_depth=4, max_bytes=1024, what="trigger data")
    assert json.loads(text) == value
    assert text == json.dumps(value)


def test_depth_exactly_at_the_limit_passes_and_one_more_is_refused() -> None:
    assert check_json_limits(nested(64), max_depth=64, max_bytes=10_000, what="data") == "[" * 64 + "]" * 64
    with pytest.raises(DataTooLarge) as info:
        check_json_limits(nested(65), max_depth=64, max_bytes=10_000, what="trigger data")
    assert (info.value.limit, info.value.actual) == (64, 65)
    assert str(info.value) == (
        "trigger data is nested 65 levels deep; the limit is 64 (FLOWJOBS_MAX_DATA_DEPTH)"
    )


def test_very_deep_data_is_a_typed_error_not_a_recursion_error() -> None:
    with pytest.raises(DataTooLarge) as info:
        check_json_limits(nested(5000), max_depth=64, max_bytes=1024 * 1024, what="trigger data")
    assert isinstance(info.value, InvalidTriggerData)
    assert info.value.actual == 5000 and "nested 5000 levels deep" in str(info.value)


def test_dicts_and_lists_both_count_as_levels() -> None:
    value = {"a": [{"b": {"c": [1, 2, {"d": None}]}}]}
    assert json_depth(value, max_nodes=100) == 6
    assert json_depth("scalar", max_nodes=100) == 0
    assert json_depth({}, max_nodes=100) == 1


def test_the_depth_walk_is_iterative() -> None:
    # Far beyond Python's recursion limit: a recursive walk would raise RecursionError.
    assert json_depth(nested(100_000), max_nodes=1_000_000) == 100_000


def test_encoded_size_over_the_limit_is_refused_with_the_actual_size() -> None:
    value = {"blob": "x" * 2000}
    size = len(json.dumps(value))
    with pytest.raises(DataTooLarge) as info:
        check_json_limits(value, max_depth=64, max_bytes=1024, what="trigger data")
    assert (info.value.limit, info.value.actual) == (1024, size)
    assert f"trigger data is {size} bytes as JSON; the limit is 1024 bytes" in str(info.value)


def test_size_counts_utf8_bytes_of_the_json_text() -> None:
    value = "é" * 200  # json.dumps escapes each as \\u00e9: 6 bytes
    assert len(check_json_limits(value, max_depth=1, max_bytes=1202, what="x").encode()) == 1202
    with pytest.raises(DataTooLarge):
        check_json_limits(value, max_depth=1, max_bytes=1201, what="x")


def test_a_huge_number_of_values_stops_the_walk_at_the_byte_limit() -> None:
    # Every value takes at least one byte of JSON: more values than bytes cannot fit.
    with pytest.raises(DataTooLarge) as info:
        check_json_limits([0] * 5000, max_depth=64, max_bytes=1024, what="trigger data")
    assert "larger than the limit of 1024 bytes" in str(info.value) and info.value.limit == 1024
    assert json_depth([0] * 5000, max_nodes=1024) is None


def test_values_that_are_not_json_raise_what_json_dumps_raises() -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        check_json_limits(circular, max_depth=64, max_bytes=1024, what="x")
    with pytest.raises(ValueError):
        check_json_limits({"x": float("nan")}, max_depth=64, max_bytes=1024, what="x")
    with pytest.raises(TypeError):
        check_json_limits({"x": object()}, max_depth=64, max_bytes=1024, what="x")


def test_a_shared_container_is_not_a_cycle() -> None:
    shared = [1, 2]
    assert check_json_limits([shared, shared], max_depth=2, max_bytes=100, what="x") == "[[1, 2], [1, 2]]"


# ---------------------------------------------------------------- Bounded


class Knobs(BaseModel):
    ratio: Annotated[float, Bounded(0, 10, exclusive_minimum=True)] = 1.0
    count: Annotated[int, Bounded(1, 5)] = 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ratio", float("inf"), "must be a finite number > 0 and <= 10"),
        ("ratio", float("-inf"), "must be a finite number > 0 and <= 10"),
        ("ratio", float("nan"), "must be a finite number > 0 and <= 10"),
        ("ratio", 10.5, "must be a finite number > 0 and <= 10"),
        ("ratio", 0, "must be a finite number > 0 and <= 10"),
        ("ratio", "inf", "must be a finite number > 0 and <= 10"),
        ("count", 0, "must be an integer >= 1 and <= 5"),
        ("count", 6, "must be an integer >= 1 and <= 5"),
        ("count", float("inf"), "must be an integer >= 1 and <= 5"),
    ],
)
def test_bounded_refuses_with_one_message_naming_both_bounds(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Knobs.model_validate({field: value})
    [error] = info.value.errors()
    assert error["loc"] == (field,) and error["msg"] == message


def test_bounded_accepts_the_bounds_and_keeps_other_errors() -> None:
    assert Knobs(ratio=10, count=5) == Knobs.model_validate({"ratio": "10", "count": 5})
    with pytest.raises(ValidationError) as info:
        Knobs.model_validate({"count": "many"})
    assert info.value.errors()[0]["type"] == "int_parsing"


def test_bounded_needs_a_number_type() -> None:
    with pytest.raises(TypeError, match="Bounded applies to int and float"):

        class Wrong(BaseModel):
            name: Annotated[str, Bounded(0, 1)] = ""


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (600, None),
        (0.5, None),
        (2_592_000, None),
        (2_592_001, "must be a finite number > 0 and <= 2592000"),
        (1e12, "must be a finite number > 0 and <= 2592000"),
        (float("inf"), "must be a finite number > 0 and <= 2592000"),
        (0, "must be a finite number > 0 and <= 2592000"),
        (-5, "must be a finite number > 0 and <= 2592000"),
        (True, "must be a valid number"),
        ("600", "must be a valid number"),
        (None, "must be a valid number"),
    ],
)
def test_number_problem_is_strict(value: Any, problem: str | None) -> None:
    assert number_problem(value, RunSeconds) == problem


def test_number_problem_of_an_integer_bound() -> None:
    assert number_problem(10_000, AttemptCount) is None
    assert number_problem(10_001, AttemptCount) == "must be an integer >= 1 and <= 10000"
