"""The trigger bounds at the library's door (issue 12, item 4): ``FlowClient`` refuses, before any
write, headers and idempotency keys no HTTP server would pass (16 MiB, 2,000 headers, 2 MB keys)."""

from __future__ import annotations

from typing import Any

import pytest

from flowjobs.client import FlowClient
from flowjobs.core.errors import InvalidIdempotencyKey, InvalidTriggerData, TriggerHeadersTooLarge
from flowjobs.core.trigger_headers import HeaderLimits
from tests.conftest import Space
from tests.integration.flows import flow, registry


def stored_keys(space: Space) -> set[Any]:
    """Every key of this test's corner of Redis."""
    return set(space.redis.keys(f"{space.token}*"))


def _client(space: Space) -> FlowClient:
    return space.client(registry(flow("f", {"a": {"type": "Noop"}})))


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Huge": "h" * (16 * 1024 * 1024)},
        {f"X-H{i}": "v" for i in range(2000)},
        {"X-" + "n" * 20_000: "v"},
    ],
    ids=["16-MiB-value", "2000-headers", "20-kB-name"],
)
def test_the_client_refuses_headers_past_the_default_bounds(space: Space, headers: dict[str, str]) -> None:
    client = _client(space)
    with pytest.raises(TriggerHeadersTooLarge):
        client.trigger("f", headers=headers)
    assert stored_keys(space) == set()


def test_the_client_refuses_bad_idempotency_keys_and_writes_nothing(space: Space) -> None:
    client = _client(space)
    bad: list[Any] = ["k" * 2_000_000, "", "a\nb", "\x1b[31mred", " padded", "\udcff", 42]
    for key in bad:
        with pytest.raises(InvalidIdempotencyKey):
            client.trigger("f", idempotency_key=key)
    with pytest.raises(InvalidIdempotencyKey):
        client.trigger("f", headers={"IDEMPOTENCY-KEY": "k" * 2_000_000})
    with pytest.raises(InvalidTriggerData):
        client.trigger("f", headers={"X-N": 1})  # type: ignore[dict-item]
    assert stored_keys(space) == set()


def test_the_bounds_are_inclusive(space: Space) -> None:
    limits = HeaderLimits(count=3, value_bytes=10, total_bytes=40)
    client = FlowClient(
        space.redis,
        registry(flow("f", {"a": {"type": "Noop"}})),
        space.settings.queue,
        key_prefix=space.settings.key_prefix,
        header_limits=limits,
    )
    # Credentials are dropped before counting; "é" is two bytes; 40 bytes in all.
    kept = {"A": "é" * 5, "B": "b" * 10, "C" * 17: "c"}
    run = client.get_run(client.trigger("f", headers={**kept, "Authorization": "x" * 1000}).run_id)
    assert run is not None and run.trigger_headers == kept
    too_many = {**kept, "D": ""}
    too_long = {**kept, "A": "é" * 5 + "a"}
    too_large = {"A": "é" * 5, "B": "b" * 10, "C" * 18: "c"}
    for over in (too_many, too_long, too_large):
        with pytest.raises(TriggerHeadersTooLarge):
            client.trigger("f", headers=over)
    assert client.trigger("f", idempotency_key="k" * 255).created
