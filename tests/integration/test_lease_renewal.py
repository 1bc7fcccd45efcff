"""Lease renewal that a handler holding the GIL cannot stop: a forking worker's parent renews it."""

from __future__ import annotations

import json

import pytest

from flowjobs import RunStatus, StepStatus
from tests.conftest import Space
from tests.integration.flows import flow, registry


@pytest.mark.slow
def test_a_handler_holding_the_gil_past_the_lease_keeps_it_under_a_forking_worker(space: Space) -> None:
    lease = space.settings.claim_lease_seconds  # 2 s
    hold = 2 * lease + 0.5
    client = space.client(
        registry(
            flow(
                "gil",
                {
                    "hog": {"type": "HoldGil", "inputs": {"seconds": hold}},
                    "after": {"type": "Noop", "run_after": ["hog"]},
                },
            )
        )
    )
    space.start_worker("forking")
    space.start("scheduler")  # recovery runs in workers too; a scheduler makes sure it runs either way

    run = client.trigger("gil").wait(timeout=90)

    assert run.status is RunStatus.Succeeded
    detail = client.get_run_detail(run.id)
    assert detail is not None
    hog = next(s for s in detail.steps or [] if s.step_key == "hog")
    output = json.loads(hog.output_json or "{}")
    # The handler froze every thread of its work-horse (its own lease thread included) for well
    # over the lease (the calibration aims at ``hold``, give or take): only the parent process
    # kept the lease alive.
    assert output["seconds"] > 1.5 * lease and output["longest_pause"] > 1.5 * lease
    assert hog.status is StepStatus.Succeeded and hog.attempt_count == 1
    assert [a.status for a in hog.attempts or []] == [StepStatus.Succeeded]
    assert not [e for e in space.engine().store.history.events(run.id) if "lease" in (e.message or "")]
