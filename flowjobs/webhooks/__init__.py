"""Webhook ingress: who may deliver to a flow's ``Webhook`` trigger, and how it is checked.

The pure parts live in the core: ``flowjobs.core.webhooks.auth`` reads a trigger's settings
(scheme, secrets, ``env:`` references), ``flowjobs.core.webhooks.schemes`` is the one table of
signature schemes and their verifier (re-exported here, and as ``flowjobs.webhooks.schemes``).
Here: ``guards`` holds the Redis parts (replay memory, per-flow token bucket) and ``receiver`` runs
a delivery through all of them into a run. The HTTP route is ``flowjobs.web.webhook_routes``.
"""

from __future__ import annotations

from flowjobs.core.webhooks.auth import (
    WebhookAuth,
    read_webhook_auth,
    redact_trigger_inputs,
    shown_manifest,
    webhook_auth_problems,
)
from flowjobs.core.webhooks.rejections import Reason, WebhookRejected
from flowjobs.core.webhooks.schemes import SIGNATURE_HEADERS, Scheme, Verified, verify

__all__ = [
    "SIGNATURE_HEADERS",
    "Reason",
    "Scheme",
    "Verified",
    "WebhookAuth",
    "WebhookRejected",
    "read_webhook_auth",
    "redact_trigger_inputs",
    "shown_manifest",
    "verify",
    "webhook_auth_problems",
]
