"""The Redis side of webhook ingress: each flow's token bucket and the memory of signed deliveries
already received, as the ``Admission`` of a delivery's run. Both live in Redis and are checked by
the script that writes the run, so limits hold across web processes and a refused delivery writes
nothing."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from flowjobs.core.keys import Keys
from flowjobs.core.metrics import metric_field
from flowjobs.core.webhooks.rejections import Reason
from flowjobs.store.transitions import Admission, TokenBucket


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``burst`` deliveries at once, then ``per_second`` on average (0: no limit)."""

    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        """Whether deliveries are limited at all."""
        return self.per_second > 0


@dataclass(frozen=True)
class WebhookGuards:
    """Rate limit and replay memory under one key prefix."""

    keys: Keys
    rate: RateLimit
    replay_window_seconds: int

    def admission(self, flow_id: UUID, trigger_key: str, nonce: str | None, flow_name: str) -> Admission:
        """What a delivery's run must pass: a token from the flow's bucket (when limited), and for a
        signed delivery (``nonce``: the SHA-256, hex, of the bytes signed) not having been received
        before. Remembered for twice the window: a timestamp may be up to a window ahead of this
        clock and still accepted, so the delivery must be kept until its timestamp is a window old."""
        bucket = (
            TokenBucket(self.keys.webhook_bucket(flow_id), self.rate.per_second, self.rate.burst)
            if self.rate.enabled
            else None
        )
        return Admission(
            bucket=bucket,
            once_key=self.keys.webhook_seen(flow_id, trigger_key, nonce) if nonce is not None else None,
            once_seconds=2 * self.replay_window_seconds,
            counted={
                kind: metric_field("webhook_deliveries", flow_name, outcome)
                for kind, outcome in (
                    ("created", "accepted"),
                    ("existing", "duplicate"),
                    ("disabled", str(Reason.flow_disabled.status)),
                    ("rate_limited", str(Reason.rate_limited.status)),
                    ("replayed", str(Reason.replayed.status)),
                )
            },
        )
