"""The state machine as data (``flowjobs.core.transitions``), its Lua prelude and the typed refusal
decoders, without Redis."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Any, TypeVar

import pytest

from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.core.transitions import ACTIVE, FINAL, REASONS, RUN_RULES, STEP_RULES, Rule
from flowjobs.store.scripts import (
    SCRIPT_NAMES,
    decode_cancel_run,
    decode_claim,
    decode_complete,
    decode_create_run,
    decode_deliver_signal,
    decode_expand_loop,
    decode_retry_step,
    lua_prelude,
    script_source,
)
from flowjobs.store.transitions import (
    AdmissionRefusal,
    CancelRefusal,
    ClaimRefusal,
    FenceRefusal,
    Refused,
    RetryRefusal,
    SignalRefusal,
)

Status = TypeVar("Status", StepStatus, RunStatus)

P, R, S, F, K = (
    StepStatus.Pending,
    StepStatus.Running,
    StepStatus.Succeeded,
    StepStatus.Failed,
    StepStatus.Skipped,
)

#: Every rule, with each (from, to) it allows; anything else it refuses.
STEP_MOVES: dict[str, set[tuple[StepStatus | None, StepStatus | None]]] = {
    "dispatch": {(None, P)},
    "skip": {(None, K)},
    "claim": {(P, R)},
    "renew": {(R, R)},
    "expand": {(R, R)},
    "complete": {(R, S), (R, F), (R, K)},
    "requeue": {(R, P)},
    "abandon": {(P, K), (R, K)},
    "retry": {(F, P)},
    "reset": {(K, None)},
}
_CLOSED = {RunStatus.Succeeded, RunStatus.Failed, RunStatus.Skipped, RunStatus.Cancelled, RunStatus.TimedOut}
RUN_MOVES: dict[str, set[tuple[RunStatus | None, RunStatus | None]]] = {
    "start": {(RunStatus.Pending, RunStatus.Running)},
    "refuse_start": {(RunStatus.Pending, RunStatus.Cancelled)},
    "close": {(RunStatus.Running, to) for to in _CLOSED - {RunStatus.TimedOut}},
    "cancel": {(RunStatus.Pending, RunStatus.Cancelled), (RunStatus.Running, RunStatus.Cancelled)},
    "abort": {(source, to) for source in (RunStatus.Pending, RunStatus.Running) for to in _CLOSED},
    "reopen": {(source, RunStatus.Running) for source in _CLOSED | {RunStatus.Pending}},
}


def _every_move(statuses: type[Status]) -> list[tuple[Status | None, Status | None]]:
    values: list[Status | None] = [None, *statuses]
    return [(source, target) for source in values for target in values]


@pytest.mark.parametrize("name", sorted(STEP_MOVES))
def test_each_step_rule_allows_exactly_its_moves(name: str) -> None:
    rule = STEP_RULES[name]
    allowed = {move for move in _every_move(StepStatus) if rule.allows(*move)}
    assert allowed == STEP_MOVES[name]


@pytest.mark.parametrize("name", sorted(RUN_MOVES))
def test_each_run_rule_allows_exactly_its_moves(name: str) -> None:
    rule = RUN_RULES[name]
    allowed = {move for move in _every_move(RunStatus) if rule.allows(*move)}
    assert allowed == RUN_MOVES[name]


def test_the_tables_name_every_rule_once() -> None:
    assert set(STEP_RULES) == set(STEP_MOVES) and set(RUN_RULES) == set(RUN_MOVES)
    assert all(name == rule.name for name, rule in {**STEP_RULES, **RUN_RULES}.items())


def test_final_agrees_with_the_statuses_and_the_rules() -> None:
    assert FINAL == {S, F, K} == {status for status in StepStatus if status.is_final}
    assert {RunStatus.Pending, RunStatus.Running} == ACTIVE
    assert {status for status in RunStatus if not status.is_terminal} == ACTIVE
    # A step leaves a final status only by an operator's retry (and its descendants' reset)...
    assert {name for name, rule in STEP_RULES.items() if rule.source & FINAL} == {"retry", "reset"}
    # ...and a closed run only by the reopening that retry does.
    assert {name for name, rule in RUN_RULES.items() if rule.source - ACTIVE} == {"reopen"}
    assert STEP_RULES["complete"].target == FINAL


def test_steps_move_on_only_while_their_run_runs() -> None:
    running = {RunStatus.Running}
    assert {name for name, rule in STEP_RULES.items() if rule.run is not None} == {
        "dispatch",
        "skip",
        "claim",
        "requeue",
    }
    assert all(rule.run == running for rule in STEP_RULES.values() if rule.run is not None)
    # apply_continuation gates dispatches and skips on the run's `close` source.
    assert RUN_RULES["close"].source == running


def test_reasons() -> None:
    assert REASONS.closed(RunStatus.TimedOut) == "Run is TimedOut."
    assert REASONS.cancelled == "Run was cancelled."


def _lua_sets(prelude: str) -> dict[str, set[str]]:
    """The prelude's ``local SET_<members> = {...}`` tables, by name."""
    return {
        name: set(re.findall(r"\['([^']*)'\] = true", body))
        for name, body in re.findall(r"^local (SET_\w+) = (\{.*\})$", prelude, re.M)
    }


def _names(statuses: frozenset[Any]) -> set[str]:
    return {"" if status is None else status.value for status in statuses}


def _lua_rules(prelude: str, table: str) -> dict[str, dict[str, str]]:
    """``RUN`` or ``STEP``: each rule's fields as Lua text."""
    body = re.search(rf"^local {table} = \{{\n(.*?)\n\}}$", prelude, re.S | re.M)
    assert body is not None
    return {
        name: dict(re.findall(r"(\w+) = ('[^']*'|\w+)", fields))
        for name, fields in re.findall(r"^  (\w+) = \{(.*)\},?$", body.group(1), re.M)
    }


@pytest.mark.parametrize(("table", "rules"), [("RUN", RUN_RULES), ("STEP", STEP_RULES)])
def test_the_lua_prelude_spells_every_rule(table: str, rules: Mapping[str, Rule[Any]]) -> None:
    prelude = lua_prelude()
    sets, lua = _lua_sets(prelude), _lua_rules(prelude, table)
    assert set(lua) == set(rules)
    for name, rule in rules.items():
        fields = lua[name]
        assert sets[fields["from"]] == _names(rule.source), name
        assert sets[fields["run"]] == _names(rule.run) if rule.run else "run" not in fields, name
        single = [status.value for status in rule.target if status is not None]
        expected = f"'{single[0]}'" if len(rule.target) == len(single) == 1 else None
        assert fields.get("target") == expected, name


def test_the_lua_prelude_spells_final_active_and_the_reasons() -> None:
    prelude = lua_prelude()
    assert prelude.startswith("-- Generated from flowjobs/core/transitions.py")
    sets = _lua_sets(prelude)
    # Each set is built once per call: no two set tables alike.
    assert len({frozenset(members) for members in sets.values()}) == len(sets)
    final = re.search(r"^local FINAL = (\w+)$", prelude, re.M)
    active = re.search(r"^local ACTIVE = (\w+)$", prelude, re.M)
    assert final and sets[final.group(1)] == _names(FINAL)
    assert active and sets[active.group(1)] == _names(ACTIVE)
    assert (
        "local REASON = {cancelled = 'Run was cancelled.', "
        "flow_disabled = 'The flow was disabled before the run started.', run_is = {'Run is ', '.'}}"
    ) in prelude


def test_every_script_starts_with_the_prelude_and_names_only_rules_that_exist() -> None:
    used: set[tuple[str, str]] = set()
    for name in SCRIPT_NAMES:
        assert script_source(name).startswith(lua_prelude())
    for path in (files("flowjobs") / "lua").iterdir():
        text = path.read_text()
        # The prelude is the one place these are defined; common.lua no longer spells FINAL.
        assert not re.search(r"^local (FINAL|ACTIVE|RUN|STEP|REASON)\b", text, re.M), path.name
        used |= set(re.findall(r"\b(RUN|STEP)\.(\w+)", text))
    assert {(table, name) for table, name in used} <= {("RUN", n) for n in RUN_RULES} | {
        ("STEP", n) for n in STEP_RULES
    }
    # Each rule is performed by some script (the data describes no transition the store lacks).
    assert {name for table, name in used if table == "RUN"} == set(RUN_RULES)
    assert {name for table, name in used if table == "STEP"} == set(STEP_RULES)


def test_each_script_family_decodes_its_own_refusals() -> None:
    assert decode_create_run([b"rate_limited", b"250"], "r") == Refused(AdmissionRefusal.rate_limited, "250")
    assert decode_claim([b"run_not_running", b"missing"], [], None) == Refused(
        ClaimRefusal.run_not_running, "missing"
    )
    assert decode_complete([b"stale", b"lease renewed"], None) == Refused(FenceRefusal.stale, "lease renewed")
    assert decode_expand_loop([b"stale", b"Pending#1"], None) == Refused(FenceRefusal.stale, "Pending#1")
    assert decode_deliver_signal([b"changed"]) == Refused(SignalRefusal.changed)
    assert decode_cancel_run([b"not_active", b"Failed"]) == Refused(CancelRefusal.not_active, "Failed")
    assert decode_retry_step([b"not_failed", b"Pending#2"]) == Refused(RetryRefusal.not_failed, "Pending#2")
    refused = decode_retry_step([b"cancelled"])
    assert isinstance(refused, Refused) and type(refused.reason) is RetryRefusal


@pytest.mark.parametrize(
    "decode",
    [
        lambda: decode_claim([b"no_run"], [], None),
        lambda: decode_cancel_run([b"stale", b"Running#1"]),
        lambda: decode_retry_step([b"disabled"]),
    ],
)
def test_a_refusal_outside_the_scripts_family_is_an_error(decode: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        decode()
