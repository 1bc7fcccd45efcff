"""Webhook auth without Redis: the scheme table's verifier (good, bad, stale, rotated, malformed
signatures per scheme), trigger settings and their validation, JSON parsing, header capture, and a
fuzz of the parsing that finds nothing but a verdict."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowjobs.core.errors import FlowValidationError
from flowjobs.core.manifest import FlowDefinition
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.webhooks.auth import SecretUnavailable
from flowjobs.core.webhooks.schemes import SCHEMES, sign
from flowjobs.webhooks import (
    SIGNATURE_HEADERS,
    Reason,
    Scheme,
    WebhookAuth,
    WebhookRejected,
    read_webhook_auth,
    redact_trigger_inputs,
    verify,
)
from flowjobs.webhooks.receiver import captured_headers, parse_json

NOW = 1_750_000_000
WINDOW = 300
NEW = b"new-secret-0123456789"
OLD = b"old-secret-9876543210"
BODY = b'{"orderId": 42, "items": ["a", "b"]}'
TIMESTAMPED = [s for s in Scheme if SCHEMES[s].timestamped]
HMAC_SCHEMES = [s for s in Scheme if s is not Scheme.key]


def signed_headers(scheme: Scheme, secret: bytes, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    """The headers a sender of ``scheme`` sends (lower-case names, as the server hands them)."""
    spec = SCHEMES[scheme]
    headers = {spec.header: sign(scheme, secret, body, timestamp)}
    if spec.timestamp_header:
        headers[spec.timestamp_header] = str(timestamp)
    return headers


def check(
    scheme: Scheme, headers: dict[str, str], body: bytes = BODY, secrets: list[bytes] | None = None
) -> Any:
    return verify(scheme, secrets or [NEW], headers, body, now=NOW, window_seconds=WINDOW)


def rejection(
    scheme: Scheme, headers: dict[str, str], body: bytes = BODY, secrets: list[bytes] | None = None
) -> Reason:
    with pytest.raises(WebhookRejected) as error:
        check(scheme, headers, body, secrets)
    return error.value.reason


# -- each scheme's wire format, checked against the senders' own documentation ------------------


def test_github_matches_githubs_documented_example() -> None:
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(Scheme.github, secret, body) == expected
    assert check(Scheme.github, {"x-hub-signature-256": expected}, body, [secret]).nonce


def test_slack_matches_slacks_documented_example() -> None:
    secret = b"8f742231b10e8888abcd99yyyzzz85a5"
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIG"
        b"lgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert sign(Scheme.slack, secret, body, 1531420618) == expected
    headers = {"x-slack-signature": expected, "x-slack-request-timestamp": "1531420618"}
    assert verify(Scheme.slack, [secret], headers, body, now=1531420618 + 10, window_seconds=WINDOW)


def test_stripe_shopify_and_generic_sign_what_their_senders_sign() -> None:
    def mac(payload: bytes) -> bytes:
        return hmac.new(NEW, payload, hashlib.sha256).digest()

    assert sign(Scheme.stripe, NEW, BODY, NOW) == f"t={NOW},v1={mac(f'{NOW}.'.encode() + BODY).hex()}"
    assert sign(Scheme.shopify, NEW, BODY) == base64.b64encode(mac(BODY)).decode()
    assert sign(Scheme.generic, NEW, BODY, NOW) == f"sha256={mac(f'{NOW}.'.encode() + BODY).hex()}"
    assert sign(Scheme.key, NEW, BODY) == NEW.decode()


# -- good, bad, rotated, stale, malformed -------------------------------------------------------


@pytest.mark.parametrize("scheme", list(Scheme))
def test_a_good_delivery_verifies_with_the_current_secret(scheme: Scheme) -> None:
    verified = check(scheme, signed_headers(scheme, NEW))
    assert not verified.previous_secret
    assert verified.timestamp == (NOW if scheme in TIMESTAMPED else None)
    assert (verified.nonce is None) == (scheme is Scheme.key)


@pytest.mark.parametrize("scheme", list(Scheme))
def test_another_secret_is_refused(scheme: Scheme) -> None:
    assert rejection(scheme, signed_headers(scheme, b"somebody-else")) is Reason.bad_signature


@pytest.mark.parametrize("scheme", HMAC_SCHEMES)
def test_a_changed_body_is_refused(scheme: Scheme) -> None:
    headers = signed_headers(scheme, NEW)
    assert rejection(scheme, headers, BODY.replace(b"42", b"43")) is Reason.bad_signature


@pytest.mark.parametrize("scheme", TIMESTAMPED)
def test_a_changed_timestamp_is_refused(scheme: Scheme) -> None:
    headers = signed_headers(scheme, NEW)
    spec = SCHEMES[scheme]
    if spec.timestamp_header:
        headers[spec.timestamp_header] = str(NOW + 1)
    else:
        headers[spec.header] = headers[spec.header].replace(f"t={NOW}", f"t={NOW + 1}")
    assert rejection(scheme, headers) is Reason.bad_signature


@pytest.mark.parametrize("scheme", list(Scheme))
def test_during_rotation_both_secrets_verify(scheme: Scheme) -> None:
    rotating = [NEW, OLD]
    assert not check(scheme, signed_headers(scheme, NEW), secrets=rotating).previous_secret
    assert check(scheme, signed_headers(scheme, OLD), secrets=rotating).previous_secret
    assert rejection(scheme, signed_headers(scheme, OLD)) is Reason.bad_signature  # rotation over


@pytest.mark.parametrize("scheme", TIMESTAMPED)
@pytest.mark.parametrize("skew", [-WINDOW - 1, WINDOW + 1, -10 * WINDOW])
def test_a_timestamp_outside_the_window_is_a_replay(scheme: Scheme, skew: int) -> None:
    error = rejection(scheme, signed_headers(scheme, NEW, timestamp=NOW + skew))
    assert error is Reason.stale_timestamp and error.status == 409


@pytest.mark.parametrize("scheme", TIMESTAMPED)
@pytest.mark.parametrize("skew", [-WINDOW, WINDOW, 0])
def test_a_timestamp_at_the_edge_of_the_window_is_accepted(scheme: Scheme, skew: int) -> None:
    assert check(scheme, signed_headers(scheme, NEW, timestamp=NOW + skew)).timestamp == NOW + skew


@pytest.mark.parametrize("scheme", TIMESTAMPED)
def test_a_forged_stale_timestamp_is_a_forgery_not_a_replay(scheme: Scheme) -> None:
    # Skew is judged only once the signature holds: an unsigned timestamp proves nothing.
    headers = signed_headers(scheme, b"somebody-else", timestamp=NOW - 10 * WINDOW)
    assert rejection(scheme, headers) is Reason.bad_signature


@pytest.mark.parametrize("scheme", list(Scheme))
def test_a_missing_signature_header_is_refused(scheme: Scheme) -> None:
    headers = signed_headers(scheme, NEW)
    del headers[SCHEMES[scheme].header]
    assert rejection(scheme, headers) is Reason.missing_signature


@pytest.mark.parametrize(
    ("scheme", "value"),
    [
        (Scheme.github, "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),  # no sha256=
        (Scheme.github, "sha256=abc"),
        (Scheme.github, "sha256=" + "zz" * 32),
        (Scheme.github, "sha256=" + "ab " * 31 + "ab"),  # fromhex would take the spaces
        (Scheme.slack, "sha256=" + "ab" * 32),
        (Scheme.shopify, "not base64!"),
        (Scheme.shopify, base64.b64encode(b"short").decode()),
        (Scheme.stripe, "v1"),
        (Scheme.stripe, f"t={NOW}"),
        (Scheme.stripe, f"t={NOW},t={NOW},v1={'ab' * 32}"),
        (Scheme.generic, "sha256=" + "ab" * 33),
    ],
)
def test_a_malformed_signature_is_refused(scheme: Scheme, value: str) -> None:
    headers = signed_headers(scheme, NEW)
    headers[SCHEMES[scheme].header] = value
    assert rejection(scheme, headers) is Reason.malformed_signature


@pytest.mark.parametrize("scheme", [Scheme.slack, Scheme.generic])
def test_a_missing_or_bad_timestamp_header_is_refused(scheme: Scheme) -> None:
    headers = signed_headers(scheme, NEW)
    stamp = SCHEMES[scheme].timestamp_header
    assert stamp is not None
    for value, reason in [(None, Reason.missing_timestamp), ("soon", Reason.invalid_timestamp)]:
        changed = {k: v for k, v in headers.items() if k != stamp} | ({stamp: value} if value else {})
        assert rejection(scheme, changed) is reason


def test_stripe_reads_the_timestamp_inside_its_signature_header() -> None:
    # The reference's replay gate looked for a separate timestamp header and refused every Stripe
    # delivery; here the header's own t= is the signed timestamp.
    headers = signed_headers(Scheme.stripe, NEW)
    assert headers.keys() == {"stripe-signature"}
    assert check(Scheme.stripe, headers).timestamp == NOW
    missing_t = {"stripe-signature": headers["stripe-signature"].split(",", 1)[1]}
    assert rejection(Scheme.stripe, missing_t) is Reason.missing_timestamp


def test_stripe_accepts_any_of_several_v1_signatures_and_ignores_v0() -> None:
    good = sign(Scheme.stripe, NEW, BODY, NOW).split(",")[1]
    header = f"t={NOW},v1={'00' * 32},{good},v0={'11' * 32}"
    assert check(Scheme.stripe, {"stripe-signature": header}).timestamp == NOW


def test_hex_signatures_are_accepted_in_either_case() -> None:
    headers = {"x-hub-signature-256": "sha256=" + sign(Scheme.github, NEW, BODY)[7:].upper()}
    assert check(Scheme.github, headers)


def test_generic_accepts_the_signature_with_or_without_its_prefix() -> None:
    headers = signed_headers(Scheme.generic, NEW)
    headers["x-signature"] = headers["x-signature"].removeprefix("sha256=")
    assert check(Scheme.generic, headers)


def test_the_nonce_names_the_signed_delivery() -> None:
    first = check(Scheme.stripe, signed_headers(Scheme.stripe, NEW))
    again = check(Scheme.stripe, signed_headers(Scheme.stripe, OLD), secrets=[NEW, OLD])
    later = check(Scheme.stripe, signed_headers(Scheme.stripe, NEW, timestamp=NOW + 1))
    assert first.nonce == again.nonce  # the same delivery, whichever secret signed it
    assert first.nonce != later.nonce


def test_a_key_compares_as_sent_with_surrounding_space_ignored() -> None:
    assert check(Scheme.key, {"x-webhook-key": f"  {NEW.decode()} "})
    assert rejection(Scheme.key, {"x-webhook-key": NEW.decode()[:-1]}) is Reason.bad_signature
    assert rejection(Scheme.key, {"x-webhook-key": "   "}) is Reason.missing_signature


# -- trigger settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"webhookSecret": "s3cret"}, WebhookAuth(Scheme.key, ("s3cret",))),
        ({"webhookScheme": "GitHub", "webhookSecret": "env:GH"}, WebhookAuth(Scheme.github, ("env:GH",))),
        (
            {"webhookScheme": "stripe", "webhookSecrets": ["new", "old"]},
            WebhookAuth(Scheme.stripe, ("new", "old")),
        ),
        ({"webhookAuth": "none"}, WebhookAuth(None)),
    ],
)
def test_trigger_inputs_give_the_scheme_and_secrets(inputs: dict[str, Any], expected: WebhookAuth) -> None:
    assert read_webhook_auth({"webhookSlug": "s", **inputs}) == (expected, [])


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({}, "needs webhookSecret"),
        ({"webhookScheme": "github"}, "needs webhookSecret"),
        ({"webhookSecret": ""}, "non-empty string"),
        ({"webhookSecret": 12345}, "non-empty string"),
        ({"webhookSecrets": ["a", "b", "c"]}, "list of 1 to 2"),
        ({"webhookSecrets": "a"}, "list of 1 to 2"),
        ({"webhookSecret": "a", "webhookSecrets": ["b"]}, "not both"),
        ({"webhookSecret": "env:1BAD"}, "environment variable name"),
        ({"webhookSecret": "s", "webhookScheme": "twilio"}, "not one of key, github, stripe"),
        ({"webhookAuth": "open"}, "may only be 'none'"),
        ({"webhookAuth": "none", "webhookSecret": "s"}, "cannot be combined"),
        ({"webhookAuth": "none", "webhookScheme": "github"}, "cannot be combined"),
    ],
)
def test_bad_trigger_inputs_are_named(inputs: dict[str, Any], problem: str) -> None:
    auth, problems = read_webhook_auth(inputs)
    assert auth is None and any(problem in p for p in problems), problems


def test_registration_refuses_a_webhook_without_a_secret_and_names_the_way_out() -> None:
    definition = FlowDefinition.model_validate(
        {
            "id": str(uuid.uuid4()),
            "name": "hooked",
            "triggers": {"in": {"type": "Webhook", "inputs": {"webhookSlug": "in", "webhookScheme": "nope"}}},
            "steps": {"a": {"type": "Noop"}},
        }
    )
    with pytest.raises(FlowValidationError) as error:
        FlowRegistry([definition])
    assert any("trigger 'in': webhookScheme 'nope' is not one of" in p for p in error.value.problems)
    assert any("or webhookAuth: none to accept unauthenticated" in p for p in error.value.problems)


def test_env_secrets_are_read_at_delivery_time() -> None:
    auth = WebhookAuth(Scheme.github, ("env:HOOK_NEW", "literal-old"))
    assert auth.resolve({"HOOK_NEW": "from-env"}) == [b"from-env", b"literal-old"]
    for environ in ({}, {"HOOK_NEW": ""}):
        with pytest.raises(SecretUnavailable, match="HOOK_NEW"):
            auth.resolve(environ)


def test_literal_secrets_are_masked_for_display_and_env_references_kept() -> None:
    shown = redact_trigger_inputs({"webhookSlug": "s", "webhookSecrets": ["literal", "env:OLD"]})
    assert shown == {"webhookSlug": "s", "webhookSecrets": ["***", "env:OLD"]}
    assert redact_trigger_inputs({"webhookSecret": "literal"}) == {"webhookSecret": "***"}


# -- body and headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", Reason.invalid_json),
        (b"  \n", Reason.invalid_json),
        (b"orderId=42", Reason.invalid_json),
        (b'{"a": NaN}', Reason.invalid_json),
        (b'{"a": Infinity}', Reason.invalid_json),
        (b"\xff\xfe{", Reason.invalid_json),
        (b"1" * 5000, Reason.invalid_json),  # longer than int() takes
        (b"[" * 200_000, Reason.body_too_large),  # deeper than the parser recurses
    ],
)
def test_a_body_that_is_not_json_is_refused(body: bytes, reason: Reason) -> None:
    with pytest.raises(WebhookRejected) as error:
        parse_json(body)
    assert error.value.reason is reason


def test_json_bodies_parse_to_any_value() -> None:
    assert parse_json(BODY) == {"orderId": 42, "items": ["a", "b"]}
    assert parse_json(b"null") is None and parse_json(b"[1]") == [1]


def test_captured_headers_drop_every_schemes_signature() -> None:
    headers = {name: "x" for name in SIGNATURE_HEADERS} | {
        "x-github-event": "push",
        "X-Hub-Signature-256": "s",
    }
    assert captured_headers(headers) == {"x-github-event": "push"}


# -- fuzz: any header and body is a verdict, never an exception ---------------------------------

_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=120)


@st.composite
def _deliveries(draw: st.DrawFn) -> tuple[Scheme, dict[str, str], bytes]:
    scheme = draw(st.sampled_from(list(Scheme)))
    spec = SCHEMES[scheme]
    body = draw(st.binary(max_size=200) | st.just(BODY))
    headers = signed_headers(scheme, NEW, body, draw(st.integers(0, 2 * NOW)))
    # Mangle the real headers: replace, truncate, extend, or drop each one.
    for name in [spec.header, spec.timestamp_header or "x-timestamp"]:
        headers[name] = draw(
            st.sampled_from([headers.get(name, ""), ""])
            | _HEADER_TEXT
            | st.builds(lambda v, n: v[:n], st.just(headers.get(name, "")), st.integers(0, 80))
            | st.builds(lambda v, t: v + t, st.just(headers.get(name, "")), _HEADER_TEXT)
        )
    return scheme, headers, body


@given(_deliveries(), st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=2))
def test_fuzzed_headers_give_a_verdict_never_an_exception(
    delivery: tuple[Scheme, dict[str, str], bytes], secrets: list[bytes]
) -> None:
    scheme, headers, body = delivery
    try:
        verified = verify(scheme, [NEW, *secrets][:2], headers, body, now=NOW, window_seconds=WINDOW)
    except WebhookRejected as error:
        assert error.status in (401, 409)
    else:
        assert verified.previous_secret in (True, False)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzzed_bodies_parse_or_are_refused(body: bytes) -> None:
    try:
        parse_json(body)
    except WebhookRejected as error:
        assert error.status in (400, 413)


def test_a_shown_manifest_masks_literal_webhook_secrets_and_keeps_env_references() -> None:
    from flowjobs.core.manifest import FlowManifest
    from flowjobs.webhooks import shown_manifest

    manifest = FlowManifest.model_validate(
        {
            "triggers": {
                "hook": {"type": "Webhook", "inputs": {"webhookSlug": "s", "webhookSecret": "hunter2"}},
                "rotating": {
                    "type": "Webhook",
                    "inputs": {"webhookSlug": "r", "webhookSecrets": ["env:NEW_SECRET", "old-literal"]},
                },
            },
            "steps": {"a": {"type": "Noop"}},
        }
    )
    shown = shown_manifest(manifest)
    assert shown.triggers["hook"].inputs == {"webhookSlug": "s", "webhookSecret": "***"}
    assert shown.triggers["rotating"].inputs["webhookSecrets"] == ["env:NEW_SECRET", "***"]
    assert "hunter2" not in shown.model_dump_json() and "hunter2" in manifest.model_dump_json()
