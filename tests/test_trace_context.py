"""The trace context a trigger reads from its headers (``trigger_headers.trace_context``): only a
well-formed W3C traceparent is followed; anything else is ignored, never refused."""

from __future__ import annotations

import pytest

from flowjobs.core.trigger_headers import DEFAULT_HEADER_LIMITS, trace_context, trigger_headers

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_followed_with_its_tracestate_in_any_header_case() -> None:
    assert trace_context({"TraceParent": VALID, "TRACESTATE": "rojo=00f067aa0ba902b7"}) == {
        "traceparent": VALID,
        "tracestate": "rojo=00f067aa0ba902b7",
    }
    # A later version may append fields; they are not read, the version's own fields are.
    later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"
    assert trace_context({"traceparent": later}) == {"traceparent": later}


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "garbage",
        VALID.upper(),  # hex is lower case
        VALID + "-extra",  # version 00 has exactly four fields
        "ff" + VALID[2:],  # version ff is invalid
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + "x" * 200,  # past the bound
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u0661",  # a non-ASCII digit
    ],
)
def test_a_malformed_traceparent_is_ignored_but_kept_as_a_header(malformed: str) -> None:
    headers = {"traceparent": malformed, "tracestate": "a=b"}
    kept = trigger_headers(headers, None, DEFAULT_HEADER_LIMITS)
    assert kept.trace == {}
    assert kept.headers == headers


@pytest.mark.parametrize("state", ["caf\u00e9=1", "a=b\x00", "x" * (32 * 257 + 1)])
def test_a_bad_tracestate_is_dropped_and_the_traceparent_kept(state: str) -> None:
    assert trace_context({"traceparent": VALID, "tracestate": state}) == {"traceparent": VALID}
