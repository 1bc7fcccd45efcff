"""Traces of runs (issue 16, "Traces") across real ``flowjobs worker`` processes: each worker is set up
for OpenTelemetry the README's way (the ``otel`` extra and ``OTEL_EXPORTER_OTLP_ENDPOINT``) and
exports over OTLP/HTTP to a collector this test runs; a diamond flow gives one trace, the run span
the parent of every step span, a caller's ``traceparent`` its parent."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace import TracerProvider
from rq.job import Job
from rq.serializers import JSONSerializer

from flowjobs import RunStatus
from flowjobs.core.job_calls import JobState
from flowjobs.core.registry import FlowRegistry
from flowjobs.hangfire import BackgroundJob, runner_from_settings
from flowjobs.recovery import recover
from flowjobs.tracing import ATTEMPT, FLOW_ID, FLOW_NAME, JOB_ID, QUEUE_WAIT_MS, RUN_ID, STEP_KEY
from tests.conftest import ROOT, Space, free_port, wait_until
from tests.integration import app_jobs

pytestmark = pytest.mark.slow

DIAMOND = """\
id: 6f1c2d9e-5b7a-4c3e-8d2f-1a9b0c7e3d45
name: traced-diamond
triggers:
  manual: {type: Manual}
steps:
  a: {type: Traced}
  b: {type: Noop, run_after: [a]}
  c: {type: Noop, run_after: [a]}
  d: {type: Noop, run_after: [b, c]}
"""

FAILING = """\
id: 0c4e8a2b-7d1f-4e6a-9b3c-5f2d8e1a7c60
name: traced-failure
triggers:
  manual: {type: Manual}
steps:
  explode: {type: Boom, inputs: {message: kaboom}}
"""

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Received:
    """A span the collector received, decoded."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    status: int
    events: list[tuple[str, dict[str, Any]]]


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


def _decoded(span: Span) -> Received:
    return Received(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes={kv.key: _value(kv.value) for kv in span.attributes},
        status=span.status.code,
        events=[(e.name, {kv.key: _value(kv.value) for kv in e.attributes}) for e in span.events],
    )


class Collector:
    """An OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) on a free loopback port."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                received = [
                    _decoded(span)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                    for span in scope.spans
                ]
                with collector.lock:
                    collector.spans.extend(received)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def trace(self, trace_id: str, count: int) -> list[Received]:
        """The spans of one trace, once at least ``count`` arrived."""

        def arrived() -> list[Received] | None:
            with self.lock:
                found = [span for span in self.spans if span.trace_id == trace_id]
            return found if len(found) >= count else None

        spans: list[Received] = wait_until(arrived, timeout=60, what=f"{count} spans of {trace_id}")  # type: ignore[assignment]
        return spans


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    thread = threading.Thread(target=collector.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.server.shutdown()
        collector.server.server_close()


def start_traced_worker(space: Space, collector: Collector, name: str, *, simple: bool) -> None:
    """A ``flowjobs worker`` exporting its spans over OTLP to ``collector`` (README, "Tracing")."""
    env = {
        **space.env(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    worker = ["worker", "--name", f"{space.token}-{name}", *(["--simple"] if simple else [])]
    space.processes.append(
        subprocess.Popen(
            [sys.executable, "-m", "flowjobs", *worker],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    )


@pytest.fixture
def flows(tmp_path: Path) -> FlowRegistry:
    (tmp_path / "diamond.yaml").write_text(DIAMOND)
    (tmp_path / "failing.yaml").write_text(FAILING)
    registry = FlowRegistry()
    registry.load_dir(tmp_path)
    return registry


def by_name(spans: list[Received]) -> dict[str, Received]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def test_a_diamond_run_is_one_trace_under_the_callers_span(
    space: Space, collector: Collector, flows: FlowRegistry
) -> None:
    # Steps run on two workers, a forking one and a --simple one: "other machines" of one trace.
    start_traced_worker(space, collector, "fork", simple=False)
    start_traced_worker(space, collector, "simple", simple=True)
    client = space.client(flows)
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"

    handle = client.trigger("traced-diamond", headers={"traceparent": caller, "tracestate": "vendor=1"})
    run = handle.wait(timeout=60)
    assert run.status is RunStatus.Succeeded
    assert run.traceparent is not None and run.traceparent.startswith(f"00-{CALLER_TRACE}-")
    assert run.tracestate == "vendor=1"

    spans = by_name(collector.trace(CALLER_TRACE, 6))
    assert set(spans) == {
        "flowjobs.run traced-diamond",
        "flowjobs.step a",
        "flowjobs.step b",
        "flowjobs.step c",
        "flowjobs.step d",
        "handler.own",
    }
    root = spans["flowjobs.run traced-diamond"]
    assert root.parent_id == CALLER_SPAN
    assert run.traceparent == f"00-{CALLER_TRACE}-{root.span_id}-01"
    flow = flows.get("traced-diamond")
    assert root.attributes[RUN_ID] == str(handle.run_id)
    assert root.attributes[FLOW_ID] == str(flow.id)
    assert root.attributes[FLOW_NAME] == "traced-diamond"
    assert root.attributes[JOB_ID] == handle.background_job_id
    detail = client.get_run_detail(handle.run_id)
    assert detail is not None and detail.steps is not None
    jobs = {step.step_key: step.job_id for step in detail.steps}
    for key in "abcd":
        step = spans[f"flowjobs.step {key}"]
        assert step.parent_id == root.span_id, key
        assert step.status != Status.STATUS_CODE_ERROR
        assert step.attributes[STEP_KEY] == key
        assert step.attributes[ATTEMPT] == 1
        assert step.attributes[RUN_ID] == str(handle.run_id)
        assert step.attributes[FLOW_ID] == str(flow.id)
        assert step.attributes[FLOW_NAME] == "traced-diamond"
        assert step.attributes[JOB_ID] == jobs[key]
        assert step.attributes[QUEUE_WAIT_MS] >= 0
    assert spans["handler.own"].parent_id == spans["flowjobs.step a"].span_id
    assert spans["handler.own"].attributes["step"] == "a"


def test_a_trigger_inside_a_span_joins_its_trace_and_a_failing_step_is_an_error(
    space: Space, collector: Collector, flows: FlowRegistry
) -> None:
    # A forking worker alone: its work-horses must flush their spans before they exit.
    start_traced_worker(space, collector, "fork", simple=False)
    client = space.client(flows)
    # The caller's own tracer (not this process's global one): only the current span matters.
    with TracerProvider().get_tracer("caller").start_as_current_span("caller") as caller:
        handle = client.trigger("traced-failure")
    context = caller.get_span_context()
    assert handle.wait(timeout=60).status is RunStatus.Failed

    spans = by_name(collector.trace(f"{context.trace_id:032x}", 2))
    root = spans["flowjobs.run traced-failure"]
    assert root.parent_id == f"{context.span_id:016x}"
    step = spans["flowjobs.step explode"]
    assert step.parent_id == root.span_id
    assert step.status == Status.STATUS_CODE_ERROR
    assert step.attributes["flowjobs.step.outcome"] == "Failed"
    [(event, attributes)] = step.events
    assert event == "exception"
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == "kaboom"


def test_without_an_sdk_no_trace_context_is_stored(space: Space, flows: FlowRegistry) -> None:
    # This process installs no tracer provider: the API's no-op tracer.
    client = space.client(flows)
    handle = client.trigger("traced-diamond")
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded and run.steps is not None
    assert (run.traceparent, run.tracestate) == (None, None)
    jobs = [handle.background_job_id, *(step.job_id for step in run.steps)]
    for job_id in jobs:
        meta = Job.fetch(str(job_id), connection=space.redis, serializer=JSONSerializer).meta
        assert "traceparent" not in meta, job_id


PROBE = """
from opentelemetry import trace
from flowjobs.tracing import configure_tracing
installed = configure_tracing("flowjobs-probe")
provider = trace.get_tracer_provider()
print(installed, type(provider).__name__, getattr(provider, "resource", None) and
      provider.resource.attributes["service.name"])
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "False ProxyTracerProvider None"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "True TracerProvider flowjobs-probe"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}, "True TracerProvider"),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "shop"}, "True TracerProvider shop"),
        ({"OTEL_TRACES_EXPORTER": "nonsense"}, "False ProxyTracerProvider None"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, "False Proxy"),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, "False Proxy"),
    ],
)
def test_the_sdk_is_installed_when_the_environment_asks(env: dict[str, str], expected: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], env={**base, **env}, cwd=ROOT, capture_output=True, text=True
    )
    assert probe.stdout.splitlines()[-1].startswith(expected), probe.stdout + probe.stderr


def test_a_tracer_provider_installed_before_is_kept() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    kept = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "mine = TracerProvider()\n"
        "trace.set_tracer_provider(mine)\n"
        "from flowjobs.tracing import configure_tracing\n"
        "print(configure_tracing(), trace.get_tracer_provider() is mine)\n"
    )
    probe = subprocess.run(
        [sys.executable, "-c", kept],
        env={**base, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["False", "True"], probe.stderr


def test_a_trigger_job_queued_again_by_recovery_keeps_the_callers_trace(
    space: Space, collector: Collector, flows: FlowRegistry
) -> None:
    client = space.client(flows)
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    handle = client.trigger("traced-failure", headers={"traceparent": caller})
    # The trigger job vanishes before any worker takes it (a failover, a flushed queue).
    space.redis.delete(f"rq:job:{handle.background_job_id}")
    space.redis.lrem(f"rq:queue:{space.settings.queue}", 0, str(handle.background_job_id))
    assert recover(space.engine(), grace_seconds=0) == 1
    start_traced_worker(space, collector, "simple", simple=True)
    assert handle.wait(timeout=60).status is RunStatus.Failed

    spans = by_name(collector.trace(CALLER_TRACE, 2))
    root = spans["flowjobs.run traced-failure"]
    assert root.parent_id == CALLER_SPAN
    assert spans["flowjobs.step explode"].parent_id == root.span_id


HOST_PROBE = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import Redis
from flowjobs.core.registry import FlowRegistry
from flowjobs.testing import FlowTestHost
import tests.handlers  # the Traced and Noop handlers

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
flows = FlowRegistry()
flows.load_dir(sys.argv[2])
with FlowTestHost(Redis.from_url(sys.argv[1]), flows) as host:
    run = host.trigger("traced-diamond", headers={"traceparent": sys.argv[3]})
spans = [
    {"name": s.name, "trace": f"{s.context.trace_id:032x}", "id": f"{s.context.span_id:016x}",
     "parent": f"{s.parent.span_id:016x}" if s.parent else None}
    for s in exporter.get_finished_spans()
]
print(json.dumps({"status": run.status.value, "spans": spans}))
"""


def test_a_flow_test_host_run_is_one_trace_too(space: Space, tmp_path: Path) -> None:
    # Its own process: a tracer provider, once installed, stays for the process's life.
    (tmp_path / "diamond.yaml").write_text(DIAMOND)
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    probe = subprocess.run(
        [sys.executable, "-c", HOST_PROBE, space.settings.redis_url, str(tmp_path), caller],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout.splitlines()[-1])
    assert answer["status"] == RunStatus.Succeeded.value
    spans = {span["name"]: span for span in answer["spans"]}
    assert len(spans) == len(answer["spans"]) == 6, sorted(spans)
    assert {span["trace"] for span in answer["spans"]} == {CALLER_TRACE}
    root = spans["flowjobs.run traced-diamond"]
    assert root["parent"] == CALLER_SPAN
    for key in "abcd":
        assert spans[f"flowjobs.step {key}"]["parent"] == root["id"], key
    assert spans["handler.own"]["parent"] == spans["flowjobs.step a"]["id"]


def test_application_jobs_have_spans_under_the_enqueuers_span(space: Space, collector: Collector) -> None:
    # A forking worker: the horse flushes the job's span before it exits, as for a step.
    start_traced_worker(space, collector, "fork", simple=False)
    jobs = BackgroundJob(runner_from_settings(space.settings, space.redis))
    with TracerProvider().get_tracer("caller").start_as_current_span("caller") as caller:
        added = jobs.enqueue(app_jobs.add, 2, 3)
        failed = jobs.enqueue(app_jobs.boom, "kaboom")
    wait_until(
        lambda: jobs.state(failed) is JobState.Failed and jobs.state(added) is JobState.Succeeded,
        timeout=60,
        what="both application jobs to end",
    )
    context = caller.get_span_context()

    spans = by_name(collector.trace(f"{context.trace_id:032x}", 2))
    ok = spans["flowjobs.job tests.integration.app_jobs.add"]
    boom = spans["flowjobs.job tests.integration.app_jobs.boom"]
    for span, job_id in ((ok, added), (boom, failed)):
        assert span.parent_id == f"{context.span_id:016x}"
        assert span.attributes[JOB_ID] == job_id
    assert ok.status != Status.STATUS_CODE_ERROR
    assert boom.status == Status.STATUS_CODE_ERROR
    [(event, attributes)] = boom.events
    assert event == "exception" and attributes["exception.message"] == "kaboom"
