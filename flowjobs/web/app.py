"""The web process's ASGI app: the HTTP API, webhooks, the flows UI and rq-dashboard.

Layout (one process, ``flowjobs web``):

- ``/flows/api/...``: the HTTP API (``flowjobs.web.api.router``), OpenAPI at ``/flows/api/openapi.json``
  (no docs page);
- ``/flows/api/webhook/...``: webhook triggers (``flowjobs.web.webhooks.router``);
- ``/flows/...``: the flows UI (``flowjobs.web.ui.router``), its files under ``/flows/static``
  (``flowjobs/web/static``);
- ``/rq/...``: rq-dashboard (``flowjobs.web.rq_dashboard``).

The webhook and UI modules are optional parts: each is included when it is installed (it exposes
``router: APIRouter``), so the API runs without them. Auth (``flowjobs.web.auth``) wraps it all,
and the front door (``flowjobs.web.guard``: hosts, cross-site requests, security headers) wraps that.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from a2wsgi import WSGIMiddleware
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from flowjobs.client import FlowClient
from flowjobs.factory import close_async
from flowjobs.settings import Settings, load_settings
from flowjobs.store.async_runs import AsyncRunWrites
from flowjobs.web import API_PREFIX, RQ_PREFIX, UI_PREFIX
from flowjobs.web.auth import install_auth
from flowjobs.web.guard import install_guard
from flowjobs.web.rq_dashboard import create_rq_dashboard

log = structlog.get_logger("flowjobs.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The flows UI's static files, served at ``/flows/static``."""


def _optional_router(module: str) -> APIRouter | None:
    """``router`` of an optional part of the web process, or None when that module is absent."""
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:  # the module exists but one of its imports is missing: a real bug
            raise
        log.info("web.part_absent", module=module)
        return None
    router: APIRouter = found.router
    return router


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
    from flowjobs.web.api import install_error_handlers
    from flowjobs.web.api import router as api_router

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
    install_error_handlers(app)
    # Webhooks first: routes are matched in order, and a delivery should not be tried against
    # every API route before its own (the API's routes cannot match a webhook path anyway).
    webhooks = _optional_router("flowjobs.web.webhooks")
    if webhooks is not None:
        app.include_router(webhooks)
    app.include_router(api_router, prefix=API_PREFIX)
    ui = _optional_router("flowjobs.web.ui")
    if ui is not None:
        if STATIC_DIR.is_dir():
            app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="flows-static")
        app.include_router(ui)
    app.mount(RQ_PREFIX, WSGIMiddleware(create_rq_dashboard(settings, client.redis)), name="rq-dashboard")  # type: ignore[arg-type]
    install_auth(app, settings)
    install_guard(app, settings)  # after auth: outermost, so its refusals and headers cover auth's 401
    return app
