"""Resolves references against a scope and evaluates conditions with strict typing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowjobs.core.errors import ExpressionError
from flowjobs.core.expressions.nodes import (
    And,
    Boolean,
    Comparison,
    ConditionNode,
    Index,
    Not,
    Null,
    Number,
    Operand,
    Or,
    Path,
    Reference,
    StepRef,
    String,
    TriggerBody,
)
from flowjobs.core.expressions.parser import parse_condition, parse_value
from flowjobs.core.expressions.printer import format_condition_node, json_literal
from flowjobs.core.expressions.scope import MISSING_STEP, ExpressionScope

_MAX_SHOWN = 80


@dataclass(frozen=True)
class ConditionOutcome:
    """The result of evaluating a ``when`` condition, with the trace a skipped step records."""

    expression: str
    resolved: str
    result: bool
    error: str | None = None

    def trace(self) -> dict[str, Any]:
        """``{"expression", "resolved", "result"}`` plus ``"error"`` when evaluation failed."""
        out: dict[str, Any] = {
            "expression": self.expression,
            "resolved": self.resolved,
            "result": self.result,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


# -- references ----------------------------------------------------------------------------------


def _walk(value: Any, path: Path) -> Any:
    # Any segment that does not fit the value's shape yields null rather than an error.
    for segment in path:
        if value is None:
            return None
        if isinstance(segment, Index):
            index = segment.index
            if isinstance(value, list | tuple):
                value = value[index] if index < len(value) else None
            elif isinstance(value, Mapping):
                value = value.get(str(index))
            else:
                return None
        else:
            name = segment.name
            if isinstance(value, Mapping):
                value = value.get(name)
            elif isinstance(value, list | tuple) and name.isascii() and name.isdigit():
                index = int(name)
                value = value[index] if index < len(value) else None
            else:
                return None
    return value


def _copy(value: Any) -> Any:
    # Callers get their own containers so a handler mutating its inputs cannot alter run state.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def resolve_reference(reference: Reference, scope: ExpressionScope) -> Any:
    """The value a reference points at, or ``None`` when anything along the way is missing."""
    if isinstance(reference, StepRef):
        step = scope.steps.get(reference.key, MISSING_STEP)
        if reference.part == "output":
            return _walk(step.output, reference.path)
        return step.status if reference.part == "status" else step.error
    if isinstance(reference, TriggerBody):
        return _walk(scope.body, reference.path)
    path = reference.path
    if not path:
        return dict(scope.trigger_headers or {})
    first = path[0]
    if isinstance(first, Index):
        return None
    name = first.name
    headers = scope.trigger_headers or {}
    value = headers.get(name)
    if value is None:
        value = scope.lowercase_headers.get(name.lower())
    return _walk(value, path[1:])


def resolve_value(text: str, scope: ExpressionScope) -> Any:
    """Resolve one value expression (``@...``) against ``scope``; missing data gives ``None``.

    Raises ``ExpressionError`` when ``text`` does not parse as a value expression.
    """
    return _copy(resolve_reference(parse_value(text).reference, scope))


# -- conditions ----------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _show(value: Any) -> str:
    shown = json_literal(value)
    if len(shown) > _MAX_SHOWN:
        shown = shown[: _MAX_SHOWN - 3] + "..."
    return f"{_type_name(value)} {shown}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(left: Any, op: str, right: Any) -> bool:
    if (_is_number(left) and _is_number(right)) or (isinstance(left, str) and isinstance(right, str)):
        if op == "==":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op == ">":
            return bool(left > right)
        if op == "<":
            return bool(left < right)
        if op == ">=":
            return bool(left >= right)
        return bool(left <= right)
    if op in ("==", "!="):
        if left is None or right is None:
            return (left is right) == (op == "==")
        if isinstance(left, bool) and isinstance(right, bool):
            return (left == right) == (op == "==")
        raise ExpressionError(f"cannot compare {_show(left)} with {_show(right)} using '{op}'")
    raise ExpressionError(
        f"cannot compare {_show(left)} with {_show(right)} using '{op}'; "
        "only numbers with numbers and strings with strings can be ordered"
    )


class _Evaluation:
    """One evaluation: remembers each reference's value so the trace shows what was compared."""

    def __init__(self, scope: ExpressionScope) -> None:
        self.scope = scope
        self.values: dict[int, Any] = {}

    def operand(self, node: Operand) -> Any:
        if isinstance(node, Number | String | Boolean):
            return node.value
        if isinstance(node, Null):
            return None
        value = resolve_reference(node, self.scope)
        self.values[id(node)] = value
        return value

    def truth(self, node: ConditionNode) -> bool:
        if isinstance(node, Comparison):
            return _compare(self.operand(node.left), node.op, self.operand(node.right))
        if isinstance(node, And):
            return all(self.truth(sub) for sub in node.operands)
        if isinstance(node, Or):
            return any(self.truth(sub) for sub in node.operands)
        if isinstance(node, Not):
            return not self.truth(node.operand)
        value = self.operand(node)
        if isinstance(value, bool):
            return value
        shown = format_condition_node(node)
        raise ExpressionError(f"{shown} is {_show(value)}, not a boolean")

    def render(self, reference: Reference) -> str:
        # References skipped by short-circuiting are still resolved so the trace is complete.
        value = (
            self.values[id(reference)]
            if id(reference) in self.values
            else resolve_reference(reference, self.scope)
        )
        return json_literal(value)


def evaluate_condition(text: str, scope: ExpressionScope) -> ConditionOutcome:
    """Evaluate a ``when`` condition; ``&&`` and ``||`` short-circuit.

    Evaluation errors (mismatched types, a non-boolean operand) never raise: the outcome has
    ``result=False`` and ``error`` set. Parse errors raise ``ExpressionError``.
    """
    body = parse_condition(text).body
    evaluation = _Evaluation(scope)
    error: str | None = None
    try:
        result = evaluation.truth(body)
    except ExpressionError as exc:
        result, error = False, exc.message
    resolved = format_condition_node(body, evaluation.render)
    return ConditionOutcome(expression=text, resolved=resolved, result=result, error=error)
