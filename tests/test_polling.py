"""Pure tests of flowjobs.core.polling: output paths and poll decisions; no Redis."""

from __future__ import annotations

from typing import Any

import pytest

from flowjobs.core.manifest import PollOptions
from flowjobs.core.polling import PollVerdict, output_at, poll_verdict

OUTPUT = {
    "state": "done",
    "count": 0,
    "flag": False,
    "nothing": None,
    "result": {"items": [{"state": "a"}, {"state": "b"}, {"state": "c"}], "meta": {"page": 2}},
    "0": "key zero",
}

DONE = PollVerdict()
AGAIN = PollVerdict(again=True)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("state", "done"),
        ("count", 0),
        ("flag", False),
        ("nothing", None),
        ("result.meta.page", 2),
        ("result.meta", {"page": 2}),
        ("result.items.0.state", "a"),
        ("result.items.2.state", "c"),
        ("result.items.-1.state", "c"),
        ("result.items.-3.state", "a"),
        ("result.items.1", {"state": "b"}),
        ("0", "key zero"),  # a digit on a dict is a key
        ("result..meta.page", 2),  # empty segments are ignored
        # Missing → None
        ("missing", None),
        ("result.missing.page", None),
        ("result.items.3.state", None),
        ("result.items.-4.state", None),
        ("result.items.first", None),
        ("result.items.1.state.deeper", None),  # indexing into a string
        ("count.x", None),  # indexing into a number
        ("nothing.x", None),
        ("result.items.--1", None),  # not an index
        ("result.items.+1", None),
        ("result.items.1.5", None),
    ],
)
def test_output_at_paths(path: str, expected: Any) -> None:
    assert output_at(OUTPUT, path) == expected


@pytest.mark.parametrize("path", [None, "", "."])
def test_output_at_empty_path_is_the_whole_output(path: str | None) -> None:
    assert output_at(OUTPUT, path) is OUTPUT
    assert output_at([1, 2], path) == [1, 2]
    assert output_at(None, path) is None


def test_output_at_on_a_top_level_list_and_scalars() -> None:
    assert output_at([10, 20, 30], "0") == 10
    assert output_at([10, 20, 30], "-1") == 30
    assert output_at([10, 20, 30], "3") is None
    assert output_at([], "0") is None
    assert output_at([], "-1") is None
    assert output_at("text", "0") is None
    assert output_at(None, "state") is None
    assert output_at(5, "state") is None


def _options(**overrides: Any) -> PollOptions:
    base: dict[str, Any] = {
        "interval_seconds": 2,
        "timeout_seconds": 10,
        "condition_path": "status",
        "condition_equals": "ready",
    }
    return PollOptions(**{**base, **overrides})


def test_condition_met_is_done() -> None:
    verdict = poll_verdict(_options(), {"status": "ready"}, attempt=1, elapsed_seconds=0)
    assert verdict == DONE
    assert verdict.again is False and verdict.failure is None


def test_condition_not_met_polls_again() -> None:
    assert poll_verdict(_options(), {"status": "busy"}, attempt=1, elapsed_seconds=0) == AGAIN
    assert poll_verdict(_options(), {}, attempt=3, elapsed_seconds=5) == AGAIN
    assert poll_verdict(_options(), None, attempt=1, elapsed_seconds=0) == AGAIN


def test_condition_uses_the_path_and_exact_equality() -> None:
    options = _options(condition_path="result.items.-1.state", condition_equals=3)
    assert poll_verdict(options, {"result": {"items": [{"state": 1}, {"state": 3}]}}, 1, 0) == DONE
    assert poll_verdict(options, {"result": {"items": [{"state": 3}, {"state": 1}]}}, 1, 0) == AGAIN
    assert poll_verdict(options, {"result": {"items": [{"state": "3"}]}}, 1, 0) == AGAIN
    assert poll_verdict(options, {"result": {"items": []}}, 1, 0) == AGAIN


def test_without_a_condition_path_any_output_ends_the_polling() -> None:
    options = _options(condition_path=None, condition_equals=None)
    assert poll_verdict(options, {"anything": 1}, attempt=1, elapsed_seconds=0) == DONE
    assert poll_verdict(options, None, attempt=1, elapsed_seconds=0) == DONE


def test_min_attempts_holds_off_a_met_condition() -> None:
    options = _options(min_attempts=3)
    ready = {"status": "ready"}
    assert poll_verdict(options, ready, attempt=1, elapsed_seconds=0) == AGAIN
    assert poll_verdict(options, ready, attempt=2, elapsed_seconds=2) == AGAIN
    assert poll_verdict(options, ready, attempt=3, elapsed_seconds=4) == DONE
    assert poll_verdict(options, ready, attempt=4, elapsed_seconds=6) == DONE
    assert poll_verdict(options, {"status": "busy"}, attempt=3, elapsed_seconds=4) == AGAIN


def test_timeout_edge_another_poll_ending_exactly_at_the_timeout_is_allowed() -> None:
    busy = {"status": "busy"}
    # elapsed + interval == timeout: one more poll still fits.
    assert poll_verdict(_options(), busy, attempt=4, elapsed_seconds=8) == AGAIN
    # Just past it: the step fails.
    late = poll_verdict(_options(), busy, attempt=5, elapsed_seconds=8.001)
    assert late.again is False
    assert late.failure == "Polling timed out after 10s: status == 'ready' not reached in 5 polls."


def test_timeout_failure_reason_names_limit_condition_and_polls() -> None:
    options = _options(
        timeout_seconds=0.5, interval_seconds=0.2, condition_path="job.state", condition_equals=7
    )
    verdict = poll_verdict(options, {"job": {"state": 6}}, attempt=2, elapsed_seconds=0.4)
    assert verdict == PollVerdict(
        failure="Polling timed out after 0.5s: job.state == 7 not reached in 2 polls."
    )
    assert verdict.again is False


def test_timeout_while_min_attempts_unmet_fails_and_names_the_output_without_a_path() -> None:
    options = _options(condition_path=None, min_attempts=5)
    verdict = poll_verdict(options, {"x": 1}, attempt=2, elapsed_seconds=9)
    assert verdict.failure == "Polling timed out after 10s: the output not reached in 2 polls."
    assert verdict.again is False


def test_a_met_condition_wins_over_the_timeout() -> None:
    assert poll_verdict(_options(), {"status": "ready"}, attempt=9, elapsed_seconds=100) == DONE


def test_default_options() -> None:
    options = PollOptions()
    assert (options.interval_seconds, options.timeout_seconds, options.min_attempts) == (5.0, 300.0, 1)
    assert poll_verdict(options, None, attempt=1, elapsed_seconds=0) == DONE
    options = PollOptions.model_validate(
        {
            "intervalSeconds": 1,
            "timeoutSeconds": 3,
            "minAttempts": 2,
            "conditionPath": "s",
            "conditionEquals": 1,
        }
    )
    assert poll_verdict(options, {"s": 1}, attempt=1, elapsed_seconds=0) == AGAIN
    assert poll_verdict(options, {"s": 1}, attempt=2, elapsed_seconds=1) == DONE
    assert poll_verdict(options, {"s": 0}, attempt=2, elapsed_seconds=2.5).failure is not None
