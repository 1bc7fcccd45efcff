"""One webhook delivery, from its target to a run: every check in order (``FlowClient.prepare_trigger``
does the trigger's own checks, without I/O), then ``FlowClient.commit_trigger_async`` writes the run.

The order, and why:

1. the target (slug or flow id → flow and Webhook trigger), else 404;
2. the body cap, 413 (the HTTP layer also stops reading at the cap);
3. the signature or key, 401 — before anything else reads the body, so an unauthenticated caller
   learns nothing about the flow (not even whether it is enabled) and costs one HMAC; then the
   signed timestamp's skew, 409 (a stale delivery stays stale, whatever comes next);
4. JSON, 400; the headers to store within their bounds, 431, and the ``Idempotency-Key``, 422
   (``flowjobs.core.trigger_headers``; nothing of the request is written before);
5. the flow enabled, 403 (``FlowDisabled``'s message): a refusal the sender can act on, and
   before the replay memory, so a delivery refused while the flow was disabled can be re-sent;
6. the flow's token bucket, 429 with ``Retry-After`` — also before the replay memory, so a
   rate-limited delivery retried later is not mistaken for a replay;
7. the replay memory, 409: a signed delivery already received within the window;
8. the trigger: a new run (or, with an ``Idempotency-Key`` seen before, the first run).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import structlog

from flowjobs.client import FlowClient, PreparedTrigger, RunHandle
from flowjobs.core.errors import (
    DataTooLarge,
    FlowDisabled,
    FlowNotFound,
    InvalidIdempotencyKey,
    InvalidTriggerData,
    TriggerHeadersTooLarge,
    TriggerNotAdmitted,
    TriggerNotFound,
)
from flowjobs.core.manifest import FlowDefinition, TriggerType
from flowjobs.core.webhooks.auth import SecretUnavailable, WebhookAuth, read_webhook_auth
from flowjobs.core.webhooks.rejections import Reason, WebhookRejected
from flowjobs.core.webhooks.schemes import SIGNATURE_HEADERS, verify
from flowjobs.store.async_runs import AsyncRunWrites
from flowjobs.webhooks.guards import WebhookGuards

log = structlog.get_logger("flowjobs.webhooks")


@dataclass(frozen=True)
class WebhookTarget:
    """The flow and Webhook trigger a delivery is for."""

    flow: FlowDefinition
    trigger_key: str
    auth: WebhookAuth | None
    """None only if the trigger's inputs are invalid (registration refuses those)."""


def find_target(client: FlowClient, slug_or_flow_id: str) -> WebhookTarget:
    """The target of ``/webhook/<slug_or_flow_id>``: a slug (any case) names its trigger; a flow id
    names the flow's first Webhook trigger. ``WebhookRejected(not_found)`` otherwise."""
    flow_id: UUID | None
    try:
        flow_id = UUID(slug_or_flow_id)
    except ValueError:
        flow_id = client.flows.webhook_slugs().get(slug_or_flow_id.lower())
    try:
        definition = client.flows.get(flow_id) if flow_id is not None else None
    except FlowNotFound:
        definition = None
    hooks = [
        (key, trigger)
        for key, trigger in (definition.manifest.triggers.items() if definition else [])
        if trigger.type is TriggerType.Webhook
    ]
    by_slug = [
        (key, trigger)
        for key, trigger in hooks
        if str(trigger.inputs.get("webhookSlug", "")).lower() == slug_or_flow_id.lower()
    ]
    found = (by_slug or hooks)[:1]
    if definition is None or not found:
        raise WebhookRejected(Reason.not_found, f"no webhook {slug_or_flow_id!r}")
    key, trigger = found[0]
    return WebhookTarget(definition, key, read_webhook_auth(trigger.inputs)[0])


def parse_json(body: bytes) -> Any:
    """The body as JSON; ``WebhookRejected``: 400 when it is not JSON (empty, not UTF-8, NaN or
    Infinity, which JSON does not have), 413 when it nests too deep to parse."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    if not body.strip():
        raise WebhookRejected(Reason.invalid_json, "the body is empty: JSON is required")
    try:
        return json.loads(body, parse_constant=refuse_constant)
    except RecursionError as error:
        raise WebhookRejected(Reason.body_too_large, "the body nests too deep to parse") from error
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, int too long
        raise WebhookRejected(Reason.invalid_json, f"the body is not JSON: {error}") from error


def captured_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers to store with the run: no signature header of any scheme (``FlowClient.trigger``
    then drops the credentials: ``Authorization``, ``Cookie``, ``X-Webhook-Key``…)."""
    return {name: value for name, value in headers.items() if name.lower() not in SIGNATURE_HEADERS}


class WebhookReceiver:
    """Runs deliveries through the checks into a run, written on the caller's event loop."""

    def __init__(
        self,
        client: FlowClient,
        guards: WebhookGuards,
        runs: AsyncRunWrites,
        *,
        max_body_bytes: int,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.guards = guards
        self.runs = runs
        self.max_body_bytes = max_body_bytes
        self.environ = environ
        self.clock = clock

    async def receive(self, target: WebhookTarget, headers: Mapping[str, str], body: bytes) -> RunHandle:
        """Check one delivery (``headers`` keyed in lower case) and trigger its run;
        ``WebhookRejected`` says why not. Logged either way, without secrets or the body."""
        flow = target.flow
        bound = log.bind(flow_id=str(flow.id), trigger_key=target.trigger_key, bytes=len(body))
        try:
            with _refusals(flow.name):
                try:
                    prepared = self._prepare(target, headers, body)
                except WebhookRejected as refused:
                    # Refused before the run's script, which counts every outcome of its own.
                    await self.count(flow.name, refused)
                    raise
                handle = await self.client.commit_trigger_async(prepared, self.runs)
        except WebhookRejected as rejected:
            bound.info("webhook.rejected", reason=rejected.reason.value, status=rejected.status)
            raise
        bound.info("webhook.accepted", run_id=str(handle.run_id), created=handle.created)
        return handle

    async def count(self, flow_name: str, rejected: WebhookRejected) -> None:
        """Count a delivery refused outside ``create_run.lua`` (by the flow's name: ``""`` when the
        path named no flow, never the path's own text, which a sender chooses)."""
        key = self.client.store.keys.metrics()
        await self.runs.count_metric(key, "webhook_deliveries", flow_name, str(rejected.status))

    def _prepare(self, target: WebhookTarget, headers: Mapping[str, str], body: bytes) -> PreparedTrigger:
        flow, auth = target.flow, target.auth
        # The HTTP route stops reading at the cap already; this holds for any other caller.
        if len(body) > self.max_body_bytes:
            raise WebhookRejected(
                Reason.body_too_large, f"the body is larger than {self.max_body_bytes} bytes"
            )
        if auth is None:
            raise WebhookRejected(Reason.not_configured, "this webhook's auth settings are invalid")
        verified = None
        if auth.scheme is not None:
            try:
                secrets = auth.resolve(self.environ)
            except SecretUnavailable as missing:
                # The operator's mistake, not the sender's: said in the log, not in the reply.
                log.error("webhook.secret_unavailable", flow_id=str(flow.id), variable=missing.name)
                raise WebhookRejected(
                    Reason.not_configured, "this webhook's secret is not configured"
                ) from None
            verified = verify(
                auth.scheme,
                secrets,
                headers,
                body,
                now=self.clock(),
                window_seconds=self.guards.replay_window_seconds,
            )
            if verified.previous_secret:
                log.warning(
                    "webhook.previous_secret_used", flow_id=str(flow.id), trigger_key=target.trigger_key
                )
        data = parse_json(body)
        nonce = verified.nonce if verified is not None else None
        return self.client.prepare_trigger(
            flow.id,
            target.trigger_key,
            data,
            captured_headers(headers),
            admission=self.guards.admission(flow.id, target.trigger_key, nonce, flow.name),
        )


@contextmanager
def _refusals(flow_name: str) -> Iterator[None]:
    """The trigger's errors as the refusals a sender is told."""
    try:
        yield
    except FlowDisabled as error:
        raise WebhookRejected(Reason.flow_disabled, str(error)) from error
    except TriggerNotAdmitted as error:
        if error.retry_after_ms is not None:
            retry_after = max(1, math.ceil(error.retry_after_ms / 1000))
            message = f"too many deliveries to flow {flow_name!r}"
            raise WebhookRejected(Reason.rate_limited, message, retry_after=retry_after) from error
        raise WebhookRejected(Reason.replayed, "this delivery was already received") from error
    except TriggerHeadersTooLarge as error:
        raise WebhookRejected(Reason.headers_too_large, str(error)) from error
    except DataTooLarge as error:
        raise WebhookRejected(Reason.body_too_large, str(error)) from error
    except InvalidIdempotencyKey as error:
        raise WebhookRejected(Reason.invalid_idempotency_key, str(error)) from error
    except InvalidTriggerData as error:
        raise WebhookRejected(Reason.invalid_json, str(error)) from error
    except (FlowNotFound, TriggerNotFound) as error:  # the flow was replaced meanwhile
        raise WebhookRejected(Reason.not_found, str(error)) from error
