"""Every key a Lua script touches is declared in KEYS (issue 15): the check every test runs with
(``FLOWJOBS_CHECK_SCRIPT_KEYS``, set by tests/conftest.py) refuses a script that touches another."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from flowjobs.store.codec import command_keys
from flowjobs.store.scripts import (
    SCRIPT_NAMES,
    Scripts,
    check_keys,
    key_args_prelude,
    key_check_prelude,
    script_call,
    script_source,
)
from tests.conftest import Space

#: A script as flowjobs builds them: it writes the key its document declares, then one it does not.
UNDECLARED = """
local a = script_args()
redis.call('HSET', a.run_key, 'touched', '1')
return redis.call('GET', a.other)
"""


def test_the_suite_runs_every_script_with_the_key_check(space: Space) -> None:
    assert check_keys()
    registered = Scripts(space.redis)._registered
    for name in (*SCRIPT_NAMES, "purge_runs"):
        assert script_source(name, True).startswith(key_check_prelude())
    for name in SCRIPT_NAMES:
        assert registered[name].script == script_source(name, True)


def test_a_script_touching_a_key_it_did_not_declare_fails(space: Space) -> None:
    run_key, other = f"{space.settings.key_prefix}run:x", f"{space.settings.key_prefix}other"
    space.redis.set(other, "value")
    script = space.redis.register_script(key_check_prelude() + key_args_prelude() + UNDECLARED)
    keys, args = script_call({"run_key": run_key, "other": other})
    assert keys == [run_key]
    with pytest.raises(ResponseError, match="undeclared key"):
        script(keys=keys, args=args)
    # Declared (a key field names it), the same script runs.
    keys, args = script_call({"run_key": run_key, "other": other, "hash_keys": [other]})
    assert script(keys=keys, args=args) == b"value"
    assert space.redis.hget(run_key, "touched") == b"1"


def test_script_call_moves_every_key_field_into_keys_once(space: Space) -> None:
    keys, args = script_call(
        {
            "run_key": "k:run",
            "status_keys": {"Running": "k:running", "Pending": "k:pending"},
            "plan": {"run_key": "k:run", "dispatch": [{"step_key": "run_key", "member": "m"}]},
            "steps_keys": ["k:steps", "k:run"],
            "step_key": "not a key",
        }
    )
    assert keys == ["k:run", "k:running", "k:pending", "k:steps"]
    assert args[0] == (
        '{"run_key": 1, "status_keys": {"Running": 2, "Pending": 3}, "plan": {"run_key": 1, '
        '"dispatch": [{"step_key": "run_key", "member": "m"}]}, "steps_keys": [4, 1], '
        '"step_key": "not a key"}'
    )


def test_recorded_commands_declare_their_keys() -> None:
    assert command_keys([b"HSET", b"rq:job:1", b"status", b"queued"]) == ["rq:job:1"]
    assert command_keys([b"DEL", b"a", b"b"]) == ["a", "b"]
    assert command_keys([b"PUBLISH", b"channel", b"message"]) == []
    with pytest.raises(ValueError, match="KEY_POSITIONS"):
        command_keys([b"EVAL", b"return 1", b"0"])
