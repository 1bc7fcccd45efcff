"""Worker and scheduler processes: an RQ worker with flowjobs' engine, and the recovery loop."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog
from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from flowjobs.engine import Engine
from flowjobs.factory import engine_from_settings
from flowjobs.handlers import HandlerRegistry
from flowjobs.jobs import install_engine
from flowjobs.recovery import recover
from flowjobs.settings import Settings

log = structlog.get_logger("flowjobs.worker")


def build_worker(
    redis: Redis, queue_name: str, *, simple: bool = False, name: str | None = None
) -> BaseWorker:
    """An RQ worker on flowjobs' queue with the JSON serializer (forking unless ``simple``)."""
    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    worker_class: type[BaseWorker] = SimpleWorker if simple else Worker
    return worker_class([queue], connection=redis, serializer=JSONSerializer, name=name)


def run_worker(
    settings: Settings,
    *,
    simple: bool = False,
    burst: bool = False,
    name: str | None = None,
    handlers: HandlerRegistry | None = None,
) -> bool:
    """Run an RQ worker (with RQ's scheduler for delayed attempts) until stopped, or drained with ``burst``.

    Before it takes jobs it runs one recovery pass, so work lost by a dead worker is re-dispatched
    as soon as any worker starts.
    """
    engine = engine_from_settings(settings, handlers=handlers)
    install_engine(engine)
    fixed = recover(engine)
    log.info("worker.starting", queue=settings.queue, simple=simple, burst=burst, recovered=fixed)
    worker = build_worker(engine.store.redis, settings.queue, simple=simple, name=name)
    return bool(worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper()))


def run_scheduler(settings: Settings, *, once: bool = False, engine: Engine | None = None) -> None:
    """Recovery loop: every ``recovery_interval_seconds``, re-dispatch lost steps and close finished runs."""
    engine = engine or engine_from_settings(settings, handlers=HandlerRegistry())
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if not once:
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    log.info("scheduler.starting", interval_seconds=settings.recovery_interval_seconds)
    while True:
        fixed = recover(engine)
        if fixed:
            log.info("scheduler.recovered", fixed=fixed)
        if once or stop.wait(settings.recovery_interval_seconds):
            return
