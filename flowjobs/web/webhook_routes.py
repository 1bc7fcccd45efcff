"""``POST /flows/api/webhook/{slug_or_flow_id}``: a flow's Webhook trigger over HTTP.

Outside the web auth (``flowjobs.web.auth``): each trigger authenticates its own deliveries (a
shared key or an HMAC scheme, ``flowjobs.webhooks``). This module is the HTTP edge only: it reads
the body up to the cap, hands the delivery to ``WebhookReceiver`` (which writes the run over an
asyncio connection, on the event loop) and writes its answer: 202 with the run, 200 for an
idempotency key seen before, or the refusal's status with ``{detail, error, reason}`` (and
``Retry-After`` for 429).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from starlette.requests import ClientDisconnect

from flowjobs.core.urls import API_PREFIX, run_ui_path
from flowjobs.core.webhooks.rejections import Reason, WebhookRejected
from flowjobs.factory import receiver_from_settings
from flowjobs.web.deps import app_runs
from flowjobs.webhooks.receiver import WebhookReceiver, find_target

router = APIRouter(prefix=API_PREFIX, tags=["webhooks"])


class WebhookAccepted(BaseModel):
    """A delivery accepted: its run (new, or the first run of its ``Idempotency-Key``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    run_id: UUID
    """The run the delivery started."""
    background_job_id: str
    """The RQ job that executes the run's trigger."""
    url: str
    """The run's page in the flows UI (also the ``Location`` header)."""
    created: bool
    """False when an ``Idempotency-Key`` seen before returned the first run."""
    message: str


class WebhookRefused(BaseModel):
    """A delivery refused."""

    detail: str
    """What was wrong, for the sender (never a secret or an expected signature)."""
    error: str
    """Always ``WebhookRejected``."""
    reason: Reason
    """Why, as a stable code."""


def app_receiver(request: Request) -> WebhookReceiver:
    """The app's receiver, built on first use from its client and settings. Read here rather than
    through FastAPI's dependencies: solving them was a third of this route's own CPU time, and
    deliveries are the one route a sender may hit hundreds of times a second."""
    state = request.app.state
    receiver: WebhookReceiver | None = getattr(state, "webhook_receiver", None)
    if receiver is None or receiver.client is not state.client:
        receiver = receiver_from_settings(state.client, state.settings, app_runs(state))
        state.webhook_receiver = receiver
    return receiver

_REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": WebhookRefused, "description": ", ".join(r.value for r in Reason if r.status == status)}
    for status in sorted({reason.status for reason in Reason})
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": WebhookAccepted, "description": "the first run of this Idempotency-Key"},
    **_REFUSALS,
}
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"description": "Any JSON value: the run's trigger data."}}
        },
    }
}


@router.post(
    "/webhook/{slug_or_flow_id}",
    status_code=202,
    response_model=WebhookAccepted,
    responses=_RESPONSES,
    openapi_extra=_BODY,
)
async def receive_webhook(slug_or_flow_id: str, request: Request) -> JSONResponse:
    """Start a run of the flow whose Webhook trigger has this slug (or of the flow with this id:
    its first Webhook trigger), with the JSON body as trigger data and the request's headers (less
    credentials and signatures). The trigger's scheme decides what proves the sender (README,
    "Webhooks"); an ``Idempotency-Key`` header seen before returns the first run (200)."""
    receiver = app_receiver(request)
    try:
        target = None
        try:
            target = find_target(receiver.client, slug_or_flow_id)
            body = await _read_capped(request, receiver.max_body_bytes)
        except WebhookRejected as early:
            await receiver.count(target.flow.name if target is not None else "", early)
            raise
        handle = await receiver.receive(target, _headers(request), body)
    except WebhookRejected as rejected:
        refused = WebhookRefused(detail=rejected.message, error="WebhookRejected", reason=rejected.reason)
        retry = {"Retry-After": str(rejected.retry_after)} if rejected.retry_after is not None else None
        return JSONResponse(refused.model_dump(mode="json"), status_code=rejected.status, headers=retry)
    url = run_ui_path(handle.run_id)
    accepted = WebhookAccepted(
        run_id=handle.run_id,
        background_job_id=handle.background_job_id,
        url=url,
        created=handle.created,
        message="Run created." if handle.created else "Idempotency-Key seen before: the first run.",
    )
    return JSONResponse(
        accepted.model_dump(mode="json", by_alias=True),
        status_code=202 if handle.created else 200,
        headers={"Location": url},
    )


async def _read_capped(request: Request, cap: int) -> bytes:
    """The body, refused (413) past ``cap`` bytes: by its declared length before reading any of it,
    else as soon as the bytes received pass the cap (a chunked body declares nothing)."""
    declared = request.headers.get("content-length", "")
    too_large = WebhookRejected(Reason.body_too_large, f"the body is larger than {cap} bytes")
    if declared.isdigit() and int(declared) > cap:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        # The sender hung up (or its Content-Length promised more than it sent): nobody reads
        # this answer, but the request ends as a refusal, not as a server error in the log.
        raise WebhookRejected(Reason.invalid_json, "the body ended before its declared length") from None
    return b"".join(chunks)


def _headers(request: Request) -> dict[str, str]:
    """The request's headers keyed in lower case (as the server gives them); a repeated header's
    values joined with ``", "`` (HTTP's own rule), so a second signature header cannot hide."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers
