"""What a flow is: its definition, triggers, steps and their run-after conditions."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from flowjobs.statuses import StepStatus


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

    statuses: tuple[StepStatus, ...] = (StepStatus.Succeeded,)
    """Accepted final statuses of the dependency."""
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


class RetryPolicy(_Model):
    """Automatic retries of a failing step (default: none, as in the reference)."""

    max_attempts: int = Field(default=1, ge=1)
    """Attempts in all, the first included."""
    backoff_seconds: float = Field(default=0.0, ge=0)
    """Delay before the second attempt."""
    backoff_factor: float = Field(default=2.0, ge=1)
    """Each later delay is the previous one times this."""
    max_backoff_seconds: float = Field(default=3600.0, ge=0)
    """Upper bound of any delay."""


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
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Job timeout of each attempt (RQ kills the handler after it)."""

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
        return {
            key: {dep: frozenset(cond.statuses) for dep, cond in step.run_after.items()}
            for key, step in self.steps.items()
        }

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
        # Flow files put `triggers` and `steps` at top level (SPEC §3.4).
        if isinstance(value, dict) and "manifest" not in value and ("steps" in value or "triggers" in value):
            value = dict(value)
            manifest = {key: value.pop(key) for key in ("triggers", "steps") if key in value}
            value["manifest"] = manifest
        if isinstance(value, dict) and isinstance(value.get("version"), int | float):
            value = {**value, "version": str(value["version"])}
        return value
