"""Pure DAG decisions: which steps are ready, which are skipped, and how a finished run ends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flowjobs.core.manifest import child_key
from flowjobs.core.statuses import RunStatus, StepStatus

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
    """Terminal status of a run whose steps are all final: Failed if a failure is unhandled, Skipped
    if every leaf was skipped, else Succeeded (the README's rule; leaves as defined below)."""
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
class LoopProgress:
    """Counters of an expanded ForEach step, kept beside it in Redis so that planning one of its
    iterations never reads the others."""

    count: int
    """Iterations in all."""
    started: int = 0
    """Iterations started; they start in index order, so these are ``0 .. started - 1``."""
    done: int = 0
    """Started iterations that are final (their outcomes are recorded)."""


@dataclass(frozen=True)
class LoopPlan:
    """What to do next for one ForEach step whose iterations are under way."""

    ready: tuple[str, ...]
    """Runtime keys (``<loop>.<i>.<child>``) of children to dispatch, new iterations included."""
    skipped: Mapping[str, str]
    """Runtime keys of children to record as Skipped, with the reason."""
    finals: Mapping[int, RunStatus]
    """Iterations this plan found or made final, with their outcomes (classified like a run)."""
    progress: LoopProgress
    """The loop's counters once this plan is applied."""

    @property
    def finished(self) -> bool:
        """True when every iteration is final."""
        return self.progress.done == self.progress.count

    @property
    def in_flight(self) -> int:
        """Iterations started and not final once this plan is applied."""
        return self.progress.started - self.progress.done


def advance_loop(
    loop_key: str,
    children: StepGraph,
    limit: int | None,
    progress: LoopProgress,
    iterations: Mapping[int, Mapping[str, StepStatus]],
    admit: Callable[[int], Admit | None] | None = None,
) -> LoopPlan:
    """Plan a ForEach: advance the given iterations, then start new ones up to ``limit`` in flight.

    ``iterations`` are started iterations that ``progress.done`` does not count yet (child key →
    status): usually the one whose child just finished, so the cost of a plan does not grow with
    the loop. New iterations start in index order from ``progress.started``. Planned from
    counters that were current when read (the store applies a plan only if nothing changed
    since), ``limit`` holds.
    """
    ready: list[str] = []
    skipped: dict[str, str] = {}
    finals: dict[int, RunStatus] = {}

    def advance(index: int, own: Mapping[str, StepStatus]) -> None:
        step = plan(children, own, admit(index) if admit else None)
        ready.extend(child_key(loop_key, index, child) for child in step.ready)
        skipped.update({child_key(loop_key, index, child): reason for child, reason in step.skipped.items()})
        if step.finished:
            # Skips decided here are recorded with this plan: the iteration they end is final.
            finals[index] = classify(children, {**own, **dict.fromkeys(step.skipped, StepStatus.Skipped)})

    for index in sorted(iterations):
        advance(index, iterations[index])
    started = progress.started
    while started < progress.count and started - (progress.done + len(finals)) < (limit or progress.count):
        advance(started, {})
        started += 1
    return LoopPlan(
        ready=tuple(ready),
        skipped=skipped,
        finals=finals,
        progress=LoopProgress(progress.count, started, progress.done + len(finals)),
    )


def open_iterations(
    loop_key: str, children: StepGraph, statuses: Mapping[str, StepStatus]
) -> tuple[int, dict[int, dict[str, StepStatus]]]:
    """From every step status of a run: how many iterations of the loop have started, and the
    statuses of each started one (for ``advance_loop`` with ``done=0``, when replanning a whole
    run)."""
    prefix = f"{loop_key}."
    started: dict[int, dict[str, StepStatus]] = {}
    for key, status in statuses.items():
        if not key.startswith(prefix):
            continue
        index, _, child = key[len(prefix) :].partition(".")
        if index.isdigit() and child in children:
            started.setdefault(int(index), {})[child] = status
    count = max(started) + 1 if started else 0
    return count, {index: started.get(index, {}) for index in range(count)}
