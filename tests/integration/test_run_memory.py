"""Memory per run (issue #6 part B): the latest attempt lives in the step hash only, events are
compact strings in a bounded list; the public records read back the same."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from typing import Any
from uuid import UUID

from flowjobs import FlowRunRecord, FlowStepRecord, RunStatus, StepStatus
from flowjobs.core.clock import utcnow
from flowjobs.core.job_calls import step_job_id
from flowjobs.core.stats import hour_edges
from flowjobs.store.codec import decode_event, from_hash, split_steps
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry

#: Step keys that the event encoding must carry as they are (``|`` separates fields, ``%`` escapes).
ODD_KEY = "発送_key-7"  # letters of any script, digits, _ and - (the step-key rule)


def _linear(name: str, steps: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"s1": {"type": "Noop"}}
    for i in range(2, steps + 1):
        spec[f"s{i}"] = {"type": "Noop", "run_after": [f"s{i - 1}"]}
    return spec


def _run(space: Space, name: str, steps: dict[str, Any]) -> UUID:
    """Trigger ``name`` and run it to the end in this process."""
    client = space.client(registry(flow(name, steps)))
    run_id = client.trigger(name).run_id
    space.drain()
    return run_id


def _detail(space: Space, run_id: UUID) -> FlowRunRecord:
    detail = space.client(registry()).get_run_detail(run_id)
    assert detail is not None
    return detail


def _steps(detail: FlowRunRecord) -> dict[str, FlowStepRecord]:
    return {s.step_key: s for s in detail.steps or []}


def test_a_finished_linear_run_keeps_its_own_keys_within_2_kib(space: Space) -> None:
    run_id = _run(space, "linear5", _linear("linear5", 5))
    detail = _detail(space, run_id)
    assert detail.status is RunStatus.Succeeded and len(detail.steps or []) == 5
    own = list(space.redis.scan_iter(match=f"{space.keys.run(run_id)}*", count=1000))
    sizes = {key.decode(): int(space.redis.memory_usage(key, samples=0) or 0) for key in own}
    # The run hash, its step records (one hash), its events; no archived attempt (issue 15: 2 KiB).
    keys = space.keys
    assert sorted(sizes) == sorted([keys.run(run_id), keys.run_steps(run_id), keys.events(run_id)])
    assert sum(sizes.values()) <= 2048, sizes


def test_a_retried_step_lists_every_attempt_in_order(space: Space) -> None:
    calls = f"{space.token}:calls"
    steps = {
        "call": {
            "type": "Flaky",
            "inputs": {"key": calls, "succeed_on": 3},
            "retry": {"max_attempts": 3, "backoff_seconds": 0},
        },
        "after": {"type": "Noop", "run_after": ["call"]},
    }
    run_id = _run(space, "retried", steps)
    detail = _detail(space, run_id)
    assert detail.status is RunStatus.Succeeded
    call = _steps(detail)["call"]
    attempts = call.attempts or []
    assert [(a.attempt, a.status) for a in attempts] == [
        (1, StepStatus.Failed),
        (2, StepStatus.Failed),
        (3, StepStatus.Succeeded),
    ]
    assert [a.job_id for a in attempts] == [step_job_id(run_id, "call", n) for n in (1, 2, 3)]
    assert [a.error_message for a in attempts] == [
        "ConnectionError: flaky failure on attempt 1",
        "ConnectionError: flaky failure on attempt 2",
        None,
    ]
    assert all(a.run_id == run_id and a.step_key == "call" and a.step_type == "Flaky" for a in attempts)
    assert all(a.input_json and a.started_at and a.completed_at for a in attempts)
    assert attempts[2].output_json == call.output_json
    assert (attempts[2].started_at, attempts[2].completed_at) == (call.started_at, call.completed_at)
    # Layout: only the attempts that are not the latest are archived; the latest is the step hash.
    archived = {k.decode() for k in space.redis.hkeys(space.keys.attempts(run_id))}
    assert archived == {"call#1", "call#2"}
    after = _steps(detail)["after"]
    assert [(a.attempt, a.status) for a in after.attempts or []] == [(1, StepStatus.Succeeded)]


def test_events_survive_the_compact_encoding(space: Space) -> None:
    steps = {
        ODD_KEY: {"type": "Refuse", "inputs": {"message": "a|b||c %7C|"}},
        "never": {"type": "Noop", "run_after": [ODD_KEY]},
    }
    run_id = _run(space, "compact", steps)
    events = space.engine().store.history.events(run_id)
    assert [(e.sequence, e.type.value, e.step_key, e.message) for e in events] == [
        (1, "run.started", None, None),
        (2, "step.started", ODD_KEY, "attempt 1"),
        (3, "step.failed", ODD_KEY, "a|b||c %7C|"),
        (4, "step.skipped", "never", events[3].message),
        (5, "run.completed", None, "Failed"),
    ]
    assert events[3].message  # the skip reason names the failed dependency
    assert all(e.run_id == run_id for e in events)
    assert all(e.timestamp.tzinfo is UTC and e.timestamp.microsecond % 1000 == 0 for e in events)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    stored = space.redis.lindex(space.keys.events(run_id), 0)
    assert stored is not None and str(run_id) not in stored.decode()


def test_a_run_keeps_its_last_events_with_absolute_sequences(space: Space) -> None:
    space.settings = space.settings.model_copy(update={"max_run_events": 10})
    run_id = _run(space, "chatty", _linear("chatty", 8))  # 1 + 2 per step + 1 = 18 events
    events = space.engine().store.history.events(run_id)
    assert [e.sequence for e in events] == list(range(9, 19))
    first_two = [(e.type.value, e.step_key) for e in events[:2]]
    assert first_two == [("step.completed", "s4"), ("step.started", "s5")]
    assert (events[-1].type.value, events[-1].message) == ("run.completed", "Succeeded")
    assert space.redis.llen(space.keys.events(run_id)) == 10


def test_a_history_trimmed_by_the_sequenced_encoding_counts_on(space: Space) -> None:
    """Entries that carry their sequence (written before, trimmed at the bound) and the ones that
    follow, which count on from them, read as one history, and stay bounded once trimmed again."""
    space.settings = space.settings.model_copy(update={"max_run_events": 4})
    client = space.client(registry(flow("sequenced", _linear("sequenced", 1))))
    run_id = client.trigger("sequenced").run_id
    events = space.keys.events(run_id)
    space.redis.rpush(events, *(f"{sequence}|1767225600000|sr|s1|old" for sequence in (97, 98, 99, 100)))
    live = space.redis.pubsub(ignore_subscribe_messages=True)
    live.subscribe(space.keys.events_channel())
    client.queries.keep_listening()
    space.drain()
    history = space.engine().store.history.events(run_id)
    published: list[int] = []

    def heard_all() -> bool:
        message = live.get_message(timeout=0.1)
        if message is not None and message["data"].decode().startswith(str(run_id)):
            published.append(decode_event(run_id, message["data"].decode().partition("|")[2]).sequence)
        return len(published) == len(history)

    wait_until(heard_all, timeout=10)
    live.close()
    assert published == [e.sequence for e in history], "the live stream numbers events as the history does"
    assert [(e.sequence, e.type.value) for e in history] == [
        (101, "run.started"),
        (102, "step.started"),
        (103, "step.completed"),
        (104, "run.completed"),
    ]
    assert space.redis.llen(events) == 4


def test_runs_written_before_the_compact_layout_still_read(space: Space) -> None:
    """JSON events are decoded and continued; an archived copy of the latest attempt is not listed twice."""
    client = space.client(registry(flow("older", _linear("older", 1))))
    run_id = client.trigger("older").run_id
    events = space.keys.events(run_id)
    for sequence in (1, 2):
        old = {"sequence": sequence, "run_id": str(run_id), "timestamp": "2026-01-01T00:00:00.123456+00:00"}
        old.update({"type": "step.retried", "step_key": "s1", "message": "m"})
        space.redis.rpush(events, json.dumps(old))
    space.drain()
    assert [(e.sequence, e.type.value) for e in space.engine().store.history.events(run_id)] == [
        (1, "step.retried"),
        (2, "step.retried"),
        (3, "run.started"),
        (4, "step.started"),
        (5, "step.completed"),
        (6, "run.completed"),
    ]
    old_latest = {"status": "Succeeded", "job_id": "old", "started_at": "2026-01-01T00:00:00+00:00"}
    space.redis.hset(space.keys.attempts(run_id), "s1#1", json.dumps(old_latest))
    step = _steps(_detail(space, run_id))["s1"]
    assert [(a.attempt, a.status, a.job_id) for a in step.attempts or []] == [
        (1, StepStatus.Succeeded, step_job_id(run_id, "s1", 1))
    ]


def test_runs_stored_with_one_hash_per_step_still_read_and_purge(space: Space) -> None:
    """A run written by a version with one hash per step (long field names, the job id always) reads
    back the same (its detail, its steps' durations in the flow's figures), and a purge deletes
    those hashes with the run."""
    definition = flow("hashes", _linear("hashes", 2))
    client = space.client(registry(definition))
    run_id = client.trigger("hashes").run_id
    space.drain()
    detail = _detail(space, run_id)
    steps_key = space.keys.run_steps(run_id)
    for step_key, fields in split_steps(run_id, from_hash(space.redis.hgetall(steps_key))).items():
        space.redis.hset(space.keys.legacy_step(run_id, step_key), mapping=fields)
    space.redis.delete(steps_key)
    space.redis.hset(steps_key, mapping={s.step_key: s.status.value for s in detail.steps or []})
    assert _detail(space, run_id) == detail
    edges = hour_edges(utcnow())
    window = client.store.stats.flow_window(definition.id, edges, sample_runs=5, sample_steps=50)
    durations = {s.step_key: s.seconds for s in window.steps}
    assert durations == {
        s.step_key: (s.completed_at - s.started_at).total_seconds()
        for s in detail.steps or []
        if s.completed_at and s.started_at
    }
    assert sorted(durations) == ["s1", "s2"]

    assert client.purge(timedelta(0)) == 1
    assert list(space.redis.scan_iter(match=f"{space.keys.run(run_id)}*", count=1000)) == []
