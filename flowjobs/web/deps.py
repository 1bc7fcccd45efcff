"""The web process's FastAPI dependencies: the app's ``FlowClient``, ``Settings`` and asyncio run
writer, one each per process (``app.state``, set by ``flowjobs.web.app.create_app``), so every
router reads and writes through the same objects."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import State

from flowjobs.client import FlowClient
from flowjobs.factory import async_runs_from_settings
from flowjobs.settings import Settings
from flowjobs.store.async_runs import AsyncRunWrites

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


def app_runs(state: State) -> AsyncRunWrites:
    """The app's asyncio writer of new runs (``app.state``): one connection pool to the settings'
    Redis, opened on first use on the serving loop and closed when the app shuts down."""
    runs: AsyncRunWrites | None = getattr(state, "async_runs", None)
    if runs is None:
        runs = async_runs_from_settings(state.settings)
        state.async_runs = runs
    return runs


async def get_async_runs(request: Request) -> AsyncRunWrites:
    """FastAPI dependency: ``app_runs`` of the request's app."""
    return app_runs(request.app.state)


Client = Annotated[FlowClient, Depends(get_client)]
"""Route parameter type: ``def route(client: Client)``."""
AppSettings = Annotated[Settings, Depends(get_settings)]
"""Route parameter type: ``def route(settings: AppSettings)``."""
AsyncRuns = Annotated[AsyncRunWrites, Depends(get_async_runs)]
"""Route parameter type: ``async def route(runs: AsyncRuns)`` (``FlowClient.commit_trigger_async``)."""
