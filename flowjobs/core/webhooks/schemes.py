"""Webhook signature schemes: one table of how each sender signs a delivery, and one verifier for
all of them (pure: no I/O; the clock is an argument).

Every scheme is a row of ``SCHEMES``: the header that carries the signature, where the timestamp
is (none, its own header, or inside the signature header as Stripe does), how the header's value
splits into candidate signatures, how one candidate decodes to bytes, and which bytes are signed.
``verify`` reads any row the same way, so a new scheme is a new row, not a new code path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from flowjobs.core.webhooks.rejections import Reason, WebhookRejected


class Scheme(StrEnum):
    """How a trigger's deliveries prove who sent them (``webhookScheme``)."""

    #: The secret itself in ``X-Webhook-Key`` (compared in constant time; no replay guard: the
    #: key is the same on every delivery, and the body is not bound to it).
    key = "key"
    #: GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.
    github = "github"
    #: Stripe: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">[,v1=…]``.
    stripe = "stripe"
    #: Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:ts:body">`` with
    #: ``X-Slack-Request-Timestamp: <unix>``.
    slack = "slack"
    #: Shopify: ``X-Shopify-Hmac-SHA256: <base64 HMAC-SHA256 of the body>``.
    shopify = "shopify"
    #: Generic: ``X-Signature: [sha256=]<hex HMAC-SHA256 of "ts.body">`` with ``X-Timestamp: <unix>``.
    generic = "generic"


class Encoding(StrEnum):
    """How a signature is written in its header."""

    #: Hexadecimal (either case), exactly one SHA-256 digest long.
    hex = "hex"
    #: Standard base64 of one SHA-256 digest.
    base64 = "base64"
    #: The secret itself, as sent (the ``key`` scheme).
    raw = "raw"


#: (timestamp or None, body) → the bytes the sender signed.
Payload = Callable[[str | None, bytes], bytes]

_DIGEST_SIZE = hashlib.sha256().digest_size
_HEX_DIGEST = re.compile(rf"[0-9a-fA-F]{{{2 * _DIGEST_SIZE}}}")
#: Unix seconds: up to 12 digits (year 33658), so ``int`` never sees an absurd string.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


def _body(_timestamp: str | None, body: bytes) -> bytes:
    return body


def _dot_timestamp(timestamp: str | None, body: bytes) -> bytes:
    return f"{timestamp}.".encode() + body


def _slack_basestring(timestamp: str | None, body: bytes) -> bytes:
    return f"v0:{timestamp}:".encode() + body


@dataclass(frozen=True)
class SchemeSpec:
    """One row of the verifier table."""

    header: str
    """The header carrying the signature (or the key), lower-case."""
    encoding: Encoding
    """How one signature is written."""
    payload: Payload | None
    """The signed bytes; None: the secret itself is the credential (``key``), no HMAC."""
    prefix: str = ""
    """What precedes the signature (``sha256=``, ``v0=``)."""
    prefix_optional: bool = False
    """Whether a signature without the prefix is accepted too."""
    timestamp_header: str | None = None
    """The header carrying the signed timestamp, when it has its own (lower-case)."""
    stripe_list: bool = False
    """The header is Stripe's ``t=<unix>,v1=<sig>[,v1=<sig>…]`` list: the timestamp is inside it
    (and required), and any ``v1`` may match (Stripe sends one per active secret)."""

    @property
    def timestamped(self) -> bool:
        """Whether deliveries carry a signed timestamp (checked against the replay window)."""
        return self.stripe_list or self.timestamp_header is not None

    def read(self, value: str) -> tuple[list[str], str | None] | None:
        """The header's value → (the written signatures, the timestamp it embeds), or None when it
        does not have this scheme's shape."""
        value = value.strip()
        if self.stripe_list:
            return _read_stripe_list(value)
        if value.startswith(self.prefix):
            return [value[len(self.prefix) :]], None
        return ([value], None) if self.prefix_optional else None

    def decode(self, written: str) -> bytes | None:
        """One written signature → the bytes compared, or None when it is not valid."""
        if self.encoding is Encoding.hex:
            # fromhex alone would accept spaces between bytes: the shape is checked first.
            return bytes.fromhex(written) if _HEX_DIGEST.fullmatch(written) else None
        if self.encoding is Encoding.base64:
            try:
                raw = base64.b64decode(written, validate=True)
            except (binascii.Error, ValueError):
                return None
            return raw if len(raw) == _DIGEST_SIZE else None
        return _header_bytes(written.strip()) or None

    def write(self, signature: bytes, timestamp: str | None) -> str:
        """The header value a sender writes for ``signature`` (the inverse of ``read``/``decode``)."""
        if self.encoding is Encoding.raw:
            return signature.decode()
        text = signature.hex() if self.encoding is Encoding.hex else base64.b64encode(signature).decode()
        return f"t={timestamp},v1={text}" if self.stripe_list else f"{self.prefix}{text}"


def _read_stripe_list(value: str) -> tuple[list[str], str | None] | None:
    """Stripe's ``t=…,v1=…,v1=…`` (``v0`` and unknown keys ignored, as Stripe documents)."""
    timestamp: str | None = None
    signatures: list[str] = []
    for item in value.split(","):
        name, sep, text = item.strip().partition("=")
        if not sep:
            return None
        if name == "t":
            if timestamp is not None:
                return None  # two timestamps: which one was signed is anyone's guess
            timestamp = text
        elif name == "v1":
            signatures.append(text)
    return (signatures, timestamp) if signatures else None


def _header_bytes(text: str) -> bytes:
    """A header value's bytes: servers decode headers as latin-1, so encoding back gives what was
    sent (a UTF-8 key arrives as its bytes); text that is not latin-1 came from elsewhere: UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


SCHEMES: Mapping[Scheme, SchemeSpec] = {
    Scheme.key: SchemeSpec("x-webhook-key", Encoding.raw, None),
    Scheme.github: SchemeSpec("x-hub-signature-256", Encoding.hex, _body, prefix="sha256="),
    Scheme.stripe: SchemeSpec("stripe-signature", Encoding.hex, _dot_timestamp, stripe_list=True),
    Scheme.slack: SchemeSpec(
        "x-slack-signature",
        Encoding.hex,
        _slack_basestring,
        prefix="v0=",
        timestamp_header="x-slack-request-timestamp",
    ),
    Scheme.shopify: SchemeSpec("x-shopify-hmac-sha256", Encoding.base64, _body),
    Scheme.generic: SchemeSpec(
        "x-signature",
        Encoding.hex,
        _dot_timestamp,
        prefix="sha256=",
        prefix_optional=True,
        timestamp_header="x-timestamp",
    ),
}

#: Every scheme's signature header (lower-case): never stored with a run, whatever the trigger's
#: scheme (a signature is a credential for its body for as long as the replay window lasts).
SIGNATURE_HEADERS = frozenset(spec.header for spec in SCHEMES.values())


@dataclass(frozen=True)
class Verified:
    """A delivery whose signature (or key) one of the trigger's secrets produces."""

    nonce: str | None
    """What identifies this signed delivery for the replay guard: the SHA-256 (hex) of the bytes
    signed, timestamp included; None for ``key`` (nothing in the request is bound to the key)."""
    timestamp: int | None
    """The signed unix timestamp, for timestamped schemes."""
    previous_secret: bool
    """Matched a secret other than the first (a rotation in progress: worth logging)."""


def sign(scheme: Scheme, secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value a sender of ``scheme`` writes (tests, the benchmark and the
    README's examples compute the same); ``key`` gives the secret itself."""
    spec = SCHEMES[scheme]
    stamp = str(timestamp) if timestamp is not None else None
    if spec.payload is None:
        return spec.write(secret, stamp)
    return spec.write(hmac.new(secret, spec.payload(stamp, body), hashlib.sha256).digest(), stamp)


def verify(
    scheme: Scheme,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    window_seconds: float,
) -> Verified:
    """Check a delivery against the trigger's secrets (newest first); ``WebhookRejected`` says why
    not. ``headers`` are keyed in lower case.

    Every candidate is compared with every secret's expected value in constant time, all of them
    every time, so the timing tells nothing about which part differs. The timestamp's skew is
    checked only once the signature holds (an unsigned timestamp proves nothing), which makes a
    stale delivery a replay (409), not a forgery (401).
    """
    spec = SCHEMES[scheme]
    value = headers.get(spec.header)
    if value is None or not value.strip():
        raise WebhookRejected(Reason.missing_signature, f"the {spec.header} header is missing")
    read = spec.read(value)
    candidates = [spec.decode(text) for text in read[0]] if read else []
    if not read or not all(candidates):
        raise WebhookRejected(
            Reason.malformed_signature, f"the {spec.header} header is not a {scheme} signature"
        )
    timestamp = read[1] if spec.stripe_list else headers.get(spec.timestamp_header or "")
    if spec.timestamped:
        where = spec.header if spec.stripe_list else spec.timestamp_header
        if timestamp is None:
            raise WebhookRejected(Reason.missing_timestamp, f"the signed timestamp ({where}) is missing")
        timestamp = timestamp.strip()
        if not _UNIX_SECONDS.fullmatch(timestamp):
            raise WebhookRejected(Reason.invalid_timestamp, f"the timestamp ({where}) is not unix seconds")
    signed = spec.payload(timestamp, body) if spec.payload else None
    if signed is None:
        # A key is compared through its SHA-256, so the comparison's time says nothing about the
        # key's length either (compare_digest returns early on unequal lengths).
        expected = [hashlib.sha256(secret).digest() for secret in secrets]
        presented = [hashlib.sha256(candidate).digest() for candidate in candidates if candidate]
    else:
        expected = [hmac.new(secret, signed, hashlib.sha256).digest() for secret in secrets]
        presented = [candidate for candidate in candidates if candidate]
    # Lists, not generators: every comparison runs, whichever matches.
    matched = [any([hmac.compare_digest(want, got) for got in presented]) for want in expected]
    if not any(matched):
        raise WebhookRejected(Reason.bad_signature, f"the {spec.header} header does not match")
    stamp = int(timestamp) if spec.timestamped and timestamp is not None else None
    if stamp is not None and abs(now - stamp) > window_seconds:
        raise WebhookRejected(
            Reason.stale_timestamp,
            f"the signed timestamp is {abs(now - stamp):.0f} s from now (at most {window_seconds:g} s)",
        )
    return Verified(
        nonce=hashlib.sha256(signed).hexdigest() if signed is not None else None,
        timestamp=stamp,
        previous_secret=not matched[0],
    )
