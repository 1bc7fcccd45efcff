"""Where the web process serves what: paths shared by the web app, the jobs' meta and the CLI.

Kept free of web imports, so workers (which write ``run_url`` into every job's meta) need none.
"""

from __future__ import annotations

from uuid import UUID

API_PREFIX = "/flows/api"
"""The HTTP API (and the webhook route)."""
UI_PREFIX = "/flows"
"""The flows UI."""
RQ_PREFIX = "/rq"
"""rq-dashboard, mounted by the web process."""
METRICS_PATH = "/metrics"
"""Prometheus metrics of the web process (``flowjobs.metrics``)."""


def run_ui_path(run_id: UUID | str) -> str:
    """Path of a run's page in the flows UI (relative to the web process's base URL)."""
    return f"{UI_PREFIX}/runs/{run_id}"


def rq_job_path(job_id: str) -> str:
    """Path of a job's page in the web process's own rq-dashboard (its first Redis)."""
    return f"{RQ_PREFIX}/0/view/job/{job_id}"
