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
METRICS_PATH = "/metrics"
"""Prometheus metrics of the web process (``flowjobs.metrics``)."""
"""rq-dashboard, mounted by the web process."""


def run_ui_path(run_id: UUID | str) -> str:
    """Path of a run's page in the flows UI (relative to the web process's base URL)."""
    return f"{UI_PREFIX}/runs/{run_id}"


def web_base_url(rq_dashboard_url: str) -> str | None:
    """The web process's base URL when ``FLOWJOBS_RQ_DASHBOARD_URL`` is its mounted rq-dashboard
    (``<base>/rq/<n>``, the default); None for a standalone rq-dashboard."""
    base, sep, _ = rq_dashboard_url.rstrip("/").rpartition(RQ_PREFIX + "/")
    return base if sep and base.startswith(("http://", "https://")) else None
