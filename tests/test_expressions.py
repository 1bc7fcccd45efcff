"""Tests of flowjobs.core.expressions: value references, when conditions, parse errors and round trips."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowjobs.core.errors import ExpressionError
from flowjobs.core.expressions import (
    Condition,
    ConditionOutcome,
    ExpressionScope,
    StepView,
    ValueExpression,
    evaluate_condition,
    expression_problems,
    format_expression,
    is_expression,
    parse_condition,
    parse_value,
    referenced_steps,
    resolve_inputs,
    resolve_value,
)
from flowjobs.core.expressions.nodes import (
    COMPARATORS,
    And,
    Boolean,
    Comparison,
    ConditionNode,
    Field,
    Index,
    Key,
    Not,
    Null,
    Number,
    Operand,
    Or,
    Reference,
    Segment,
    StepRef,
    String,
    TriggerBody,
    TriggerHeaders,
)
from flowjobs.core.expressions.scanner import is_path_name_char

BODY: dict[str, Any] = {
    "order": {
        "id": "o-1",
        "total": 500,
        "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 0}],
        "tags": ["x"],
        "meta": None,
        "flag": True,
    },
    "weird key": 1,
    "list": [10, 20],
    "0": "zero-key",
}
HEADERS = {"X-Tenant": "acme", "Content-Type": "application/json"}
FETCH_OUTPUT = {"customer": {"id": "c-9"}, "count": 3, "ok": True, "name": "Zed"}
SCOPE = ExpressionScope(
    trigger_body=BODY,
    trigger_headers=HEADERS,
    steps={
        "fetch": StepView("Succeeded", FETCH_OUTPUT),
        "charge": StepView("Failed", None, "card declined"),
        "pending": StepView("Running"),
        "it's": StepView("Succeeded", {"v": 1}),
    },
)

# -- value expressions ---------------------------------------------------------------------------

VALUE_CASES: list[tuple[str, Any]] = [
    ("@triggerBody()", BODY),
    ("@triggerBody().order.id", "o-1"),
    ("@triggerBody()?.order?.id", "o-1"),
    ("   @triggerBody().order.items[1].sku", "B"),
    ("@triggerBody() . order . items [ 0 ] . qty  ", 2),
    ("@triggerBody()['weird key']", 1),
    ("@triggerBody()[\"order\"]['total']", 500),
    ("@triggerBody().list[1]", 20),
    ("@triggerBody().list.1", 20),
    ("@triggerBody().list[5]", None),
    ("@triggerBody()[0]", "zero-key"),
    ("@triggerBody().order.missing", None),
    ("@triggerBody().order.missing.deeper[3]", None),
    ("@triggerBody()?.order?.missing?.deeper", None),
    ("@triggerBody().order.id.length", None),
    ("@triggerBody().order.id[0]", None),
    ("@triggerBody().order.total[0]", None),
    ("@triggerBody().order.meta.x", None),
    ("@triggerBody().order.tags", ["x"]),
    ("@triggerHeaders()", HEADERS),
    ("@triggerHeaders()['X-Tenant']", "acme"),
    ("@triggerHeaders()['x-tenant']", "acme"),
    ('@triggerHeaders()["X-TENANT"]', "acme"),
    ("@triggerHeaders().content-type", "application/json"),
    ("@triggerHeaders()?.Content-Type", "application/json"),
    ("@triggerHeaders()['Missing']", None),
    ("@triggerHeaders()[0]", None),
    ("@triggerHeaders()['X-Tenant'].length", None),
    ("@steps('fetch').output", FETCH_OUTPUT),
    ('@steps("fetch").output.customer.id', "c-9"),
    ("@steps('fetch')?.output?.count", 3),
    ("@steps('fetch').status", "Succeeded"),
    ("@steps('fetch').error", None),
    ("@steps('charge').error", "card declined"),
    ("@steps('charge').status", "Failed"),
    ("@steps('charge').output.anything", None),
    ("@steps('pending').status", "Running"),
    ("@steps('nope').status", None),
    ("@steps('nope').output", None),
    ("@steps('nope').output.x[0]", None),
    ("@steps('it\\'s').output.v", 1),
    ('@steps("it\'s").output.v', 1),
]


@pytest.mark.parametrize(("text", "expected"), VALUE_CASES)
def test_resolve_value(text: str, expected: Any) -> None:
    assert is_expression(text)
    assert resolve_value(text, SCOPE) == expected


def test_resolved_containers_are_copies() -> None:
    items = resolve_value("@triggerBody().order.items", SCOPE)
    items[0]["sku"] = "changed"
    items.append("extra")
    assert BODY["order"]["items"][0]["sku"] == "A"
    assert len(BODY["order"]["items"]) == 2
    headers = resolve_value("@triggerHeaders()", SCOPE)
    headers["X-Tenant"] = "other"
    assert HEADERS["X-Tenant"] == "acme"


def test_missing_headers_and_empty_scope() -> None:
    scope = ExpressionScope(trigger_body=None)
    assert resolve_value("@triggerBody().a", scope) is None
    assert resolve_value("@triggerHeaders()['a']", scope) is None
    assert resolve_value("@triggerHeaders()", scope) == {}
    assert resolve_value("@steps('a').status", scope) is None


def test_resolve_inputs_recurses_and_leaves_literals_alone() -> None:
    inputs: dict[str, Any] = {
        "orderId": "@triggerBody()?.order.id",
        "nested": {"tenant": "  @triggerHeaders()['x-tenant']", "list": ["@steps('fetch').output.count", 7]},
        "text": "hello @triggerBody()",
        "email": "someone@example.com",
        "number": 3,
        "flag": False,
        "none": None,
        "tuple": ("@steps('charge').error", "x"),
        "empty": "",
    }
    before = copy.deepcopy(inputs)
    resolved = resolve_inputs(inputs, SCOPE)
    assert resolved == {
        "orderId": "o-1",
        "nested": {"tenant": "acme", "list": [3, 7]},
        "text": "hello @triggerBody()",
        "email": "someone@example.com",
        "number": 3,
        "flag": False,
        "none": None,
        "tuple": ["card declined", "x"],
        "empty": "",
    }
    assert inputs == before
    assert resolved is not inputs
    assert resolved["nested"] is not inputs["nested"]
    assert resolve_inputs("plain", SCOPE) == "plain"
    assert resolve_inputs(42, SCOPE) == 42
    assert resolve_inputs("@steps('fetch').status", SCOPE) == "Succeeded"


def test_resolve_inputs_raises_on_bad_expression() -> None:
    with pytest.raises(ExpressionError):
        resolve_inputs({"a": ["@triggerBody("]}, SCOPE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("@triggerBody()", True),
        ("  \t@x", True),
        ("@", True),
        ("x@y", False),
        ("", False),
        ("   ", False),
        (None, False),
        (5, False),
        (["@triggerBody()"], False),
    ],
)
def test_is_expression(value: object, expected: bool) -> None:
    assert is_expression(value) is expected


def test_parsing_is_cached() -> None:
    assert parse_value("@triggerBody().cached") is parse_value("@triggerBody().cached")
    assert parse_condition("true && false") is parse_condition("true && false")


# -- conditions ----------------------------------------------------------------------------------

CONDITION_CASES: list[tuple[str, bool, str]] = [
    ("@steps('fetch').output.count >= 1000", False, "3 >= 1000"),
    ("steps('fetch').output.count >= 3", True, "3 >= 3"),
    ("@triggerBody().order.total == 500", True, "500 == 500"),
    ("triggerBody().order.total != 500.0", False, "500 != 500.0"),
    ("-1.5 < 0", True, "-1.5 < 0"),
    ("1e3 == 1000", True, "1000.0 == 1000"),
    ('"abc" < "abd"', True, '"abc" < "abd"'),
    ("'B' < 'a'", True, '"B" < "a"'),
    ("'\\u00e9' > 'z'", True, '"é" > "z"'),
    ("steps('fetch').status == 'Succeeded'", True, '"Succeeded" == "Succeeded"'),
    ("steps('charge').error != null", True, '"card declined" != null'),
    ("steps('missing').status == null", True, "null == null"),
    ("null != null", False, "null != null"),
    ("triggerBody().order.meta == 0", False, "null == 0"),
    ("null != 'x'", True, 'null != "x"'),
    ("steps('fetch').output.customer == null", False, '{"id": "c-9"} == null'),
    ("steps('fetch').output.ok == true", True, "true == true"),
    ("false != true", True, "false != true"),
    ("TRUE == False", False, "true == false"),
    ("steps('fetch').output.ok", True, "true"),
    ("!steps('fetch').output.ok", False, "!true"),
    ("!!true", True, "!!true"),
    ("triggerBody().order.flag && steps('fetch').output.count > 2", True, "true && 3 > 2"),
    ("triggerHeaders()['x-tenant'] == \"acme\"", True, '"acme" == "acme"'),
    (
        "@triggerBody().order.items[0].sku == 'A' && @triggerBody()?.order?.items[1].qty < 1",
        True,
        '"A" == "A" && 0 < 1',
    ),
    # precedence: '!' binds tightest, then comparison, then '&&', then '||'
    ("true  ||  false&&false", True, "true || false && false"),
    ("false && false || true", True, "false && false || true"),
    ("(true || false) && false", False, "(true || false) && false"),
    ("!false && false", False, "!false && false"),
    ("!(false && false)", True, "!(false && false)"),
    ("!true || true", True, "!true || true"),
    ("!(1 > 2)", True, "!(1 > 2)"),
    # As in the reference, '!' before a comparison negates the whole comparison.
    ("!1 > 2", True, "!(1 > 2)"),
    ("!steps('fetch').output.ok == true && true", False, "!(true == true) && true"),
    ("1 < 2 && 2 < 1 || 3 == 3", True, "1 < 2 && 2 < 1 || 3 == 3"),
    ("((true))", True, "true"),
    ("(true && true) && (false || true)", True, "(true && true) && (false || true)"),
    # short-circuiting skips what would fail, the trace still shows every value
    ("false && '5' > 3", False, 'false && "5" > 3'),
    ("true || steps('fetch').output.count", True, "true || 3"),
]


@pytest.mark.parametrize(("text", "result", "resolved"), CONDITION_CASES)
def test_evaluate_condition(text: str, result: bool, resolved: str) -> None:
    outcome = evaluate_condition(text, SCOPE)
    assert outcome == ConditionOutcome(expression=text, resolved=resolved, result=result, error=None)
    assert outcome.trace() == {"expression": text, "resolved": resolved, "result": result}


ERROR_CASES: list[tuple[str, str, str]] = [
    ('"5" > 3', '"5" > 3', "cannot compare string"),
    ("true < false", "true < false", "cannot compare boolean"),
    ("null > 1", "null > 1", "cannot compare null"),
    ("triggerBody().order.total == '500'", '500 == "500"', "cannot compare number 500 with string"),
    ("1 == true", "1 == true", "cannot compare number"),
    ("triggerBody().order.items > 1", '[{"sku": "A", "qty": 2}, {"sku": "B", "qty": 0}] > 1', "array"),
    ("steps('fetch').output.count && true", "3 && true", "not a boolean"),
    ("!1", "!1", "not a boolean"),
    ("'yes'", '"yes"', "not a boolean"),
    ("triggerBody().order.missing", "null", "not a boolean"),
    ("true && steps('fetch').output.name > 1", 'true && "Zed" > 1', "cannot compare string"),
]


@pytest.mark.parametrize(("text", "resolved", "error_part"), ERROR_CASES)
def test_evaluation_errors(text: str, resolved: str, error_part: str) -> None:
    outcome = evaluate_condition(text, SCOPE)
    assert outcome.result is False
    assert outcome.resolved == resolved
    assert outcome.error is not None and error_part in outcome.error
    assert outcome.trace() == {
        "expression": text,
        "resolved": resolved,
        "result": False,
        "error": outcome.error,
    }


def test_condition_parse_error_raises_from_evaluate() -> None:
    with pytest.raises(ExpressionError):
        evaluate_condition("1 >", SCOPE)


# -- parse errors --------------------------------------------------------------------------------

VALUE_PARSE_ERRORS: list[tuple[str, int, str]] = [
    ("triggerBody()", 0, "starts with '@'"),
    ("@", 1, "expected triggerBody()"),
    ("@foo()", 1, "expected triggerBody()"),
    ("@triggerBody(", 13, "expected ')'"),
    ("@triggerBody(1)", 13, "expected ')'"),
    ("@triggerBody().", 15, "expected a name after '.'"),
    ("@triggerBody()..a", 15, "expected a name after '.'"),
    ("@triggerBody() x", 15, "after the reference"),
    ("@triggerBody()[-1]", 15, "non-negative integer"),
    ("@triggerBody()[1.5]", 15, "non-negative integer"),
    ("@triggerBody()[x]", 15, "non-negative integer"),
    ("@triggerBody()['a'", 18, "expected ']'"),
    ("@triggerBody()['\\q']", 16, "unknown escape"),
    ("@triggerBody()['\\u12']", 16, "four hex digits"),
    ("@triggerBody()?a", 14, "did you mean '?.'"),
    ("  @steps(a).output", 9, "quoted step key"),
    ("@steps('a).output", 7, "unterminated string"),
    ("@steps('a')", 11, "expected .output, .status or .error"),
    ("@steps('a').foo", 12, "expected output, status or error"),
    ("@steps('a').status.x", 18, "only follow .output"),
    ("@steps('a').error[0]", 17, "only follow .output"),
    ("@steps('a').output == 1", 19, "after the reference"),
]


@pytest.mark.parametrize(("text", "position", "message"), VALUE_PARSE_ERRORS)
def test_value_parse_errors(text: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_value(text)
    assert info.value.position == position
    assert info.value.expression == text
    assert message in info.value.message
    assert f"at position {position}" in str(info.value)


CONDITION_PARSE_ERRORS: list[tuple[str, int, str]] = [
    ("", 0, "empty condition"),
    ("   ", 3, "empty condition"),
    ("1 == 1 == 1", 7, "only one comparison"),
    ("steps('a').output.x > 1 < 2", 24, "only one comparison"),
    ("(true) == true", 7, "parenthesised condition"),
    ("(true && false", 14, "expected ')'"),
    ("true)", 4, "unbalanced ')'"),
    ("true & false", 5, "did you mean '&&'"),
    ("true | false", 5, "did you mean '||'"),
    ("1 = 1", 2, "did you mean '=='"),
    ("true false", 5, "expected '&&', '||'"),
    ("steps('a').output >", 19, "expected a number"),
    ("&& true", 0, "expected a number"),
    ('"abc', 0, "unterminated string"),
    ("@true", 1, "expected triggerBody()"),
    ("foo == 1", 0, "expected triggerBody()"),
    ("-x > 1", 0, "unexpected character '-'"),
    ("1 > 1e999", 4, "out of range"),
    ("1 # 2", 2, "unexpected character '#'"),
    ("(" * 101 + "true" + ")" * 101, 100, "nests deeper"),
    ("!" * 101 + "true", 100, "nests deeper"),
]


@pytest.mark.parametrize(("text", "position", "message"), CONDITION_PARSE_ERRORS)
def test_condition_parse_errors(text: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_condition(text)
    assert info.value.position == position
    assert info.value.expression == text
    assert message in info.value.message


def test_nesting_up_to_the_limit_parses() -> None:
    text = "(" * 100 + "true" + ")" * 100
    assert evaluate_condition(text, SCOPE).result is True


# -- canonical printing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('  @triggerBody()  ?.a [ 0 ] ["b"]', "@triggerBody()?.a[0]['b']"),
        ('@steps("it\'s").output', "@steps('it\\'s').output"),
        ("@steps('a')?.status", "@steps('a').status"),
        ("@triggerHeaders()['X-Name']", "@triggerHeaders()['X-Name']"),
    ],
)
def test_format_value(text: str, canonical: str) -> None:
    assert format_expression(parse_value(text)) == canonical
    assert parse_value(canonical) == parse_value(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('steps("a").output.x>=1&&!(true||false)', "@steps('a').output.x >= 1 && !(true || false)"),
        ("(a_is_not_needed == 1)".replace("a_is_not_needed", "triggerBody().a"), "@triggerBody().a == 1"),
        ("(true && false) && true", "(true && false) && true"),
        ("true && (false && true)", "true && (false && true)"),
        ("(true || false) || true", "(true || false) || true"),
        ("true || (false && true)", "true || false && true"),
        ("!(!true)", "!!true"),
        ('\'x\\ty\' == "q\\""', '"x\\ty" == "q\\""'),
        ("007 == 7.50", "7 == 7.5"),
    ],
)
def test_format_condition(text: str, canonical: str) -> None:
    assert format_expression(parse_condition(text)) == canonical
    assert parse_condition(canonical) == parse_condition(text)


# -- referenced steps and problems ---------------------------------------------------------------


def test_referenced_steps() -> None:
    inputs = {
        "a": "@steps('fetch').output.x",
        "b": ['@steps("charge").status', {"c": "  @steps('deep').error"}],
        "d": "@triggerBody().x",
        "e": "steps('not-an-expression').output",
        "f": "@steps('broken'",
        "g": 5,
    }
    assert referenced_steps(inputs) == {"fetch", "charge", "deep"}
    assert referenced_steps({}) == set()
    assert referenced_steps(
        "steps('a').output.x > 1 && (@steps('b').status == 'Failed' || !steps('c').output)"
    ) == {
        "a",
        "b",
        "c",
    }
    assert referenced_steps("@steps('only').output") == {"only"}
    assert referenced_steps("triggerBody().x == 1") == set()
    assert referenced_steps("1 ==") == set()


def test_expression_problems() -> None:
    good = {"a": "@steps('fetch').output", "b": ["@triggerBody()", "text"], "c": {"d": 1}}
    assert expression_problems(good) == []
    assert expression_problems(good, condition="steps('fetch').output.n > 1") == []
    bad = {"ok": "@triggerBody()", "items": [{"sku": "@triggerBody().x["}], "h": "@headers()"}
    problems = expression_problems(bad, condition="1 == 1 == 1")
    assert len(problems) == 3
    assert problems[0].startswith("input items[0].sku: ")
    assert "position 17" in problems[0] and "'@triggerBody().x['" in problems[0]
    assert problems[1].startswith("input h: ") and "position 1" in problems[1]
    assert problems[2].startswith("when: ") and "position 7" in problems[2] and "'1 == 1 == 1'" in problems[2]
    assert expression_problems("@nope") == ["input (value): " + str(_error_of(lambda: parse_value("@nope")))]


def _error_of(action: Any) -> ExpressionError:
    try:
        action()
    except ExpressionError as exc:
        return exc
    raise AssertionError("no ExpressionError")


# -- properties ----------------------------------------------------------------------------------

TOKENS = [
    "@", "triggerBody", "triggerHeaders", "steps", "(", ")", "[", "]", ".", "?.", "'a'", '"b"', "'",
    '"', "\\", "0", "-1", "1.5", "1e3", "==", "!=", ">", "<", ">=", "<=", "&&", "||", "!", "true",
    "false", "null", "output", "status", "error", "x", " ", "=", "&", "|", "?", "-", "\\u12", "()",
    "('k')", ".output", "['X-Name']", "[0]",
]  # fmt: skip
CHUNKS = [
    "@triggerBody()", "triggerHeaders()", "@steps('a').output", "steps(\"b\").status", ".x", "?.y", "[0]",
    "['k']", " == ", " != ", " >= ", " < ", " && ", " || ", "!", "(", ")", "1", "-2.5", "'s'", "true", "null",
]  # fmt: skip
token_soup = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)
chunk_soup = st.lists(st.sampled_from(CHUNKS), min_size=1, max_size=12).map("".join)


def _check_parses_or_expression_error(text: str) -> None:
    for parse in (parse_value, parse_condition):
        try:
            node = parse(text)
        except ExpressionError as exc:
            assert exc.expression == text
            assert exc.position is not None and 0 <= exc.position <= len(text)
            continue
        printed = format_expression(node)
        assert parse(printed) == node
        assert format_expression(parse(printed)) == printed
        if isinstance(node, Condition):
            outcome = evaluate_condition(text, SCOPE)
            assert isinstance(outcome.result, bool)
        else:
            resolve_value(text, SCOPE)


path_names = st.text(
    alphabet=st.characters(categories=("L", "N")) | st.sampled_from("_$-"), min_size=1, max_size=8
).filter(lambda name: all(is_path_name_char(ch) for ch in name))
segments: st.SearchStrategy[Segment] = st.one_of(
    st.builds(Field, path_names, st.booleans()),
    st.builds(Key, st.text(max_size=8)),
    st.builds(Index, st.integers(min_value=0, max_value=10**12)),
)
paths = st.lists(segments, max_size=4).map(tuple)
references: st.SearchStrategy[Reference] = st.one_of(
    st.builds(TriggerBody, paths),
    st.builds(TriggerHeaders, paths),
    st.builds(StepRef, st.text(max_size=8), st.just("output"), paths),
    st.builds(StepRef, st.text(max_size=8), st.sampled_from(["status", "error"])),
)
literals: st.SearchStrategy[Operand] = st.one_of(
    st.builds(Number, st.integers() | st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(String, st.text(max_size=8)),
    st.builds(Boolean, st.booleans()),
    st.just(Null()),
)
operands: st.SearchStrategy[Operand] = literals | references
comparisons = st.builds(Comparison, operands, st.sampled_from(COMPARATORS), operands)


def _extend(children: st.SearchStrategy[ConditionNode]) -> st.SearchStrategy[ConditionNode]:
    many = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, many), st.builds(Or, many))


conditions = st.recursive(operands | comparisons, _extend, max_leaves=12).map(Condition)
values = references.map(ValueExpression)


@settings(max_examples=300)
@given(values)
def test_value_round_trip(expression: ValueExpression) -> None:
    printed = format_expression(expression)
    assert parse_value(printed) == expression
    assert format_expression(parse_value(printed)) == printed
    resolve_value(printed, SCOPE)


@settings(max_examples=300)
@given(conditions)
def test_condition_round_trip(condition: Condition) -> None:
    printed = format_expression(condition)
    assert parse_condition(printed) == condition
    assert format_expression(parse_condition(printed)) == printed
    outcome = evaluate_condition(printed, SCOPE)
    assert isinstance(outcome.result, bool) and isinstance(outcome.resolved, str)
    assert (outcome.error is None) or (outcome.result is False)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A printed valid expression with a few characters deleted, inserted or replaced."""
    text = format_expression(draw(conditions | values))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        cut = draw(st.integers(min_value=0, max_value=3))
        insert = draw(st.sampled_from(["", *TOKENS]) | st.text(max_size=2))
        text = text[:at] + insert + text[at + cut :]
    return text


anything = st.text(max_size=60) | token_soup | chunk_soup | mutated()


@settings(max_examples=500)
@given(anything)
def test_any_text_parses_or_raises_expression_error(text: str) -> None:
    _check_parses_or_expression_error(text)


@settings(max_examples=200)
@given(st.sampled_from(["@", "!", "(", "steps('a').output.x == "]), anything)
def test_prefixed_text_parses_or_raises_expression_error(prefix: str, text: str) -> None:
    _check_parses_or_expression_error(prefix + text)
