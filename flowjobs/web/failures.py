"""How every part of the web process (API, flows UI, rq-dashboard) tells an outage from a fault.

Redis that cannot be reached is an outage: 503, and the answer heals when Redis is back. Any other
error, from Redis (WRONGTYPE, a script error) or not, is a fault to look into: 500, its traceback
logged under an error id that the answer carries, so a person can find it without the answer
showing anything of the server's internals.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger("flowjobs.web")

REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
"""Errors that mean Redis cannot be reached (an outage: 503)."""


def log_fault(event: str, error: BaseException, **context: Any) -> str:
    """Log ``error`` with its traceback as ``event`` under a new error id, and return the id."""
    error_id = uuid4().hex
    log.error(event, error_id=error_id, exc_info=error, **context)
    return error_id
