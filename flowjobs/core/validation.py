"""Checks a flow definition must pass at registration; pure, reports every problem."""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

from flowjobs.core.clock import utcnow
from flowjobs.core.cron import check_cron, known_zone
from flowjobs.core.errors import InvalidCron
from flowjobs.core.expressions import expression_problems, is_expression, referenced_steps
from flowjobs.core.limits import RunSeconds, number_problem
from flowjobs.core.manifest import (
    FlowDefinition,
    StepKind,
    StepMetadata,
    TriggerType,
    step_key_problem,
)
from flowjobs.core.webhooks.auth import webhook_auth_problems


def flow_problems(
    definition: FlowDefinition, *, webhook_slugs: Mapping[str, UUID] | None = None
) -> list[str]:
    """Every problem of a definition; ``webhook_slugs`` maps slugs already taken to their flow ids."""
    manifest = definition.manifest
    problems: list[str] = []
    if not manifest.steps:
        problems.append("the flow has no steps")
    problems.extend(_steps_problems(manifest.steps, outer={}, where=""))
    problems.extend(_trigger_problems(definition, webhook_slugs or {}))
    return problems


def _steps_problems(
    steps: Mapping[str, StepMetadata], *, outer: Mapping[str, StepMetadata], where: str
) -> list[str]:
    """Problems of one level of steps: the flow's, or one ForEach's children (which may also
    refer to the ``outer`` steps in expressions, but run after siblings only)."""
    problems: list[str] = []
    for key, step in steps.items():
        problems.extend(
            f"{where}step {key!r}: {p}" for p in _step_problems(key, step, steps, outer, nested=bool(where))
        )
    if steps and not any(not step.run_after for step in steps.values()):
        problems.append(f"{where}no entry step (a step with an empty run_after)")
    cycle = find_cycle({key: list(step.run_after) for key, step in steps.items()})
    if cycle:
        problems.append(f"{where}run_after has a cycle: {' -> '.join(cycle)}")
    return problems


def _step_problems(
    key: str,
    step: StepMetadata,
    siblings: Mapping[str, StepMetadata],
    outer: Mapping[str, StepMetadata],
    *,
    nested: bool,
) -> list[str]:
    problems: list[str] = []
    if (key_problem := step_key_problem(key)) is not None:
        problems.append(key_problem)
    if not step.type.strip():
        problems.append("type is empty")
    for dep in step.run_after:
        if dep not in siblings:
            scope = "a sibling in this ForEach" if nested else "a step of this flow"
            problems.append(f"run_after names {dep!r}, which is not {scope}")
    conditions = [cond.when for cond in step.run_after.values() if cond.when]
    problems.extend(expression_problems(step.inputs))
    for text in conditions:
        problems.extend(expression_problems({}, condition=text))
    refs = referenced_steps(step.inputs).union(*(referenced_steps(text) for text in conditions))
    if step.kind is StepKind.for_each:
        problems.extend(_for_each_problems(key, step, siblings, nested=nested))
        refs |= referenced_steps([step.for_each])
    elif step.steps or step.for_each is not None or step.concurrency_limit is not None:
        problems.append("steps, for_each and concurrency_limit belong to ForEach steps only")
    if step.kind is StepKind.wait_for_signal:
        problems.extend(_signal_problems(step))
    for ref in sorted(refs):
        if ref not in siblings and ref not in outer:
            problems.append(f"expression refers to step {ref!r}, which is not a step of this flow")
    return problems


def _for_each_problems(
    key: str, step: StepMetadata, siblings: Mapping[str, StepMetadata], *, nested: bool
) -> list[str]:
    if nested:
        return ["a ForEach cannot be nested in another ForEach"]
    problems: list[str] = []
    if step.for_each is None:
        problems.append("a ForEach needs for_each (a list, or an expression giving one)")
    elif not isinstance(step.for_each, list) and not is_expression(step.for_each):
        problems.append("for_each must be a list or an @ expression")
    else:
        problems.extend(expression_problems([step.for_each]))
    if not step.steps:
        problems.append("a ForEach needs steps (what one iteration runs)")
    problems.extend(_steps_problems(step.steps, outer=siblings, where=f"ForEach {key!r}: "))
    return problems


def _signal_problems(step: StepMetadata) -> list[str]:
    problems: list[str] = []
    name = step.inputs.get("signalName")
    if not isinstance(name, str) or not name.strip():
        problems.append("a WaitForSignal step needs inputs.signalName (a non-empty string)")
    timeout = step.inputs.get("timeoutSeconds")
    # A signal may be awaited as long as a run may last; infinity or 1e12 would overflow the
    # worker's deadline arithmetic.
    why = number_problem(timeout, RunSeconds) if timeout is not None else None
    if why:
        problems.append(f"inputs.timeoutSeconds of a WaitForSignal step {why}")
    return problems


def _trigger_problems(definition: FlowDefinition, taken: Mapping[str, UUID]) -> list[str]:
    problems: list[str] = []
    for key, trigger in definition.manifest.triggers.items():
        if trigger.type is TriggerType.Cron:
            zone = trigger.inputs.get("timeZone")
            known = zone is None or (isinstance(zone, str) and known_zone(zone))
            if not known:
                problems.append(f"trigger {key!r}: timeZone {zone!r} is not a known IANA time zone")
            try:  # parses, and fires within the horizon (in UTC when the zone is unknown)
                check_cron(trigger.inputs.get("cronExpression"), zone if known else None, utcnow())
            except InvalidCron as error:
                problems.append(f"trigger {key!r}: {error}")
        elif trigger.type is TriggerType.Webhook:
            slug = trigger.inputs.get("webhookSlug")
            if slug is not None and not (isinstance(slug, str) and slug.strip()):
                problems.append(f"trigger {key!r}: webhookSlug must be a non-empty string")
            elif isinstance(slug, str) and taken.get(slug.lower(), definition.id) != definition.id:
                problems.append(
                    f"trigger {key!r}: webhook slug {slug!r} is already used by flow {taken[slug.lower()]}"
                )
            problems.extend(f"trigger {key!r}: {p}" for p in webhook_auth_problems(trigger.inputs))
    return problems


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path whose first and last keys are equal, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None
