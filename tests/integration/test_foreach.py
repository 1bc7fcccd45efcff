"""ForEach on real workers: a real concurrency limit, every iteration final before the loop ends."""

from __future__ import annotations

import json
from datetime import timedelta

from flowjobs import RunStatus, StepStatus
from flowjobs.core.clock import utcnow
from flowjobs.core.planner import LoopProgress
from flowjobs.recovery import recover
from flowjobs.store.transitions import Claim, StateScope
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry


def test_foreach_ten_items_limit_three_on_two_workers(space: Space) -> None:
    key = f"{space.token}:loop"
    after = f"{space.token}:after"
    client = space.client(
        registry(
            flow(
                "loop",
                {
                    "fetch": {"type": "Echo", "inputs": {"items": "@triggerBody()?.items"}},
                    "each": {
                        "type": "ForEach",
                        "run_after": ["fetch"],
                        "forEach": "@steps('fetch').output.inputs.items",
                        "concurrencyLimit": 3,
                        "steps": {
                            "work": {"type": "Track", "inputs": {"key": key, "hold": 0.3}},
                            "check": {
                                "type": "Echo",
                                "run_after": ["work"],
                                "inputs": {"done": "@steps('work').output.item"},
                            },
                        },
                    },
                    "after": {"type": "Record", "run_after": ["each"], "inputs": {"key": after}},
                },
            )
        )
    )
    space.start_worker("one", simple=True)
    space.start_worker("two", simple=True)
    items = [f"item-{n}" for n in range(10)]
    run = client.trigger("loop", data={"items": items}).wait(timeout=90)
    assert run.status is RunStatus.Succeeded
    detail = client.get_run_detail(run.id)
    assert detail is not None
    steps = {s.step_key: s for s in detail.steps or []}

    # An iteration is in flight from its first child's dispatch to its last child's completion.
    spans = []
    for index in range(10):
        children = [steps[f"each.{index}.work"], steps[f"each.{index}.check"]]
        first = min(c.dispatched_at for c in children if c.dispatched_at)
        last = max(c.completed_at for c in children if c.completed_at)
        spans.append((first, last))
    overlap = max(sum(1 for a, b in spans if a <= moment < b) for moment, _ in spans)
    assert 2 <= overlap <= 3, f"between 2 and 3 iterations should be in flight at once, saw {overlap}"
    running_handlers = int(space.redis.get(f"{key}:max") or 0)
    assert 1 <= running_handlers <= 2, "two workers run at most two handlers at once"
    done = [json.loads(entry) for entry in space.redis.lrange(f"{key}:done", 0, -1)]
    assert sorted(d["index"] for d in done) == list(range(10))
    assert {d["index"]: d["item"] for d in done} == dict(enumerate(items))
    for index, item in enumerate(items):
        work, check = steps[f"each.{index}.work"], steps[f"each.{index}.check"]
        assert work.status is StepStatus.Succeeded and check.status is StepStatus.Succeeded
        assert json.loads(work.input_json or "{}")["__loopItem"] == item
        assert json.loads(check.output_json or "{}")["inputs"] == {
            "done": item,
            "__loopItem": item,
            "__loopIndex": index,
        }
    loop = steps["each"]
    assert loop.status is StepStatus.Succeeded
    assert json.loads(loop.output_json or "[]") == [{"index": i, "status": "Succeeded"} for i in range(10)]
    assert space.redis.llen(after) == 1
    last_child = max(s.completed_at for k, s in steps.items() if k.startswith("each.") and s.completed_at)
    assert steps["after"].started_at is not None and steps["after"].started_at >= last_child


def test_foreach_with_a_failing_iteration_fails_and_an_empty_list_succeeds(space: Space) -> None:
    client = space.client(
        registry(
            flow(
                "partial",
                {
                    "each": {
                        "type": "ForEach",
                        "for_each": [1, 2, 3],
                        "steps": {
                            "maybe": {"type": "Echo", "inputs": {}},
                            "boom": {
                                "type": "Boom",
                                "run_after": ["maybe"],
                                "inputs": {"message": "bad item"},
                            },
                        },
                    },
                    "after": {"type": "Noop", "run_after": ["each"]},
                },
            ),
            flow(
                "empty",
                {
                    "each": {
                        "type": "ForEach",
                        "for_each": "@triggerBody()?.items",
                        "steps": {"x": {"type": "Noop"}},
                    },
                    "after": {"type": "Noop", "run_after": ["each"]},
                },
            ),
        )
    )
    failing = client.trigger("partial")
    empty = client.trigger("empty", data={"items": []})
    space.drain()

    run = client.get_run_detail(failing.run_id)
    assert run is not None and run.status is RunStatus.Failed
    steps = {s.step_key: s for s in run.steps or []}
    assert steps["each"].status is StepStatus.Failed
    assert steps["each"].error_message == "3 of 3 iterations failed."
    assert steps["after"].status is StepStatus.Skipped
    assert all(steps[f"each.{i}.boom"].status is StepStatus.Failed for i in range(3))

    run = client.get_run_detail(empty.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    steps = {s.step_key: s for s in run.steps or []}
    assert steps["each"].status is StepStatus.Succeeded and steps["each"].output_json == "[]"
    assert steps["after"].status is StepStatus.Succeeded


def test_foreach_over_something_that_is_not_a_list_fails_the_step(space: Space) -> None:
    client = space.client(
        registry(
            flow(
                "scalar",
                {
                    "each": {
                        "type": "ForEach",
                        "for_each": "@triggerBody()?.n",
                        "steps": {"x": {"type": "Noop"}},
                    },
                },
            )
        )
    )
    handle = client.trigger("scalar", data={"n": 5})
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed
    assert "did not resolve to a list (got int)" in ((run.steps or [])[0].error_message or "")


def test_run_deadline_skips_a_loop_that_waits_and_its_parked_children(space: Space) -> None:
    client = space.client(
        registry(
            flow(
                "slow-loop",
                {
                    "each": {
                        "type": "ForEach",
                        "for_each": [1, 2],
                        "steps": {
                            "poll": {"type": "PendingUntil", "inputs": {"done_on": 99, "delay": 30}},
                        },
                    },
                },
            )
        )
    )
    handle = client.trigger("slow-loop", data={"runTimeoutSeconds": 0.5})
    space.drain()  # the children park for 30 s; nothing else runs
    engine = space.engine()
    wait_until(lambda: recover(engine, grace_seconds=3600) >= 1, timeout=10, what="the deadline sweep")
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.TimedOut and run.timed_out_at is not None
    steps = {s.step_key: s for s in run.steps or []}
    for key in ("each", "each.0.poll", "each.1.poll"):
        assert steps[key].status is StepStatus.Skipped and steps[key].error_message == "Run is TimedOut."


def test_children_see_outer_steps_and_siblings_in_inputs_and_when_clauses(space: Space) -> None:
    client = space.client(
        registry(
            flow(
                "scoped",
                {
                    "config": {"type": "Echo", "inputs": {"threshold": 2}},
                    "each": {
                        "type": "ForEach",
                        "run_after": ["config"],
                        "for_each": [1, 2, 3],
                        "steps": {
                            "measure": {
                                "type": "Echo",
                                "inputs": {"limit": "@steps('config').output.inputs.threshold"},
                            },
                            "big": {
                                "type": "Echo",
                                "run_after": {
                                    "measure": {
                                        "statuses": ["Succeeded"],
                                        "when": "@steps('measure').output.inputs.__loopItem >= 2",
                                    }
                                },
                                "inputs": {"seen": "@steps('measure').output.inputs.__loopIndex"},
                            },
                        },
                    },
                },
            )
        )
    )
    handle = client.trigger("scoped")
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    steps = {s.step_key: s for s in run.steps or []}
    for index in range(3):
        measured = json.loads(steps[f"each.{index}.measure"].output_json or "{}")["inputs"]
        assert measured == {"limit": 2, "__loopItem": index + 1, "__loopIndex": index}
    assert steps["each.0.big"].status is StepStatus.Skipped
    trace = json.loads(steps["each.0.big"].evaluation_trace_json or "{}")
    assert trace["resolved"] == "1 >= 2" and trace["result"] is False
    for index in (1, 2):
        big = json.loads(steps[f"each.{index}.big"].output_json or "{}")["inputs"]
        assert big["seen"] == index
    assert steps["each"].status is StepStatus.Succeeded
    assert [o["status"] for o in json.loads(steps["each"].output_json or "[]")] == [
        "Skipped",
        "Succeeded",
        "Succeeded",
    ]


def test_a_child_plans_from_its_own_iteration_and_the_loop_counters(space: Space) -> None:
    """A claim of a ForEach child reads the top-level steps, its iteration and the loop's counters:
    never the other iterations, so a step costs the same in a loop of 10 or 10,000 items."""
    definition = flow(
        "scoped",
        {
            "loop": {
                "type": "ForEach",
                "for_each": list(range(30)),
                "concurrency_limit": 5,
                "steps": {"a": {"type": "Noop"}, "b": {"type": "Noop", "run_after": ["a"]}},
            },
            "after": {"type": "Noop", "run_after": ["loop"]},
        },
    )
    client = space.client(registry(definition))
    handle = client.trigger("scoped")
    engine = space.engine()
    store, run_id = engine.store, str(handle.run_id)
    started = store.runs.start_run(run_id)
    assert started is not None
    engine.continue_run(run_id, started[1])
    space.drain()  # runs the loop step itself and everything after it, to the end
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    steps = {s.step_key: s for s in run.steps or []}
    assert len([key for key in steps if key.startswith("loop.")]) == 60
    assert [o["index"] for o in json.loads(steps["loop"].output_json or "[]")] == list(range(30))
    loops = store.runs.run_state(run_id).loops
    assert loops["loop"].count == 30 and loops["loop"].started == 30 and loops["loop"].done == 30

    # A fresh run, stopped after a few iterations: the claim of one child sees only its scope.
    handle = client.trigger("scoped")
    run_id = str(handle.run_id)
    started = store.runs.start_run(run_id)
    assert started is not None
    engine.continue_run(run_id, started[1])
    loop_step = store.runs.step_fields(run_id, "loop")
    engine.execute_step(run_id, "loop", int(loop_step["attempt"]))
    claim = store.runs.claim(
        run_id,
        "loop.3.a",
        1,
        job_id="j",
        worker="w",
        lease_until=utcnow() + timedelta(seconds=30),
        scope=StateScope(("loop", "after", "loop.3.a", "loop.3.b"), "loop", 3),
    )
    assert isinstance(claim, Claim)
    assert set(claim.snapshot.statuses) == {"loop", "loop.3.a"}
    assert claim.snapshot.loops == {"loop": LoopProgress(30, started=5, done=0)}


def test_many_iterations_on_two_workers_finish_once_within_the_limit(space: Space) -> None:
    key = f"{space.token}:wide"
    client = space.client(
        registry(
            flow(
                "wide",
                {
                    "each": {
                        "type": "ForEach",
                        "for_each": list(range(40)),
                        "concurrency_limit": 4,
                        "steps": {
                            "work": {"type": "Track", "inputs": {"key": key, "hold": 0.01}},
                            "check": {"type": "Noop", "run_after": ["work"]},
                        },
                    },
                    "after": {"type": "Noop", "run_after": ["each"]},
                },
            )
        )
    )
    space.start_worker("one", simple=True)
    space.start_worker("two", simple=True)
    run = client.trigger("wide").wait(timeout=120)
    assert run.status is RunStatus.Succeeded
    detail = client.get_run_detail(run.id)
    assert detail is not None
    steps = {s.step_key: s for s in detail.steps or []}
    assert steps["after"].status is StepStatus.Succeeded
    assert len(json.loads(steps["each"].output_json or "[]")) == 40
    spans = []
    for index in range(40):
        children = [steps[f"each.{index}.work"], steps[f"each.{index}.check"]]
        first = min(c.dispatched_at for c in children if c.dispatched_at)
        last = max(c.completed_at for c in children if c.completed_at)
        spans.append((first, last))
    overlap = max(sum(1 for a, b in spans if a <= moment < b) for moment, _ in spans)
    assert overlap <= 4, f"at most 4 iterations in flight, saw {overlap}"
    closes = [e for e in space.engine().store.history.events(run.id) if e.type.value == "run.completed"]
    assert len(closes) == 1


def test_a_thousand_iterations_dispatched_at_once_fit_the_scripts(space: Space) -> None:
    # Regression: the dispatch of every child at once wrote their records in one HSET whose
    # arguments passed Lua's unpack() limit (8,000): "too many results to unpack" failed the loop.
    client = space.client(
        registry(
            flow(
                "wide",
                {
                    "each": {
                        "type": "ForEach",
                        "for_each": "@triggerBody()?.items",
                        "steps": {"x": {"type": "Noop"}},
                    },
                },
            )
        )
    )
    handle = client.trigger("wide", data={"items": list(range(1000))})
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded, run and run.status
    steps = {s.step_key: s for s in run.steps or []}
    assert sum(1 for key in steps if key.startswith("each.")) == 1000
    assert all(s.status is StepStatus.Succeeded for s in steps.values())
