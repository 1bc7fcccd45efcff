"""The ``flowjobs`` command: flows, triggers, runs, worker, scheduler and the zero-setup demo."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import click
from redis import ConnectionPool
from redis.sentinel import MasterNotFoundError

from flowjobs.client import FlowClient
from flowjobs.core.errors import FlowjobsError, FlowValidationError, InvalidSettings, ReplicasNotAcknowledged
from flowjobs.core.job_calls import JobState
from flowjobs.core.limits import MAX_RETENTION_DAYS
from flowjobs.core.records import FlowRunRecord
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.schedules import ScheduleState
from flowjobs.core.stats import WINDOW_HOURS, FlowStats
from flowjobs.core.statuses import RunStatus
from flowjobs.core.urls import UI_PREFIX, rq_job_path, run_ui_path
from flowjobs.embedded import EmbeddedRedis, ensure_redis
from flowjobs.logs import configure_logging
from flowjobs.processes import stop_processes
from flowjobs.settings import Settings, load_settings
from flowjobs.store.base import REDIS_DOWN
from flowjobs.tracing import configure_tracing
from flowjobs.webhooks import shown_manifest

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2
EXIT_RUN_NOT_SUCCEEDED = 3
EXIT_REDIS_UNREACHABLE = 4


class _Group(click.Group):
    """Turns flowjobs' typed errors into one-line messages and exit code 2, and an unreachable Redis
    (or too few replicas acknowledging a trigger) into one line and exit code 4."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReplicasNotAcknowledged as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_REDIS_UNREACHABLE)
        except FlowjobsError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except MasterNotFoundError:
            # redis-py's message is the repr of every Sentinel client: hundreds of characters.
            master = getattr(ctx.obj, "redis_sentinel_master", None)
            why = f"no Sentinel answered with a primary {master!r} that is up"
            click.echo(f"error: Redis is unreachable (FLOWJOBS_REDIS_SENTINELS): {why}", err=True)
            sys.exit(EXIT_REDIS_UNREACHABLE)
        except REDIS_DOWN as error:
            where = "FLOWJOBS_REDIS_SENTINELS" if getattr(ctx.obj, "redis_sentinels", None) else "REDIS_URL"
            click.echo(f"error: Redis is unreachable ({where}): {error}", err=True)
            sys.exit(EXIT_REDIS_UNREACHABLE)


def _settings(ctx: click.Context) -> Settings:
    """The loaded settings, once ``REDIS_URL`` is known to parse (``InvalidSettings`` otherwise: a
    URL redis-py refuses would surface as a traceback wherever a connection is first made)."""
    settings: Settings = ctx.obj
    try:
        ConnectionPool.from_url(settings.redis_url)  # parses only: connects on first use
    except ValueError as error:
        raise InvalidSettings(f"invalid settings: REDIS_URL: {error}") from error
    return settings


def _client(ctx: click.Context, *, load_flows: bool = True) -> FlowClient:
    """A client for the settings; with ``load_flows``, the valid flows of FLOWJOBS_FLOWS_DIR (a
    warning on stderr names each invalid file: it must not stop commands about other flows)."""
    return FlowClient.from_settings(_settings(ctx), _flows(ctx, warn=True) if load_flows else FlowRegistry())


def _flows(ctx: click.Context, *, warn: bool) -> FlowRegistry:
    """The valid flows of FLOWJOBS_FLOWS_DIR; the invalid files are in ``invalid_files``."""
    registry = FlowRegistry()
    folder = _settings(ctx).flows_dir
    if folder.is_dir():
        registry.load_dir(folder, strict=False)
    if warn:
        for path, problems in registry.invalid_files.items():
            click.echo(f"warning: invalid flow file {path} skipped: {'; '.join(problems)}", err=True)
    return registry


def _uuid(text: str | None) -> UUID | None:
    try:
        return UUID(text) if text else None
    except ValueError:
        return None


def _json_data(text: str | None) -> Any:
    """The ``--data`` option's JSON, or a usage error (exit 2) saying why it is not JSON."""
    try:
        return json.loads(text) if text is not None else None
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--data") from error
    except RecursionError as error:  # the JSON parser recurses once per nesting level
        raise click.BadParameter("nested too deeply to parse", param_hint="--data") from error


def json_option(fn: F) -> F:
    """``--json``: machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)


@click.group(cls=_Group)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """flowjobs: DAG flows with a full run history on RQ and Redis."""
    ctx.obj = load_settings()
    configure_logging(ctx.obj.log_format, ctx.obj.log_level)
    # Before a worker forks its work-horses, which inherit the tracer provider (README, "Tracing").
    configure_tracing(f"flowjobs-{ctx.invoked_subcommand}" if ctx.invoked_subcommand else "flowjobs")


# -- flows ---------------------------------------------------------------------------------------


@cli.group(cls=_Group)
def flows() -> None:
    """Inspect and validate flow definitions."""


@flows.command("list")
@json_option
@click.pass_context
def flows_list(ctx: click.Context, as_json: bool) -> None:
    """List the flows in FLOWJOBS_FLOWS_DIR, then each invalid file with its problems."""
    registry = _flows(ctx, warn=False)
    invalid = registry.invalid_files
    if as_json:
        entries = [{**_flow_summary(d), "valid": True} for d in registry.all()]
        entries += [{"file": str(path), "valid": False, "problems": p} for path, p in invalid.items()]
        click.echo(json.dumps(entries, indent=2))
        return
    for definition in registry.all():
        click.echo(
            f"{definition.name:30} {definition.id}  v{definition.version}  "
            f"steps={len(definition.manifest.steps)} triggers={','.join(definition.manifest.triggers)}"
        )
    for path, problems in invalid.items():
        click.echo(f"{path.name:30} INVALID ({path})")
        for problem in problems:
            click.echo(f"  - {problem}")


@flows.command("show")
@click.argument("flow")
@json_option
@click.pass_context
def flows_show(ctx: click.Context, flow: str, as_json: bool) -> None:
    """Show one flow (by id or name)."""
    found = _client(ctx).flows.get(flow)
    definition = found.model_copy(update={"manifest": shown_manifest(found.manifest)})  # secrets masked
    data = definition.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"{definition.name} ({definition.id}) version {definition.version}")
        for key, trigger in definition.manifest.triggers.items():
            options = json.dumps(trigger.inputs) if trigger.inputs else ""
            click.echo(f"  trigger {key}: {trigger.type.value} {options}".rstrip())
        for key, step in definition.manifest.steps.items():
            after = (
                ", ".join(f"{dep}:{'|'.join(c.statuses)}" for dep, c in step.run_after.items()) or "(entry)"
            )
            click.echo(f"  step {key}: {step.type} after {after}")


@flows.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@json_option
@click.pass_context
def flows_validate(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Validate flow files or folders (default: FLOWJOBS_FLOWS_DIR); exit 2 listing every problem."""
    registry = FlowRegistry()
    problems: list[str] = []
    for path in paths or (_settings(ctx).flows_dir,):
        try:
            if Path(path).is_dir():
                registry.load_dir(path)
            else:
                registry.add_file(path)
        except FlowValidationError as error:
            problems.extend(f"{error.flow}: {p}" if Path(path).is_file() else p for p in error.problems)
    if as_json:
        click.echo(json.dumps({"valid": not problems, "flows": len(registry), "problems": problems}))
    if problems:
        if not as_json:
            click.echo(f"{len(problems)} problem(s):", err=True)
            for problem in problems:
                click.echo(f"  - {problem}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if not as_json:
        click.echo(f"ok: {len(registry)} flow(s) valid")


def _flow_summary(definition: Any) -> dict[str, Any]:
    return {
        "id": str(definition.id),
        "name": definition.name,
        "version": definition.version,
        "triggers": list(definition.manifest.triggers),
        "steps": list(definition.manifest.steps),
    }


# -- trigger and runs ----------------------------------------------------------------------------


@cli.command()
@click.argument("flow")
@click.option(
    "--trigger", "trigger_key", default="manual", show_default=True, help="Trigger key of the flow."
)
@click.option("--data", "data_json", default=None, help="Trigger payload, as JSON.")
@click.option("--header", "headers", multiple=True, help="Trigger header NAME=VALUE (repeatable).")
@click.option("--idempotency-key", default=None, help="Return the existing run if this key was used before.")
@click.option("--wait", is_flag=True, help="Wait until the run is terminal; exit 3 unless it Succeeded.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds --wait waits.")
@json_option
@click.pass_context
def trigger(
    ctx: click.Context,
    flow: str,
    trigger_key: str,
    data_json: str | None,
    headers: tuple[str, ...],
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Trigger a run of FLOW (id or name)."""
    data = _json_data(data_json)
    header_map: dict[str, str] = {}
    for item in headers:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--header")
        header_map[name] = value
    client = _client(ctx)
    handle = client.trigger(flow, trigger_key, data, header_map or None, idempotency_key=idempotency_key)
    if not wait:
        run = handle.record()
    else:
        if not as_json:
            click.echo(
                f"run {handle.run_id} triggered (trigger job {handle.background_job_id}); waiting…", err=True
            )
        handle.wait(timeout=timeout)
        run = handle.detail()
    _print_run(ctx, client, run, as_json)
    if wait and run.status is not RunStatus.Succeeded:
        sys.exit(EXIT_RUN_NOT_SUCCEEDED)


@cli.group(cls=_Group)
def runs() -> None:
    """Inspect runs."""


@runs.command("list")
@click.option("--flow", default=None, help="Only runs of this flow (id or name).")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), default=None)
@click.option("--limit", default=20, show_default=True)
@click.option("--before", default=None, help="Page: runs older than this run id.")
@json_option
@click.pass_context
def runs_list(
    ctx: click.Context, flow: str | None, status: str | None, limit: int, before: str | None, as_json: bool
) -> None:
    """List runs, newest first."""
    # Reading history needs no flow files: only a --flow name (not an id) is looked up in them.
    flow_id = _uuid(flow)
    client = _client(ctx, load_flows=bool(flow) and flow_id is None)
    if flow and flow_id is None:
        flow_id = client.flows.get(flow).id
    found = client.list_runs(
        flow_id=flow_id, status=RunStatus(status) if status else None, limit=limit, before=before
    )
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json", by_alias=True) for r in found], indent=2))
        return
    for run in found:
        click.echo(
            f"{run.id}  {run.status.value:9}  {run.flow_name or run.flow_id}  "
            f"started {run.started_at:%Y-%m-%d %H:%M:%S}  job {run.background_job_id}"
        )


@runs.command("show")
@click.argument("run_id")
@json_option
@click.option("--events", is_flag=True, help="Also print the run's event history.")
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, as_json: bool, events: bool) -> None:
    """Show a run, its steps and attempts, and the rq-dashboard page of every job."""
    client = _client(ctx, load_flows=False)
    run = client.get_run_detail(run_id)
    if run is None:
        click.echo(f"error: no run with id {run_id}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    history = client.queries.events(run.id) if events else []
    if as_json:
        data = run.model_dump(mode="json", by_alias=True)
        if events:
            data["events"] = [event.model_dump(mode="json", by_alias=True) for event in history]
        click.echo(json.dumps(data, indent=2))
        return
    _print_run(ctx, client, run, as_json=False)
    for event in history:
        click.echo(
            f"  {event.sequence:4} {event.timestamp:%H:%M:%S.%f} {event.type.value:15} "
            f"{event.step_key or '':20} {event.message or ''}".rstrip()
        )


def _not_nan(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """click's ranges let NaN through (every comparison with it is false)."""
    if math.isnan(value):
        raise click.BadParameter("nan is not a number of days")
    return value


@runs.command("purge")
@click.option(
    "--older-than",
    "days",
    # Bounded as FLOWJOBS_RETENTION_DAYS is: a larger age would overflow the cutoff's date.
    type=click.FloatRange(min=0, max=MAX_RETENTION_DAYS, min_open=True),
    callback=_not_nan,
    required=True,
    help=f"Delete runs that finished more than DAYS days ago (at most {MAX_RETENTION_DAYS}).",
)
@click.option("--dry-run", is_flag=True, help="Delete nothing; count the runs that would be deleted.")
@json_option
@click.pass_context
def runs_purge(ctx: click.Context, days: float, dry_run: bool, as_json: bool) -> None:
    """Delete finished runs older than DAYS with all their keys and RQ jobs (never active runs)."""
    count = _client(ctx, load_flows=False).purge(timedelta(days=days), dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"runs": count, "dryRun": dry_run, "olderThanDays": days}))
    else:
        click.echo(f"{count} run(s) {'would be deleted' if dry_run else 'deleted'}")


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", default=None, help="Why; kept on the run and in its history.")
@json_option
@click.pass_context
def runs_cancel(ctx: click.Context, run_id: str, reason: str | None, as_json: bool) -> None:
    """Cancel an active run: queued and parked steps are skipped, running ones finish, then it closes."""
    run = _client(ctx, load_flows=False).cancel(run_id, reason)
    if as_json:
        click.echo(json.dumps(run.model_dump(mode="json", by_alias=True), indent=2))
        return
    state = "cancelled" if run.status is RunStatus.Cancelled else "cancelling (running steps finish first)"
    click.echo(f"run {run.id} {state}")


@runs.command("rerun")
@click.argument("run_id")
@json_option
@click.pass_context
def runs_rerun(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Trigger a new run of the same flow with the run's data and headers (source_run_id set)."""
    handle = _client(ctx).rerun(run_id)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "runId": str(handle.run_id),
                    "backgroundJobId": handle.background_job_id,
                    "sourceRunId": run_id,
                }
            )
        )
        return
    click.echo(f"run {handle.run_id} re-runs {run_id} (trigger job {handle.background_job_id})")


@runs.command("lineage")
@click.argument("run_id")
@json_option
@click.pass_context
def runs_lineage(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """The runs a run was re-run from, and the runs re-run from it."""
    lineage = _client(ctx, load_flows=False).lineage(run_id)
    if as_json:
        click.echo(json.dumps(lineage.model_dump(mode="json", by_alias=True), indent=2))
        return
    for run in reversed(lineage.ancestors):
        click.echo(
            f"  ancestor    {run.id}  {run.status.value:9}  started {run.started_at:%Y-%m-%d %H:%M:%S}"
        )
    click.echo(f"  this run    {lineage.run_id}")
    for run in lineage.descendants:
        click.echo(f"  descendant  {run.id}  {run.status.value:9}  re-run of {run.source_run_id}")


@runs.command("retry-step")
@click.argument("run_id")
@click.argument("step_key")
@click.option("--clear-cancel", is_flag=True, help="Clear the run's cancel request first.")
@json_option
@click.pass_context
def runs_retry_step(
    ctx: click.Context, run_id: str, step_key: str, clear_cancel: bool, as_json: bool
) -> None:
    """Queue a new attempt of a Failed step; its skipped descendants are planned again."""
    client = _client(ctx, load_flows=False)
    retried = client.retry_step(run_id, step_key, clear_cancel=clear_cancel)
    if as_json:
        click.echo(
            json.dumps(
                {"runId": run_id, "stepKey": step_key, "attempt": retried.attempt, "jobId": retried.job_id}
            )
        )
        return
    click.echo(
        f"step {step_key} of run {run_id}: attempt {retried.attempt} queued (job {retried.job_id})"
    )


@runs.command("signal")
@click.argument("run_id")
@click.argument("name")
@click.option("--data", "data_json", default=None, help="Signal payload, as JSON (the step's output).")
@json_option
@click.pass_context
def runs_signal(ctx: click.Context, run_id: str, name: str, data_json: str | None, as_json: bool) -> None:
    """Deliver signal NAME to a run; every WaitForSignal step parked on it resumes at once."""
    answer = _client(ctx, load_flows=False).signal(run_id, name, _json_data(data_json))
    if as_json:
        click.echo(json.dumps({"runId": run_id, "signal": name, "delivery": answer}))
        return
    click.echo(
        f"signal {name!r} {answer}" + (" (the step consumes it when it parks)" if answer == "kept" else "")
    )


def _print_run(ctx: click.Context, client: FlowClient, run: FlowRunRecord, as_json: bool) -> None:
    settings = _settings(ctx)
    if as_json:
        click.echo(json.dumps(run.model_dump(mode="json", by_alias=True), indent=2))
        return
    job_ids = [run.background_job_id or ""] + [
        a.job_id or "" for s in run.steps or [] for a in s.attempts or []
    ]
    # RQ drops a finished job after FLOWJOBS_RQ_JOB_TTL_SECONDS; the run keeps its id. Link only to
    # pages that still exist, in one round-trip.
    kept = client.runner.states([job_id for job_id in job_ids if job_id])

    def link(job_id: str | None) -> str:
        if not job_id:
            return ""
        if kept.get(job_id, JobState.Deleted) is JobState.Deleted:
            return "(gone from RQ)"
        return settings.job_url(job_id) or ""

    click.echo(f"run {run.id}  {run.status.value}")
    if settings.web_base_url:
        click.echo(f"  page            {settings.web_base_url.rstrip('/')}{run_ui_path(run.id)}")
    elif not settings.rq_dashboard_url:
        click.echo(f"  links           unknown: set {WEB_BASE_URL_ENV} to the web process's address")
    click.echo(f"  flow            {run.flow_name} ({run.flow_id}) v{run.flow_version}")
    click.echo(f"  trigger         {run.trigger_key}  data={run.trigger_data_json}")
    click.echo(
        f"  started/ended   {run.started_at.isoformat()} / "
        f"{run.completed_at.isoformat() if run.completed_at else '-'}"
    )
    if run.source_run_id:
        click.echo(f"  re-run of       {run.source_run_id}")
    if run.background_job_id:
        click.echo(f"  trigger job     {run.background_job_id}  {link(run.background_job_id)}")
    for step in run.steps or []:
        click.echo(
            f"  step {step.step_key:20} {step.status.value:9} attempts={step.attempt_count}"
            + (f"  error: {step.error_message}" if step.error_message else "")
        )
        if step.evaluation_trace_json:
            click.echo(f"      when: {step.evaluation_trace_json}")
        for attempt in step.attempts or []:
            click.echo(
                f"      #{attempt.attempt} {attempt.status.value:9} job {attempt.job_id}  "
                f"{link(attempt.job_id)}"
            )


# -- stats ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--flow", default=None, help="Only this flow (id or name); default: every flow.")
@json_option
@click.pass_context
def stats(ctx: click.Context, flow: str | None, as_json: bool) -> None:
    """Per-flow health over the last 24 h: runs per hour by status, success rate, p50/p95 run
    duration, slowest steps (durations of the newest finished runs only: see the README)."""
    client = _client(ctx)
    definitions = [client.flows.get(flow)] if flow is not None else client.flows.all()
    report = client.queries.stats(definitions)
    if as_json:
        click.echo(json.dumps(report.model_dump(mode="json", by_alias=True), indent=2))
        return
    if not report.flows:
        click.echo("no flows (FLOWJOBS_FLOWS_DIR holds no valid flow file)")
    for shown in report.flows:
        _print_stats(shown)


def _print_stats(stats: FlowStats) -> None:
    click.echo(
        f"flow {_printable(stats.flow_name)} ({stats.flow_id}), last {WINDOW_HOURS} h to "
        f"{stats.window_end:%Y-%m-%d %H:%M:%S} UTC"
    )
    totals = "  ".join(f"{status.value} {n}" for status, n in stats.totals.items() if n)
    click.echo(f"  runs            {stats.runs}" + (f"  ({totals})" if totals else ""))
    rate = f"{stats.success_rate * 100:.1f} %" if stats.success_rate is not None else "-"
    click.echo(f"  success rate    {rate} of {stats.finished} finished")
    d = stats.run_durations
    sample = f"the newest {d.count} of {stats.finished} finished runs" if stats.sampled else f"{d.count} runs"
    click.echo(
        f"  run duration    p50 {_seconds(d.p50_seconds)}  p95 {_seconds(d.p95_seconds)}"
        f"  max {_seconds(d.max_seconds)}  ({sample})"
    )
    if stats.runs:
        click.echo(f"  per hour        oldest first, from {stats.window_start:%Y-%m-%d %H:%M} UTC")
    for status in RunStatus:
        if stats.totals[status]:
            counts = " ".join(f"{hour.counts[status]:>3}" for hour in stats.hours)
            click.echo(f"  per hour {status.value:<10}{counts}")
    if stats.slowest_steps:
        partial = ", partial: step bound reached" if stats.steps_sampled else ""
        click.echo(f"  slowest steps ({stats.steps_read} finished steps of those runs{partial})")
        click.echo(f"    {'step':<24} {'count':>6} {'p50':>9} {'p95':>9} {'mean':>9} {'max':>9}")
        for step in stats.slowest_steps:
            figures = (step.p50_seconds, step.p95_seconds, step.mean_seconds, step.max_seconds)
            columns = " ".join(f"{_seconds(value):>9}" for value in figures)
            click.echo(f"    {_printable(step.step):<24} {step.count:>6} {columns}")


def _seconds(value: float | None) -> str:
    """``0.123s``, ``12.3s``, ``-`` for none: a column of the stats table."""
    if value is None:
        return "-"
    return f"{value:.3f}s" if value < 10 else f"{value:.1f}s"


def _printable(text: str) -> str:
    """A flow's or step's name for the terminal: control characters (escape sequences that would
    drive the terminal) shown as escapes, not sent."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


# -- flows enable/disable and schedules ------------------------------------------------------------


@flows.command("enable")
@click.argument("flow")
@json_option
@click.pass_context
def flows_enable(ctx: click.Context, flow: str, as_json: bool) -> None:
    """Enable FLOW (id or name): it can be triggered and its Cron schedules fire (persisted)."""
    _set_enabled(ctx, flow, True, as_json)


@flows.command("disable")
@click.argument("flow")
@json_option
@click.pass_context
def flows_disable(ctx: click.Context, flow: str, as_json: bool) -> None:
    """Disable FLOW: every trigger is refused and its Cron schedules do not fire (persisted)."""
    _set_enabled(ctx, flow, False, as_json)


def _set_enabled(ctx: click.Context, flow: str, enabled: bool, as_json: bool) -> None:
    definition = _client(ctx).set_flow_enabled(flow, enabled)
    if as_json:
        click.echo(json.dumps({**_flow_summary(definition), "enabled": enabled}, indent=2))
    else:
        click.echo(f"flow {definition.name} ({definition.id}) {'enabled' if enabled else 'disabled'}")


@cli.group(cls=_Group)
def schedules() -> None:
    """Cron schedules of flows (``flow-<flowId>-<triggerKey>``) and applications' recurring jobs."""


def _print_schedule(client: FlowClient, state: ScheduleState, as_json: bool) -> None:
    enabled = client.queries.flow_enabled(str(state.flow_id)) if state.flow_id else True
    summary = state.summary(flow_enabled=enabled)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(_schedule_line(summary))


def _schedule_line(summary: dict[str, Any]) -> str:
    states = (("paused", summary["paused"]), ("flow disabled", not summary["flowEnabled"]))
    flags = [name for name, on in states if on] + ([f"error: {summary['error']}"] if summary["error"] else [])
    override = " (override)" if summary["cronOverride"] else ""
    return (
        f"{summary['jobId']}  {summary['cron']!r}{override} {summary['timeZoneId']}  "
        f"next {summary['nextExecution'] or '-'}  last {summary['lastExecution'] or '-'} "
        f"job {summary['lastJobId'] or '-'}" + (f"  [{', '.join(flags)}]" if flags else "")
    )


@schedules.command("list")
@json_option
@click.pass_context
def schedules_list(ctx: click.Context, as_json: bool) -> None:
    """List every schedule: cron in effect, zone, next and last fire, paused, flow disabled."""
    client = _client(ctx)
    states = client.list_schedules()
    enabled = {s.flow_id: client.queries.flow_enabled(str(s.flow_id)) for s in states if s.flow_id}
    summaries = [s.summary(flow_enabled=not s.flow_id or enabled[s.flow_id]) for s in states]
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
        return
    for summary in summaries:
        click.echo(_schedule_line(summary))


@schedules.command("pause")
@click.argument("schedule_id")
@json_option
@click.pass_context
def schedules_pause(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Stop SCHEDULE_ID firing (persisted; missed ticks are not caught up on resume)."""
    client = _client(ctx)
    _print_schedule(client, client.pause_schedule(schedule_id), as_json)


@schedules.command("resume")
@click.argument("schedule_id")
@json_option
@click.pass_context
def schedules_resume(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Fire SCHEDULE_ID again from its next tick."""
    client = _client(ctx)
    _print_schedule(client, client.resume_schedule(schedule_id), as_json)


@schedules.command("set-cron")
@click.argument("schedule_id")
@click.argument("expression", required=False)
@click.option("--clear", is_flag=True, help="Drop the override: fire on the flow file's expression again.")
@json_option
@click.pass_context
def schedules_set_cron(
    ctx: click.Context, schedule_id: str, expression: str | None, clear: bool, as_json: bool
) -> None:
    """Override SCHEDULE_ID's cron EXPRESSION at runtime (persisted; wins over the flow file)."""
    if clear == (expression is not None):
        raise click.UsageError("give either EXPRESSION or --clear")
    client = _client(ctx)
    _print_schedule(client, client.set_schedule_cron(schedule_id, None if clear else expression), as_json)


@schedules.command("trigger")
@click.argument("schedule_id")
@json_option
@click.pass_context
def schedules_trigger(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Fire SCHEDULE_ID once now (paused or not), keeping its schedule."""
    fired = _client(ctx).trigger_schedule(schedule_id)
    data = {"jobId": fired.job_id, "runId": str(fired.run_id) if fired.run_id else None}
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        run = f" run {fired.run_id}" if fired.run_id else ""
        click.echo(f"fired {schedule_id}: job {fired.job_id}{run}")


@schedules.command("prune")
@click.option("--dry-run", is_flag=True, help="Remove nothing; list the schedules that would be removed.")
@json_option
@click.pass_context
def schedules_prune(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Remove the flow schedules whose flow or Cron trigger FLOWJOBS_FLOWS_DIR lacks.

    The only command that removes flow schedules (workers and the other commands never do): run it
    once every process has the release whose folder this is. Refused for a missing folder or one
    with an invalid file (that file's flow may be one whose schedules must stay).
    """
    folder = _settings(ctx).flows_dir
    if not folder.is_dir():
        click.echo(f"error: FLOWJOBS_FLOWS_DIR {folder} is not a folder: nothing to compare with", err=True)
        sys.exit(EXIT_BAD_INPUT)
    client = _client(ctx)
    if client.flows.invalid_files:
        names = ", ".join(str(path) for path in client.flows.invalid_files)
        click.echo(f"error: invalid flow file(s) {names}: fix them first; nothing removed", err=True)
        sys.exit(EXIT_BAD_INPUT)
    removed = client.prune_schedules(dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"removed": removed, "dryRun": dry_run}))
        return
    for schedule_id in removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {schedule_id}")
    click.echo(f"{len(removed)} schedule(s) {'would be removed' if dry_run else 'removed'}")


# -- processes -----------------------------------------------------------------------------------


@cli.command()
@click.option("--simple", is_flag=True, help="SimpleWorker: run jobs in this process instead of forking.")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--name", default=None, help="RQ worker name (default: a random one).")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this worker's own Prometheus metrics on this port.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of --metrics-port (0.0.0.0 for a Prometheus on another machine).",
)
@click.pass_context
def worker(
    ctx: click.Context,
    simple: bool,
    burst: bool,
    name: str | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run an RQ worker with flowjobs' engine and the handler modules loaded, and the duties."""
    from flowjobs.worker import run_worker

    metrics = (metrics_host, metrics_port) if metrics_port is not None else None
    run_worker(_settings(ctx), simple=simple, burst=burst, name=name, metrics=metrics)


@cli.command()
@click.option("--once", is_flag=True, help="Run every duty once (ignoring the duty locks) and exit.")
@click.pass_context
def scheduler(ctx: click.Context, once: bool) -> None:
    """Run the duties (recovery, run deadlines) without taking jobs; optional: every worker runs them."""
    from flowjobs.worker import run_scheduler

    run_scheduler(_settings(ctx), once=once)


@cli.command()
@click.option("--flow", default="hello-flow", show_default=True, help="Flow to trigger.")
@click.option(
    "--data", "data_json", default='{"name": "flowjobs"}', show_default=True, help="Trigger payload."
)
@click.option("--timeout", default=120.0, show_default=True)
@click.pass_context
def demo(ctx: click.Context, flow: str, data_json: str, timeout: float) -> None:
    """Zero-setup run: use REDIS_URL or start an embedded server, start a worker, run a flow, print it."""
    settings, server, where = _local_redis(_settings(ctx))
    click.echo(f"redis: {where}" + (" (embedded server started for this demo)" if server else ""), err=True)
    url = settings.redis_url
    ctx.obj = settings
    env = {**os.environ, "REDIS_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "flowjobs", "worker"], env=env, stdin=subprocess.DEVNULL)
    try:
        client = _client(ctx)
        handle = client.trigger(flow, data=_json_data(data_json))
        click.echo(
            f"triggered run {handle.run_id}; trigger job {handle.background_job_id}; waiting…", err=True
        )
        handle.wait(timeout=timeout)
        run = handle.detail()
        _print_run(ctx, client, run, as_json=False)
        click.echo("")
        click.echo(json.dumps(run.model_dump(mode="json", by_alias=True, exclude={"steps"}), indent=2))
        click.echo("")
        click.echo("where to look:")
        click.echo(f"  flowjobs runs show {run.id}        (REDIS_URL={url})")
        # Where the `up` suggested here serves, with these same settings.
        job_id = run.background_job_id or ""
        served = f"http://{settings.web_host}:{settings.web_port}{rq_job_path(job_id)}"
        click.echo(f"  flowjobs up   (REDIS_URL={url}) then {settings.job_url(job_id) or served}")
        if server:
            click.echo("  (the embedded server stops with this demo; set REDIS_URL to keep the history)")
        if run.status is not RunStatus.Succeeded:
            sys.exit(EXIT_RUN_NOT_SUCCEEDED)
    finally:
        stop_processes([proc], timeout=15)
        if server:
            server.stop()


def _local_redis(settings: Settings) -> tuple[Settings, EmbeddedRedis | None, str]:
    """``demo``'s and ``up``'s Redis: the settings with the URL to use, the embedded server started
    for them (if any), and where that is in words. Through the Sentinels when they are set (never an
    embedded server then: runs would go to it instead of the primary), else ``ensure_redis``."""
    if settings.redis_sentinels:
        where = f"primary {settings.redis_sentinel_master!r} of Sentinels {settings.redis_sentinels}"
        return settings, None, where
    url, server = ensure_redis(settings.redis_url)
    return settings.model_copy(update={"redis_url": url}), server, url


def _web_settings(settings: Settings, host: str | None, port: int | None) -> Settings:
    """The settings with ``--host``/``--port`` applied; links point at this address unless
    FLOWJOBS_WEB_BASE_URL was set (a proxy's address, say). Refuses (exit 2, one line) a
    non-loopback address with no auth unless FLOWJOBS_WEB_OPEN says so, before anything starts."""
    from flowjobs.web.guard import check_exposure

    host, port = host or settings.web_host, port if port is not None else settings.web_port
    update: dict[str, Any] = {"web_host": host, "web_port": port}
    if settings.web_base_url is None:
        update["web_base_url"] = f"http://{host}:{port}"
    settings = settings.model_copy(update=update)
    check_exposure(settings)
    return settings


def _serve(settings: Settings) -> None:
    """Serve the web app with uvicorn in this process until SIGINT or SIGTERM (request heads
    bounded: ``flowjobs.web.server``)."""
    from flowjobs.web.app import create_app
    from flowjobs.web.server import serve

    app = create_app(settings)
    base = f"http://{settings.web_host}:{settings.web_port}"
    click.echo(f"flows UI: {base}{UI_PREFIX}/   API: {base}/flows/api   rq-dashboard: {base}/rq/", err=True)
    serve(app, settings)


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default FLOWJOBS_WEB_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default FLOWJOBS_WEB_PORT, 8000).")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API (/flows/api), the flows UI (/flows/) and rq-dashboard (/rq/)."""
    _serve(_web_settings(_settings(ctx), host, port))


#: The setting ``flowjobs web`` and ``up`` give the processes they start (links printed there).
WEB_BASE_URL_ENV = "FLOWJOBS_WEB_BASE_URL"


class _Terminated(Exception):
    """SIGTERM, turned into an exception so ``up`` stops its children on the way out."""


@cli.command()
@click.option("--host", default=None, help="Address the web process listens on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port of the web process (default 8000).")
@click.pass_context
def up(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Everything for local use in one command: the Redis at REDIS_URL (or an embedded server), one
    worker (duties included) and the web process; Ctrl-C stops them all."""
    import signal

    settings = _web_settings(_settings(ctx), host, port)
    children: list[subprocess.Popen[bytes]] = []
    server = None

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated()

    # uvicorn handles SIGTERM itself while it serves, then re-raises it with this handler restored:
    # either way the cleanup below runs (the default handler would skip it).
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        settings, server, where = _local_redis(settings)
        click.echo(f"redis: {where}" + (" (embedded server, stops with `up`)" if server else ""), err=True)
        env = {**os.environ, "REDIS_URL": settings.redis_url, WEB_BASE_URL_ENV: settings.web_base_url or ""}
        # Its own session: Ctrl-C reaches `up` only, which stops the worker warm (SIGTERM) itself.
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "flowjobs", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        _serve(settings)
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        click.echo("stopping…", err=True)
        stop_processes(children, timeout=15)
        if server is not None:
            server.stop()
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flowjobs")
