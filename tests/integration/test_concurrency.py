"""Many concurrent runs on two worker processes: every record written once, every run closed once."""

from __future__ import annotations

from collections import Counter

from flowjobs import RunStatus, StepStatus
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry

RUNS = 50
STEPS = ("a", "b", "c", "d", "e")


def test_fifty_concurrent_runs_on_two_workers(space: Space) -> None:
    executed = f"{space.token}:executed"
    definition = flow(
        "fan",
        {
            "a": {"type": "Record", "inputs": {"key": executed}},
            "b": {"type": "Record", "run_after": ["a"], "inputs": {"key": executed}},
            "c": {"type": "Record", "run_after": ["a"], "inputs": {"key": executed}},
            "d": {"type": "Record", "run_after": ["a"], "inputs": {"key": executed}},
            "e": {"type": "Record", "run_after": ["b", "c", "d"], "inputs": {"key": executed}},
        },
    )
    client = space.client(registry(definition))
    handles = [client.trigger("fan", data={"n": n}) for n in range(RUNS)]
    space.start_worker("one", simple=True)
    space.start_worker("two", simple=True)

    def all_terminal() -> bool:
        return all((r := client.get_run(h.run_id)) is not None and r.status.is_terminal for h in handles)

    wait_until(all_terminal, timeout=120, what="50 runs to finish")
    store = space.engine().store
    executions = Counter(entry.decode().rsplit(":", 1)[0] for entry in space.redis.lrange(executed, 0, -1))
    workers_used = {entry.decode().rsplit(":", 1)[1] for entry in space.redis.lrange(executed, 0, -1)}
    assert len(workers_used) == 2, "both worker processes should have executed steps"
    for handle in handles:
        run = client.get_run_detail(handle.run_id)
        assert run is not None and run.status is RunStatus.Succeeded
        assert {s.step_key for s in run.steps or []} == set(STEPS)
        for step in run.steps or []:
            assert step.status is StepStatus.Succeeded
            assert step.attempt_count == 1 and len(step.attempts or []) == 1
            assert executions[f"{run.id}:{step.step_key}"] == 1
        kinds = Counter(e.type.value for e in store.history.events(run.id))
        assert kinds == {"run.started": 1, "step.started": 5, "step.completed": 5, "run.completed": 1}
    assert sum(executions.values()) == RUNS * len(STEPS)
    assert client.list_runs(status=RunStatus.Running) == []
    assert len(client.list_runs(status=RunStatus.Succeeded, limit=100)) == RUNS
