"""What a trigger keeps from its request: its headers, less credentials and within bounds, and its
idempotency key, checked. Every trigger passes here (``FlowClient.prepare_trigger``: the API, the
webhooks, the CLI, schedules and re-runs) before anything is written. Pure: no I/O.

The bounds' defaults are those of common HTTP servers, so a request that one of them accepts is
not refused for its headers: 100 headers (Apache httpd's ``LimitRequestFields``), 8190 bytes per
value (Apache's ``LimitRequestFieldSize``), 16 KiB in all (Node.js's ``--max-http-header-size``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flowjobs.core.errors import InvalidIdempotencyKey, InvalidTriggerData, TriggerHeadersTooLarge

#: Headers never stored on a run: credentials (the webhook receiver also drops signatures).
SENSITIVE_HEADERS = frozenset(
    {"authorization", "cookie", "set-cookie", "x-webhook-key", "proxy-authorization"}
)
IDEMPOTENCY_HEADER = "idempotency-key"

#: Defaults of ``FLOWJOBS_MAX_TRIGGER_HEADERS``, ``…_HEADER_BYTES`` and ``…_HEADERS_BYTES``.
DEFAULT_MAX_TRIGGER_HEADERS = 100
DEFAULT_MAX_TRIGGER_HEADER_BYTES = 8190
DEFAULT_MAX_TRIGGER_HEADERS_BYTES = 16 * 1024
#: Upper bound of the three settings (the largest trigger data, ``limits.MAX_DATA_BYTES``, is 64 MiB:
#: headers are metadata, a thousandth of it is plenty).
MAX_TRIGGER_HEADERS_BYTES = 1024 * 1024
#: Longest idempotency key, in characters: Stripe's own limit, so a key valid there is valid here.
MAX_IDEMPOTENCY_KEY_CHARS = 255


@dataclass(frozen=True)
class HeaderLimits:
    """Bounds of the headers stored on a run (after the credentials are dropped)."""

    count: int = DEFAULT_MAX_TRIGGER_HEADERS
    """How many headers."""
    value_bytes: int = DEFAULT_MAX_TRIGGER_HEADER_BYTES
    """Largest value, in UTF-8 bytes."""
    total_bytes: int = DEFAULT_MAX_TRIGGER_HEADERS_BYTES
    """All names and values together, in UTF-8 bytes."""


#: The settings' defaults.
DEFAULT_HEADER_LIMITS = HeaderLimits()


@dataclass(frozen=True)
class TriggerHeaders:
    """What a trigger keeps from its request."""

    headers: dict[str, str]
    """Stored on the run (``trigger_headers``)."""
    idempotency_key: str | None
    """The argument, else the ``Idempotency-Key`` header; None without either."""


def trigger_headers(
    headers: Mapping[str, str] | None, idempotency_key: str | None, limits: HeaderLimits
) -> TriggerHeaders:
    """The headers to keep on the run (credentials dropped, the rest whole) and the idempotency key
    (``idempotency_key``, else the ``Idempotency-Key`` header, any case). Refused, in this order:
    ``InvalidTriggerData`` unless the headers map strings to strings; ``InvalidIdempotencyKey``
    unless the key is 1 to 255 printable characters (no control characters, line breaks or lone
    surrogates) without leading or trailing spaces; ``TriggerHeadersTooLarge`` past any of
    ``limits`` (nothing is truncated: a run never holds part of what it was sent)."""
    if not isinstance(headers, Mapping | None) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in (headers or {}).items()
    ):
        raise InvalidTriggerData("trigger headers must map strings to strings")
    given = dict(headers or {})
    if idempotency_key is None:
        idempotency_key = next((v for k, v in given.items() if k.lower() == IDEMPOTENCY_HEADER), None)
    if idempotency_key is not None:
        _check_idempotency_key(idempotency_key)
    kept = {k: v for k, v in given.items() if k.lower() not in SENSITIVE_HEADERS}
    _check_limits(kept, limits)
    return TriggerHeaders(kept, idempotency_key)


def _check_idempotency_key(key: object) -> None:
    if not isinstance(key, str):
        raise InvalidIdempotencyKey(f"an idempotency key is a string, not {type(key).__name__}")
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidIdempotencyKey(
            f"the idempotency key is {len(key)} characters; it must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS}"
        )
    if not key.isprintable() or key != key.strip():
        raise InvalidIdempotencyKey(
            f"the idempotency key {shown(key)} holds control characters or leading or trailing spaces"
        )


def _check_limits(kept: Mapping[str, str], limits: HeaderLimits) -> None:
    if len(kept) > limits.count:
        raise TriggerHeadersTooLarge(
            f"the request has {len(kept)} headers to store; the limit is {limits.count} "
            "(FLOWJOBS_MAX_TRIGGER_HEADERS)",
            limit=limits.count,
            actual=len(kept),
        )
    total = 0
    for name, value in kept.items():
        size = len(value.encode(errors="surrogatepass"))
        if size > limits.value_bytes:
            raise TriggerHeadersTooLarge(
                f"header {shown(name)} is {size} bytes; the limit is {limits.value_bytes} bytes "
                "(FLOWJOBS_MAX_TRIGGER_HEADER_BYTES)",
                limit=limits.value_bytes,
                actual=size,
            )
        total += size + len(name.encode(errors="surrogatepass"))
    if total > limits.total_bytes:
        raise TriggerHeadersTooLarge(
            f"the headers to store are {total} bytes; the limit is {limits.total_bytes} bytes "
            "(FLOWJOBS_MAX_TRIGGER_HEADERS_BYTES)",
            limit=limits.total_bytes,
            actual=total,
        )


def shown(text: object, limit: int = 60) -> str:
    """A caller's ``text`` quoted for a message, cut to ``limit`` characters (a hostile value is not
    echoed whole)."""
    value = text if isinstance(text, str) else str(text)
    return repr(value if len(value) <= limit else f"{value[:limit]}…")
