"""Built-in polling of a step's output : pure decisions, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flowjobs.core.manifest import PollOptions

_INDEX = re.compile(r"-?[0-9]+")


def output_at(output: Any, path: str | None) -> Any:
    """The value at a dotted path (``result.items.0.state``) of an output; None where it is missing."""
    value = output
    for part in (path or "").split("."):
        if not part:
            continue
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and _INDEX.fullmatch(part) and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


@dataclass(frozen=True)
class PollVerdict:
    """What a poll's output means: done (neither flag), poll ``again``, or a ``failure`` reason."""

    again: bool = False
    failure: str | None = None


def poll_verdict(options: PollOptions, output: Any, attempt: int, elapsed_seconds: float) -> PollVerdict:
    """Done when the condition holds after ``min_attempts`` polls; a failure once another poll would
    end past ``timeout_seconds`` (counted from the first poll); otherwise poll again."""
    met = (
        options.condition_path is None
        or output_at(output, options.condition_path) == options.condition_equals
    )
    if met and attempt >= options.min_attempts:
        return PollVerdict()
    if elapsed_seconds + options.interval_seconds > options.timeout_seconds:
        wanted = (
            f"{options.condition_path} == {options.condition_equals!r}"
            if options.condition_path
            else "the output"
        )
        limit = f"{options.timeout_seconds:g}s"
        reason = f"Polling timed out after {limit}: {wanted} not reached in {attempt} polls."
        return PollVerdict(failure=reason)
    return PollVerdict(again=True)
