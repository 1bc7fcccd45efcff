"""What an expression can see: the trigger body and headers, and each step's status, output and error."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class StepView:
    """What an expression can see of a step."""

    status: str | None
    output: Any = None
    error: str | None = None


MISSING_STEP = StepView(status=None)


@dataclass(frozen=True)
class ExpressionScope:
    """The values references resolve against; a step key missing from ``steps`` reads as all-null."""

    trigger_body: Any = None
    trigger_headers: Mapping[str, str] = field(default_factory=dict)
    steps: Mapping[str, StepView] = field(default_factory=dict)
    trigger_loader: Callable[[], Any] | None = field(default=None, compare=False, repr=False)
    """Reads the trigger body on first use instead of ``trigger_body`` (it can be large, and most
    steps never look at it)."""

    @cached_property
    def body(self) -> Any:
        """The trigger body: ``trigger_body``, or what ``trigger_loader`` reads, once."""
        return self.trigger_loader() if self.trigger_loader is not None else self.trigger_body

    @cached_property
    def lowercase_headers(self) -> dict[str, str]:
        """Headers keyed by lower-cased name, built once per scope for case-insensitive lookups."""
        headers = self.trigger_headers or {}
        return {str(name).lower(): value for name, value in headers.items()}
