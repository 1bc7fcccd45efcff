"""Checks a flow definition must pass at registration (SPEC §3.5); pure, reports every problem."""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

from croniter import croniter

from flowjobs.expressions import expression_problems, referenced_steps
from flowjobs.manifest import FlowDefinition, StepMetadata, TriggerType


def flow_problems(
    definition: FlowDefinition, *, webhook_slugs: Mapping[str, UUID] | None = None
) -> list[str]:
    """Every problem of a definition; ``webhook_slugs`` maps slugs already taken to their flow ids."""
    manifest = definition.manifest
    problems: list[str] = []
    if not manifest.steps:
        problems.append("the flow has no steps")
    problems.extend(_step_problems(manifest.steps))
    if manifest.steps and not any(not step.run_after for step in manifest.steps.values()):
        problems.append("the flow has no entry step (a step with an empty run_after)")
    cycle = find_cycle({key: list(step.run_after) for key, step in manifest.steps.items()})
    if cycle:
        problems.append(f"run_after has a cycle: {' -> '.join(cycle)}")
    taken = webhook_slugs or {}
    for key, trigger in manifest.triggers.items():
        if trigger.type is TriggerType.Cron:
            cron = trigger.inputs.get("cronExpression")
            if not isinstance(cron, str) or not croniter.is_valid(cron):
                problems.append(f"trigger {key!r}: cronExpression {cron!r} does not parse")
        elif trigger.type is TriggerType.Webhook:
            slug = trigger.inputs.get("webhookSlug")
            if slug is not None and not (isinstance(slug, str) and slug.strip()):
                problems.append(f"trigger {key!r}: webhookSlug must be a non-empty string")
            elif isinstance(slug, str) and taken.get(slug.lower(), definition.id) != definition.id:
                problems.append(
                    f"trigger {key!r}: webhook slug {slug!r} is already used by flow {taken[slug.lower()]}"
                )
    return problems


def _step_problems(steps: Mapping[str, StepMetadata]) -> list[str]:
    problems: list[str] = []
    for key, step in steps.items():
        if not key.strip():
            problems.append("a step has an empty key")
        if not step.type.strip():
            problems.append(f"step {key!r}: type is empty")
        for dep in step.run_after:
            if dep not in steps:
                problems.append(f"step {key!r}: run_after names {dep!r}, which is not a step of this flow")
        conditions = [cond.when for cond in step.run_after.values() if cond.when]
        found = expression_problems(step.inputs)
        for text in conditions:
            found += expression_problems({}, condition=text)
        problems.extend(f"step {key!r}: {p}" for p in found)
        refs = referenced_steps(step.inputs)
        for text in conditions:
            refs |= referenced_steps(text)
        for ref in sorted(refs):
            if ref not in steps:
                problems.append(
                    f"step {key!r}: expression refers to step {ref!r}, which is not a step of this flow"
                )
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
