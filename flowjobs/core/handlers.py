"""Step handlers: the registry that maps type names to callables, and what a handler may return."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from flowjobs.core.context import StepContext
from flowjobs.core.errors import HandlerNotFound
from flowjobs.core.limits import Delay, number_problem
from flowjobs.core.statuses import StepStatus

HandlerFn = Callable[[StepContext, Any], Any]
F = TypeVar("F", bound=HandlerFn)


@dataclass(frozen=True)
class StepResult:
    """An explicit outcome from a handler; returning a plain value means Succeeded with that output."""

    status: StepStatus
    """Succeeded, Failed, or Pending (run me again after ``delay_seconds``)."""
    output: Any = None
    """JSON-serialisable output."""
    error: str | None = None
    """Failure reason."""
    delay_seconds: float = 0.0
    """For Pending: when to run the step again (0 to 7 days)."""

    def __post_init__(self) -> None:
        # Checked where the handler builds it, so the attempt fails with this reason (and the
        # handler's own line in the traceback) instead of looping on a negative delay, scheduling
        # centuries ahead, or breaking the engine on NaN, infinity or a string.
        if self.status is StepStatus.Pending:
            problem = number_problem(self.delay_seconds, Delay)
            if problem is not None:
                raise ValueError(f"StepResult.pending: delay_seconds {problem}, not {self.delay_seconds!r}")

    @classmethod
    def succeeded(cls, output: Any = None) -> StepResult:
        """Succeeded with an output."""
        return cls(StepStatus.Succeeded, output=output)

    @classmethod
    def failed(cls, error: str, output: Any = None) -> StepResult:
        """Failed with a reason (the retry policy applies as for an exception)."""
        return cls(StepStatus.Failed, output=output, error=error)

    @classmethod
    def pending(cls, delay_seconds: float) -> StepResult:
        """Not done yet: run the step again after the delay, holding no worker meanwhile."""
        return cls(StepStatus.Pending, delay_seconds=delay_seconds)


@dataclass(frozen=True)
class Handler:
    """A registered handler and the pydantic model its inputs are validated into, if any."""

    type_name: str
    fn: HandlerFn
    input_model: type[BaseModel] | None = None


class HandlerRegistry:
    """Handlers by step type name, matched case-insensitively."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, type_name: str, fn: HandlerFn, *, input_model: type[BaseModel] | None = None) -> None:
        """Register ``fn(ctx, inputs)`` for a step type; a later registration replaces an earlier one."""
        if not type_name.strip():
            raise ValueError("a handler type name must not be empty")
        self._handlers[type_name.casefold()] = Handler(type_name, fn, input_model)

    def handler(self, type_name: str, *, input_model: type[BaseModel] | None = None) -> Callable[[F], F]:
        """Decorator form of ``register``."""

        def decorate(fn: F) -> F:
            self.register(type_name, fn, input_model=input_model)
            return fn

        return decorate

    def get(self, type_name: str) -> Handler:
        """The handler for a type; ``HandlerNotFound`` names the type when there is none."""
        found = self._handlers.get(type_name.casefold())
        if found is None:
            raise HandlerNotFound(f"no handler is registered for step type {type_name!r}")
        return found

    def __contains__(self, type_name: object) -> bool:
        return isinstance(type_name, str) and type_name.casefold() in self._handlers

    def type_names(self) -> list[str]:
        """Registered type names, as spelled at registration."""
        return sorted(h.type_name for h in self._handlers.values())


default_handlers = HandlerRegistry()
"""The registry ``flowjobs.handler`` registers on; workers use it unless given another."""


def handler(type_name: str, *, input_model: type[BaseModel] | None = None) -> Callable[[F], F]:
    """Register a step handler on ``default_handlers``: ``@handler("SendEmail")``."""
    return default_handlers.handler(type_name, input_model=input_model)
