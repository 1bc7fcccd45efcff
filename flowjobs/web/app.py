"""The web process's ASGI app: the HTTP API, webhooks, the flows UI and rq-dashboard.

Layout (one process, ``flowjobs web``):

- ``/flows/api/...``: the HTTP API (``flowjobs.web.api.router``), OpenAPI at ``/flows/api/openapi.json``
  (no docs page);
- ``/flows/api/webhook/...``: webhook triggers (``flowjobs.web.webhook_routes.router``);
- ``/flows/...``: the flows UI (``flowjobs.web.ui.router``), its files under ``/flows/static``
  (``flowjobs/web/static``);
- ``/rq/...``: rq-dashboard (``flowjobs.web.rq_dashboard``);
- ``/metrics``: Prometheus metrics (``flowjobs.metrics``), behind auth unless ``FLOWJOBS_METRICS_OPEN``.

Every router ships in this package and is imported here like any other module. Auth
(``flowjobs.web.auth``) wraps it all, and the front door (``flowjobs.web.guard``: hosts, cross-site
requests, security headers) wraps that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from a2wsgi import WSGIMiddleware
from fastapi import FastAPI, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flowjobs.client import FlowClient
from flowjobs.core.urls import API_PREFIX, METRICS_PATH, RQ_PREFIX, UI_PREFIX
from flowjobs.factory import close_async
from flowjobs.metrics import metrics_registry
from flowjobs.settings import Settings, load_settings
from flowjobs.store.async_runs import AsyncRunWrites
from flowjobs.web import api, ui, webhook_routes
from flowjobs.web.auth import install_auth
from flowjobs.web.guard import install_guard
from flowjobs.web.rq_dashboard import create_rq_dashboard

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The flows UI's static files, served at ``/flows/static``."""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Release what the app opened while serving: the asyncio Redis pool of ``app_runs``."""
    yield
    runs: AsyncRunWrites | None = getattr(app.state, "async_runs", None)
    if runs is not None:
        await close_async(runs.redis)


def create_app(settings: Settings | None = None, client: FlowClient | None = None) -> FastAPI:
    """The web app for ``settings`` (default: loaded from the environment and config file), reading
    and writing through ``client`` (default: one built from the settings, flows from
    ``FLOWJOBS_FLOWS_DIR``)."""
    settings = settings or load_settings()
    client = client or FlowClient.from_settings(settings)
    app = FastAPI(
        lifespan=_lifespan,
        title="flowjobs",
        summary="DAG flows with a full run history on RQ and Redis",
        openapi_url=f"{API_PREFIX}/openapi.json",
        # No docs page: FastAPI's loads Swagger UI from a CDN (no SRI, and the CSP forbids it);
        # the OpenAPI document is enough for any viewer.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.client = client
    api.install_error_handlers(app)
    # Webhooks first: routes are matched in order, and a delivery should not be tried against
    # every API route before its own (the API's routes cannot match a webhook path anyway).
    app.include_router(webhook_routes.router)
    app.include_router(api.router, prefix=API_PREFIX)
    if STATIC_DIR.is_dir():
        app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="flows-static")
    app.include_router(ui.router)
    registry = metrics_registry(client.store.metrics, client.redis, [settings.queue])

    # A plain def: the collector reads Redis synchronously, in FastAPI's thread pool.
    @app.get(METRICS_PATH, include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.mount(RQ_PREFIX, WSGIMiddleware(create_rq_dashboard(settings, client.redis)), name="rq-dashboard")  # type: ignore[arg-type]
    install_auth(app, settings)
    install_guard(app, settings)  # after auth: outermost, so its refusals and headers cover auth's 401
    return app
