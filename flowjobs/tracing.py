"""OpenTelemetry traces of runs: a run is one trace, each step attempt one span in it.

The run's span (``flowjobs.run <flow>``) is the span of its trigger job, started in the worker that
runs it, as a child of the caller's trace context when the trigger had one (a valid ``traceparent``
header, else the span current where ``FlowClient.trigger`` was called; it travels in the trigger
job's RQ meta). The run span's own context is stored on the run (``traceparent``, ``tracestate``)
by the script that starts it, and every step job carries it in its RQ meta (``step_call`` copies
it from the run), so each attempt's span (``flowjobs.step <step>``) is a child of the run span on
whichever machine it runs. The step span starts when the worker starts the job (the claim) and is
current while the handler runs, so a handler's own spans nest under it; the wait in the queue
before it is its ``flowjobs.queue_wait_ms`` attribute.

Only ``opentelemetry-api`` is imported at module level: without an SDK its tracer is a no-op and
nothing is stored (the run gets no ``traceparent``). ``configure_tracing`` installs the SDK (the
``otel`` extra) from the standard ``OTEL_*`` environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import rq
import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flowjobs.core.job_calls import TRACE_FIELDS
from flowjobs.core.manifest import split_runtime_key
from flowjobs.core.outcomes import StepReport
from flowjobs.runtime.current import running_job_meta

log = structlog.get_logger("flowjobs.tracing")

#: The instrumentation scope of flowjobs' spans.
TRACER_NAME = "flowjobs"
#: A proxy until a tracer provider is installed, then that provider's tracer.
_tracer = trace.get_tracer(TRACER_NAME)
_propagator = TraceContextTextMapPropagator()

#: Attribute names of flowjobs' spans.
FLOW_ID = "flowjobs.flow.id"
FLOW_NAME = "flowjobs.flow.name"
RUN_ID = "flowjobs.run.id"
STEP_KEY = "flowjobs.step.key"
STEP_TYPE = "flowjobs.step.type"
ATTEMPT = "flowjobs.step.attempt"
OUTCOME = "flowjobs.step.outcome"
JOB_ID = "flowjobs.job.id"
JOB_FUNCTION = "flowjobs.job.function"
QUEUE_WAIT_MS = "flowjobs.queue_wait_ms"

_forked = False


def _after_fork() -> None:
    global _forked
    _forked = True


# An RQ work-horse leaves with os._exit once its job ends: spans a batching processor still holds
# would be lost, so a forked process flushes them at the end of each job it traces.
os.register_at_fork(after_in_child=_after_fork)


def caller_trace(given: Mapping[str, str]) -> dict[str, str]:
    """The trace context a trigger's run starts under: ``given`` (a request's valid ``traceparent``
    and ``tracestate``, ``trigger_headers.trace_context``), else the current span's when it is valid,
    else none."""
    if given:
        return dict(given)
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        _propagator.inject(carrier)
    return carrier


@contextmanager
def run_span(run_id: str, job_id: str | None) -> Iterator[RunSpan]:
    """The run's span around its trigger job, child of the caller's context from the job's meta
    (none, as for a step, without a tracer provider or a context to pass on)."""
    parent = _job_parent(rq.get_current_job())
    if _untraced(parent):
        yield RunSpan(trace.INVALID_SPAN)
        return
    try:
        with _tracer.start_as_current_span("flowjobs.run", context=parent, kind=SpanKind.CONSUMER) as span:
            if span.is_recording():
                span.set_attributes(_ids(run_id, job_id))
            yield RunSpan(span)
    finally:
        _flush()


class RunSpan:
    """The run's span while its trigger job runs."""

    def __init__(self, span: Span) -> None:
        self.span = span

    @property
    def trace(self) -> dict[str, str]:
        """The span's W3C fields to store on the run (empty when the span context is not valid)."""
        carrier: dict[str, str] = {}
        if self.span.get_span_context().is_valid:
            _propagator.inject(carrier, trace.set_span_in_context(self.span))
        return carrier

    def describe(self, run_fields: Mapping[str, str]) -> None:
        """Name the span after the run's flow, with its ids."""
        if self.span.is_recording():
            flow = run_fields.get("flow_name") or run_fields.get("flow_id", "")
            self.span.update_name(f"flowjobs.run {flow}")
            self.span.set_attributes(_flow(run_fields))


@contextmanager
def step_span(run_id: str, step_key: str, attempt: int, job_id: str | None) -> Iterator[StepSpan]:
    """One attempt's span around its step job, child of the run span from the job's meta; current
    while it runs. With no tracer provider installed and no trace context to pass on, no span at
    all: a step pays a global read, not the API's no-op span."""
    job = rq.get_current_job()
    parent = _job_parent(job)
    if _untraced(parent):
        yield _UNTRACED
        return
    try:
        with _tracer.start_as_current_span(
            f"flowjobs.step {_step_name(step_key)}", context=parent, kind=SpanKind.CONSUMER
        ) as span:
            if span.is_recording():
                span.set_attributes({**_ids(run_id, job_id), STEP_KEY: step_key, ATTEMPT: attempt})
                if job is not None and job.enqueued_at is not None and job.started_at is not None:
                    waited = (job.started_at - job.enqueued_at).total_seconds() * 1000
                    span.set_attribute(QUEUE_WAIT_MS, max(waited, 0.0))
            yield StepSpan(span)
    finally:
        _flush()


class StepSpan:
    """An attempt's span while its step job runs."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def ended(self, report: StepReport) -> None:
        """Record the job's outcome; a Failed attempt's span ends with status ERROR."""
        if not self.span.is_recording():
            return
        self.span.set_attribute(OUTCOME, report.outcome.value)
        if report.failed:
            self.span.set_status(StatusCode.ERROR, report.error)


#: What an untraced step job records on: nothing.
_UNTRACED = StepSpan(trace.INVALID_SPAN)


def step_claimed(run_fields: Mapping[str, str], step_type: str) -> None:
    """The current step span's flow and step type, from the claimed run."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({**_flow(run_fields), STEP_TYPE: step_type})


def handler_raised(error: BaseException) -> None:
    """Record the exception a handler raised on the current step span (an ``exception`` event)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(error)


@contextmanager
def job_span(job: rq.job.Job) -> Iterator[None]:
    """The span of a job that is no flow's (a ``flowjobs.hangfire`` application job, or any RQ job
    a flowjobs worker runs), child of the trace context in its meta (the caller's, where it was
    enqueued); current while it runs. None when untraced, as for a step."""
    parent = _job_parent(job)
    if _untraced(parent):
        yield
        return
    try:
        function = job.func_name
    except Exception:  # an undecodable job: RQ itself fails it, and says why, once it runs
        function = "?"
    try:
        with _tracer.start_as_current_span(
            f"flowjobs.job {function}", context=parent, kind=SpanKind.CONSUMER, record_exception=False
        ) as span:
            if span.is_recording():
                span.set_attributes({JOB_ID: job.id, JOB_FUNCTION: function})
            yield
    finally:
        _flush()


def job_raised(error: BaseException) -> None:
    """Record the exception a job raised on the current job span, which then ends with ERROR (a
    step job has no such span current: its step span recorded the handler's exception)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")


def _job_parent(job: rq.job.Job | None) -> Context | None:
    """The trace context the job carries in its meta: the RQ job's, else the in-process runner's
    (None without one: a new trace)."""
    meta: Mapping[str, Any] = job.meta if job is not None else running_job_meta()
    if TRACE_FIELDS[0] not in meta:
        return None
    return _propagator.extract({name: str(meta[name]) for name in TRACE_FIELDS if name in meta})


def _untraced(parent: Context | None) -> bool:
    """No span to make: no tracer provider is installed and the job carries no trace context."""
    return parent is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _ids(run_id: str, job_id: str | None) -> dict[str, str]:
    return {RUN_ID: run_id, JOB_ID: job_id or ""}


def _flow(run_fields: Mapping[str, str]) -> dict[str, str]:
    return {FLOW_ID: run_fields.get("flow_id", ""), FLOW_NAME: run_fields.get("flow_name", "")}


def _step_name(step_key: str) -> str:
    """A span name of bounded cardinality: a ForEach child's key without its iteration index."""
    loop, child = split_runtime_key(step_key)
    return step_key if child is None else f"{loop}.{child}"


def _flush() -> None:
    if _forked:
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()


#: ``OTEL_TRACES_EXPORTER`` values ``configure_tracing`` knows.
EXPORTERS = ("otlp", "console")


def configure_tracing(service_name: str = "flowjobs") -> bool:
    """Install the OpenTelemetry SDK's tracer provider in this process when the environment asks for
    it and no provider is installed yet (``opentelemetry-instrument`` or the application's own code
    may have installed one: it is kept). Asked for: ``OTEL_TRACES_EXPORTER`` (``otlp``, the
    default, or ``console``, comma-separated) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, and neither ``OTEL_SDK_DISABLED=true`` nor
    ``OTEL_TRACES_EXPORTER=none``. Spans go through a batching processor to OTLP over HTTP/protobuf
    (the exporter reads its own ``OTEL_EXPORTER_OTLP_*`` settings); the resource's
    ``service.name`` is ``OTEL_SERVICE_NAME``, else ``service_name``. Without the ``otel`` extra it
    logs a warning and installs nothing. True when it installed a provider."""
    env = os.environ
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if (
        not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        or "none" in names
        or not (names or endpoint)
    ):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning("tracing.sdk_missing", hint="pip install 'flowjobs[otel]'")
        return False
    exporters: list[SpanExporter] = []
    for name in names or ["otlp"]:
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("tracing.exporter_missing", exporter=name, hint="pip install 'flowjobs[otel]'")
                continue
            exporters.append(OTLPSpanExporter())
        else:
            log.warning("tracing.exporter_unknown", exporter=name, known=list(EXPORTERS))
    if not exporters:
        return False
    provider = TracerProvider(
        resource=Resource.create({} if env.get("OTEL_SERVICE_NAME") else {"service.name": service_name})
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True
