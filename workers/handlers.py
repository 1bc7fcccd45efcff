"""Example step handlers used by the flows in ``config/flows`` (imported by workers by default)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flowjobs import StepContext, StepResult, handler


class GreetInputs(BaseModel):
    """Inputs of ``Greet``."""

    name: str = "world"


@handler("Greet", input_model=GreetInputs)
def greet(ctx: StepContext, inputs: GreetInputs) -> dict[str, Any]:
    """Say hello to the name in the trigger payload."""
    ctx.log.info("greeting", name=inputs.name)
    return {"greeting": f"Hello, {inputs.name}!"}


@handler("CountLetters")
def count_letters(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Count the letters of a text."""
    text = str(inputs.get("text") or "")
    return {"letters": sum(ch.isalpha() for ch in text)}


@handler("Summarize")
def summarize(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Put the previous steps' outputs together."""
    return {
        "summary": f"{inputs.get('greeting')} ({inputs.get('letters')} letters)",
        "run_id": str(ctx.run_id),
    }


@handler("FetchOrder")
def fetch_order(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Pretend to load an order."""
    return {"orderId": inputs.get("orderId"), "total": inputs.get("total", 0)}


@handler("Ship")
def ship(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any] | StepResult:
    """Pretend to ship an order; fails when the trigger payload says ``"failShipping": true``."""
    if isinstance(ctx.trigger_data, dict) and ctx.trigger_data.get("failShipping"):
        return StepResult.failed("carrier rejected the parcel")
    return {"shipped": True}


@handler("Compensate")
def compensate(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Undo what a failed shipment left behind."""
    return {"refunded": True}
