"""``StepOutcome``: the step statuses and claim refusals it stands for convert by value, and a
job's result (JSON in RQ) is the plain string."""

from __future__ import annotations

import json

from flowjobs.core.outcomes import StepOutcome
from flowjobs.core.statuses import StepStatus
from flowjobs.store import ClaimRefusal


def test_the_statuses_an_attempt_ends_with_and_the_claim_refusals_are_outcomes() -> None:
    assert StepOutcome(StepStatus.Succeeded.value) is StepOutcome.succeeded
    assert StepOutcome(StepStatus.Failed.value) is StepOutcome.failed
    assert StepOutcome(ClaimRefusal.stale.value) is StepOutcome.stale
    assert StepOutcome(ClaimRefusal.run_not_running.value) is StepOutcome.run_not_running


def test_an_outcome_is_stored_as_its_string() -> None:
    assert json.loads(json.dumps(StepOutcome.parked)) == "parked"
    assert str(StepOutcome.succeeded) == "Succeeded" and type(str(StepOutcome.succeeded)) is str
