"""Pure DAG decisions: which steps are ready, which are skipped, and how a finished run ends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flowjobs.manifest import child_key
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


#: Last gate before a step is ready (its When clauses): None admits it, a text skips it with that reason.
Admit = Callable[[str], str | None]


def plan(graph: StepGraph, statuses: Mapping[str, StepStatus], admit: Admit | None = None) -> Plan:
    """Decide the next dispatches and skips of a run; skips (When skips too) propagate in this one call."""
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
            reason = SKIP_REASON if decision is StepStatus.Skipped else None
            if decision is StepStatus.Pending and admit is not None:
                reason = admit(key)
            if reason is not None:
                known[key] = StepStatus.Skipped
                skipped[key] = reason
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


@dataclass(frozen=True)
class LoopPlan:
    """What to do next for one ForEach step whose iterations are under way."""

    ready: tuple[str, ...]
    """Runtime keys (``<loop>.<i>.<child>``) of children to dispatch, new iterations included."""
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Runtime keys of children to record as Skipped, with the reason."""
    finished: bool = False
    """True when every iteration is final."""
    outcomes: tuple[RunStatus, ...] = ()
    """Per iteration, its outcome (classified like a run) once ``finished``."""
    in_flight: int = 0
    """Iterations started and not final after this plan is applied."""


def plan_loop(
    loop_key: str,
    children: StepGraph,
    count: int,
    limit: int | None,
    statuses: Mapping[str, StepStatus],
    admit: Callable[[int], Admit | None] | None = None,
) -> LoopPlan:
    """Plan a ForEach: advance started iterations, start new ones up to ``limit`` in flight.

    An iteration is started once any of its children has a record, and final once all are.
    New iterations start in index order, so ``limit`` holds even when several workers plan at once
    from different snapshots: the highest index any of them starts is below (final iterations
    seen) + ``limit``, and final iterations only grow.
    """
    ready: list[str] = []
    skipped: dict[str, str] = {}
    done: list[dict[str, StepStatus]] = []
    in_flight = 0
    for index in range(count):
        own = {
            child: status
            for child in children
            if (status := statuses.get(child_key(loop_key, index, child))) is not None
        }
        if len(own) == len(children) and all(status.is_final for status in own.values()):
            done.append(own)  # final: classified only once the whole loop is
            continue
        if not own and in_flight >= (limit or count):
            break  # iterations start in index order: every later one is unstarted too
        step = plan(children, own, admit(index) if admit else None)
        ready.extend(child_key(loop_key, index, child) for child in step.ready)
        skipped.update({child_key(loop_key, index, child): reason for child, reason in step.skipped.items()})
        if step.finished:
            # Skips decided here are recorded with this plan: the iteration they end is final.
            own.update(dict.fromkeys(step.skipped, StepStatus.Skipped))
            done.append(own)
        else:
            in_flight += 1
    return LoopPlan(
        ready=tuple(ready),
        skipped=skipped,
        finished=len(done) == count,
        outcomes=tuple(classify(children, own) for own in done) if len(done) == count else (),
        in_flight=in_flight,
    )
