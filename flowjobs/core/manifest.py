"""What a flow is: its definition, triggers, steps and their run-after conditions."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from flowjobs.core.expressions.inputs import is_expression
from flowjobs.core.limits import (
    MAX_BACKOFF_FACTOR,
    MAX_CONCURRENCY,
    AttemptCount,
    Bounded,
    Delay,
    StepSeconds,
)
from flowjobs.core.statuses import StepStatus


class _Model(BaseModel):
    """Manifest models: snake_case in Python, the reference's camelCase accepted as aliases."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class TriggerType(StrEnum):
    """How a run of a flow is started."""

    #: Started on request: Python, the CLI or the HTTP API.
    Manual = "Manual"
    #: Started by the scheduler on a cron expression (``inputs.cronExpression``).
    Cron = "Cron"
    #: Started by an HTTP call to ``/webhook/<webhookSlug>``.
    Webhook = "Webhook"


class TriggerMetadata(_Model):
    """One way to start a flow."""

    type: TriggerType
    """Manual, Cron or Webhook."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Trigger options: ``cronExpression``; ``webhookSlug``, ``webhookSecret``, …"""


class RunAfterCondition(_Model):
    """Which final statuses of a dependency let a step run, and an optional When clause."""

    statuses: tuple[StepStatus, ...] = Field(default=(StepStatus.Succeeded,), min_length=1)
    """Accepted final statuses of the dependency (at least one)."""
    when: str | None = None
    """Boolean expression that must also be true, evaluated just before dispatch."""

    @model_validator(mode="before")
    @classmethod
    def _from_status_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return {"statuses": value or [StepStatus.Succeeded]}
        if isinstance(value, str):
            return {"statuses": [value]}
        return value

    @field_validator("statuses")
    @classmethod
    def _canonical_order(cls, value: tuple[StepStatus, ...]) -> tuple[StepStatus, ...]:
        # The same set in any order is the same flow, with the same content hash.
        order = list(StepStatus)
        return tuple(sorted(set(value), key=order.index))


class RetryPolicy(_Model):
    """Automatic retries of a failing step (default: none, as in the reference)."""

    max_attempts: AttemptCount = 1
    """Attempts in all, the first included."""
    backoff_seconds: Delay = 0.0
    """Delay before the second attempt."""
    backoff_factor: Annotated[float, Bounded(1, MAX_BACKOFF_FACTOR)] = 2.0
    """Each later delay is the previous one times this."""
    max_backoff_seconds: Delay = 3600.0
    """Upper bound of any delay."""


class PollOptions(_Model):
    """Built-in polling: re-run the step every ``interval_seconds`` until its output satisfies a condition."""

    interval_seconds: StepSeconds = 5.0
    """Delay between two polls."""
    timeout_seconds: StepSeconds = 300.0
    """The step fails when the condition is still unmet this long after the first poll started."""
    min_attempts: AttemptCount = 1
    """Polls to make before the condition may end the polling."""
    condition_path: str | None = None
    """Dotted path into the output (``status`` or ``result.items.0.state``); None: any output ends it."""
    condition_equals: Any = None
    """Value the output at ``condition_path`` must equal."""


class StepKind(StrEnum):
    """The built-in kinds of step, as ``type`` names them (case-insensitively); any other ``type``
    names a handler."""

    #: ``ForEach``: runs its ``steps`` once per item of ``for_each``.
    for_each = "foreach"
    #: ``WaitForSignal``: parks the step until a signal of its name is delivered to the run.
    wait_for_signal = "waitforsignal"


_BUILT_IN_KINDS = {kind.value: kind for kind in StepKind}


class StepMetadata(_Model):
    """One step of a flow: a handler type, its inputs and when it runs."""

    type: str
    """Name of the handler (matched case-insensitively) or a built-in kind."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Literal values or ``@`` expressions, resolved on the worker just before the handler runs."""
    run_after: dict[str, RunAfterCondition] = Field(default_factory=dict)
    """``{dependency_key: condition}``; empty makes an entry step."""
    retry: RetryPolicy | None = None
    """Automatic retries; none by default."""
    timeout_seconds: StepSeconds | None = None
    """Job timeout of each attempt (RQ kills the handler after it)."""
    poll: PollOptions | None = None
    """Built-in polling of the handler's output."""
    for_each: Any = None
    """ForEach: a literal list, or an expression giving one (``@steps('fetch').output.items``)."""
    concurrency_limit: Annotated[int, Bounded(1, MAX_CONCURRENCY)] | None = None
    """ForEach: at most this many iterations in flight at once (None: all at once)."""
    steps: dict[str, StepMetadata] = Field(default_factory=dict)
    """ForEach: the steps of one iteration; their ``run_after`` names siblings."""

    @property
    def kind(self) -> StepKind | str:
        """The built-in kind this step is (``StepKind``), else its handler type, case-folded."""
        folded = self.type.strip().casefold()
        return _BUILT_IN_KINDS.get(folded, folded)

    def dependency_graph(self) -> dict[str, dict[str, frozenset[StepStatus]]]:
        """ForEach: ``{child: {sibling: accepted statuses}}`` of one iteration."""
        return _graph(self.steps)

    @field_validator("run_after", mode="before")
    @classmethod
    def _run_after_from_list(cls, value: Any) -> Any:
        # `run_after: [a, b]` is shorthand for "after a and b succeeded".
        if isinstance(value, list | tuple):
            return {str(key): [StepStatus.Succeeded] for key in value}
        return value


class FlowManifest(_Model):
    """Triggers and steps of a flow."""

    triggers: dict[str, TriggerMetadata] = Field(
        default_factory=lambda: {"manual": TriggerMetadata(type=TriggerType.Manual)}
    )
    """``{trigger_key: trigger}``; a flow without any gets one ``manual`` trigger."""
    steps: dict[str, StepMetadata] = Field(default_factory=dict)
    """``{step_key: step}``."""

    def dependency_graph(self) -> dict[str, dict[str, frozenset[StepStatus]]]:
        """``{step: {dependency: accepted statuses}}``, the planner's view of the steps."""
        return _graph(self.steps)

    def descendants(self, step_key: str) -> list[str]:
        """Top-level steps that run after ``step_key``, directly or through others (any status)."""
        found: list[str] = []
        frontier = [step_key]
        while frontier:
            current = frontier.pop()
            for key, step in self.steps.items():
                if current in step.run_after and key not in found and key != step_key:
                    found.append(key)
                    frontier.append(key)
        return found

    def reference_key(self, name: str, from_key: str) -> str:
        """The runtime key ``@steps('name')`` means in the step ``from_key``: inside a ForEach
        iteration a sibling's key in that iteration, otherwise the top-level step."""
        loop_key, child = split_runtime_key(from_key)
        index = loop_index(from_key)
        if child is not None and index is not None and name in self.steps[loop_key].steps:
            return child_key(loop_key, index, name)
        return name

    def signal_names(self) -> set[str]:
        """Signal names its WaitForSignal steps (ForEach children included) wait for, as written:
        an expression name stays an expression."""
        steps = [
            *self.steps.values(),
            *(child for step in self.steps.values() for child in step.steps.values()),
        ]
        return {_signal_name(step) for step in steps if step.kind is StepKind.wait_for_signal}

    def expression_signal_waits(self) -> dict[str, list[str]]:
        """The steps whose signal name is known only once they run: ``{key: []}`` for a WaitForSignal
        step named by an expression, ``{key: [child, ...]}`` for a ForEach with such children."""
        waits: dict[str, list[str]] = {}
        for key, step in self.steps.items():
            children = [name for name, child in step.steps.items() if _named_by_expression(child)]
            if children or _named_by_expression(step):
                waits[key] = children
        return waits

    def step(self, runtime_key: str) -> StepMetadata | None:
        """A step by runtime key: ``key``, or ``<loop>.<index>.<child>`` for a ForEach child."""
        loop_key, child_key = split_runtime_key(runtime_key)
        if child_key is None:
            return self.steps.get(runtime_key)
        loop = self.steps.get(loop_key)
        return loop.steps.get(child_key) if loop is not None else None

    def canonical_json(self) -> str:
        """Stable JSON of the manifest: the same flow always gives the same text."""
        return json.dumps(
            self.model_dump(mode="json", exclude_defaults=False), sort_keys=True, separators=(",", ":")
        )

    def content_hash(self) -> str:
        """Content hash under which the manifest is pinned for the runs that start with it."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:24]


class FlowDefinition(_Model):
    """A flow: a stable id, a name, a version label and its manifest."""

    id: UUID
    """Stable id; never changes across versions."""
    name: str = Field(min_length=1)
    """Display name, unique among registered flows."""
    version: str = "1.0"
    """Version label, shown on runs."""
    manifest: FlowManifest = Field(default_factory=FlowManifest)
    """Triggers and steps."""

    @model_validator(mode="before")
    @classmethod
    def _manifest_keys_at_top_level(cls, value: Any) -> Any:
        # Flow files put `triggers` and `steps` at top level, beside the flow's id and name, not
        # under `manifest`: accept both shapes.
        if isinstance(value, dict) and "manifest" not in value and ("steps" in value or "triggers" in value):
            value = dict(value)
            manifest = {key: value.pop(key) for key in ("triggers", "steps") if key in value}
            value["manifest"] = manifest
        if isinstance(value, dict) and isinstance(value.get("version"), int | float):
            value = {**value, "version": str(value["version"])}
        return value


def _graph(steps: dict[str, StepMetadata]) -> dict[str, dict[str, frozenset[StepStatus]]]:
    return {
        key: {dep: frozenset(cond.statuses) for dep, cond in step.run_after.items()}
        for key, step in steps.items()
    }


#: What a step key may hold besides Unicode letters, combining marks and digits. ``.`` is not one:
#: it separates the parts of a ForEach child's runtime key (``<loop>.<index>.<child>``); quotes,
#: spaces, controls and ``:`` are not either, as keys travel into Redis key names, job ids, URLs
#: and headers.
STEP_KEY_PUNCTUATION = "_-"


def step_key_problem(key: str) -> str | None:
    """Why ``key`` cannot name a step (None when it can): it must be non-empty and hold only
    Unicode letters, marks and digits, ``_`` and ``-``."""
    if not key:
        return "the step key is empty"
    bad = [c for c in key if c not in STEP_KEY_PUNCTUATION and unicodedata.category(c)[0] not in "LMN"]
    if not bad:
        return None
    found = ", ".join(repr(c) for c in dict.fromkeys(bad))
    why = "; '.' separates the parts of ForEach children's keys <loop>.<index>.<child>" if "." in bad else ""
    return f"a step key holds only letters, digits, '_' and '-' (found {found}{why})"


def child_key(loop_key: str, index: int, child: str) -> str:
    """Runtime key of a ForEach child in one iteration: ``<loop>.<index>.<child>``."""
    return f"{loop_key}.{index}.{child}"


def split_runtime_key(runtime_key: str) -> tuple[str, str | None]:
    """``(loop, child)`` for a ForEach child's runtime key, ``(key, None)`` for a top-level step."""
    parts = runtime_key.split(".", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], parts[2]
    return runtime_key, None


def manifest_key(runtime_key: str) -> str:
    """The manifest's name of a runtime key: a ForEach child's iterations are one step of the
    manifest, ``<loop>.<child>``; a top-level step is its own key."""
    loop, child = split_runtime_key(runtime_key)
    return f"{loop}.{child}" if child is not None else runtime_key


def loop_index(runtime_key: str) -> int | None:
    """The iteration index of a ForEach child's runtime key."""
    parts = runtime_key.split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _named_by_expression(step: StepMetadata) -> bool:
    """A WaitForSignal step whose ``signalName`` is an expression."""
    return step.kind is StepKind.wait_for_signal and is_expression(_signal_name(step))


def _signal_name(step: StepMetadata) -> str:
    """A WaitForSignal step's ``signalName`` as written (validation makes it a non-empty string)."""
    return str(step.inputs.get("signalName"))
