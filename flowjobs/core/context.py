"""What a step handler is told about the step it runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
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
    trigger_headers: Mapping[str, str]
    """Trigger headers, sensitive ones removed."""
    log: FilteringBoundLogger
    """structlog logger bound with ``flow_id``, ``run_id``, ``step_key``, ``job_id``, ``attempt``."""
    trigger_loader: Callable[[], Any] = field(default=lambda: None, repr=False, compare=False)
    """Reads the trigger payload; the engine fetches it only for handlers that look at it."""

    cancel_check: Callable[[], bool] = field(default=lambda: False, repr=False, compare=False)
    """Reads whether the run's cancellation was requested."""

    @property
    def cancel_requested(self) -> bool:
        """Whether the run's cancellation was requested (read now, each time): a long handler may
        check it and stop early; its outcome is still recorded, and the run then closes Cancelled."""
        return self.cancel_check()

    @cached_property
    def trigger_data(self) -> Any:
        """The trigger payload (parsed JSON), read on first use."""
        return self.trigger_loader()

    @property
    def idempotency_key(self) -> str:
        """``"{run_id}:{step_key}"``: the same for every attempt, for deduplicating side effects."""
        return f"{self.run_id}:{self.step_key}"
