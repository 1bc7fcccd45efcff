"""The Redis side of webhook ingress: each flow's token bucket and the memory of signed deliveries
already received. Both are shared by every web process, so limits hold across replicas."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from uuid import UUID

from redis import Redis

from flowjobs.keys import Keys
from flowjobs.store.scripts import script_source


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``burst`` deliveries at once, then ``per_second`` on average (0: no limit)."""

    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        """Whether deliveries are limited at all."""
        return self.per_second > 0


class WebhookGuards:
    """Rate limit and replay memory over one Redis, under one key prefix."""

    def __init__(self, redis: Redis, keys: Keys, *, rate: RateLimit, replay_window_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.rate = rate
        self.replay_window_seconds = replay_window_seconds
        self._take = redis.register_script(script_source("webhook_rate"))

    def take_token(self, flow_id: UUID) -> int | None:
        """Take one token from the flow's bucket: None when taken, else the whole seconds until one
        is back (``Retry-After``; at least 1)."""
        if not self.rate.enabled:
            return None
        args = {
            "bucket_key": self.keys.webhook_bucket(flow_id),
            "rate": self.rate.per_second,
            "burst": self.rate.burst,
        }
        allowed, wait_ms = self._take(args=[json.dumps(args)])
        return None if allowed else max(1, math.ceil(int(wait_ms) / 1000))

    def first_delivery(self, flow_id: UUID, trigger_key: str, nonce: str) -> bool:
        """Remember a signed delivery; False when it was already received within the window.

        Kept for twice the window: a timestamp may be up to a window ahead of this clock and still
        accepted, so the delivery must be remembered until its timestamp is a window old.
        """
        key = self.keys.webhook_seen(flow_id, trigger_key, nonce)
        return bool(self.redis.set(key, b"1", nx=True, ex=2 * self.replay_window_seconds))
