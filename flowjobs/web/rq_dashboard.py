"""rq-dashboard 0.9, mounted at ``/rq`` of the web process, reading the same Redis with RQ's JSON
serializer (flowjobs' jobs are JSON; nobody has to remember ``--json``), made safe to open on jobs
whose data anyone wrote (a webhook sender's payload reaches step outputs, errors and meta).

- Every value renders as text: rq-dashboard's browser templates print job data with underscore's
  unescaped ``<%= %>`` into ``innerHTML``; its templates are served here rewritten
  (``EscapingLoader``) so that every ``<%=`` is the escaping ``<%-``.
- Every response carries a Content-Security-Policy (``content_security_policy``): scripts only
  from this origin plus the page's one inline script (a per-response nonce), no framing.
- State changes only by POST: every route that accepts POST (requeue, requeue all, delete, empty,
  compact) answers GET and the rest with 405, so a link or an ``<img>`` changes nothing.
- A job RQ no longer holds answers 404 with a link to the flows UI's ``/flows/jobs/<id>`` (which
  finds its run for as long as the run is kept); unreachable Redis 503; anything else 500 with an
  error id that is also logged.

rq-dashboard 0.9's two requeue routes (``/job/<id>/requeue`` and ``/requeue/<queue>``) call RQ's
``requeue_job`` without the serializer: RQ then re-saves the job's meta with pickle and the job
page breaks. They are replaced here by the same actions with the JSON serializer; a requeued
failed attempt of a step is a retry of that step (README, "rq-dashboard tells the truth").

Its job JSON (``/<n>/data/job/<id>.json``, behind every job page) decodes RQ 2's dependency ids as
if they were bytes, so any job with ``depends_on`` (``BackgroundJob.continue_job_with``, RQ's own
chains) answers 500. It is replaced here too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import quote

import structlog
from flask import Flask, Response, abort, current_app, g, jsonify, request
from jinja2 import BaseLoader, Environment
from markupsafe import Markup
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from werkzeug.exceptions import HTTPException

from flowjobs.core.urls import RQ_PREFIX, UI_PREFIX
from flowjobs.factory import connect
from flowjobs.settings import Settings
from flowjobs.web.failures import REDIS_UNREACHABLE, log_fault

log = structlog.get_logger("flowjobs.web")

#: Edits of rq-dashboard 0.9's templates beyond ``<%=`` → ``<%-`` (template, text, replacement).
#: Each must apply: ``EscapingLoader`` refuses a template where one no longer matches (a new
#: rq-dashboard), rather than serving it unreviewed.
TEMPLATE_EDITS: tuple[tuple[str, str, str], ...] = (
    # Already escaped by jQuery for ``<%=``; with ``<%-`` it would be escaped twice (shown as
    # ``&lt;``), so the plain value is printed, escaped once.
    ("rq_dashboard/jobs.html", "<%= $('<div/>').text(d.description).html() %>", "<%- d.description %>"),
    ("rq_dashboard/jobs.html", "<%= $('<div/>').text(d.exc_info).html() %>", "<%- d.exc_info %>"),
    # The queue name comes from the URL; this template is JavaScript, which Jinja does not
    # autoescape: a quote in the name would end the string literal.
    ("rq_dashboard/scripts/jobs.js", "'{{ queue.name }}'", "{{ queue.name|tojson }}"),
    # The page's one inline script (configuration and the page's code) runs under the CSP nonce.
    (
        "rq_dashboard/base.html",
        '<script type="text/javascript">\n',
        '<script type="text/javascript" nonce="{{ csp_nonce }}">\n',
    ),
)

_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')


def rewrite_template(name: str, source: str) -> str:
    """rq-dashboard's template ``name`` with ``TEMPLATE_EDITS`` applied and every underscore
    ``<%=`` (prints unescaped) turned into ``<%-`` (prints HTML-escaped)."""
    for template, text, replacement in TEMPLATE_EDITS:
        if template == name:
            if text not in source:
                raise RuntimeError(f"rq-dashboard's {name} changed: review flowjobs.web.rq_dashboard")
            source = source.replace(text, replacement)
    return source.replace("<%=", "<%-")


class EscapingLoader(BaseLoader):
    """The Flask app's template loader with rq-dashboard's templates through ``rewrite_template``."""

    def __init__(self, inner: BaseLoader) -> None:
        self.inner = inner

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        source, filename, uptodate = self.inner.get_source(environment, template)
        if template.startswith("rq_dashboard/"):
            source = rewrite_template(template, source)
        return source, filename, uptodate

    def list_templates(self) -> list[str]:
        return self.inner.list_templates()


def content_security_policy(app: Flask) -> str:
    """The CSP of every ``/rq`` response, ``{nonce}`` to fill per response.

    rq-dashboard's pages need: its files from this origin; one inline script per page (allowed by
    the nonce); ``'unsafe-eval'``, because underscore's ``_.template`` compiles the pages' row
    templates with ``new Function`` (those templates are this app's own, and print escaped);
    the ``style`` attributes of its templates (allowed one by one by hash, ``'unsafe-hashes'``);
    bootstrap's SVG icons as ``data:`` images; its JSON from this origin. Nothing else."""
    loader = app.jinja_env.loader
    assert loader is not None
    styles = {
        value
        for name in loader.list_templates()
        if name.startswith("rq_dashboard/")
        for value in _STYLE_ATTRIBUTE.findall(loader.get_source(app.jinja_env, name)[0])
    }
    hashes = " ".join(
        sorted(f"'sha256-{base64.b64encode(hashlib.sha256(v.encode()).digest()).decode()}'" for v in styles)
    )
    return (
        "default-src 'none'; script-src 'self' 'nonce-{nonce}' 'unsafe-eval'; "
        f"style-src 'self' 'unsafe-hashes' {hashes}; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _nonce() -> str:
    """This response's CSP nonce (made on first use)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    nonce: str = g.csp_nonce
    return nonce


def _redis() -> Redis:
    connection: Redis = current_app.redis_conn  # type: ignore[attr-defined]
    return connection


def _requeue(job_id: str) -> bool:
    """Requeue one failed job with the JSON serializer; False if RQ no longer has it."""
    try:
        job = Job.fetch(job_id, connection=_redis(), serializer=JSONSerializer)
    except NoSuchJobError:
        return False
    job.requeue()
    return True


def requeue_job_view(job_id: str) -> Any:
    """``POST /job/<job_id>/requeue``: rq-dashboard's Requeue button, with the JSON serializer."""
    found = _requeue(job_id)
    return jsonify(status="OK" if found else "ERROR"), {"Cache-Control": "no-store"}


def requeue_all(queue_name: str) -> Any:
    """``POST /requeue/<queue>``: requeue every failed job of a queue, with the JSON serializer."""
    failed = Queue(queue_name, connection=_redis(), serializer=JSONSerializer).failed_job_registry
    job_ids = failed.get_job_ids(cleanup=False)
    count = sum(_requeue(job_id) for job_id in job_ids)
    return jsonify(status="OK", count=count), {"Cache-Control": "no-store"}


def job_info(instance_number: int, job_id: str) -> dict[str, Any]:
    """``/<n>/data/job/<id>.json``: rq-dashboard 0.9's job JSON, with RQ 2's dependency ids read
    as the text they are (and each marked ``active`` or ``expired`` as 0.9 does)."""
    from rq_dashboard import web

    connection = _redis()
    job = Job.fetch(job_id, serializer=JSONSerializer, connection=connection)
    latest = job.latest_result()
    encoder = current_app.config.get("RQ_DASHBOARD_JSON_ENCODER", json.JSONEncoder)
    info: dict[str, Any] = {
        "id": job.id,
        "created_at": web.serialize_date(job.created_at),
        "enqueued_at": web.serialize_date(job.enqueued_at),
        "started_at": web.serialize_date(job.started_at),
        "ended_at": web.serialize_date(job.ended_at),
        "origin": job.origin,
        "status": job.get_status(),
        "result": job.return_value(),
        "exc_info": latest.exc_string if latest else None,
        "description": web.format_job_description(job),
        "metadata": json.dumps(job.get_meta(), cls=encoder),
    }
    parents = job.dependency_ids
    if parents:
        info["depends_on"] = parents
        info["depends_on_status"] = [
            "active" if connection.exists(Job.key_for(parent)) else "expired" for parent in parents
        ]
    return info


def _checking_redis(view: Callable[..., Any]) -> Callable[..., Any]:
    """``view`` after a ping: rq-dashboard's queues page answers an unreachable Redis itself, with
    a 200 "Connection Error" page; the ping lets it be the 503 every other page answers."""

    @wraps(view)
    def checked(**kwargs: Any) -> Any:
        _redis().ping()
        return view(**kwargs)

    return checked


def _refuse_what_is_not_allowed() -> None:
    """Before any view: a route that changes state (every route that takes POST does) takes
    nothing but POST, so no link, image or redirect changes anything (405); an rq-dashboard
    instance number beyond the configured Redis URLs is a 404 (rq-dashboard raises on it)."""
    rule = request.url_rule
    if rule is not None and "POST" in (rule.methods or ()) and request.method != "POST":
        abort(405, valid_methods=["POST"])
    instance = (request.view_args or {}).get("instance_number")
    if instance is not None and instance >= len(current_app.config["RQ_DASHBOARD_REDIS_URL"]):
        abort(404)


def _secure_headers(response: Response) -> Response:
    """After every response: its CSP, no framing, no type sniffing."""
    response.headers["Content-Security-Policy"] = current_app.config["FLOWJOBS_CSP"].format(nonce=_nonce())
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _flows_job_path(job_id: str) -> str:
    """The flows UI's page of a job id (which leads to its run), from this mount's own path."""
    base = request.script_root.removesuffix(RQ_PREFIX)
    return f"{base}{UI_PREFIX}/jobs/{quote(job_id, safe='')}"


def _error_answer(status: int, title: str, detail: str, link: str | None = None) -> Response:
    """An error as rq-dashboard's caller reads it: JSON for its ``.json`` routes, a page else."""
    if request.path.endswith(".json"):
        response = jsonify(status="ERROR", error=title, detail=detail, **({"link": link} if link else {}))
    else:
        body = Markup("<!DOCTYPE html><title>{0}</title><h1>{0}</h1><p>{1}</p>").format(title, detail)
        if link:
            body += Markup('<p><a href="{0}">{0}</a></p>').format(link)
        response = Response(body, mimetype="text/html")
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _on_error(error: Exception) -> Response | HTTPException:
    """Every error of a view as a deliberate answer, never a traceback: a job RQ no longer holds
    404 (with a link to the run it belonged to), Redis unreachable 503, anything else 500 with an
    error id, logged with it."""
    if isinstance(error, HTTPException):
        return error
    if isinstance(error, NoSuchJobError):
        job_id = str((request.view_args or {}).get("job_id", ""))
        detail = f"RQ no longer holds job {job_id}. Its run keeps what it did:"
        return _error_answer(404, "No such job", detail, _flows_job_path(job_id))
    if isinstance(error, REDIS_UNREACHABLE):
        log.warning("web.redis_unavailable", path=request.path, error=repr(error))
        return _error_answer(503, "Redis is unreachable", "Try again when Redis is back.")
    error_id = log_fault("web.rq_dashboard_error", error, path=request.path)
    return _error_answer(500, "Internal error", f"Error id {error_id} (in the web process's log).")


def _only_instance_zero() -> None:
    """rq-dashboard's ``/<instance>/`` routes: this process serves one Redis, instance 0."""
    if (request.view_args or {}).get("instance_number", 0) != 0:
        abort(404)


def create_rq_dashboard(settings: Settings, redis: Redis | None = None) -> Flask:
    """rq-dashboard's Flask app on ``redis`` (default: ``connect(settings)``), with the JSON
    serializer, the requeue routes replaced and the safety measures of this module; its URLs are
    built from the mount point (WSGI ``SCRIPT_NAME``), so it is created without a prefix of its own."""
    from rq_dashboard import web
    from rq_dashboard.cli import make_flask_app

    # rq-dashboard keeps its serializer in a module global: one per process, and this process's
    # jobs are all JSON.
    web.config.serializer = JSONSerializer
    app: Flask = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config["RQ_DASHBOARD_POLL_INTERVAL"] = 2500
    web.setup_rq_connection(app)
    # rq-dashboard's own hook builds a client from the URL on every request: a new pool each
    # time, and never through Sentinel. The process's one client serves them all instead.
    app.redis_conn = redis or connect(settings)  # type: ignore[attr-defined]
    app.before_request_funcs["rq_dashboard"] = [_only_instance_zero]
    # Same endpoints, so the dashboard's own buttons and links reach the replacements.
    app.view_functions["rq_dashboard.requeue_job_view"] = requeue_job_view
    app.view_functions["rq_dashboard.requeue_all"] = requeue_all
    app.view_functions["rq_dashboard.job_info"] = web.jsonify(job_info)
    overview = "rq_dashboard.queues_overview"
    app.view_functions[overview] = _checking_redis(app.view_functions[overview])

    inner = app.jinja_env.loader
    assert inner is not None
    app.jinja_env.loader = EscapingLoader(inner)
    # Computed now, so a template edit that no longer applies stops the process at start.
    app.config["FLOWJOBS_CSP"] = content_security_policy(app)
    app.context_processor(lambda: {"csp_nonce": _nonce()})
    app.before_request(_refuse_what_is_not_allowed)
    app.after_request(_secure_headers)
    app.register_error_handler(Exception, _on_error)
    return app
