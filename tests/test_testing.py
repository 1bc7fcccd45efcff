"""FlowTestHost runs the example flows in-process with the real engine and a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from redis import Redis

import workers.handlers  # noqa: F401  (registers the example handlers)
from flowjobs import FlowRegistry, RunStatus, StepStatus
from flowjobs.testing import FlowTestHost
from tests.conftest import ROOT


@pytest.fixture
def host(redis: Redis) -> Iterator[FlowTestHost]:
    flows = FlowRegistry()
    flows.load_dir(ROOT / "config" / "flows")
    with FlowTestHost(redis, flows) as test_host:
        yield test_host
    assert list(redis.scan_iter(match=f"{test_host.keys.prefix}*")) == [], "close() leaves no keys"


def test_hello_flow(host: FlowTestHost) -> None:
    run = host.trigger("hello-flow", data={"name": "Ada"})
    assert run.status is RunStatus.Succeeded
    summary = next(s for s in run.steps or [] if s.step_key == "summarize")
    assert json.loads(summary.output_json or "{}")["summary"] == "Hello, Ada! (3 letters)"


def test_order_fulfillment_happy_path_and_compensation(host: FlowTestHost) -> None:
    happy = host.trigger("order-fulfillment", data={"orderId": 1})
    assert happy.status is RunStatus.Succeeded
    assert {s.step_key: s.status for s in happy.steps or []}["compensate"] is StepStatus.Skipped
    failed = host.trigger("order-fulfillment", data={"orderId": 2, "failShipping": True})
    assert failed.status is RunStatus.Succeeded
    assert {s.step_key: s.status for s in failed.steps or []} == {
        "fetch": StepStatus.Succeeded,
        "ship": StepStatus.Failed,
        "compensate": StepStatus.Succeeded,
    }


def test_order_approval_small_order_is_approved_at_once(host: FlowTestHost) -> None:
    run = host.trigger("order-approval", data={"lines": [{"price": 10, "qty": 3}]})
    assert run.status is RunStatus.Succeeded
    statuses = {s.step_key: s.status for s in run.steps or []}
    assert statuses["auto_approve"] is StepStatus.Succeeded
    assert statuses["wait_for_approval"] is StepStatus.Skipped
    assert statuses["notify_approved"] is StepStatus.Skipped


def test_order_approval_large_order_waits_for_the_signal(host: FlowTestHost) -> None:
    waiting = host.trigger("order-approval", data={"lines": [{"price": 800, "qty": 2}]})
    assert waiting.status is RunStatus.Running
    assert {s.step_key: s.status for s in waiting.steps or []}["wait_for_approval"] is StepStatus.Pending
    run = host.signal(waiting.id, "approved", {"by": "ada"})
    assert run.status is RunStatus.Succeeded
    notify = next(s for s in run.steps or [] if s.step_key == "notify_approved")
    assert json.loads(notify.output_json or "{}")["message"] == "ada"


def test_image_batch_loops_and_polls(host: FlowTestHost) -> None:
    images = ["a.png", "b.png", "c.png", "d.png"]
    run = host.trigger("image-batch", data={"images": images})
    assert run.status is RunStatus.Succeeded
    steps = {s.step_key: s for s in run.steps or []}
    assert [
        json.loads(steps[f"resize_all.{i}.resize"].output_json or "{}")["image"] for i in range(4)
    ] == images
    assert steps["export"].attempt_count == 3
    assert [a.status for a in steps["export"].attempts or []] == [
        StepStatus.Pending,
        StepStatus.Pending,
        StepStatus.Succeeded,
    ]
