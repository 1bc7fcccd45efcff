"""Finds expressions inside step inputs (dicts and lists) to resolve, list their steps, or report problems."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flowjobs.core.errors import ExpressionError
from flowjobs.core.expressions.evaluator import resolve_value
from flowjobs.core.expressions.nodes import (
    And,
    Comparison,
    ConditionNode,
    Not,
    Or,
    Reference,
    StepRef,
    TriggerBody,
)
from flowjobs.core.expressions.parser import parse_condition, parse_value
from flowjobs.core.expressions.scope import ExpressionScope


def is_expression(value: object) -> bool:
    """True for a string whose first non-space character is ``@``."""
    return isinstance(value, str) and value.lstrip().startswith("@")


def resolve_inputs(inputs: Any, scope: ExpressionScope) -> Any:
    """Resolve every expression found recursively in dicts and lists; other values come back as they were.

    Containers are rebuilt, so ``inputs`` is never mutated. Raises ``ExpressionError`` when an
    expression does not parse.
    """
    if isinstance(inputs, str):
        return resolve_value(inputs, scope) if inputs.lstrip().startswith("@") else inputs
    if isinstance(inputs, Mapping):
        return {key: resolve_inputs(value, scope) for key, value in inputs.items()}
    if isinstance(inputs, list | tuple):
        return [resolve_inputs(value, scope) for value in inputs]
    return inputs


def _expressions(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """``(location, text)`` for every expression string inside ``value``."""
    if isinstance(value, str):
        if is_expression(value):
            yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _expressions(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _expressions(item, f"{where}[{index}]")


def _condition_references(node: ConditionNode) -> Iterator[Reference]:
    if isinstance(node, Or | And):
        for sub in node.operands:
            yield from _condition_references(sub)
    elif isinstance(node, Not):
        yield from _condition_references(node.operand)
    elif isinstance(node, Comparison):
        yield from _condition_references(node.left)
        yield from _condition_references(node.right)
    elif isinstance(node, Reference):
        yield node


def referenced_steps(inputs_or_text: Any) -> set[str]:
    """Step keys referenced by the expressions in a value, or by a condition string.

    A top-level string is read as a ``when`` condition (a lone ``@`` reference is one too);
    strings nested in dicts and lists count only when they are expressions. Text that does not
    parse references nothing here: ``expression_problems`` reports it.
    """
    keys: set[str] = set()
    if isinstance(inputs_or_text, str):
        try:
            body = parse_condition(inputs_or_text).body
        except ExpressionError:
            return keys
        keys.update(ref.key for ref in _condition_references(body) if isinstance(ref, StepRef))
        return keys
    for _, text in _expressions(inputs_or_text, ""):
        try:
            reference = parse_value(text).reference
        except ExpressionError:
            continue
        if isinstance(reference, StepRef):
            keys.add(reference.key)
    return keys


def reads_trigger_body(inputs: Any) -> bool:
    """True when an expression in ``inputs`` (dicts and lists, as for ``resolve_inputs``) reads
    ``@triggerBody()``; expressions that do not parse read nothing."""
    for _, text in _expressions(inputs, ""):
        try:
            if isinstance(parse_value(text).reference, TriggerBody):
                return True
        except ExpressionError:
            continue
    return False


def expression_problems(inputs: Any, *, condition: str | None = None) -> list[str]:
    """Parse problems of every expression in ``inputs`` and of ``condition``; ``[]`` when all parse.

    Each message names where the expression sits, the problem, its position and the expression.
    """
    problems: list[str] = []
    for where, text in _expressions(inputs, ""):
        try:
            parse_value(text)
        except ExpressionError as exc:
            problems.append(f"input {where or '(value)'}: {exc}")
    if condition is not None:
        try:
            parse_condition(condition)
        except ExpressionError as exc:
            problems.append(f"when: {exc}")
    return problems
