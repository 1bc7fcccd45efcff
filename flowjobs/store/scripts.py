"""flowjobs' Lua scripts (``flowjobs/lua``): loading them, and one typed decoder per script.

Each script takes one JSON document (ARGV[1], documented in its header) plus, for scripts that
enqueue jobs, binary ARGV slices of Redis commands. The decoders here are the only code that
reads replies by position; everything else gets the transition types.

Keys: a script touches only keys passed in ``KEYS`` (so the store can move to a Redis Cluster or a
multi-threaded Redis-compatible server, which route a script by its declared keys). The JSON
document names each key in a field of ``KEY_FIELDS`` (a key, a list of keys or a map of keys);
``script_call`` moves every such value into ``KEYS`` (once per distinct key) and leaves its
1-based position in the document, and the generated ``script_args()`` of the Lua prelude puts the
key names back, so scripts read ``a.run_key`` as before but never spell or build a key.
``FLOWJOBS_CHECK_SCRIPT_KEYS=1`` (the test suite sets it) prepends ``key_check_prelude``: every
``redis.call`` whose key is not in ``KEYS`` fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from redis import Redis

from flowjobs.core.job_calls import PLAIN_STEP_JOB_ID
from flowjobs.core.metrics import metric_constants
from flowjobs.core.planner import LoopProgress
from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.core.transitions import ACTIVE, FINAL, REASONS, RUN_RULES, STEP_RULES, Rule
from flowjobs.store.codec import (
    EVENT_CODES,
    EVENTS_TRIMMED_FIELD,
    KEY_POSITIONS,
    LISTENED_FIELD,
    RUN_HASH_FIELDS,
    STEP_FIELD_CODES,
    STEP_FIELD_SEPARATOR,
    STEPS_VERSION_FIELD,
    STORED_STEP_FIELDS,
    from_pairs,
    moment,
    split_steps,
    stored_step,
    text,
)
from flowjobs.store.replicas import ReplicaWait
from flowjobs.store.transitions import (
    AdmissionRefusal,
    AppliedPlan,
    Cancelled,
    CancelRefusal,
    Claim,
    ClaimRefusal,
    Created,
    Delivered,
    FenceRefusal,
    NewRun,
    R,
    Refused,
    RetryRefusal,
    RunSnapshot,
    Signalled,
    SignalRefusal,
    StateScope,
)

SCRIPT_NAMES = (
    "start_run",
    "apply_plan",
    "claim",
    "complete",
    "renew_many",
    "run_detail",
    "expand_loop",
    "deliver_signal",
    "end_run",
    "idle_runs",
    "read_state",
    "cancel_run",
    "retry_step",
    "note_event",
    "read_hashes",
    "create_run",
)

#: JSON fields (at any depth of a script's document) whose value is a Redis key, a list of keys or
#: a map of keys: the one vocabulary of every script, so ``KEYS`` is built the same way for all.
#: A field holding anything else never takes one of these names.
KEY_FIELDS = frozenset(
    {
        "run_key",
        "events_key",
        "status_keys",
        "flow_status_keys",
        "deadlines_key",
        "metrics_key",
        "steps_key",
        "leases_key",
        "pending_key",
        "attempts_key",
        "loops_key",
        "loop_items_key",
        "jobs_key",
        "signals_key",
        "flow_key",
        "listeners_key",
        "bucket_key",
        "once_key",
        "idempotency_key",
        "count_key",
        "command_keys",
        "hash_keys",
        "run_keys",
        "steps_keys",
        "loops_keys",
        "job_keys",
        "index_keys",
        "registry_keys",
        "books_keys",
    }
)

#: Whether scripts are registered with ``key_check_prelude`` (tests; each call then costs more).
CHECK_KEYS_ENV = "FLOWJOBS_CHECK_SCRIPT_KEYS"


def check_keys() -> bool:
    """Whether ``FLOWJOBS_CHECK_SCRIPT_KEYS`` asks for checked scripts."""
    return os.environ.get(CHECK_KEYS_ENV, "") not in ("", "0")


@cache
def script_source(name: str, checked: bool = False) -> str:
    """A script's Lua, after the generated prelude (``lua_prelude``: the key check when
    ``checked``, the transitions, the record codes, ``script_args``, then the metric constants)
    and the shared helpers of ``common.lua`` and ``rq_jobs.lua``. ``purge_runs`` stands alone: it
    gets the key check and ``script_args`` only."""
    lua = files("flowjobs") / "lua"
    check = key_check_prelude() if checked else ""
    if name == "purge_runs":
        return check + key_args_prelude() + (lua / f"{name}.lua").read_text()
    prelude = check + lua_prelude() + key_args_prelude() + metric_constants()
    shared = (lua / "common.lua").read_text() + "\n" + (lua / "rq_jobs.lua").read_text()
    return prelude + shared + "\n" + (lua / f"{name}.lua").read_text()


@cache
def key_args_prelude() -> str:
    """``script_args()``: ARGV[1] decoded, each ``KEY_FIELDS`` value (a KEYS position, or a list
    or map of them) replaced by the key itself."""
    fields = ", ".join(f"{name} = true" for name in sorted(KEY_FIELDS))
    return f"""local KEY_FIELDS = {{{fields}}}
local function resolve_keys(value)
  for name, v in pairs(value) do
    if KEY_FIELDS[name] then
      if type(v) == 'number' then
        value[name] = KEYS[v]
      elseif type(v) == 'table' then
        for k, i in pairs(v) do v[k] = KEYS[i] end
      end
    elseif type(v) == 'table' then
      resolve_keys(v)
    end
  end
  return value
end
local function script_args() return resolve_keys(cjson.decode(ARGV[1])) end
"""


@cache
def key_check_prelude() -> str:
    """A local ``redis`` that shadows the server's (its globals are read-only, a local is not):
    each ``call``/``pcall`` fails unless every key argument of the command (``KEY_POSITIONS``) is
    in ``KEYS``, or the command is unknown to the table. For tests (``FLOWJOBS_CHECK_SCRIPT_KEYS``)."""
    positions = ", ".join(f"{name} = {_lua_string(how)}" for name, how in sorted(KEY_POSITIONS.items()))
    return f"""local redis = (function(server)
  local positions = {{{positions}}}
  local declared = {{}}
  for _, key in ipairs(KEYS) do declared[key] = true end
  local function check(name, ...)
    local how = positions[string.upper(name)]
    if not how then error('key check: command ' .. name .. ' is not in KEY_POSITIONS') end
    local args = {{...}}
    local last = 0
    if how == 'first' then last = 1 elseif how == 'all' then last = #args end
    for i = 1, last do
      if not declared[args[i]] then
        error('key check: ' .. name .. ' on undeclared key ' .. tostring(args[i]))
      end
    end
  end
  return setmetatable({{
    call = function(name, ...) check(name, ...) return server.call(name, ...) end,
    pcall = function(name, ...) check(name, ...) return server.pcall(name, ...) end,
  }}, {{__index = server}})
end)(redis)
"""


@cache
def lua_prelude() -> str:
    """``flowjobs.core.transitions`` as Lua: ``FINAL`` (step statuses) and ``ACTIVE`` (run
    statuses) as sets; ``RUN`` and ``STEP``, each rule by name as ``{from = set, target = its one
    target status, run = set of run statuses}`` (``target`` and ``run`` only when the rule has
    them; a step without a record is ``''``, as ``HGET ... or ''`` reads it); ``REASON``, with
    ``run_is`` as {text before the status, text after it}.

    Every script call builds these tables afresh (Redis keeps no Lua state between calls), so the
    prelude holds only what scripts read: each distinct set once (``SET_<members>``), and no rule's
    set of targets.
    """
    sets: dict[frozenset[str], str] = {}

    def lua_set(statuses: Iterable[StepStatus | RunStatus | None]) -> str:
        names = frozenset("" if status is None else status.value for status in statuses)
        return sets.setdefault(names, "SET_" + "_".join(sorted(name or "none" for name in names)))

    def rules(table: Mapping[str, Rule[Any]]) -> str:
        lines = []
        for name, rule in table.items():
            fields = {"from": lua_set(rule.source)}
            targets = [status for status in rule.target if status is not None]
            if len(rule.target) == 1 and targets:
                fields["target"] = _lua_string(targets[0].value)
            if rule.run is not None:
                fields["run"] = lua_set(rule.run)
            lines.append(f"  {name} = {{{', '.join(f'{key} = {value}' for key, value in fields.items())}}}")
        return "{\n" + ",\n".join(lines) + "\n}"

    before, after = REASONS.run_is.split("{status}")
    reason = (
        f"{{cancelled = {_lua_string(REASONS.cancelled)}, "
        f"flow_disabled = {_lua_string(REASONS.flow_disabled)}, "
        f"run_is = {{{_lua_string(before)}, {_lua_string(after)}}}}}"
    )
    tables = [
        f"local FINAL = {lua_set(FINAL)}",
        f"local ACTIVE = {lua_set(ACTIVE)}",
        f"local RUN = {rules(RUN_RULES)}",
        f"local STEP = {rules(STEP_RULES)}",
        f"local REASON = {reason}",
    ]
    set_lines = [
        f"local {name} = {{{', '.join(f'[{_lua_string(member)}] = true' for member in sorted(members))}}}"
        for members, name in sets.items()
    ]
    codes = ", ".join(f"{name} = {_lua_string(code)}" for name, code in STEP_FIELD_CODES.items())
    events = ", ".join(
        f"[{_lua_string(kind.value)}] = {_lua_string(code)}" for kind, code in EVENT_CODES.items()
    )
    job_id_parts = ", ".join(_lua_string(part) for part in PLAIN_STEP_JOB_ID)
    records = [
        f"local STEP_FIELD = {{{codes}}}",
        f"local STEP_FIELD_SEPARATOR = {_lua_string(STEP_FIELD_SEPARATOR)}",
        f"local STEPS_VERSION = {_lua_string(STEPS_VERSION_FIELD)}",
        f"local EVENTS_TRIMMED = {_lua_string(EVENTS_TRIMMED_FIELD)}",
        f"local LISTENED = {_lua_string(LISTENED_FIELD)}",
        f"local EVENT_CODE = {{{events}}}",
        f"local STEP_JOB_ID = {{{job_id_parts}}}",
        f"local RUN_FIELDS = {{{', '.join(_lua_string(name) for name in RUN_HASH_FIELDS)}}}",
        f"local STORED_STEP_FIELDS = {{{', '.join(_lua_string(name) for name in STORED_STEP_FIELDS)}}}",
    ]
    header = (
        "-- Generated from flowjobs/core/transitions.py, flowjobs/store/codec.py and"
        " flowjobs/core/job_calls.py by flowjobs/store/scripts.py (lua_prelude)."
    )
    return "\n".join([header, *set_lines, *tables, *records, ""])


def _lua_string(value: str) -> str:
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"not a printable ASCII text for a Lua literal: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class StoredRun:
    """A run's hash, its step records and its archived attempts, as ``run_detail`` read them."""

    run: dict[str, str]
    steps: dict[str, dict[str, str]]
    """Step key → the step record's fields by name (``split_steps``)."""
    attempts: dict[str, str]
    """``<step_key>#<attempt>`` → JSON (``Keys.attempts``)."""


class Scripts:
    """The scripts registered on one Redis; each method runs one script and decodes its reply."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        checked = check_keys()
        self._registered = {
            name: redis.register_script(script_source(name, checked)) for name in SCRIPT_NAMES
        }

    def _call(self, name: str, args: Mapping[str, Any], argv: Sequence[bytes] = ()) -> Any:
        keys, script_args = script_call(args, argv)
        return self._registered[name](keys=keys, args=script_args)

    def create_run(self, new: NewRun, wait: ReplicaWait | None = None) -> Created | Refused[AdmissionRefusal]:
        """``create_run.lua``; with ``wait``, then ``WAIT`` on the same connection (a pipeline)."""
        if wait is None:
            return decode_create_run(self._call("create_run", new.args, new.argv), new.run_id)
        with self._redis.pipeline(transaction=False) as pipe:
            keys, args = script_call(new.args, new.argv)
            self._registered["create_run"](keys=keys, args=args, client=pipe)
            pipe.wait(wait.replicas, wait.timeout_ms)
            reply, acknowledged = pipe.execute()
        return wait.check(decode_create_run(reply, new.run_id), int(acknowledged))

    def start_run(self, args: Mapping[str, Any]) -> tuple[RunStatus, RunSnapshot] | None:
        """``start_run.lua``."""
        return decode_start_run(self._call("start_run", args))

    def apply_plan(
        self, args: Mapping[str, Any], argv: Sequence[bytes], scope: StateScope | None
    ) -> AppliedPlan | RunSnapshot:
        """``apply_plan.lua``; ``scope`` is what ``args["scope"]`` reads back if the plan is out of date."""
        return decode_apply_plan(self._call("apply_plan", args, argv), scope)

    def claim(
        self, args: Mapping[str, Any], refs: Sequence[str], scope: StateScope | None
    ) -> Claim | Refused[ClaimRefusal]:
        """``claim.lua``; ``refs`` name the steps whose hash keys ``args["refs"]`` lists, in order."""
        return decode_claim(self._call("claim", args), refs, scope)

    def complete(
        self,
        args: Mapping[str, Any],
        argv: Sequence[bytes],
        scope: StateScope | None,
    ) -> RunSnapshot | Refused[FenceRefusal] | Signalled:
        """``complete.lua``."""
        return decode_complete(self._call("complete", args, argv), scope)

    def expand_loop(
        self, args: Mapping[str, Any], scope: StateScope | None
    ) -> RunSnapshot | Refused[FenceRefusal]:
        """``expand_loop.lua``."""
        return decode_expand_loop(self._call("expand_loop", args), scope)

    def read_state(self, args: Mapping[str, Any], scope: StateScope | None) -> RunSnapshot:
        """``read_state.lua``."""
        return decode_state(self._call("read_state", args), scope)

    def renew_many(self, args: Mapping[str, Any]) -> list[bool]:
        """``renew_many.lua``."""
        return decode_renew_many(self._call("renew_many", args))

    def deliver_signal(
        self, args: Mapping[str, Any], argv: Sequence[bytes]
    ) -> Delivered | Refused[SignalRefusal]:
        """``deliver_signal.lua``."""
        return decode_deliver_signal(self._call("deliver_signal", args, argv))

    def end_run(self, args: Mapping[str, Any]) -> RunStatus | None:
        """``end_run.lua``."""
        return decode_end_run(self._call("end_run", args))

    def cancel_run(self, args: Mapping[str, Any]) -> Cancelled | Refused[CancelRefusal]:
        """``cancel_run.lua``."""
        return decode_cancel_run(self._call("cancel_run", args))

    def retry_step(self, args: Mapping[str, Any], argv: Sequence[bytes]) -> int | Refused[RetryRefusal]:
        """``retry_step.lua``."""
        return decode_retry_step(self._call("retry_step", args, argv))

    def note_event(self, args: Mapping[str, Any]) -> bool:
        """``note_event.lua``: False when there is no such run."""
        return bool(self._call("note_event", args))

    def run_detail(self, args: Mapping[str, Any]) -> StoredRun | None:
        """``run_detail.lua``."""
        return decode_run_detail(self._call("run_detail", args))

    def idle_runs(self, args: Mapping[str, Any]) -> list[tuple[str, RunStatus]]:
        """``idle_runs.lua``."""
        return decode_idle_runs(self._call("idle_runs", args))

    def read_hashes(self, keys: Sequence[str], fields: Sequence[Sequence[str]]) -> list[list[str | None]]:
        """``read_hashes.lua``: per key, the values of its ``fields`` (None where absent)."""
        return decode_read_hashes(self._call("read_hashes", {"hash_keys": keys, "fields": fields}))


def script_call(args: Mapping[str, Any], argv: Sequence[bytes] = ()) -> tuple[list[str], list[Any]]:
    """A script's KEYS and ARGV: every ``KEY_FIELDS`` value of the JSON document moved into KEYS
    (each distinct key once; the document keeps its 1-based position), then the document, then
    the binary arguments.

    Built on every step's claim and completion, so it walks the document by exact type (documents
    are built of dicts, lists, tuples and scalars; ``isinstance`` against the ABCs cost more than
    the rest of the walk) and leaves lists of scalars as they are."""
    positions: dict[str, int] = {}

    def position(key: str) -> int:
        at = positions.get(key)
        if at is None:
            at = positions[key] = len(positions) + 1
        return at

    def declared(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is str:
            return position(value)
        if isinstance(value, Mapping):
            return {name: position(key) for name, key in value.items()}
        return [position(key) for key in value]

    def walk(value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            out = {}
            for name, v in value.items():
                if name in KEY_FIELDS:
                    out[name] = declared(v)
                elif type(v) in _CONTAINERS:
                    out[name] = walk(v)
                else:
                    out[name] = v
            return out
        if kind is list or kind is tuple:
            if not any(type(v) in _CONTAINERS for v in value):
                return value
            return [walk(v) for v in value]
        if isinstance(value, Mapping):
            return walk(dict(value))
        return value

    document = walk(args if type(args) is dict else dict(args))
    return list(positions), [json.dumps(document), *argv]


#: The container types a script document is built of (``script_call`` walks into these only).
_CONTAINERS = frozenset({dict, list, tuple})


def decode_create_run(reply: Any, run_id: str) -> Created | Refused[AdmissionRefusal]:
    """``{'created'}``, ``{'existing', first run id}`` or a refusal."""
    head = text(reply[0])
    if head == "created":
        return Created(run_id, created=True)
    if head == "existing":
        return Created(text(reply[1]), created=False)
    return _refused(reply, AdmissionRefusal)


def decode_start_run(reply: Any) -> tuple[RunStatus, RunSnapshot] | None:
    """``{status before, state}`` → (status before, snapshot of the whole run after); false → None."""
    if not reply:
        return None
    before, state = reply
    return RunStatus(text(before)), decode_state(state, None)


def decode_applied(reply: Any) -> AppliedPlan:
    """apply_continuation's ``{dispatched step keys, closed status or false, run status or false}``."""
    dispatched, closed, status = reply
    return AppliedPlan(
        dispatched=[text(key) for key in dispatched],
        closed=RunStatus(text(closed)) if closed else None,
        run_status=RunStatus(text(status)) if status else None,
    )


def decode_apply_plan(reply: Any, scope: StateScope | None) -> AppliedPlan | RunSnapshot:
    """``{'applied', applied}`` → AppliedPlan; ``{'moved', state}`` → the snapshot to plan again from."""
    head, body = reply
    return decode_applied(body) if head == b"applied" else decode_state(body, scope)


def decode_claim(reply: Any, refs: Sequence[str], scope: StateScope | None) -> Claim | Refused[ClaimRefusal]:
    """``{'ok', {ref views}, {first_started_at, loop item}, state}`` or a refusal."""
    if reply[0] != b"ok":
        return _refused(reply, ClaimRefusal)
    _, views, (first_started, loop_item), state = reply
    snapshot = decode_state(state, scope)
    return Claim(
        run=snapshot.run,
        refs={ref: stored_step(values) for ref, values in zip(refs, views, strict=True)},
        first_started_at=moment(text(first_started)) if first_started else None,
        loop_item_json=text(loop_item) if loop_item else None,
        snapshot=snapshot,
    )


def decode_complete(reply: Any, scope: StateScope | None) -> RunSnapshot | Refused[FenceRefusal] | Signalled:
    """``{'ok', state, false}``, ``{'ok', false, applied}``, ``{'signalled', payload}`` or a refusal."""
    if reply[0] == b"signalled":
        return Signalled(text(reply[1]))
    if reply[0] != b"ok":
        return _refused(reply, FenceRefusal)
    _, state, applied = reply
    if applied:
        return RunSnapshot(statuses={}, run={}, scope=scope, applied=decode_applied(applied))
    return decode_state(state, scope)


def decode_expand_loop(reply: Any, scope: StateScope | None) -> RunSnapshot | Refused[FenceRefusal]:
    """``{'ok', state}`` or a refusal."""
    if reply[0] != b"ok":
        return _refused(reply, FenceRefusal)
    return decode_state(reply[1], scope)


def decode_state(reply: Any, scope: StateScope | None) -> RunSnapshot:
    """read_state's ``{statuses, run, loops, iteration final}`` (common.lua) as a snapshot."""
    steps, run, loops, final = reply
    fields = from_pairs(loops)
    return RunSnapshot(
        statuses={key: StepStatus(value) for key, value in from_pairs(steps).items()},
        run=from_pairs(run),
        loops={
            key: LoopProgress(
                int(count), int(fields.get(f"{key}.started", 0)), int(fields.get(f"{key}.done", 0))
            )
            for key, count in fields.items()
            if "." not in key
        },
        scope=scope,
        iteration_final=bool(final),
    )


def decode_renew_many(reply: Any) -> list[bool]:
    """``{1 or 0 per lease}``."""
    return [bool(renewed) for renewed in reply]


def decode_deliver_signal(reply: Any) -> Delivered | Refused[SignalRefusal]:
    """``{'resumed', step key...}``, ``{'kept'}`` or a refusal."""
    head = text(reply[0])
    if head == "resumed":
        return Delivered([text(key) for key in reply[1:]])
    if head == "kept":
        return Delivered([])
    return _refused(reply, SignalRefusal)


def decode_cancel_run(reply: Any) -> Cancelled | Refused[CancelRefusal]:
    """``{'cancelled', closed now 1/0, {job ids}}`` or a refusal."""
    if reply[0] != b"cancelled":
        return _refused(reply, CancelRefusal)
    _, closed, job_ids = reply
    return Cancelled(closed=bool(closed), job_ids=[text(job_id) for job_id in job_ids if job_id])


def decode_retry_step(reply: Any) -> int | Refused[RetryRefusal]:
    """``{'retried', new attempt}`` → the attempt number, or a refusal."""
    if reply[0] != b"retried":
        return _refused(reply, RetryRefusal)
    return int(reply[1])


def decode_end_run(reply: Any) -> RunStatus | None:
    """The status the run was closed with; false (not active) → None."""
    return RunStatus(text(reply)) if reply else None


def decode_run_detail(reply: Any) -> StoredRun | None:
    """``{run, steps hash, attempts}``; false (no run) → None."""
    if not reply:
        return None
    run, steps, attempts = reply
    fields = from_pairs(run)
    return StoredRun(
        run=fields, steps=split_steps(fields.get("id", ""), from_pairs(steps)), attempts=from_pairs(attempts)
    )


def decode_idle_runs(reply: Any) -> list[tuple[str, RunStatus]]:
    """``{run_id, status, ...}`` flat."""
    return [(text(reply[i]), RunStatus(text(reply[i + 1]))) for i in range(0, len(reply), 2)]


def decode_read_hashes(reply: Any) -> list[list[str | None]]:
    """Per key, the value of each field asked, in order (nil where absent)."""
    return [[text(value) if value is not None else None for value in values] for values in reply]


def _refused(reply: Any, family: type[R]) -> Refused[R]:
    """``{reason[, detail]}``, ``reason`` one of the script's own ``family`` (a ValueError otherwise)."""
    return Refused(family(text(reply[0])), text(reply[1]) if len(reply) > 1 else "")
