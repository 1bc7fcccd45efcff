"""flowjobs' Lua scripts (``flowjobs/lua``): loading them, and one typed decoder per script.

Each script takes one JSON document (ARGV[1], documented in its header) plus, for scripts that
enqueue jobs, binary ARGV slices of Redis commands. The decoders here are the only code that
reads replies by position; everything else gets the transition types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from redis import Redis

from flowjobs.core.metrics import lua_prelude
from flowjobs.core.planner import LoopProgress
from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.store.codec import from_pairs, moment, stored_step, text
from flowjobs.store.transitions import (
    AppliedPlan,
    Cancelled,
    Claim,
    Created,
    Delivered,
    NewRun,
    Refusal,
    Refused,
    RunSnapshot,
    Signalled,
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


@cache
def script_source(name: str) -> str:
    """A script's Lua, with the shared helpers of ``common.lua`` (and the metric constants they
    use) prepended."""
    lua = files("flowjobs") / "lua"
    common = lua_prelude() + (lua / "common.lua").read_text()
    return common + "\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True)
class StoredRun:
    """A run's hash, its step hashes and its archived attempts, as ``run_detail`` read them."""

    run: dict[str, str]
    steps: dict[str, dict[str, str]]
    """Step key → the step hash's fields."""
    attempts: dict[str, str]
    """``<step_key>#<attempt>`` → JSON (``Keys.attempts``)."""


class Scripts:
    """The scripts registered on one Redis; each method runs one script and decodes its reply."""

    def __init__(self, redis: Redis) -> None:
        self._registered = {name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES}

    def _call(self, name: str, args: Mapping[str, Any], argv: Sequence[bytes] = ()) -> Any:
        return self._registered[name](args=script_argv(args, argv))

    def create_run(self, new: NewRun) -> Created | Refused:
        """``create_run.lua``."""
        return decode_create_run(self._call("create_run", new.args, new.argv), new.run_id)

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
    ) -> Claim | Refused:
        """``claim.lua``; ``refs`` name the steps whose hash keys ``args["refs"]`` lists, in order."""
        return decode_claim(self._call("claim", args), refs, scope)

    def complete(
        self, args: Mapping[str, Any], argv: Sequence[bytes], scope: StateScope | None
    ) -> RunSnapshot | Refused | Signalled:
        """``complete.lua``."""
        return decode_complete(self._call("complete", args, argv), scope)

    def expand_loop(self, args: Mapping[str, Any], scope: StateScope | None) -> RunSnapshot | Refused:
        """``expand_loop.lua``."""
        return decode_expand_loop(self._call("expand_loop", args), scope)

    def read_state(self, args: Mapping[str, Any], scope: StateScope | None) -> RunSnapshot:
        """``read_state.lua``."""
        return decode_state(self._call("read_state", args), scope)

    def renew_many(self, args: Mapping[str, Any]) -> list[bool]:
        """``renew_many.lua``."""
        return decode_renew_many(self._call("renew_many", args))

    def deliver_signal(self, args: Mapping[str, Any], argv: Sequence[bytes]) -> Delivered | Refused:
        """``deliver_signal.lua``."""
        return decode_deliver_signal(self._call("deliver_signal", args, argv))

    def end_run(self, args: Mapping[str, Any]) -> RunStatus | None:
        """``end_run.lua``."""
        return decode_end_run(self._call("end_run", args))

    def cancel_run(self, args: Mapping[str, Any]) -> Cancelled | Refused:
        """``cancel_run.lua``."""
        return decode_cancel_run(self._call("cancel_run", args))

    def retry_step(self, args: Mapping[str, Any], argv: Sequence[bytes]) -> int | Refused:
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

    def read_hashes(self, keys: Sequence[str], fields: Sequence[str]) -> list[dict[str, str]]:
        """``read_hashes.lua``: per key, the ``fields`` it has."""
        return decode_read_hashes(self._call("read_hashes", {"keys": keys, "fields": fields}), fields)


def script_argv(args: Mapping[str, Any], argv: Sequence[bytes] = ()) -> list[Any]:
    """A script's ARGV: its JSON document, then its binary arguments."""
    return [json.dumps(args), *argv]


def decode_create_run(reply: Any, run_id: str) -> Created | Refused:
    """``{'created'}``, ``{'existing', first run id}`` or a refusal."""
    head = text(reply[0])
    if head == "created":
        return Created(run_id, created=True)
    if head == "existing":
        return Created(text(reply[1]), created=False)
    return _refused(reply)


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


def decode_claim(reply: Any, refs: Sequence[str], scope: StateScope | None) -> Claim | Refused:
    """``{'ok', {ref views}, {first_started_at, loop item}, state}`` or a refusal."""
    if reply[0] != b"ok":
        return _refused(reply)
    _, views, (first_started, loop_item), state = reply
    snapshot = decode_state(state, scope)
    return Claim(
        run=snapshot.run,
        refs={ref: stored_step(values) for ref, values in zip(refs, views, strict=True)},
        first_started_at=moment(text(first_started)) if first_started else None,
        loop_item_json=text(loop_item) if loop_item else None,
        snapshot=snapshot,
    )


def decode_complete(reply: Any, scope: StateScope | None) -> RunSnapshot | Refused | Signalled:
    """``{'ok', state, false}``, ``{'ok', false, applied}``, ``{'signalled', payload}`` or a refusal."""
    if reply[0] == b"signalled":
        return Signalled(text(reply[1]))
    if reply[0] != b"ok":
        return _refused(reply)
    _, state, applied = reply
    if applied:
        return RunSnapshot(statuses={}, run={}, scope=scope, applied=decode_applied(applied))
    return decode_state(state, scope)


def decode_expand_loop(reply: Any, scope: StateScope | None) -> RunSnapshot | Refused:
    """``{'ok', state}`` or a refusal."""
    if reply[0] != b"ok":
        return _refused(reply)
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


def decode_deliver_signal(reply: Any) -> Delivered | Refused:
    """``{'resumed', step key...}``, ``{'kept'}`` or a refusal."""
    head = text(reply[0])
    if head == "resumed":
        return Delivered([text(key) for key in reply[1:]])
    if head == "kept":
        return Delivered([])
    return _refused(reply)


def decode_cancel_run(reply: Any) -> Cancelled | Refused:
    """``{'cancelled', closed now 1/0, {job ids}}`` or a refusal."""
    if reply[0] != b"cancelled":
        return _refused(reply)
    _, closed, job_ids = reply
    return Cancelled(closed=bool(closed), job_ids=[text(job_id) for job_id in job_ids if job_id])


def decode_retry_step(reply: Any) -> int | Refused:
    """``{'retried', new attempt}`` → the attempt number, or a refusal."""
    if reply[0] != b"retried":
        return _refused(reply)
    return int(reply[1])


def decode_end_run(reply: Any) -> RunStatus | None:
    """The status the run was closed with; false (not active) → None."""
    return RunStatus(text(reply)) if reply else None


def decode_run_detail(reply: Any) -> StoredRun | None:
    """``{run, {step key, step hash, ...}, attempts}``; false (no run) → None."""
    if not reply:
        return None
    run, steps, attempts = reply
    return StoredRun(
        run=from_pairs(run),
        steps={text(steps[i]): from_pairs(steps[i + 1]) for i in range(0, len(steps), 2)},
        attempts=from_pairs(attempts),
    )


def decode_idle_runs(reply: Any) -> list[tuple[str, RunStatus]]:
    """``{run_id, status, ...}`` flat."""
    return [(text(reply[i]), RunStatus(text(reply[i + 1]))) for i in range(0, len(reply), 2)]


def decode_read_hashes(reply: Any, fields: Sequence[str]) -> list[dict[str, str]]:
    """Per key, ``{value of each field}`` in ``fields`` order (nil where absent)."""
    return [
        {name: text(value) for name, value in zip(fields, values, strict=True) if value is not None}
        for values in reply
    ]


def _refused(reply: Any) -> Refused:
    """``{reason[, detail]}``: the refusals every script shares."""
    return Refused(Refusal(text(reply[0])), text(reply[1]) if len(reply) > 1 else "")
