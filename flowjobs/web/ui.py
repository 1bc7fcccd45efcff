"""The flows UI at ``/flows/``: server-rendered pages (Jinja2, htmx) over ``FlowClient``, live by
server-sent events from the engine's pub/sub channel.

Pages: overview, flows, a flow's last 24 h, runs, a run (DAG, timeline, step panel, actions),
schedules, search.
Every action is a plain HTML form POST answered by a redirect (303) to the page that shows its
result, with a notice code (``?done=``, one of ``NOTICES``), so the UI works without JavaScript;
a refused action shows its page again at once, with the error and a 4xx status. htmx only
refreshes the live parts of a page when an event arrives (``static/flows.js``), and falls back to
polling when the stream is silent or Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

import redis.asyncio
import redis.exceptions
import structlog
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from rq.job import Job
from starlette.exceptions import HTTPException

from flowjobs.client import FlowClient
from flowjobs.client import parse_run_id as client_parse_run_id
from flowjobs.core.clock import utcnow
from flowjobs.core.errors import FlowjobsError, FlowNotFound, RunNotFound
from flowjobs.core.limits import check_json_limits
from flowjobs.core.manifest import FlowManifest, child_key, manifest_key, split_runtime_key
from flowjobs.core.records import FlowRunRecord, FlowStepRecord
from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.core.urls import RQ_PREFIX, UI_PREFIX, run_ui_path
from flowjobs.factory import close_async, connect_async
from flowjobs.store.base import ListenersMarker
from flowjobs.store.codec import decode_event
from flowjobs.web.api import _status_of as error_status
from flowjobs.web.dag import AttemptTimes, DagNode, layout_dag, render_svg, timeline
from flowjobs.web.deps import AppSettings, Client
from flowjobs.web.failures import REDIS_UNREACHABLE, log_fault

log = structlog.get_logger("flowjobs.web.ui")

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
PAGE_SIZE = 25
#: The overview's throughput chart: the last hour in five-minute buckets.
THROUGHPUT_BUCKETS = 12
THROUGHPUT_BUCKET = timedelta(minutes=5)
#: The event stream's own Redis connection gives up connecting after this long (a 503), rather
#: than holding the request for the system's TCP timeout when Redis does not answer at all.
SSE_CONNECT_SECONDS = 5.0


templates = Jinja2Templates(directory=TEMPLATES_DIR)


class _UIRoute(APIRoute):
    """Pages answer errors with a deliberate error page, never a traceback: 503 while Redis is
    unreachable, else 500 with an error id that the log's ``web.ui.error`` entry carries too."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (HTTPException, RequestValidationError):
                raise  # answered by the app's handlers (a bad query parameter is a 422)
            except REDIS_UNREACHABLE as error:
                log.warning("web.ui.redis_unreachable", path=request.url.path, error=repr(error))
                detail = "The page cannot be shown until Redis answers again."
                return page(request, "error.html", {"title": "Redis is unreachable", "detail": detail}, 503)
            except Exception as error:
                error_id = log_fault("web.ui.error", error, path=request.url.path)
                detail = f"The server failed to show this page. Error id: {error_id} (in the server's log)."
                return page(request, "error.html", {"title": "Something went wrong", "detail": detail}, 500)

        return guarded


router = APIRouter(prefix=UI_PREFIX, route_class=_UIRoute, include_in_schema=False)


# -- helpers -------------------------------------------------------------------------------------


#: Every page's Content-Security-Policy. Scripts only from this origin's files, never ``eval``:
#: the vendored htmx has eval paths (its ``allowEval``/``allowScriptTags`` defaults are on; the
#: pages' ``htmx-config`` meta turns them off), and this makes the browser refuse them whatever
#: that config says. Inline ``style`` attributes stay allowed: the DAG and the timeline use them.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Notice:
    """What a page says about the action just done: ``ok`` (a status) or ``error`` (an alert)."""

    text: str
    kind: str = "ok"


#: The notices a redirect may ask for, by code (``?done=<code>``). A page fills the ``{fields}``
#: only with values it checked itself (a step of the run, a flow it lists…) and shows nothing
#: else: a link can never make the UI say words of its author's choosing.
NOTICES: dict[str, str] = {
    "triggered": "Run triggered",
    "schedule-fired": "Run triggered by its schedule",
    "cancel-requested": "Cancel requested",
    "rerun": "Re-run of {source}",
    "retried": "Retry of {step} queued",
    "signal-resumed": "Signal {signal} delivered: a waiting step resumed",
    "signal-kept": "Signal {signal} delivered: kept until a step waits for it",
    "enabled": "{flow} enabled",
    "disabled": "{flow} disabled",
    "paused": "Schedule {schedule}: pause done",
    "resumed": "Schedule {schedule}: resume done",
    "fired": "Schedule {schedule}: trigger done",
}


def _notice(request: Request, checked: Mapping[str, str]) -> Notice | None:
    template = NOTICES.get(request.query_params.get("done", ""))
    if template is None:
        return None
    try:
        return Notice(template.format_map(checked))
    except KeyError:  # a value the page could not vouch for: say nothing rather than guess
        return None


def page(
    request: Request,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
    checked: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render a page with what every page shows (nav state; the notice of the action just done:
    ``context["notice"]``, or the ``NOTICES`` entry of ``?done=`` filled from ``checked``), under
    ``CONTENT_SECURITY_POLICY``."""
    base = {"notice": _notice(request, checked or {}), "active": ""}
    return templates.TemplateResponse(
        request,
        name,
        {**base, **context},
        status_code=status_code,
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


def back(path: str, done: str, **params: str) -> RedirectResponse:
    """303 to ``path`` with the ``NOTICES`` code the page shows (and any other query parameters)."""
    assert done in NOTICES, done
    return RedirectResponse(f"{path}?{urlencode({**params, 'done': done})}", status_code=303)


def refused(error: ValueError | FlowjobsError) -> tuple[Notice, int]:
    """The notice and HTTP status of a refused action: the engine's refusal as the API answers
    it, 400 for a form's text that is not JSON (``ValueError``)."""
    return Notice(str(error), "error"), error_status(error) if isinstance(error, FlowjobsError) else 400


def not_found(request: Request, title: str, detail: str) -> HTMLResponse:
    """The 404 page."""
    return page(request, "error.html", {"title": title, "detail": detail}, 404)


def parse_run_id(raw: str) -> UUID | None:
    """A run id from a URL (None: not a run id, so no run; ``flowjobs.client.parse_run_id``),
    checked before any Redis call, so text from a URL never becomes part of a key name."""
    try:
        return client_parse_run_id(raw)
    except RunNotFound:
        return None


def rq_job_path(job_id: str) -> str:
    """rq-dashboard's page of a job, as mounted in this process."""
    return f"{RQ_PREFIX}/0/view/job/{job_id}"


def pretty_json(raw: str | None) -> str:
    """Indented JSON for the step panel (the text itself if it is not JSON)."""
    if raw is None:
        return ""
    try:
        return json.dumps(json.loads(raw), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return raw


def duration(start: datetime | None, end: datetime | None) -> str:
    """``1.2 s``, ``3 min 4 s``…; from ``start`` to ``end`` (or now)."""
    if start is None:
        return ""
    return seconds_text(((end or utcnow()) - start).total_seconds())


def seconds_text(seconds: float | None) -> str:
    """``12 ms``, ``1.2 s``, ``3 min 4 s``, ``1 h 2 min``; ``-`` for no figure."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def moment(value: datetime | None) -> str:
    """A UTC time as people read it in a table."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


templates.env.filters.update(pretty_json=pretty_json, moment=moment, seconds=seconds_text)
templates.env.globals.update(
    ui=UI_PREFIX, rq_job_path=rq_job_path, run_path=run_ui_path, duration=duration, statuses=RunStatus
)


def _parse_json(client: FlowClient, raw: str, what: str) -> Any:
    """The form's JSON text (empty: None), within the client's depth and size limits;
    ``ValueError`` or ``DataTooLarge`` saying what is wrong."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except RecursionError as error:  # the parser recurses once per nesting level
        raise ValueError(
            f"{what} is nested too deeply; the limit is {client.max_data_depth} levels"
        ) from error
    except ValueError as error:  # a JSON syntax error, or an integer of over 4,300 digits
        raise ValueError(f"{what} is not valid JSON: {error}") from error
    check_json_limits(value, max_depth=client.max_data_depth, max_bytes=client.max_data_bytes, what=what)
    return value


def _run_or_none(client: FlowClient, run_id: str) -> FlowRunRecord | None:
    parsed = parse_run_id(run_id)
    return client.get_run_detail(parsed) if parsed is not None else None


# -- overview ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """Runs started in one slice of the throughput chart, by their status now."""

    start: datetime
    succeeded: int
    failed: int
    other: int

    @property
    def total(self) -> int:
        """Every run of the slice."""
        return self.succeeded + self.failed + self.other

    @classmethod
    def of(cls, start: datetime, by_status: Mapping[RunStatus, int]) -> Bucket:
        """The bar of ``start``'s runs counted by status."""
        succeeded, failed = by_status.get(RunStatus.Succeeded, 0), by_status.get(RunStatus.Failed, 0)
        return cls(start, succeeded, failed, sum(by_status.values()) - succeeded - failed)


def throughput(client: FlowClient, now: datetime) -> list[Bucket]:
    """The last hour's runs per five minutes (by start), split Succeeded / Failed / other, read in
    one round-trip from the status indexes."""
    first = now - THROUGHPUT_BUCKET * THROUGHPUT_BUCKETS
    starts = [first + THROUGHPUT_BUCKET * (i + 1) for i in range(THROUGHPUT_BUCKETS)]
    statuses = list(RunStatus)
    buckets = []
    for start in starts:
        counts = client.queries.count_runs(statuses=statuses, since=start - THROUGHPUT_BUCKET, before=start)
        by_status = {status: counts[(None, status)] for status in statuses}
        buckets.append(Bucket.of(start - THROUGHPUT_BUCKET, by_status))
    return buckets


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, client: Client, settings: AppSettings) -> HTMLResponse:
    """Counts by status, the queue (depth, oldest waiting job, workers alive), runs in progress,
    recent failures and the last hour's throughput."""
    counts = client.queries.count_runs(statuses=list(RunStatus))
    buckets = throughput(client, utcnow())
    return page(
        request,
        "overview.html",
        {
            "active": "overview",
            "queue": client.queries.queue_health(settings.queue),
            "counts": {status: counts[(None, status)] for status in RunStatus},
            "total": sum(counts.values()),
            "flow_count": len(client.flows),
            "schedule_count": len(client.list_schedules()),
            "running": client.list_runs(status=RunStatus.Running, limit=5),
            "failures": client.list_runs(status=RunStatus.Failed, limit=5),
            "buckets": buckets,
            "bucket_max": max((b.total for b in buckets), default=0),
        },
    )


# -- flows ---------------------------------------------------------------------------------------


def _flows_context(client: FlowClient) -> dict[str, Any]:
    schedules = client.list_schedules()
    flows = []
    for definition in sorted(client.flows.all(), key=lambda d: d.name):
        flows.append(
            {
                "definition": definition,
                "enabled": client.queries.flow_enabled(definition.id),
                "schedules": [s for s in schedules if s.flow_id == definition.id],
                "last_run": next(iter(client.list_runs(flow_id=definition.id, limit=1)), None),
            }
        )
    return {"active": "flows", "flows": flows}


@router.get("/flows", response_class=HTMLResponse)
def flows_page(request: Request, client: Client, flow: Annotated[str, Query()] = "") -> HTMLResponse:
    """Every registered flow: triggers, schedules, enabled state, last run, trigger form."""
    return _flows_page(request, client, flow)


def _flows_page(
    request: Request, client: FlowClient, flow: str = "", status_code: int = 200, **context: Any
) -> HTMLResponse:
    names = {str(d.id): d.name for d in client.flows.all()}
    checked = {"flow": names[flow]} if flow in names else {}
    return page(request, "flows.html", {**_flows_context(client), **context}, status_code, checked)


@router.get("/flows/{flow}", response_class=HTMLResponse)
def flow_page(request: Request, client: Client, flow: str) -> HTMLResponse:
    """One flow's health over the last 24 h: runs per hour by status, success rate, p50/p95 run
    duration and the slowest steps (``FlowClient.queries.flow_stats``)."""
    try:
        definition = client.flows.get(flow)
    except FlowNotFound:
        return not_found(request, "Flow not found", "No registered flow has that id or name.")
    stats = client.queries.flow_stats(definition)
    buckets = [Bucket.of(hour.start, hour.counts) for hour in stats.hours]
    return page(
        request,
        "flow.html",
        {
            "active": "flows",
            "definition": definition,
            "stats": stats,
            "buckets": buckets,
            "bucket_max": max((b.total for b in buckets), default=0),
            "enabled": client.queries.flow_enabled(definition.id),
        },
    )


@router.post("/flows/{flow_id}/trigger", response_model=None)
def trigger_flow(
    request: Request,
    client: Client,
    flow_id: str,
    body: Annotated[str, Form()] = "",
    trigger_key: Annotated[str, Form()] = "manual",
) -> Response:
    """Trigger a flow with the form's JSON body and open the new run (the form again, with the
    error and the text kept, when it is refused)."""
    try:
        handle = client.trigger(flow_id, trigger_key, _parse_json(client, body, "The body"))
    except (ValueError, FlowjobsError) as error:
        notice, status = refused(error)
        form_error = {"flow": flow_id, "message": notice.text, "body": body}
        return _flows_page(
            request, client, status_code=status, form_error=form_error, page_url=f"{UI_PREFIX}/flows"
        )
    return back(run_ui_path(handle.run_id), "triggered")


@router.post("/flows/{flow_id}/{action}", response_model=None)
def enable_flow(request: Request, client: Client, flow_id: str, action: str) -> Response:
    """Enable or disable a flow (persisted; a disabled flow refuses triggers and its schedules)."""
    if action not in ("enable", "disable"):
        return not_found(request, "No such action", "Flows can be enabled or disabled.")
    try:
        definition = client.set_flow_enabled(flow_id, action == "enable")
    except FlowjobsError as error:
        notice, status = refused(error)
        return _flows_page(request, client, status_code=status, notice=notice, page_url=f"{UI_PREFIX}/flows")
    return back(f"{UI_PREFIX}/flows", f"{action}d", flow=str(definition.id))


# -- runs ----------------------------------------------------------------------------------------


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    client: Client,
    flow: Annotated[str, Query()] = "",
    status: Annotated[str, Query()] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    """Runs newest first, filtered by flow and status, a page at a time; the table refreshes live."""
    run_status = RunStatus(status) if status in RunStatus.__members__ else None
    flow_id = next((str(d.id) for d in client.flows.all() if str(d.id) == flow), None)
    runs = client.list_runs(
        flow_id=flow_id, status=run_status, limit=PAGE_SIZE + 1, skip=(page_number - 1) * PAGE_SIZE
    )
    filters = {k: v for k, v in (("flow", flow_id or ""), ("status", status if run_status else "")) if v}
    return page(
        request,
        "runs.html",
        {
            "active": "runs",
            "runs": runs[:PAGE_SIZE],
            "flows": sorted(client.flows.all(), key=lambda d: d.name),
            "filters": filters,
            "page_number": page_number,
            "previous_url": _page_url(filters, page_number - 1) if page_number > 1 else None,
            "next_url": _page_url(filters, page_number + 1) if len(runs) > PAGE_SIZE else None,
        },
    )


def _page_url(filters: dict[str, str], number: int) -> str:
    return f"{UI_PREFIX}/runs?{urlencode({**filters, 'page': str(number)})}"


@dataclass(frozen=True)
class StepPanel:
    """The step panel: one step of the run, or (for a ForEach child picked in the DAG) its
    iterations."""

    key: str
    step: FlowStepRecord | None
    """The step's record (None: not reached yet, or a ForEach child across iterations)."""
    step_type: str
    iterations: list[FlowStepRecord]
    """A ForEach child's steps, one per iteration reached."""
    retryable: bool


def _step_panel(run: FlowRunRecord, manifest: FlowManifest | None, key: str) -> StepPanel | None:
    steps = {s.step_key: s for s in run.steps or []}
    _, child = split_runtime_key(key)
    if key in steps or (manifest is not None and manifest.step(key) is not None):
        step = steps.get(key)
        meta = manifest.step(key) if manifest is not None else None
        # The engine refuses retries inside a ForEach: offer it only where it can succeed.
        retryable = step is not None and step.status is StepStatus.Failed and child is None
        return StepPanel(key, step, meta.type if meta else (step.step_type if step else ""), [], retryable)
    loop, _, child_name = key.partition(".")
    loop_meta = manifest.steps.get(loop) if manifest is not None else None
    if loop_meta is not None and child_name in loop_meta.steps:
        iterations = sorted(
            (s for s in steps.values() if split_runtime_key(s.step_key) == (loop, child_name)),
            key=lambda s: int(s.step_key.split(".")[1]),
        )
        return StepPanel(key, None, loop_meta.steps[child_name].type, iterations, False)
    return None


def _attempt_times(steps: Iterable[FlowStepRecord]) -> list[AttemptTimes]:
    times = []
    for step in steps:
        for attempt in step.attempts or []:
            times.append(
                AttemptTimes(
                    step.step_key, attempt.attempt, attempt.status, attempt.started_at, attempt.completed_at
                )
            )
        if not step.attempts:
            times.append(AttemptTimes(step.step_key, 1, step.status, step.started_at, step.completed_at))
    return times


def _jobs_in_rq(client: FlowClient, job_ids: Sequence[str]) -> set[str]:
    """The jobs RQ still keeps (rq-dashboard can show them); the others expired from RQ but stay
    resolvable through the run (``/flows/jobs/<id>``)."""
    with client.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(Job.key_for(job_id))
        found = pipe.execute()
    return {job_id for job_id, exists in zip(job_ids, found, strict=True) if exists}


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    client: Client,
    run_id: str,
    step: Annotated[str, Query()] = "",
    job: Annotated[str, Query()] = "",
    signal: Annotated[str, Query()] = "",
) -> HTMLResponse:
    """A run: header and actions, the DAG of its pinned manifest, the attempts timeline, the step
    panel of the chosen step (``?step=``, or the step of ``?job=``), lineage and events."""
    return _run_page(request, client, run_id, step=step, job=job, signal=signal)


def _run_page(
    request: Request,
    client: FlowClient,
    run_id: str,
    *,
    step: str = "",
    job: str = "",
    signal: str = "",
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """The run page (404 page for an id that is not a UUID or not a run). ``step``, ``job`` and
    ``signal`` as their query parameters; ``context`` adds to the template's (a refused action's
    ``notice``), answered with ``status_code``."""
    run = _run_or_none(client, run_id)
    if run is None:
        parsed = parse_run_id(run_id)
        return not_found(request, "Run not found", f"No run with id {parsed}." if parsed else "No such run.")
    steps = run.steps or []
    if job and not step:
        step = next((s.step_key for s in steps for a in [s, *(s.attempts or [])] if a.job_id == job), "")
    manifest = client.queries.manifest(run.manifest_hash) if run.manifest_hash else None
    statuses = {s.step_key: s.status for s in steps}
    selected = step or ""
    dag_svg = None
    if manifest is not None:
        layout = layout_dag(manifest, statuses)

        def link(node: DagNode) -> str:
            return f"{run_ui_path(run.id)}?{urlencode({'step': node.key})}#step-panel"

        dag_svg = render_svg(layout, link, selected=manifest_key(selected))
    job_ids = [run.background_job_id or "", *(s.job_id or "" for s in steps)]
    job_ids += [a.job_id or "" for s in steps for a in s.attempts or []]
    job_ids = sorted(set(filter(None, job_ids)))
    lineage = client.lineage(run.id)
    signals = sorted(n for n in (manifest.signal_names() if manifest else set()) if not n.startswith("@"))
    panel = _step_panel(run, manifest, selected) if selected else None
    # What the notice of ``?done=`` may name: only what this run holds.
    checked = {
        "source": str(run.source_run_id) if run.source_run_id else None,
        "step": panel.key if panel is not None and panel.step is not None else None,
        "signal": signal if signal in signals else None,
    }
    return page(
        request,
        "run.html",
        {
            "active": "runs",
            "run": run,
            "steps": steps,
            "dag_svg": dag_svg,
            "panel": panel,
            "timeline": timeline(run.started_at, run.completed_at, _attempt_times(steps), utcnow()),
            "done": sum(1 for s in steps if s.status.is_final),
            "failed_steps": [s for s in steps if s.status is StepStatus.Failed],
            "in_rq": _jobs_in_rq(client, job_ids),
            "lineage": lineage,
            "signals": signals,
            "events": client.queries.events(run.id)[-50:],
            **context,
        },
        status_code,
        {name: value for name, value in checked.items() if value is not None},
    )


def _run_action(
    request: Request,
    client: FlowClient,
    run_id: str,
    action: Callable[[UUID], Response],
    step: str = "",
    **context: Any,
) -> Response:
    """A run action's answer: the 404 page for an id that is not a UUID (before any Redis call),
    the action's redirect, or the run page again with the engine's refusal (its HTTP status)."""
    parsed = parse_run_id(run_id)
    if parsed is None:
        return not_found(request, "Run not found", "No such run.")
    try:
        return action(parsed)
    except (ValueError, FlowjobsError) as error:
        notice, status = refused(error)
        return _run_page(
            request,
            client,
            str(parsed),
            step=step,
            status_code=status,
            notice=notice,
            page_url=run_ui_path(parsed) + (f"?{urlencode({'step': step})}" if step else ""),
            **context,
        )


@router.post("/runs/{run_id}/cancel", response_model=None)
def cancel_run(
    request: Request, client: Client, run_id: str, reason: Annotated[str, Form()] = ""
) -> Response:
    """Cancel an active run."""

    def cancel(run: UUID) -> Response:
        client.cancel(run, reason or "cancelled from the flows UI")
        return back(run_ui_path(run), "cancel-requested")

    return _run_action(request, client, run_id, cancel)


@router.post("/runs/{run_id}/rerun", response_model=None)
def rerun(request: Request, client: Client, run_id: str) -> Response:
    """Re-run with the same data and headers, and open the new run (its lineage links back)."""
    return _run_action(
        request, client, run_id, lambda run: back(run_ui_path(client.rerun(run).run_id), "rerun")
    )


@router.post("/runs/{run_id}/steps/{step_key}/retry", response_model=None)
def retry_step(
    request: Request,
    client: Client,
    run_id: str,
    step_key: str,
    clear_cancel: Annotated[bool, Form()] = False,
) -> Response:
    """A new attempt of a Failed step."""

    def retry(run: UUID) -> Response:
        client.retry_step(run, step_key, clear_cancel=clear_cancel)
        return back(run_ui_path(run), "retried", step=step_key)

    return _run_action(request, client, run_id, retry, step=step_key)


@router.post("/runs/{run_id}/signal", response_model=None)
def send_signal(
    request: Request,
    client: Client,
    run_id: str,
    name: Annotated[str, Form()],
    payload: Annotated[str, Form()] = "",
) -> Response:
    """Deliver a signal to the run's WaitForSignal steps (the form again, with the error and the
    payload kept, when it is refused)."""

    def deliver(run: UUID) -> Response:
        outcome = client.signal(run, name.strip(), _parse_json(client, payload, "The payload"))
        done = "signal-resumed" if outcome == "resumed" else "signal-kept"
        return back(run_ui_path(run), done, signal=name.strip())

    return _run_action(request, client, run_id, deliver, signal_form={"name": name, "payload": payload})


# -- schedules -----------------------------------------------------------------------------------


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request, client: Client, schedule: Annotated[str, Query()] = "") -> HTMLResponse:
    """Flows' Cron triggers and recurring jobs: next and last fire, pause, resume, trigger now."""
    return _schedules_page(request, client, schedule)


def _schedules_page(
    request: Request, client: FlowClient, schedule: str = "", status_code: int = 200, **context: Any
) -> HTMLResponse:
    schedules = client.list_schedules()
    checked = {"schedule": schedule} if any(s.schedule_id == schedule for s in schedules) else {}
    context = {"active": "schedules", "schedules": schedules, **context}
    return page(request, "schedules.html", context, status_code, checked)


#: The notice code of each schedule action.
SCHEDULE_ACTIONS = {"pause": "paused", "resume": "resumed", "trigger": "fired"}


@router.post("/schedules/{schedule_id}/{action}", response_model=None)
def schedule_action(request: Request, client: Client, schedule_id: str, action: str) -> Response:
    """Pause, resume or fire a schedule now (a fired flow schedule links its new run)."""
    if action not in SCHEDULE_ACTIONS:
        return not_found(request, "No such action", "Schedules can be paused, resumed or triggered.")
    try:
        if action == "pause":
            client.pause_schedule(schedule_id)
        elif action == "resume":
            client.resume_schedule(schedule_id)
        else:
            fired = client.trigger_schedule(schedule_id)
            if fired.run_id is not None:
                return back(run_ui_path(fired.run_id), "schedule-fired")
    except FlowjobsError as error:
        notice, status = refused(error)
        return _schedules_page(
            request, client, status_code=status, notice=notice, page_url=f"{UI_PREFIX}/schedules"
        )
    return back(f"{UI_PREFIX}/schedules", SCHEDULE_ACTIONS[action], schedule=schedule_id)


# -- search and job links ------------------------------------------------------------------------


@router.get("/search", response_model=None)
def search(request: Request, client: Client, q: Annotated[str, Query()] = "") -> Response:
    """A run id or an RQ job id (trigger job or any attempt's) opens its run."""
    wanted = q.strip()
    run = _run_or_none(client, wanted) if wanted else None
    if run is not None:
        return RedirectResponse(run_ui_path(run.id), status_code=303)
    return _job_or_not_found(request, client, wanted)


@router.get("/jobs/{job_id}", response_model=None)
def job_page(request: Request, client: Client, job_id: str) -> Response:
    """Where a job id leads for as long as its run is retained (RQ forgets jobs much sooner)."""
    return _job_or_not_found(request, client, job_id)


def _job_or_not_found(request: Request, client: FlowClient, job_id: str) -> Response:
    run = client.find_run_by_job(job_id) if job_id else None
    if run is None:
        detail = f"No run and no job with id {job_id!r}." if job_id else "Type a run id or a job id."
        return page(request, "error.html", {"title": "Nothing found", "detail": detail, "query": job_id}, 404)
    return RedirectResponse(f"{run_ui_path(run.id)}?{urlencode({'job': job_id})}#step-panel", status_code=303)


# -- live updates --------------------------------------------------------------------------------


@router.get("/events", response_model=None)
async def events(settings: AppSettings, client: Client, run: Annotated[str, Query()] = "") -> Response:
    """Server-sent events: one ``run`` event per run event the engine publishes (only the given
    run's with ``?run=<run id>``), its data one line of JSON (``sse_run_event``); ``ready`` once
    subscribed and every worker publishes (``ListenersMarker``: up to 2 s after the first live
    view); a comment every 10 s, so proxies keep it open and a closed tab is noticed (the write
    fails). Pages refresh their live parts on each ``run`` event and on ``ready``.

    The subscription is made before the response starts, so an unreachable Redis is a plain 503
    (pages then poll) rather than a stream that breaks once begun; 404 for a ``run`` that is not
    a run id."""
    wanted = parse_run_id(run) if run else None
    if run and wanted is None:
        return PlainTextResponse("No such run.", status_code=404)
    # An asyncio connection of its own: a subscribed connection can do nothing else, and waiting
    # on it must not hold a worker thread.
    connection = connect_async(settings, connect_timeout=SSE_CONNECT_SECONDS)
    pubsub = connection.pubsub(ignore_subscribe_messages=True)
    marker = client.queries.listeners_marker()
    try:
        await pubsub.subscribe(client.queries.events_channel())
        # Events are published only while someone listens: from here on, and every run's once no
        # worker trusts a read of the marker made before (``settle`` seconds): `ready` waits for
        # that, so the page's refresh on it and the events after it miss nothing.
        settle = await _mark_listening(connection, marker)
    except BaseException as error:
        await _close(pubsub, connection)
        if not isinstance(error, REDIS_UNREACHABLE):
            raise
        log.warning("web.ui.redis_unreachable", path="/events", error=repr(error))
        return PlainTextResponse("Redis unavailable.", status_code=503, headers={"Retry-After": "5"})
    return StreamingResponse(
        _event_stream(pubsub, connection, wanted, marker, settle),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _mark_listening(connection: redis.asyncio.Redis, marker: ListenersMarker) -> float:
    """``Queries.keep_listening`` on the stream's asyncio connection: the seconds until workers
    publish every run's events."""
    return marker.settles_in(await marker.mark(connection))


def sse_run_event(published: bytes | str, wanted: UUID | None = None) -> str | None:
    """The server-sent event of one message of the engine's events channel
    (``<run_id>|<sequence>|<epoch ms>|<type>|<step key>[|<message>]``, ``common.lua``), or None
    for one of another run than ``wanted`` or one that does not decode. Its data is one line of
    JSON, ``{"runId", "seq", "type", "stepKey", "message"}``: JSON escapes every line break, so
    no text of a run (a handler's error message) can add fields or events to the stream."""
    text = published.decode(errors="replace") if isinstance(published, bytes) else published
    run_id, _, entry = text.partition("|")
    try:
        event = decode_event(run_id, entry)
    except ValueError:
        return None
    if wanted is not None and event.run_id != wanted:
        return None
    data = {
        "runId": str(event.run_id),
        "seq": event.sequence,
        "type": event.type.value,
        "stepKey": event.step_key,
        "message": event.message,
    }
    return f"event: run\ndata: {json.dumps(data)}\n\n"


async def _event_stream(
    pubsub: redis.asyncio.client.PubSub,
    connection: redis.asyncio.Redis,
    wanted: UUID | None,
    marker: ListenersMarker,
    settle: float,
) -> AsyncIterator[str]:
    # The listeners marker (Queries.keep_listening), set by the caller just now, is extended with a
    # ping every third of its TTL, messages or not: no wait for a message lasts past that.
    ping_every = marker.ttl_seconds / 3
    marked = time.monotonic()
    try:
        if settle > 0:
            await asyncio.sleep(settle)
        # The page was rendered before this subscription: tell it to refresh once, for what it missed.
        yield "retry: 3000\nevent: ready\ndata: {}\n\n"
        while True:
            if time.monotonic() - marked >= ping_every:
                await _mark_listening(connection, marker)
                marked = time.monotonic()
                yield ": ping\n\n"
            wait = max(marked + ping_every - time.monotonic(), 0.0)
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is None:
                continue
            event = sse_run_event(message["data"], wanted)
            if event is not None:
                yield event
    except REDIS_UNREACHABLE as error:
        # Redis went away: end the stream; the page's reconnect gets the 503 and polls.
        log.warning("web.ui.redis_unreachable", path="/events", error=repr(error))
    finally:
        await _close(pubsub, connection)


async def _close(pubsub: redis.asyncio.client.PubSub, connection: redis.asyncio.Redis) -> None:
    await pubsub.aclose()
    await close_async(connection)


def step_status_class(status: StepStatus | RunStatus | None) -> str:
    """CSS class of a status badge."""
    return f"st-{status.value if status else 'none'}"


templates.env.globals.update(status_class=step_status_class, child_key=child_key)
