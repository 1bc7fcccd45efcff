"""What a step handler is told about the step it runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from structlog.typing import FilteringBoundLogger


@dataclass(frozen=True)
class StepContext:
    """The run and step a handler executes, and a logger bound to their ids."""

    run_id: UUID
    """The run."""
    flow_id: UUID
    """The flow."""
    flow_name: str | None
    """The flow's display name."""
    step_key: str
    """Runtime key of the step."""
    step_type: str
    """Type name the handler was looked up by."""
    attempt: int
    """1-based attempt number."""
    job_id: str | None
    """RQ job executing this attempt."""
    trigger_data: Any
    """The trigger payload (parsed JSON)."""
    trigger_headers: Mapping[str, str]
    """Trigger headers, sensitive ones removed."""
    log: FilteringBoundLogger
    """structlog logger bound with ``flow_id``, ``run_id``, ``step_key``, ``job_id``, ``attempt``."""

    @property
    def idempotency_key(self) -> str:
        """``"{run_id}:{step_key}"``: the same for every attempt, for deduplicating side effects."""
        return f"{self.run_id}:{self.step_key}"
