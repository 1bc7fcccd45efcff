"""Recursive-descent parser for value expressions and ``when`` conditions (never Python ``eval``)."""

from __future__ import annotations

from functools import lru_cache

from flowjobs.core.errors import ExpressionError
from flowjobs.core.expressions.nodes import (
    COMPARATORS,
    STEP_PARTS,
    And,
    Boolean,
    Comparator,
    Comparison,
    Condition,
    ConditionNode,
    Field,
    Index,
    Key,
    LiteralNode,
    Not,
    Null,
    Number,
    Operand,
    Or,
    Path,
    Reference,
    Segment,
    StepRef,
    String,
    TriggerBody,
    TriggerHeaders,
    ValueExpression,
)
from flowjobs.core.expressions.scanner import Scanner, Token

# Bounds recursion in the parser, printer and evaluator; real conditions nest a few levels at most.
MAX_NESTING = 100
_CACHE_SIZE = 4096
_REFERENCE_NAMES = ("triggerBody", "triggerHeaders", "steps")
_LITERAL_WORDS: dict[str, LiteralNode] = {"true": Boolean(True), "false": Boolean(False), "null": Null()}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.scanner = Scanner(text)
        self.depth = 0

    def error(self, message: str, pos: int) -> ExpressionError:
        return ExpressionError(message, self.text, pos)

    def expect(self, kind: str, what: str) -> Token:
        tok = self.scanner.next()
        if tok.kind != kind:
            raise self.error(f"expected {what}, found {tok.describe()}", tok.pos)
        return tok

    # -- roots -----------------------------------------------------------------------------------

    def value(self) -> ValueExpression:
        tok = self.scanner.next()
        if tok.kind != "@":
            raise self.error(f"a value expression starts with '@', found {tok.describe()}", tok.pos)
        reference = self.reference(self.scanner.next())
        tok = self.scanner.peek()
        if tok.kind != "end":
            raise self.error(f"unexpected {tok.describe()} after the reference", tok.pos)
        return ValueExpression(reference)

    def condition(self) -> Condition:
        if self.scanner.peek().kind == "end":
            raise self.error("empty condition", self.scanner.peek().pos)
        body = self.or_()
        tok = self.scanner.peek()
        if tok.kind == ")":
            raise self.error("unbalanced ')'", tok.pos)
        if tok.kind != "end":
            raise self.error(f"expected '&&', '||' or end of expression, found {tok.describe()}", tok.pos)
        return Condition(body)

    # -- boolean structure -----------------------------------------------------------------------

    def or_(self) -> ConditionNode:
        operands = [self.and_()]
        while self.scanner.peek().kind == "||":
            self.scanner.next()
            operands.append(self.and_())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_(self) -> ConditionNode:
        operands = [self.unary()]
        while self.scanner.peek().kind == "&&":
            self.scanner.next()
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self) -> ConditionNode:
        tok = self.scanner.peek()
        if tok.kind == "!":
            self.scanner.next()
            self.enter(tok.pos)
            node: ConditionNode = Not(self.negated())
            self.depth -= 1
            return node
        if tok.kind == "(":
            self.scanner.next()
            self.enter(tok.pos)
            node = self.or_()
            close = self.scanner.next()
            if close.kind != ")":
                raise self.error(
                    f"expected ')' to close '(' at position {tok.pos}, found {close.describe()}", close.pos
                )
            self.depth -= 1
            self.refuse_comparison(
                "a comparison takes a literal or reference on each side, not a parenthesised condition"
            )
            return node
        return self.comparison()

    def negated(self) -> ConditionNode:
        # As in the reference, '!a == b' negates the whole comparison: '!(a == b)'.
        if self.scanner.peek().kind in ("!", "("):
            return self.unary()
        return self.comparison()

    def comparison(self) -> ConditionNode:
        left = self.operand()
        if self.scanner.peek().kind not in COMPARATORS:
            return left
        op: Comparator = self.scanner.next().kind  # type: ignore[assignment]  # checked just above
        right = self.operand()
        self.refuse_comparison("only one comparison per operand pair; join comparisons with && or ||")
        return Comparison(left, op, right)

    def refuse_comparison(self, message: str) -> None:
        tok = self.scanner.peek()
        if tok.kind in COMPARATORS:
            raise self.error(message, tok.pos)

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"expression nests deeper than {MAX_NESTING} levels", pos)

    def operand(self) -> Operand:
        tok = self.scanner.next()
        if tok.kind == "number":
            return Number(tok.value)
        if tok.kind == "string":
            return String(tok.value)
        if tok.kind == "@":
            return self.reference(self.scanner.next())
        if tok.kind == "name":
            literal = _LITERAL_WORDS.get(tok.text.lower())
            if literal is not None:
                return literal
            return self.reference(tok)
        raise self.error(
            f"expected a number, string, true, false, null or a reference, found {tok.describe()}", tok.pos
        )

    # -- references ------------------------------------------------------------------------------

    def reference(self, tok: Token) -> Reference:
        if tok.kind != "name" or tok.text not in _REFERENCE_NAMES:
            raise self.error(
                f"expected triggerBody(), triggerHeaders() or steps('key'), found {tok.describe()}", tok.pos
            )
        self.expect("(", f"'(' after {tok.text}")
        if tok.text == "steps":
            key = self.expect("string", "a quoted step key").value
            self.expect(")", "')' after the step key")
            return self.step_part(key)
        self.expect(")", f"')' after {tok.text}(")
        path = self.path()
        return TriggerBody(path) if tok.text == "triggerBody" else TriggerHeaders(path)

    def step_part(self, key: str) -> StepRef:
        dot = self.scanner.next()
        if dot.kind not in (".", "?."):
            raise self.error(
                f"expected .output, .status or .error after steps(...), found {dot.describe()}", dot.pos
            )
        name = self.scanner.path_name()
        for part in STEP_PARTS:
            if name.text == part:
                break
        else:
            raise self.error(f"expected output, status or error, found {name.describe()}", name.pos)
        if part == "output":
            return StepRef(key, part, self.path())
        tok = self.scanner.peek()
        if tok.kind in (".", "?.", "["):
            raise self.error(f"a path can only follow .output, not .{part}", tok.pos)
        return StepRef(key, part)

    def path(self) -> Path:
        segments: list[Segment] = []
        while True:
            tok = self.scanner.peek()
            if tok.kind in (".", "?."):
                self.scanner.next()
                segments.append(Field(self.scanner.path_name().text, tok.kind == "?."))
            elif tok.kind == "[":
                self.scanner.next()
                segments.append(self.bracket())
            else:
                return tuple(segments)

    def bracket(self) -> Segment:
        tok = self.scanner.next()
        segment: Segment
        if tok.kind == "string":
            segment = Key(tok.value)
        elif tok.kind == "number" and isinstance(tok.value, int) and not tok.text.startswith("-"):
            segment = Index(tok.value)
        else:
            raise self.error(
                f"expected a non-negative integer or a quoted name, found {tok.describe()}", tok.pos
            )
        self.expect("]", "']'")
        return segment


def _parse_value(text: str) -> ValueExpression:
    return _Parser(text).value()


def _parse_condition(text: str) -> Condition:
    return _Parser(text).condition()


_cached_value = lru_cache(maxsize=_CACHE_SIZE)(_parse_value)
_cached_condition = lru_cache(maxsize=_CACHE_SIZE)(_parse_condition)


def parse_value(text: str) -> ValueExpression:
    """Parse a value expression such as ``@steps('a').output.total``; cached by text.

    Raises ``ExpressionError`` (with a 0-based position) when ``text`` does not parse.
    """
    return _cached_value(text)


def parse_condition(text: str) -> Condition:
    """Parse a ``when`` condition such as ``steps('a').output.total >= 1000``; cached by text.

    Raises ``ExpressionError`` (with a 0-based position) when ``text`` does not parse.
    """
    return _cached_condition(text)
