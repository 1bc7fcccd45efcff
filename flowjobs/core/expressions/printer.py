"""Canonical printer: turns any expression node back into text that parses to the same tree."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flowjobs.core.expressions.nodes import (
    And,
    Boolean,
    Comparison,
    Condition,
    ConditionNode,
    Field,
    Index,
    Key,
    Node,
    Not,
    Null,
    Number,
    Or,
    Path,
    Reference,
    StepRef,
    String,
    TriggerBody,
    TriggerHeaders,
    ValueExpression,
)

ReferenceRenderer = Callable[[Reference], str]

_SINGLE_QUOTE_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def quote_single(text: str) -> str:
    """Single-quoted literal as written in ``steps('key')`` and ``['name']``."""
    out = []
    for ch in text:
        escaped = _SINGLE_QUOTE_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def json_literal(value: Any) -> str:
    """``value`` as a JSON literal for traces; falls back to ``repr`` for what JSON cannot hold."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def format_path(path: Path) -> str:
    """Path segments in canonical spelling."""
    parts = []
    for segment in path:
        if isinstance(segment, Field):
            parts.append(("?." if segment.optional else ".") + segment.name)
        elif isinstance(segment, Key):
            parts.append(f"[{quote_single(segment.name)}]")
        else:
            parts.append(f"[{segment.index}]")
    return "".join(parts)


def format_reference(reference: Reference) -> str:
    """A reference with its leading ``@``."""
    if isinstance(reference, TriggerBody):
        return "@triggerBody()" + format_path(reference.path)
    if isinstance(reference, TriggerHeaders):
        return "@triggerHeaders()" + format_path(reference.path)
    return f"@steps({quote_single(reference.key)}).{reference.part}" + format_path(reference.path)


def _format_number(value: int | float) -> str:
    # repr() of a finite float always re-reads as the same float and keeps a '.' or exponent,
    # so the literal stays a float; ints print without either.
    return repr(value) if isinstance(value, float) else str(value)


def _needs_parens(child: ConditionNode, parent: ConditionNode) -> bool:
    if isinstance(parent, Not):
        return isinstance(child, Or | And | Comparison)
    if isinstance(parent, And):
        return isinstance(child, Or | And)
    return isinstance(child, Or)


def format_condition_node(node: ConditionNode, render_reference: ReferenceRenderer = format_reference) -> str:
    """A condition node in canonical spacing; ``render_reference`` lets traces show values instead."""

    def child(sub: ConditionNode, parent: ConditionNode) -> str:
        text = format_condition_node(sub, render_reference)
        return f"({text})" if _needs_parens(sub, parent) else text

    if isinstance(node, Or):
        return " || ".join(child(sub, node) for sub in node.operands)
    if isinstance(node, And):
        return " && ".join(child(sub, node) for sub in node.operands)
    if isinstance(node, Not):
        return "!" + child(node.operand, node)
    if isinstance(node, Comparison):
        left = format_condition_node(node.left, render_reference)
        right = format_condition_node(node.right, render_reference)
        return f"{left} {node.op} {right}"
    if isinstance(node, Number):
        return _format_number(node.value)
    if isinstance(node, String):
        return json_literal(node.value)
    if isinstance(node, Boolean):
        return "true" if node.value else "false"
    if isinstance(node, Null):
        return "null"
    return render_reference(node)


def format_expression(node: Node) -> str:
    """Print any expression node canonically; ``parse(format_expression(parse(s))) == parse(s)``.

    A ``ValueExpression`` prints as ``@reference``; a ``Condition`` (or any part of one) prints with
    single spaces around operators, the fewest parentheses that keep its shape, ``@`` before every
    reference, double-quoted string literals and single-quoted step keys.
    """
    if isinstance(node, ValueExpression):
        return format_reference(node.reference)
    if isinstance(node, Condition):
        return format_condition_node(node.body)
    if isinstance(node, Field | Key | Index):
        return format_path((node,))
    if isinstance(node, TriggerBody | TriggerHeaders | StepRef):
        return format_reference(node)
    return format_condition_node(node)
