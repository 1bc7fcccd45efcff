"""flowjobs' web process: the HTTP API, the flows UI, webhooks and rq-dashboard in one ASGI app.

``flowjobs.web.app.create_app`` builds it. Routers of this package reach the app's client and
settings through the dependencies below (one ``FlowClient`` per process, built by the factory),
so every part of the web process reads and writes through the same Python API as the CLI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from flowjobs.client import FlowClient
from flowjobs.settings import Settings
from flowjobs.urls import API_PREFIX, RQ_PREFIX, UI_PREFIX, run_ui_path

__all__ = [
    "API_PREFIX",
    "RQ_PREFIX",
    "UI_PREFIX",
    "AppSettings",
    "Client",
    "get_client",
    "get_settings",
    "run_ui_path",
]


# The dependencies are ``async def`` because they do no I/O: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hand-off per dependency per request.


async def get_client(request: Request) -> FlowClient:
    """FastAPI dependency: the app's ``FlowClient``."""
    client: FlowClient = request.app.state.client
    return client


async def get_settings(request: Request) -> Settings:
    """FastAPI dependency: the app's ``Settings``."""
    settings: Settings = request.app.state.settings
    return settings


Client = Annotated[FlowClient, Depends(get_client)]
"""Route parameter type: ``def route(client: Client)``."""
AppSettings = Annotated[Settings, Depends(get_settings)]
"""Route parameter type: ``def route(settings: AppSettings)``."""
