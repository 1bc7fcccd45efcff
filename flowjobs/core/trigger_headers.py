"""What a trigger keeps from its request: its headers, less credentials and within bounds, its
idempotency key, checked, and its W3C trace context when that is well formed. Every trigger passes
here (``FlowClient.prepare_trigger``: the API, the webhooks, the CLI, schedules and re-runs) before
anything is written. Pure: no I/O.

The bounds' defaults are those of common HTTP servers, so a request that one of them accepts is
not refused for its headers: 100 headers (Apache httpd's ``LimitRequestFields``), 8190 bytes per
value (Apache's ``LimitRequestFieldSize``), 16 KiB in all (Node.js's ``--max-http-header-size``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

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
#: W3C Trace Context headers (https://www.w3.org/TR/trace-context/): a trigger's place in its caller's
#: trace. Kept like any header; read for tracing only when well formed.
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"
#: ``version-trace_id-parent_id-flags`` in lower-case hex, version 00 to fe. A later version may add
#: fields after a dash (the specification's forward compatibility); they are not read.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
#: A traceparent is 55 characters; a later version's extra fields are bounded here.
MAX_TRACEPARENT_CHARS = 128
#: The specification's 32 list members of at most 256 characters each.
MAX_TRACESTATE_CHARS = 32 * 257
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
    trace: dict[str, str] = field(default_factory=dict)
    """``traceparent`` (and ``tracestate``) when the request's traceparent is well formed
    (``trace_context``); empty otherwise."""


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
    return TriggerHeaders(kept, idempotency_key, trace_context(kept))


def trace_context(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C trace context of a request (header names in any case): ``traceparent``, with
    ``tracestate`` when there is one, if the traceparent is well formed (version 00 to fe, ids not
    all zeros, at most ``MAX_TRACEPARENT_CHARS``; a version 00 one exactly 55 characters), else
    nothing: a malformed trace context is ignored, never refused (the specification's rule)."""
    found = {name.lower(): value for name, value in headers.items()}
    parent = found.get(TRACEPARENT_HEADER, "")
    match = _TRACEPARENT.fullmatch(parent) if len(parent) <= MAX_TRACEPARENT_CHARS else None
    if match is None:
        return {}
    version, trace_id, span_id, _, extra = match.groups()
    if version == "ff" or (version == "00" and extra) or not int(trace_id, 16) or not int(span_id, 16):
        return {}
    context = {TRACEPARENT_HEADER: parent}
    state = found.get(TRACESTATE_HEADER, "").strip()
    if state and len(state) <= MAX_TRACESTATE_CHARS and state.isascii() and state.isprintable():
        context[TRACESTATE_HEADER] = state
    return context


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
