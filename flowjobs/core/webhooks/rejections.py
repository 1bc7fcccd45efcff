"""Why a webhook delivery is refused, and the HTTP status each reason answers with."""

from __future__ import annotations

from enum import StrEnum

from flowjobs.core.errors import FlowjobsError


class Reason(StrEnum):
    """Why a delivery was refused; ``status`` is the HTTP status it answers with."""

    #: No flow has that webhook slug or id, or the flow has no Webhook trigger.
    not_found = "not_found"
    #: The body is larger than ``FLOWJOBS_WEBHOOK_MAX_BODY_BYTES`` (or the data limits).
    body_too_large = "body_too_large"
    #: The body is not JSON.
    invalid_json = "invalid_json"
    #: The headers to store are too many or too large (``FLOWJOBS_MAX_TRIGGER_HEADERS``,
    #: ``…_HEADER_BYTES``, ``…_HEADERS_BYTES``).
    headers_too_large = "headers_too_large"
    #: The ``Idempotency-Key`` header is longer than 255 characters, or holds control characters.
    invalid_idempotency_key = "invalid_idempotency_key"
    #: The scheme's signature (or key) header is absent.
    missing_signature = "missing_signature"
    #: The signature header does not have the scheme's shape (prefix, encoding, length).
    malformed_signature = "malformed_signature"
    #: The scheme signs a timestamp, and the request carries none.
    missing_timestamp = "missing_timestamp"
    #: The timestamp is not whole unix seconds.
    invalid_timestamp = "invalid_timestamp"
    #: No secret of the trigger produces the signature presented (or the key differs).
    bad_signature = "bad_signature"
    #: The flow is disabled.
    flow_disabled = "flow_disabled"
    #: The flow's token bucket is empty; ``Retry-After`` says when one token is back.
    rate_limited = "rate_limited"
    #: The signed timestamp is further from now than the replay window.
    stale_timestamp = "stale_timestamp"
    #: This signed delivery was already received within the replay window.
    replayed = "replayed"
    #: The trigger's secret names an environment variable this process does not have.
    not_configured = "not_configured"

    @property
    def status(self) -> int:
        """The HTTP status of this refusal."""
        return _STATUS[self]


_STATUS = {
    Reason.not_found: 404,
    Reason.body_too_large: 413,
    Reason.invalid_json: 400,
    Reason.headers_too_large: 431,
    Reason.invalid_idempotency_key: 422,
    Reason.missing_signature: 401,
    Reason.malformed_signature: 401,
    Reason.missing_timestamp: 401,
    Reason.invalid_timestamp: 401,
    Reason.bad_signature: 401,
    Reason.flow_disabled: 403,
    Reason.rate_limited: 429,
    Reason.stale_timestamp: 409,
    Reason.replayed: 409,
    Reason.not_configured: 503,
}


class WebhookRejected(FlowjobsError):
    """A delivery refused: ``reason`` (and its ``status``), a message safe to show the sender, and
    for ``rate_limited`` the seconds until it may retry."""

    def __init__(self, reason: Reason, message: str, *, retry_after: int | None = None) -> None:
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def status(self) -> int:
        """The HTTP status to answer with."""
        return self.reason.status
