"""Flow definitions the integration tests trigger."""

from __future__ import annotations

import uuid
from typing import Any

from flowjobs import FlowDefinition, FlowRegistry


def flow(name: str, steps: dict[str, Any], **extra: Any) -> FlowDefinition:
    """A flow with a fresh id from a steps mapping (the flow-file form)."""
    return FlowDefinition.model_validate({"id": str(uuid.uuid4()), "name": name, "steps": steps, **extra})


def registry(*definitions: FlowDefinition) -> FlowRegistry:
    """A registry holding these flows."""
    return FlowRegistry(list(definitions))
