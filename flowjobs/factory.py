"""Builds the engine a worker process runs from settings: Redis, store, runner and handler modules."""

from __future__ import annotations

import importlib

from redis import Redis

from flowjobs.engine import Engine
from flowjobs.errors import HandlerImportError
from flowjobs.handlers import HandlerRegistry, default_handlers
from flowjobs.keys import Keys
from flowjobs.runtime.rq import RQJobRunner
from flowjobs.settings import Settings, load_settings
from flowjobs.store.run_store import RunStore


def import_handler_modules(settings: Settings) -> None:
    """Import every module of ``FLOWJOBS_HANDLER_MODULES`` so their ``@handler`` decorators register.

    ``HandlerImportError`` names the module that cannot be imported and why: a missing module, or
    any exception its code raises while importing, or its `sys.exit()` (a worker without its handlers
    must not start).
    """
    for name in settings.handler_module_names:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as error:  # the module's own code can raise anything, or exit
            raise HandlerImportError(name, error) from error


def engine_from_settings(
    settings: Settings | None = None,
    *,
    redis: Redis | None = None,
    handlers: HandlerRegistry | None = None,
) -> Engine:
    """An engine on RQ for these settings, with the handler modules imported."""
    settings = settings or load_settings()
    if handlers is None:
        import_handler_modules(settings)
        handlers = default_handlers
    redis = redis or Redis.from_url(settings.redis_url)
    store = RunStore(
        redis,
        Keys(settings.key_prefix),
        retention_seconds=settings.retention_seconds,
        max_run_events=settings.max_run_events,
    )
    runner = RQJobRunner(
        redis,
        settings.queue,
        keep_seconds=settings.rq_job_ttl_seconds,
        default_timeout_seconds=settings.job_timeout_seconds,
        key_prefix=settings.key_prefix,
    )
    return Engine(
        store,
        runner,
        handlers,
        lease_seconds=settings.claim_lease_seconds,
        max_data_depth=settings.max_data_depth,
        max_data_bytes=settings.max_data_bytes,
    )
