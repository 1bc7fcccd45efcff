"""The composition root: every entry point builds its collaborators from ``Settings`` here.

The worker's engine, the client of the command line, the web process and the schedules duty, the
Hangfire runner, the webhook receiver and ``FlowTestHost`` all come from these functions, so they
read the same settings the same way (arq's ``create_worker``/``create_pool`` are the model). The
defaults live in ``Settings`` only; the constructors below take every value explicitly.
"""

from __future__ import annotations

import importlib
from typing import Any

import structlog
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel

from flowjobs.client import FlowClient
from flowjobs.core.errors import HandlerImportError
from flowjobs.core.handlers import HandlerRegistry, default_handlers
from flowjobs.core.keys import Keys
from flowjobs.core.registry import FlowRegistry
from flowjobs.engine import Engine
from flowjobs.runtime.base import JobRunner
from flowjobs.runtime.rq import RQJobRunner
from flowjobs.schedules.firing import ScheduleFirer
from flowjobs.settings import Settings, load_settings
from flowjobs.store.async_runs import AsyncRunWrites
from flowjobs.store.base import StoreContext
from flowjobs.store.replicas import ReplicaWait
from flowjobs.store.run_store import RunStore
from flowjobs.store.schedules import ScheduleStore
from flowjobs.webhooks.guards import RateLimit, WebhookGuards
from flowjobs.webhooks.receiver import WebhookReceiver

log = structlog.get_logger("flowjobs.factory")


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


#: How long a Sentinel may take to connect or answer before the next one is asked for the primary.
SENTINEL_SOCKET_SECONDS = 1.0


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """The options of a connection to a Sentinel: short timeouts (the next one is asked), and the
    Sentinels' own credentials and TLS, which are not the primary's."""
    options: dict[str, Any] = {
        "socket_timeout": SENTINEL_SOCKET_SECONDS,
        "socket_connect_timeout": SENTINEL_SOCKET_SECONDS,
    }
    if settings.redis_sentinel_password is not None:
        options["username"] = settings.redis_sentinel_username
        options["password"] = settings.redis_sentinel_password.get_secret_value()
    if settings.redis_sentinel_tls:
        options["ssl"] = True
        if settings.redis_sentinel_tls_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.redis_sentinel_tls_ca_file)
    return options


def _primary_options(settings: Settings) -> dict[str, Any]:
    """The options of a connection to the Sentinels' primary: those of ``REDIS_URL`` (database,
    user name, password, query options, TLS for ``rediss://``) less its address."""
    options: dict[str, Any] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    for address in ("host", "port", "path"):
        options.pop(address, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True  # the Sentinel pool picks its own TLS connection class from it
    return options


def connect(settings: Settings) -> Redis:
    """A client of the settings' Redis: ``REDIS_URL``, or with ``FLOWJOBS_REDIS_SENTINELS`` the
    primary the Sentinels name, asked again whenever a connection to it fails (a failover is
    followed without a restart: the commands in flight at the switch fail with ``ConnectionError``).
    Every sync client of every process comes from here."""
    if not settings.redis_sentinels:
        return Redis.from_url(settings.redis_url)
    assert settings.redis_sentinel_master is not None  # the settings require both together
    sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings))
    client: Redis = sentinel.master_for(settings.redis_sentinel_master, **_primary_options(settings))
    return client


def connect_async(settings: Settings, *, connect_timeout: float | None = None) -> AsyncRedis:
    """``connect``'s asyncio twin (the web process's event loop), ``connect_timeout`` seconds at
    most to open a connection when given."""
    options: dict[str, Any] = {} if connect_timeout is None else {"socket_connect_timeout": connect_timeout}
    if not settings.redis_sentinels:
        return AsyncRedis.from_url(settings.redis_url, **options)
    assert settings.redis_sentinel_master is not None  # the settings require both together
    sentinel = AsyncSentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings))
    client: AsyncRedis = sentinel.master_for(
        settings.redis_sentinel_master, **{**_primary_options(settings), **options}
    )
    return client


async def close_async(client: AsyncRedis) -> None:
    """Close a client of ``connect_async``: its connections and, through Sentinel, the ones it
    opened to the Sentinels (they would otherwise stay open until garbage collection)."""
    await client.aclose()
    pool = client.connection_pool
    if isinstance(pool, AsyncSentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def flows_from_settings(settings: Settings) -> FlowRegistry:
    """The flows of ``FLOWJOBS_FLOWS_DIR`` (none without the folder). A bad file does not stop the
    others: it is kept, with its problems, in ``flows.invalid_files`` (and logged as a warning)."""
    flows = FlowRegistry()
    if settings.flows_dir.is_dir():
        flows.load_dir(settings.flows_dir, strict=False)
        for path, problems in flows.invalid_files.items():
            log.warning("flows.invalid_file", file=str(path), problems=problems)
    return flows


def store_from_settings(settings: Settings, redis: Redis) -> RunStore:
    """The run store under ``FLOWJOBS_KEY_PREFIX``, with the retention and event bounds."""
    return RunStore(
        StoreContext(
            redis,
            Keys(settings.key_prefix),
            retention_seconds=settings.retention_seconds,
            max_run_events=settings.max_run_events,
        )
    )


def runner_from_settings(settings: Settings, redis: Redis) -> RQJobRunner:
    """The RQ runner of ``FLOWJOBS_QUEUE``: its default job timeout, how long it keeps finished
    jobs, and where its recurring jobs live."""
    return RQJobRunner(
        redis,
        settings.queue,
        keep_seconds=settings.rq_job_ttl_seconds,
        default_timeout_seconds=settings.job_timeout_seconds,
        schedules=ScheduleStore(redis, Keys(settings.key_prefix)),
    )


def engine_from_settings(
    settings: Settings | None = None,
    *,
    redis: Redis | None = None,
    handlers: HandlerRegistry | None = None,
    runner: JobRunner | None = None,
    worker_name: str | None = None,
) -> Engine:
    """An engine for these settings (on RQ unless given a runner), with the handler modules
    imported unless given its handlers."""
    settings = settings or load_settings()
    if handlers is None:
        import_handler_modules(settings)
        handlers = default_handlers
    redis = redis or connect(settings)
    return Engine(
        store_from_settings(settings, redis),
        runner or runner_from_settings(settings, redis),
        handlers,
        lease_seconds=settings.claim_lease_seconds,
        worker_name=worker_name,
        max_data_depth=settings.max_data_depth,
        max_data_bytes=settings.max_data_bytes,
    )


def client_from_settings(
    settings: Settings | None = None,
    flows: FlowRegistry | None = None,
    *,
    redis: Redis | None = None,
    runner: JobRunner | None = None,
) -> FlowClient:
    """A client for these settings (on RQ unless given a runner); flows from
    ``FLOWJOBS_FLOWS_DIR`` unless given."""
    settings = settings or load_settings()
    redis = redis or connect(settings)
    return FlowClient(
        redis,
        flows if flows is not None else flows_from_settings(settings),
        settings.queue,
        key_prefix=settings.key_prefix,
        runner=runner or runner_from_settings(settings, redis),
        retention_seconds=settings.retention_seconds,
        max_run_events=settings.max_run_events,
        run_timeout_seconds=settings.run_timeout_seconds,
        max_data_depth=settings.max_data_depth,
        max_data_bytes=settings.max_data_bytes,
        rq_job_ttl_seconds=settings.rq_job_ttl_seconds,
        header_limits=settings.trigger_header_limits,
        job_timeout_seconds=settings.job_timeout_seconds,
        replica_wait=replica_wait_from_settings(settings),
    )


def replica_wait_from_settings(settings: Settings) -> ReplicaWait | None:
    """``FLOWJOBS_REDIS_WAIT_REPLICAS`` and ``FLOWJOBS_REDIS_WAIT_TIMEOUT_MS`` (None when off)."""
    if not settings.redis_wait_replicas:
        return None
    return ReplicaWait(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)


def async_runs_from_settings(settings: Settings) -> AsyncRunWrites:
    """The web process's asyncio writer of new runs: ``connect_async`` and the replica wait."""
    return AsyncRunWrites(connect_async(settings), replica_wait_from_settings(settings))


def firer_from_settings(settings: Settings) -> ScheduleFirer:
    """The schedules duty's firer: flows from ``FLOWJOBS_FLOWS_DIR`` (synced on its first pass and
    whenever a file changes), ``FLOWJOBS_SCHEDULE_GRACE_SECONDS``."""
    return ScheduleFirer(
        client_from_settings(settings, FlowRegistry()),
        grace_seconds=settings.schedule_grace_seconds,
        flows_dir=settings.flows_dir,
    )


def receiver_from_settings(client: FlowClient, settings: Settings, runs: AsyncRunWrites) -> WebhookReceiver:
    """A webhook receiver with the settings' limits, writing runs through ``runs`` (an asyncio
    client of the client's Redis)."""
    guards = WebhookGuards(
        Keys(settings.key_prefix),
        RateLimit(settings.webhook_rate_per_second, settings.webhook_rate_burst),
        settings.webhook_replay_window_seconds,
    )
    return WebhookReceiver(client, guards, runs, max_body_bytes=settings.webhook_max_body_bytes)
