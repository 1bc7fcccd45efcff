"""rq-dashboard 0.9, mounted at ``/rq`` of the web process, reading the same Redis with RQ's JSON
serializer (flowjobs' jobs are JSON; nobody has to remember ``--json``).

rq-dashboard 0.9's two requeue routes (``/job/<id>/requeue`` and ``/requeue/<queue>``) call RQ's
``requeue_job`` without the serializer: RQ then re-saves the job's meta with pickle and the job
page breaks. They are replaced here by the same actions with the JSON serializer; a requeued
failed attempt of a step is a retry of that step (README, "rq-dashboard tells the truth").

Its job JSON (``/<n>/data/job/<id>.json``, behind every job page) decodes RQ 2's dependency ids as
if they were bytes, so any job with ``depends_on`` (``BackgroundJob.continue_job_with``, RQ's own
chains) answers 500. It is replaced here too.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, current_app, jsonify
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from flowjobs.settings import Settings


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
    """``/requeue/<queue>``: requeue every failed job of a queue, with the JSON serializer."""
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


def create_rq_dashboard(settings: Settings) -> Flask:
    """rq-dashboard's Flask app for ``settings.redis_url``, with the JSON serializer and the requeue
    routes replaced; its URLs are built from the mount point (WSGI ``SCRIPT_NAME``), so it is
    created without a prefix of its own."""
    from rq_dashboard import web
    from rq_dashboard.cli import make_flask_app

    # rq-dashboard keeps its serializer in a module global: one per process, and this process's
    # jobs are all JSON.
    web.config.serializer = JSONSerializer
    app: Flask = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config["RQ_DASHBOARD_POLL_INTERVAL"] = 2500
    web.setup_rq_connection(app)
    # Same endpoints, so the dashboard's own buttons and links reach the replacements.
    app.view_functions["rq_dashboard.requeue_job_view"] = requeue_job_view
    app.view_functions["rq_dashboard.requeue_all"] = requeue_all
    app.view_functions["rq_dashboard.job_info"] = web.jsonify(job_info)
    return app
