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


@handler("Quote")
def quote(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Price an order: the sum of its lines."""
    lines = inputs.get("lines") or []
    return {"total": sum(float(line.get("price", 0)) * int(line.get("qty", 1)) for line in lines)}


@handler("Notify")
def notify(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Pretend to send a message."""
    ctx.log.info("notified", message=inputs.get("message"))
    return {"sent": True, "message": inputs.get("message")}


@handler("ResizeImage")
def resize_image(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Pretend to resize one image of a batch (a ForEach child)."""
    return {"image": inputs.get("__loopItem"), "index": inputs.get("__loopIndex"), "size": inputs.get("size")}


@handler("CheckExport")
def check_export(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Pretend to ask an export job for its state: ready from the third poll on."""
    return {"state": "ready" if ctx.attempt >= 3 else "running", "polls": ctx.attempt}
