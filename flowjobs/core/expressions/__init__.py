"""Expressions of flow manifests: ``@`` value references in step inputs and ``when`` conditions.

Pure functions over parsed, cached syntax trees; nothing here does I/O or calls Python ``eval``.
"""

from __future__ import annotations

from flowjobs.core.expressions.evaluator import ConditionOutcome, evaluate_condition, resolve_value
from flowjobs.core.expressions.inputs import (
    expression_problems,
    is_expression,
    reads_trigger_body,
    referenced_steps,
    resolve_inputs,
)
from flowjobs.core.expressions.nodes import Condition, ValueExpression
from flowjobs.core.expressions.parser import parse_condition, parse_value
from flowjobs.core.expressions.printer import format_expression
from flowjobs.core.expressions.scope import ExpressionScope, StepView

__all__ = [
    "Condition",
    "ConditionOutcome",
    "ExpressionScope",
    "StepView",
    "ValueExpression",
    "evaluate_condition",
    "expression_problems",
    "format_expression",
    "is_expression",
    "parse_condition",
    "parse_value",
    "reads_trigger_body",
    "referenced_steps",
    "resolve_inputs",
    "resolve_value",
]
