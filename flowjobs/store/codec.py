"""Encoding between flowjobs' records and Redis: run hashes, replies (bytes, flat pairs), script ARGV."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote
from uuid import UUID

from flowjobs.core.clock import from_epoch_ms
from flowjobs.core.job_calls import plain_step_job_id
from flowjobs.core.records import EventType, FlowRunRecord, FlowStepAttemptRecord, FlowStepRecord, RunEvent
from flowjobs.core.statuses import StepStatus
from flowjobs.store.transitions import StoredStep

#: Run fields stored as JSON text in the run hash (the others are scalars).
_JSON_RUN_FIELDS = ("trigger_headers",)
#: Step hash fields of its latest attempt: from the claim, and from the outcome once it ended.
_CLAIM_FIELDS = ("status", "job_id", "started_at")
_OUTCOME_FIELDS = ("input_json", "output_json", "error_message", "completed_at")
#: Step hash and archived attempt fields holding a time, in epoch ms.
_TIME_FIELDS = ("dispatched_at", "started_at", "completed_at")

#: A run's step records live in one hash (``Keys.run_steps``), one field per step and record field:
#: ``<step key>`` holds the status (the run's status index, read alone for planning) and
#: ``<step key>|<code>`` each other field. Step keys never hold ``|`` (manifest step keys are
#: letters, digits, ``_`` and ``-``; ForEach children add ``.``). One code per record field, for
#: Lua (``STEP_FIELD``, generated from this table) and Python alike.
STEP_FIELD_SEPARATOR = "|"
STEP_FIELD_CODES = {
    "step_type": "t",
    "attempt": "a",
    "job_id": "j",
    "dispatched_at": "d",
    "started_at": "b",
    "first_started_at": "f",
    "completed_at": "c",
    "input_json": "i",
    "output_json": "o",
    "error_message": "e",
    "evaluation_trace_json": "x",
    "lease_until_ms": "l",
    "worker": "w",
    "no_input": "n",
    "lost_attempts": "L",
    "crashed_attempts": "C",
}
_STEP_FIELD_NAMES = {code: name for name, code in STEP_FIELD_CODES.items()}
#: The steps hash's one field that is no step's (no step key is empty): the run's plan version,
#: raised by every write that can change a plan (``common.lua``, bump_version), so the step writes
#: that raise it carry it in the same HSET. Runs before it kept ``steps_version`` in the run hash,
#: still read where this field is absent.
STEPS_VERSION_FIELD = STEP_FIELD_SEPARATOR + "v"
#: The steps hash's other field of no step: how many entries were trimmed from the head of the run's
#: events list so far (``decode_events``), read with the step records the scripts read anyway.
EVENTS_TRIMMED_FIELD = STEP_FIELD_SEPARATOR + "e"
#: The steps hash's third field of no step, present ("1") only for a run started while a live view
#: listened (``Keys.listeners``): its events are published whatever the worker's view says.
LISTENED_FIELD = STEP_FIELD_SEPARATOR + "l"

#: Event types as the events list stores them (``Keys.events``); entries written before hold the
#: type itself, which still reads.
EVENT_CODES = {
    EventType.run_started: "rs",
    EventType.step_started: "ss",
    EventType.step_completed: "sc",
    EventType.step_failed: "sf",
    EventType.step_pending: "sp",
    EventType.step_skipped: "sk",
    EventType.step_retried: "sr",
    EventType.run_completed: "rc",
    EventType.run_cancel_requested: "rx",
    EventType.run_rerun: "rr",
}
_EVENT_TYPES = {code: kind for kind, code in EVENT_CODES.items()}

#: Where a Redis command flowjobs' scripts run holds its keys: ``first`` argument, ``all`` of them,
#: or ``none``. ``command_slices`` declares the keys of recorded commands from it and the scripts'
#: key check (``flowjobs/store/scripts.py``) checks every call against it; a command missing here
#: is refused by both, so no key escapes ``KEYS``.
KEY_POSITIONS = {
    **dict.fromkeys(
        (
            "HGET", "HSET", "HMSET", "HMGET", "HGETALL", "HKEYS", "HDEL", "HEXISTS", "HSETNX", "HINCRBY",
            "HINCRBYFLOAT", "HLEN", "ZADD", "ZREM", "ZSCORE", "ZRANGE", "ZRANGEBYSCORE", "ZCARD", "RPUSH",
            "LPUSH", "LTRIM", "LINDEX", "LLEN", "LRANGE", "LREM", "SADD", "SREM", "SMEMBERS", "SISMEMBER",
            "GET", "SET", "INCR", "EXPIRE", "PEXPIRE", "PERSIST", "TTL", "PTTL", "TYPE", "XADD", "XTRIM",
        ),
        "first",
    ),
    **dict.fromkeys(("DEL", "UNLINK", "EXISTS", "MGET", "TOUCH"), "all"),
    **dict.fromkeys(("TIME", "PUBLISH"), "none"),
}  # fmt: skip


#: Run hash fields besides the record's: the index score, the plan version (runs before
#: ``STEPS_VERSION_FIELD``) and a reopened deadline's start.
_RUN_EXTRA_FIELDS = ("started_score", "steps_version", "deadline_from")
#: Every field a run hash can hold but the trigger data (it can be megabytes): what the scripts read
#: with one HMGET for a snapshot (``RUN_FIELDS`` in Lua, generated from this).
RUN_HASH_FIELDS = (
    tuple(name for name in FlowRunRecord.model_fields if name not in ("steps", "trigger_data_json"))
    + _RUN_EXTRA_FIELDS
)


def encode_run(run: FlowRunRecord) -> dict[str, str]:
    """Hash fields of a run record (``None`` fields are left out)."""
    data = run.model_dump(mode="json", exclude={"steps"}, exclude_none=True)
    out: dict[str, str] = {}
    for name, value in data.items():
        if name in _JSON_RUN_FIELDS:
            out[name] = json.dumps(value)
        elif isinstance(value, bool):
            out[name] = "1" if value else "0"
        else:
            out[name] = str(value)
    return out


def decode_run(fields: Mapping[str, str]) -> FlowRunRecord:
    """A run record from its hash fields."""
    data: dict[str, Any] = dict(fields)
    for name in _JSON_RUN_FIELDS:
        if name in data:
            data[name] = json.loads(data[name])
    return FlowRunRecord.model_validate(data)


def step_field(step_key: str, name: str) -> str:
    """The field of the run's steps hash that holds a step's record field ``name``."""
    if name == "status":
        return step_key
    return f"{step_key}{STEP_FIELD_SEPARATOR}{STEP_FIELD_CODES[name]}"


def split_steps(run_id: UUID | str, flat: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """A run's steps hash as step key → the step's record fields by name; a job id not stored is
    the plain one of its attempt (``PLAIN_STEP_JOB_ID``)."""
    steps: dict[str, dict[str, str]] = {}
    for field, value in flat.items():
        step_key, separated, code = field.partition(STEP_FIELD_SEPARATOR)
        if not step_key:  # STEPS_VERSION_FIELD, EVENTS_TRIMMED_FIELD, LISTENED_FIELD
            continue
        steps.setdefault(step_key, {})["status" if not separated else _STEP_FIELD_NAMES[code]] = value
    for step_key, fields in steps.items():
        with_job(run_id, step_key, fields)
    return steps


def legacy_steps(steps: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Step keys whose record is a status alone: stored by a version before the one-hash layout,
    the rest of the record is in its own hash (``Keys.legacy_step``). Every record written now
    holds more (a step type at least)."""
    return [step_key for step_key, fields in steps.items() if fields.keys() == {"status"}]


def with_job(run_id: UUID | str, step_key: str, fields: dict[str, str]) -> dict[str, str]:
    """``fields`` of a step with its ``job_id``: the plain one of its attempt when none is stored."""
    if "job_id" not in fields and "attempt" in fields:
        fields["job_id"] = plain_step_job_id(run_id, step_key, fields["attempt"])
    return fields


def decode_step(
    run_id: UUID | str, step_key: str, fields: Mapping[str, str], archived: Mapping[int, str]
) -> FlowStepRecord:
    """A step record from its hash (which does not repeat the run id and step key its key names)
    and its archived attempts (attempt number → JSON, see ``Keys.attempts``): those attempts in
    order, then the latest one, read from the step record once it was claimed (``started_at``);
    while it runs, without an outcome."""
    common = {"run_id": str(run_id), "step_key": step_key, "step_type": fields["step_type"]}
    fields = _times(fields)
    # The latest attempt was claimed (a step queued for its next one has no started_at; a Pending
    # one with it was written before this layout: that start is its previous attempt's).
    claimed = "started_at" in fields and fields["status"] != StepStatus.Pending
    latest_number = int(fields.get("attempt", "1")) if claimed else None
    attempts = [
        FlowStepAttemptRecord.model_validate({**common, **_times(json.loads(raw)), "attempt": number})
        for number, raw in sorted(archived.items())
        if number != latest_number  # runs written before: their latest attempt was archived too
    ]
    if latest_number is not None:
        names = _CLAIM_FIELDS if fields["status"] == StepStatus.Running else _CLAIM_FIELDS + _OUTCOME_FIELDS
        latest = {name: fields[name] for name in names if name in fields}
        if "no_input" in fields:  # the step's input_json is not the latest attempt's (complete.lua)
            latest.pop("input_json", None)
        latest["attempt"] = latest_number
        attempts.append(FlowStepAttemptRecord.model_validate({**common, **latest}))
    # attempt_count is the current attempt's number (0: never dispatched, e.g. skipped).
    counted = {"attempt_count": fields.get("attempt", "0")}
    return FlowStepRecord.model_validate({**fields, **common, **counted, "attempts": attempts})


def moment(value: str | int) -> datetime:
    """A time as step records and attempts store it: epoch ms (ISO text from older versions)."""
    text = str(value)
    return from_epoch_ms(int(text)) if text.isdigit() else datetime.fromisoformat(text)


def _times(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with their times (``_TIME_FIELDS``) as datetimes."""
    return {name: moment(value) if name in _TIME_FIELDS else value for name, value in fields.items()}


def decode_event(run_id: UUID | str, raw: str, previous: int = 0) -> RunEvent:
    """An event from its entry in the run's events list (``Keys.events``): ``|<epoch ms>|<type code
    (EVENT_CODES) or type>|<step key, % and | percent-encoded, or empty>``, then ``|<message>`` if it
    has one. Its sequence is the ``previous`` entry's + 1 (``decode_events``) unless the entry
    holds one: entries written before (``<sequence>|...``, or a JSON ``RunEvent``) and the
    published ones (``common.lua``, push_event)."""
    if raw.startswith("{"):
        return RunEvent.model_validate_json(raw)
    sequence, ms, kind, rest = raw.split("|", 3)
    step_key, has_message, message = rest.partition("|")
    return RunEvent(
        sequence=int(sequence) if sequence else previous + 1,
        run_id=UUID(str(run_id)),
        timestamp=from_epoch_ms(int(ms)),
        type=_EVENT_TYPES.get(kind) or EventType(kind),
        step_key=unquote(step_key) if step_key else None,
        message=message if has_message else None,
    )


def decode_events(run_id: UUID | str, entries: Sequence[str], trimmed: int) -> list[RunEvent]:
    """A run's events list, oldest first; ``trimmed``: the steps hash's ``EVENTS_TRIMMED_FIELD`` (entries
    dropped from the head so far), the sequence before the first entry's."""
    events: list[RunEvent] = []
    previous = trimmed
    for raw in entries:
        event = decode_event(run_id, raw, previous)
        previous = event.sequence
        events.append(event)
    return events


#: The fields of a step's view (``stored_step``), in the order it reads them.
STORED_STEP_FIELDS = ("status", "output_json", "error_message")


def stored_step(values: Sequence[Any]) -> StoredStep:
    """A step's view from the HMGET of its ``STORED_STEP_FIELDS``."""
    status, output_json, error = values
    return StoredStep(
        status=StepStatus(text(status)) if status else None,
        output_json=text(output_json) if output_json else None,
        error=text(error) if error else None,
    )


def command_slices(argv: list[bytes], commands: Sequence[Sequence[bytes]]) -> dict[str, Any]:
    """Append Redis commands to a script's ARGV: ``{at: their {offset, count} slices, command_keys:
    the keys they touch}`` for ``run_commands`` (common.lua), the keys declared in KEYS."""
    slices = []
    keys: list[str] = []
    for command in commands:
        slices.append([len(argv) + 2, len(command)])  # ARGV[1] is the JSON document
        argv.extend(command)
        keys.extend(command_keys(command))
    return {"at": slices, "command_keys": keys}


def command_keys(command: Sequence[bytes]) -> list[str]:
    """The keys a recorded Redis command touches (``KEY_POSITIONS``)."""
    name = text(command[0]).upper()
    how = KEY_POSITIONS.get(name)
    if how is None:
        raise ValueError(f"{name} is not in KEY_POSITIONS: its keys cannot be declared")
    if how == "none":
        return []
    return [text(key) for key in (command[1:2] if how == "first" else command[1:])]


def from_pairs(flat: Sequence[bytes]) -> dict[str, str]:
    """A Lua HGETALL reply (flat key, value list) as a dict."""
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def from_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A client HGETALL reply (bytes to bytes) as text."""
    return {text(k): text(v) for k, v in raw.items()}


def text(value: Any) -> str:
    """A Redis reply (bytes, as the client does not decode) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
