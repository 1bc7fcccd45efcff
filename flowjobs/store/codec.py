"""Encoding between flowjobs' records and Redis: run hashes, replies (bytes, flat pairs), script ARGV."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote
from uuid import UUID

from flowjobs.core.clock import from_epoch_ms
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


def decode_step(
    run_id: UUID | str, step_key: str, fields: Mapping[str, str], archived: Mapping[int, str]
) -> FlowStepRecord:
    """A step record from its hash (which does not repeat the run id and step key its key names)
    and its archived attempts (attempt number → JSON, see ``Keys.attempts``): those attempts in
    order, then the latest one, read from the step hash once it was claimed (``started_at``);
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
    """A time as step hashes and attempts store it: epoch ms (ISO text from older versions)."""
    text = str(value)
    return from_epoch_ms(int(text)) if text.isdigit() else datetime.fromisoformat(text)


def _times(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with their times (``_TIME_FIELDS``) as datetimes."""
    return {name: moment(value) if name in _TIME_FIELDS else value for name, value in fields.items()}


def decode_event(run_id: UUID | str, raw: str) -> RunEvent:
    """An event from its entry in the run's events list (``Keys.events``): ``<sequence>|<epoch ms>|
    <type>|<step key, % and | percent-encoded, or empty>``, then ``|<message>`` if it has one
    (a JSON ``RunEvent``: written before this encoding)."""
    if raw.startswith("{"):
        return RunEvent.model_validate_json(raw)
    sequence, ms, kind, rest = raw.split("|", 3)
    step_key, has_message, message = rest.partition("|")
    return RunEvent(
        sequence=int(sequence),
        run_id=UUID(str(run_id)),
        timestamp=from_epoch_ms(int(ms)),
        type=EventType(kind),
        step_key=unquote(step_key) if step_key else None,
        message=message if has_message else None,
    )


def stored_step(values: Sequence[Any]) -> StoredStep:
    """A step's view from ``HMGET status output_json error_message``."""
    status, output_json, error = values
    return StoredStep(
        status=StepStatus(text(status)) if status else None,
        output_json=text(output_json) if output_json else None,
        error=text(error) if error else None,
    )


def command_slices(argv: list[bytes], commands: Sequence[Sequence[bytes]]) -> list[list[int]]:
    """Append Redis commands to a script's ARGV; their ``{offset, count}`` slices for ``run_commands``."""
    out = []
    for command in commands:
        out.append([len(argv) + 2, len(command)])  # ARGV[1] is the JSON document
        argv.extend(command)
    return out


def from_pairs(flat: Sequence[bytes]) -> dict[str, str]:
    """A Lua HGETALL reply (flat key, value list) as a dict."""
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def from_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A client HGETALL reply (bytes to bytes) as text."""
    return {text(k): text(v) for k, v in raw.items()}


def text(value: Any) -> str:
    """A Redis reply (bytes, as the client does not decode) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
