"""Every numeric bound of flowjobs in one place, and the check of JSON values against size limits.

Numbers in manifests and settings are declared with :class:`Bounded`, so infinity, NaN and
absurd values (which later overflow ``timedelta`` or ``int``) are refused where they are read,
with a message naming the field and the limit. Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, TypeAdapter, ValidationError, ValidatorFunctionWrapHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from flowjobs.core.errors import DataTooLarge

DAY_SECONDS = 86400

#: Step timeouts, poll interval and timeout, retry backoff delays.
MAX_STEP_SECONDS = 7 * DAY_SECONDS
#: Run deadlines (``runTimeoutSeconds``, ``FLOWJOBS_RUN_TIMEOUT_SECONDS``) and WaitForSignal timeouts.
MAX_RUN_SECONDS = 30 * DAY_SECONDS
#: Retry ``max_attempts`` and poll ``min_attempts`` (a retry every minute for a week stays under it).
MAX_ATTEMPTS = 10_000
#: Retry ``backoff_factor``.
MAX_BACKOFF_FACTOR = 100
#: ForEach ``concurrency_limit``.
MAX_CONCURRENCY = 10_000
#: ``FLOWJOBS_RETENTION_DAYS``.
MAX_RETENTION_DAYS = 3650
#: ``FLOWJOBS_CLAIM_LEASE_SECONDS`` and ``FLOWJOBS_RECOVERY_INTERVAL_SECONDS``.
MAX_PROCESS_INTERVAL_SECONDS = 3600

#: Default and upper bound of ``FLOWJOBS_MAX_DATA_DEPTH``. The bound stays well under Python's
#: recursion limit, which the JSON codec and the expression resolver are subject to.
DEFAULT_MAX_DATA_DEPTH = 64
MAX_DATA_DEPTH = 256
#: Default and bounds of ``FLOWJOBS_MAX_RUN_EVENTS`` (events kept per run, the latest ones).
DEFAULT_MAX_RUN_EVENTS = 1000
MIN_RUN_EVENTS = 10
MAX_RUN_EVENTS = 100_000
#: Default and bounds of ``FLOWJOBS_MAX_DATA_BYTES``.
DEFAULT_MAX_DATA_BYTES = 1024 * 1024
MIN_DATA_BYTES = 1024
MAX_DATA_BYTES = 64 * 1024 * 1024

# pydantic error types that mean "a number, but outside the bounds": reworded to name the bounds.
_RANGE_ERRORS = frozenset({"finite_number", "greater_than", "greater_than_equal", "less_than_equal"})


@dataclass(frozen=True)
class Bounded:
    """``Annotated`` metadata for an ``int`` or ``float``: finite and within ``[minimum, maximum]``
    (``(minimum, maximum]`` with ``exclusive_minimum``).

    The bounds are pydantic's own constraints (``ge``/``gt``, ``le``, ``allow_inf_nan=False``);
    a value outside them gets one message naming both bounds, e.g. "must be a finite number > 0
    and <= 604800".
    """

    minimum: float
    maximum: float
    exclusive_minimum: bool = False

    def describe(self, kind: str = "float") -> str:
        """The accepted range in words, for an ``int`` or ``float`` field."""
        low = ">" if self.exclusive_minimum else ">="
        noun = "an integer" if kind == "int" else "a finite number"
        return f"{noun} {low} {_number(self.minimum)} and <= {_number(self.maximum)}"

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema: dict[str, Any] = dict(handler(source))
        kind = schema.get("type")
        if kind not in ("int", "float"):
            raise TypeError(f"Bounded applies to int and float, not {source!r}")
        schema["gt" if self.exclusive_minimum else "ge"] = self.minimum
        schema["le"] = self.maximum
        if kind == "float":
            schema["allow_inf_nan"] = False
        message = f"must be {self.describe(kind)}"

        def explain(value: Any, validate: ValidatorFunctionWrapHandler) -> Any:
            try:
                return validate(value)
            except ValidationError as error:
                if any(item["type"] in _RANGE_ERRORS for item in error.errors()):
                    raise PydanticCustomError("out_of_bounds", message) from None
                raise

        return core_schema.no_info_wrap_validator_function(explain, schema)


#: A delay in seconds (0 allowed), at most 7 days.
Delay = Annotated[float, Bounded(0, MAX_STEP_SECONDS)]
#: A step-level duration in seconds: > 0, at most 7 days.
StepSeconds = Annotated[float, Bounded(0, MAX_STEP_SECONDS, exclusive_minimum=True)]
#: A run-level duration in seconds: > 0, at most 30 days.
RunSeconds = Annotated[float, Bounded(0, MAX_RUN_SECONDS, exclusive_minimum=True)]
#: A lease or a process period in seconds: > 0, at most an hour.
ProcessSeconds = Annotated[float, Bounded(0, MAX_PROCESS_INTERVAL_SECONDS, exclusive_minimum=True)]
#: A count of attempts: 1 to 10,000.
AttemptCount = Annotated[int, Bounded(1, MAX_ATTEMPTS)]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_json_limits(value: Any, *, max_depth: int, max_bytes: int, what: str) -> str:
    """The JSON text of ``value``, once it is known to nest at most ``max_depth`` containers deep
    and to encode to at most ``max_bytes`` bytes; ``DataTooLarge`` names the limit and the actual
    depth or size. ``what`` names the value in messages ("trigger data").

    The depth is measured by an iterative walk before encoding, so a deep value never reaches the
    recursive JSON encoder. ``TypeError``/``ValueError`` (as ``json.dumps`` raises them) when the
    value is not JSON: not serialisable, NaN or infinite, or circular.
    """
    depth = json_depth(value, max_nodes=max_bytes)
    if depth is None:
        raise DataTooLarge(
            f"{what} is larger than the limit of {max_bytes} bytes (FLOWJOBS_MAX_DATA_BYTES): "
            f"it holds more than {max_bytes} values",
            limit=max_bytes,
            actual=max_bytes + 1,
        )
    if depth > max_depth:
        raise DataTooLarge(
            f"{what} is nested {depth} levels deep; the limit is {max_depth} (FLOWJOBS_MAX_DATA_DEPTH)",
            limit=max_depth,
            actual=depth,
        )
    text = json.dumps(value, allow_nan=False)
    size = len(text.encode())
    if size > max_bytes:
        raise DataTooLarge(
            f"{what} is {size} bytes as JSON; the limit is {max_bytes} bytes (FLOWJOBS_MAX_DATA_BYTES)",
            limit=max_bytes,
            actual=size,
        )
    return text


def json_depth(value: Any, *, max_nodes: int) -> int | None:
    """How many containers (dicts, lists, tuples) deep ``value`` nests: 0 for a scalar.

    None once more than ``max_nodes`` values were seen: each value takes at least one byte of
    JSON, so the walk's cost is bounded by the byte limit it serves. ``ValueError`` on a circular
    reference. Iterative, so any depth is safe to measure.
    """
    deepest = 0
    nodes = 0
    frames: list[Iterator[Any]] = [iter((value,))]
    path: list[int] = []  # ids of the containers being walked, outermost first
    on_path: set[int] = set()
    while frames:
        child = next(frames[-1], _END)
        if child is _END:
            frames.pop()
            if path:
                on_path.discard(path.pop())
            continue
        nodes += 1
        if nodes > max_nodes:
            return None
        if isinstance(child, dict):
            children: Iterator[Any] = iter(child.values())
        elif isinstance(child, list | tuple):
            children = iter(child)
        else:
            continue
        if id(child) in on_path:
            raise ValueError("Circular reference detected")
        path.append(id(child))
        on_path.add(id(child))
        frames.append(children)
        deepest = max(deepest, len(path))
    return deepest


_END = object()


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def number_problem(value: Any, annotation: Any) -> str | None:
    """Why ``value`` is not a number that ``annotation`` (``RunSeconds``, …) accepts, or None.

    Strict: a bool or a numeric string is not a number. For values read outside a pydantic model,
    such as an input of a step or a key of the trigger data.
    """
    try:
        _adapter(annotation).validate_python(value, strict=True)
    except ValidationError as error:
        return str(error.errors()[0]["msg"]).replace("Input should be", "must be")
    return None
