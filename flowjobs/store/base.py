"""What every noun of the store shares: the Redis, its key names, the registered scripts."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flowjobs.core.clock import epoch_ms, iso, utcnow
from flowjobs.core.keys import Keys
from flowjobs.core.statuses import RunStatus
from flowjobs.store.codec import text
from flowjobs.store.replicas import ReplicaWait
from flowjobs.store.scripts import Scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

#: Errors that mean Redis is unreachable: not a bad run or a bad record, so a duty's pass stops on
#: them (and backs off) instead of marking anything failed.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)

#: How long a process's read of the listeners marker (``ListenerView``) holds, from when it was
#: sent: a worker reads it at most once a second, before it takes a job; a view older than this
#: (a long job, an idle worker) is no view, and events are published.
LISTENER_VIEW_SECONDS = 1.5
#: How long after the marker is first set a new live view waits before it relies on events
#: (``ListenersMarker``): a view's life, and half a second for a script that runs a little after its
#: arguments were built (a garbage-collector pause, a slow network).
LISTENERS_SETTLE_SECONDS = 2.0
#: How long the listeners marker (``Keys.listeners``) outlives its last refresh.
LISTENERS_TTL_SECONDS = 30

#: Runs whose flow a store remembers (``StoreContext.run_flow``); past it, it starts afresh.
_RUN_FLOWS_HELD = 4096


@dataclass(frozen=True)
class RunFlow:
    """A run's flow, as the scripts that move its status or count its metrics need it."""

    flow_id: str
    label: str
    """The metric label: the flow's name, else its id."""

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> RunFlow:
        """From a run hash's fields (``flow_id``, ``flow_name``)."""
        flow_id = fields.get("flow_id", "")
        return cls(flow_id, fields.get("flow_name") or flow_id)


class ListenerView:
    """This process's latest read of the listeners marker (``Keys.listeners``), which a worker takes
    with its once-a-second suspension check. Scripts publish an event unless a fresh read says
    no live view listens (``quiet``), or the run started while one did (``common.lua``, push_event)."""

    def __init__(self) -> None:
        self._read: tuple[float, bool] | None = None

    def note(self, listening: bool, asked_at: float) -> None:
        """Record a read of the marker: whether it was set, and the ``time.monotonic()`` at which it
        was sent (the server read it after that: the view is trusted from then, never longer)."""
        self._read = (asked_at, listening)

    def quiet(self) -> bool:
        """Whether a read of at most ``LISTENER_VIEW_SECONDS`` ago found no one listening."""
        read = self._read
        return read is not None and not read[1] and time.monotonic() - read[0] <= LISTENER_VIEW_SECONDS


#: ``ListenersMarker``'s script: the marker set to the server's time (ms) unless it is set, its TTL
#: (ARGV[1], seconds) extended, and {when it was first set, now}, both in the server's clock.
_MARK_LISTENING = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local since = redis.call('GET', KEYS[1])
if since then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
else
  since = now
  redis.call('SET', KEYS[1], now, 'EX', ARGV[1])
end
return {tonumber(since) or 0, now}
"""
#: A marker value below this is no time (``1``, as processes before its value was a time set it).
_EPOCH_MS_2001 = 1_000_000_000_000


@dataclass(frozen=True)
class ListenersMarker:
    """The key a live view sets to say it follows run events (``Keys.listeners``). Its value is
    when it was first set (the server's clock, ms), kept while views extend it, so a new view
    learns when every worker publishes: ``LISTENERS_SETTLE_SECONDS`` after that (``ListenerView``).
    Set, read and extended in one script (``mark``), whose reply ``settles_in`` reads."""

    key: str
    ttl_seconds: int = LISTENERS_TTL_SECONDS

    def mark(self, redis: Redis | AsyncRedis) -> Any:
        """Set or extend the marker: the script's reply, or with an asyncio client an awaitable of it."""
        return redis.register_script(_MARK_LISTENING)(keys=[self.key], args=[self.ttl_seconds])

    @staticmethod
    def settles_in(reply: Sequence[Any]) -> float:
        """Seconds, from the script's reply, until every worker publishes every run's events: until
        no worker can still trust a read of the marker made before it was set (0 once none can)."""
        since_ms, now_ms = int(reply[0]), int(reply[1])
        if since_ms < _EPOCH_MS_2001:
            return LISTENERS_SETTLE_SECONDS
        left = (since_ms - now_ms) / 1000 + LISTENERS_SETTLE_SECONDS
        return min(max(left, 0.0), LISTENERS_SETTLE_SECONDS)


class StoreContext:
    """What the store's nouns share, owned once: the Redis, the key names, the registered scripts,
    the retention and event bounds, and the arguments every run-writing script takes."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys | None = None,
        *,
        retention_seconds: int,
        max_run_events: int,
        replica_wait: ReplicaWait | None = None,
    ) -> None:
        self.redis = redis
        self.replica_wait = replica_wait
        self.keys = keys or Keys()
        self.retention_seconds = retention_seconds
        self.max_run_events = max_run_events
        self.scripts = Scripts(redis)
        self._status_keys = {status.value: self.keys.status_runs(status.value) for status in RunStatus}
        self._run_flows: dict[str, RunFlow] = {}
        self._flow_status_keys_held: dict[str, dict[str, str]] = {}
        #: Whether live views listen, as this process last read it (a worker reads it each second).
        self.listeners = ListenerView()

    def run_args(self, run_id: UUID | str) -> dict[str, Any]:
        """The JSON fields of every script that writes a run (``common.lua``'s helpers use them)."""
        now = utcnow()
        args: dict[str, Any] = {
            "run_id": str(run_id),
            "run_key": self.keys.run(run_id),
            "events_key": self.keys.events(run_id),
            "steps_key": self.keys.run_steps(run_id),
            "events_channel": self.keys.events_channel(),
            "deadlines_key": self.keys.deadlines(),
            "now": iso(now),
            "now_ms": epoch_ms(now),
            "max_events": self.max_run_events,
            "metrics_key": self.keys.metrics(),
        }
        if self.listeners.quiet():
            args["quiet"] = True
        return args

    def flow_args(self, run_id: UUID | str, *, moves_status: bool = True) -> dict[str, Any]:
        """``run_args`` and the run's flow fields, for scripts that count its metrics
        (``flow_label``) and, unless ``moves_status`` is false, may move the run's status: the
        per-status indexes ``status_keys`` and ``flow_status_keys`` (its flow's). Each is a key
        the script declares, so a script that never moves the status goes without them."""
        flow = self.run_flow(run_id)
        args = self.run_args(run_id)
        args["flow_label"] = flow.label
        if moves_status:
            args["status_keys"] = self._status_keys
            args["flow_status_keys"] = self._flow_status_keys(flow.flow_id)
        return args

    def _flow_status_keys(self, flow_id: str) -> dict[str, str]:
        """{RunStatus: the flow's index key}, built once per flow."""
        held = self._flow_status_keys_held.get(flow_id)
        if held is None:
            if len(self._flow_status_keys_held) >= _RUN_FLOWS_HELD:
                self._flow_status_keys_held.clear()
            held = self._flow_status_keys_held[flow_id] = {
                status.value: self.keys.flow_status_runs(flow_id, status.value) for status in RunStatus
            }
        return held

    def run_flow(self, run_id: UUID | str) -> RunFlow:
        """The run's flow: remembered from a claim or an earlier call (a run's flow never changes),
        else read from its hash (empty for a missing run, and not remembered)."""
        held = self._run_flows.get(str(run_id))
        if held is not None:
            return held
        flow_id, name = (
            text(value) if value is not None else ""
            for value in self.redis.hmget(self.keys.run(run_id), ["flow_id", "flow_name"])
        )
        flow = RunFlow.of({"flow_id": flow_id, "flow_name": name})
        if flow_id:
            self.note_run_flow(run_id, {"flow_id": flow_id, "flow_name": name})
        return flow

    def note_run_flow(self, run_id: UUID | str, fields: Mapping[str, str]) -> None:
        """Remember the run's flow from its hash's fields (a claim's reply carries them)."""
        if "flow_id" not in fields:
            return
        if len(self._run_flows) >= _RUN_FLOWS_HELD:
            self._run_flows.clear()
        self._run_flows[str(run_id)] = RunFlow.of(fields)


class StorePart:
    """One noun of the store, built over the shared ``StoreContext`` (its Redis, keys and scripts
    held directly, so a step's calls chase no extra attribute)."""

    def __init__(self, context: StoreContext) -> None:
        self.context = context
        self.redis = context.redis
        self.keys = context.keys
        self.scripts = context.scripts
