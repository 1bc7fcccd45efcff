"""Immutable syntax-tree nodes for value expressions and ``when`` conditions.

Nodes are frozen dataclasses so parsed trees can be cached and shared between threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal as TypingLiteral

# -- path segments -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """``.name`` or ``?.name``; both read the same, the flag only keeps the author's spelling."""

    name: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Key:
    """``['name']`` or ``["name"]``: a member name that is not a plain identifier."""

    name: str


@dataclass(frozen=True, slots=True)
class Index:
    """``[n]``: a non-negative list index."""

    index: int


Segment = Field | Key | Index
Path = tuple[Segment, ...]

# -- references ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TriggerBody:
    """``triggerBody()`` followed by an optional path."""

    path: Path = ()


@dataclass(frozen=True, slots=True)
class TriggerHeaders:
    """``triggerHeaders()``; the first path segment names a header, matched case-insensitively."""

    path: Path = ()


StepPart = TypingLiteral["output", "status", "error"]
STEP_PARTS: tuple[StepPart, ...] = ("output", "status", "error")


@dataclass(frozen=True, slots=True)
class StepRef:
    """``steps('key').output|status|error``; only ``output`` may be followed by a path."""

    key: str
    part: StepPart
    path: Path = ()


Reference = TriggerBody | TriggerHeaders | StepRef

# -- literals ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Number:
    """A numeric literal: ``int`` when written without fraction or exponent, else ``float``."""

    value: int | float


@dataclass(frozen=True, slots=True)
class String:
    """A quoted string literal (escapes already decoded)."""

    value: str


@dataclass(frozen=True, slots=True)
class Boolean:
    """``true`` or ``false``."""

    value: bool


@dataclass(frozen=True, slots=True)
class Null:
    """``null``."""


LiteralNode = Number | String | Boolean | Null
Operand = Reference | LiteralNode

# -- conditions ----------------------------------------------------------------------------------

Comparator = TypingLiteral["==", "!=", ">", "<", ">=", "<="]
COMPARATORS: tuple[Comparator, ...] = ("==", "!=", ">=", "<=", ">", "<")


@dataclass(frozen=True, slots=True)
class Comparison:
    """``left <op> right`` between two operands."""

    left: Operand
    op: Comparator
    right: Operand


@dataclass(frozen=True, slots=True)
class Not:
    """``!operand``."""

    operand: ConditionNode


@dataclass(frozen=True, slots=True)
class And:
    """``a && b && ...``; a nested ``And`` only arises from explicit parentheses."""

    operands: tuple[ConditionNode, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """``a || b || ...``; a nested ``Or`` only arises from explicit parentheses."""

    operands: tuple[ConditionNode, ...]


ConditionNode = Or | And | Not | Comparison | Operand

# -- roots ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValueExpression:
    """Root of a value expression: ``@`` followed by one reference."""

    reference: Reference


@dataclass(frozen=True, slots=True)
class Condition:
    """Root of a ``when`` condition."""

    body: ConditionNode


Node = ValueExpression | Condition | ConditionNode | Segment
