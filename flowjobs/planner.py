"""Pure DAG decisions: which steps are ready, which are skipped, and how a finished run ends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flowjobs.statuses import RunStatus, StepStatus

#: ``{step: {dependency: accepted final statuses}}``.
StepGraph = Mapping[str, Mapping[str, frozenset[StepStatus]]]

SKIP_REASON = "Prerequisite status did not satisfy runAfter conditions."


@dataclass(frozen=True)
class Plan:
    """What to do next for one run, given the statuses of its steps so far."""

    ready: tuple[str, ...]
    """Steps with no record whose dependencies are all final and accepted: dispatch them."""
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Steps to record as Skipped (transitively), with the reason."""
    finished: bool = False
    """True when every step is final once ``skipped`` is applied and nothing is ready."""
    outcome: RunStatus | None = None
    """The run's terminal status when ``finished``."""


def plan(graph: StepGraph, statuses: Mapping[str, StepStatus]) -> Plan:
    """Decide the next dispatches and skips of a run; skips propagate in this one call."""
    known: dict[str, StepStatus] = dict(statuses)
    skipped: dict[str, str] = {}
    ready: list[str] = []
    changed = True
    while changed:
        changed = False
        ready.clear()
        for key, deps in graph.items():
            if key in known:
                continue
            decision = _decide(deps, known)
            if decision is StepStatus.Skipped:
                known[key] = StepStatus.Skipped
                skipped[key] = SKIP_REASON
                changed = True
            elif decision is StepStatus.Pending:
                ready.append(key)
    finished = not ready and all(key in known and known[key].is_final for key in graph)
    return Plan(
        ready=tuple(ready),
        skipped=skipped,
        finished=finished,
        outcome=classify(graph, known) if finished else None,
    )


def _decide(deps: Mapping[str, frozenset[StepStatus]], known: Mapping[str, StepStatus]) -> StepStatus | None:
    """Pending (ready), Skipped (blocked for good) or None (still waiting) for a step with no record."""
    for dep in deps:
        status = known.get(dep)
        if status is None or not status.is_final:
            return None
    if all(known[dep] in accepted for dep, accepted in deps.items()):
        return StepStatus.Pending
    return StepStatus.Skipped


def classify(graph: StepGraph, statuses: Mapping[str, StepStatus]) -> RunStatus:
    """Terminal status of a run whose steps are all final (SPEC §5.4, leaves as defined below)."""
    values = [statuses[key] for key in graph]
    failed = [key for key in graph if statuses[key] is StepStatus.Failed]
    if StepStatus.Succeeded not in values:
        return RunStatus.Failed if failed else RunStatus.Skipped
    for key in failed:
        handled = any(
            key in deps and statuses[other] is StepStatus.Succeeded for other, deps in graph.items()
        )
        if not handled:
            return RunStatus.Failed
    # A leaf is a step no other step runs after on success: an error-handler edge does not make
    # its source a non-leaf, so a happy path whose only skipped step is the handler succeeds.
    continued = {
        dep for deps in graph.values() for dep, accepted in deps.items() if StepStatus.Succeeded in accepted
    }
    leaves = [key for key in graph if key not in continued]
    if all(statuses[key] is StepStatus.Skipped for key in leaves):
        return RunStatus.Skipped
    return RunStatus.Succeeded


def entry_steps(graph: StepGraph) -> list[str]:
    """Steps with no dependencies."""
    return [key for key, deps in graph.items() if not deps]
