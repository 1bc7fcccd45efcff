"""Every Redis key flowjobs uses, and only here; each function says the key's type and content."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``FLOWJOBS_KEY_PREFIX``, default ``flowjobs:``)."""

    prefix: str = "flowjobs:"

    def run(self, run_id: UUID | str) -> str:
        """Hash: the run record's fields (``FlowRunRecord`` plus ``started_score``)."""
        return f"{self.prefix}run:{run_id}"

    def run_steps(self, run_id: UUID | str) -> str:
        """Hash: every step record of the run, with its latest attempt. ``<step key>`` → the step's
        current status, for every step that has a record (the planner reads these alone), and
        ``<step key>|<code>`` → each other field of its record (``FlowStepRecord`` without
        ``run_id`` and ``step_key``; plus claim fields ``lease_until_ms``, ``worker``; codes:
        ``flowjobs/store/codec.py``, ``STEP_FIELD_CODES``). One key per run instead of one per step
        (each key costs Redis ~100 B of its own)."""
        return f"{self.prefix}run:{run_id}:steps"

    def legacy_step(self, run_id: UUID | str, step_key: str) -> str:
        """Hash: one step record, as versions before the one-hash layout (``run_steps``) stored it
        (long field names); only read (run detail) and deleted (retention), never written."""
        return f"{self.prefix}run:{run_id}:step:{step_key}"

    def attempts(self, run_id: UUID | str) -> str:
        """Hash: ``<step_key>#<attempt>`` → JSON of an attempt that is not its step's latest (status,
        input, output, error, job id, start and end; written when the step moves on to its next
        attempt). The latest attempt lives in the step record (``run_steps``); the read model joins both."""
        return f"{self.prefix}run:{run_id}:attempts"

    def events(self, run_id: UUID | str) -> str:
        """List: the run's last ``FLOWJOBS_MAX_RUN_EVENTS`` events (``RunEvent`` without the run id),
        oldest first, each ``|<epoch ms>|<type>|<step key>`` then ``|<message>`` if it has one (the
        message last, so it may hold ``|``; ``%`` and ``|`` of the step key percent-encoded; no step
        key: empty). Sequences count the whole history: an entry's is its position after the run
        hash's ``events_trimmed`` (entries trimmed from the head so far); older entries held theirs
        in front (``<sequence>|...``), and the entries after them count on from it."""
        return f"{self.prefix}run:{run_id}:events"

    def loops(self, run_id: UUID | str) -> str:
        """Hash: ForEach step key → number of iterations, set when the loop is expanded."""
        return f"{self.prefix}run:{run_id}:loops"

    def loop_items(self, run_id: UUID | str) -> str:
        """Hash: ``<loop>.<index>`` → JSON of that iteration's item."""
        return f"{self.prefix}run:{run_id}:loop-items"

    def signals(self, run_id: UUID | str) -> str:
        """Hash: signal name → JSON signal record (waiter, expiry, delivery and payload)."""
        return f"{self.prefix}run:{run_id}:signals"

    def run_owned(self, run_id: UUID | str) -> list[str]:
        """Every key only this run uses: retention deletes them together. A new per-run key
        belongs here too."""
        return [
            self.run(run_id),
            self.run_steps(run_id),
            self.attempts(run_id),
            self.events(run_id),
            self.loops(run_id),
            self.loop_items(run_id),
            self.signals(run_id),
            self.derived_runs(run_id),
        ]

    def events_channel(self) -> str:
        """Pub/sub channel: ``<run_id>|<event>`` for every event any run records (``events`` has the
        event's encoding), for live views; nothing is kept. Events are published only while
        ``listeners`` is set (or for a run started while it was)."""
        return f"{self.prefix}events"

    def listeners(self) -> str:
        """String with a short TTL: set while a live view follows ``events_channel`` (the flows UI's
        event stream refreshes it), so scripts publish events only when someone listens."""
        return f"{self.prefix}listeners"

    def metrics(self) -> str:
        """Hash of the cluster-wide metric counters (``flowjobs/core/metrics.py``)."""
        return f"{self.prefix}metrics"

    def deadlines(self) -> str:
        """Sorted set: ids of runs with a deadline, scored by it (epoch ms); the sweeper's input."""
        return f"{self.prefix}deadlines"

    def runs(self) -> str:
        """Sorted set: every run id, scored by ``started_at`` (epoch seconds)."""
        return f"{self.prefix}runs"

    def derived_runs(self, run_id: UUID | str) -> str:
        """Sorted set: ids of the runs re-run from this run (``source_run_id``), scored by ``started_at``."""
        return f"{self.prefix}run:{run_id}:derived"

    def flow_runs(self, flow_id: UUID | str) -> str:
        """Sorted set: run ids of one flow, scored by ``started_at``."""
        return f"{self.prefix}flow:{flow_id}:runs"

    def status_runs(self, status: str) -> str:
        """Sorted set: run ids currently in one run status, scored by ``started_at``."""
        return f"{self.prefix}status:{status}:runs"

    def flow_status_runs(self, flow_id: UUID | str, status: str) -> str:
        """Sorted set: run ids of one flow currently in one run status, scored by ``started_at``
        (``runs list --flow X --status Y`` reads it instead of filtering a whole status index)."""
        return f"{self.prefix}flow:{flow_id}:status:{status}"

    def jobs(self) -> str:
        """Hash: RQ job id → run id, for every job flowjobs enqueued (the reverse index)."""
        return f"{self.prefix}jobs"

    def leases(self) -> str:
        """Sorted set: ``<run_id>:<step_key>`` of claimed steps, scored by lease expiry (epoch ms)."""
        return f"{self.prefix}leases"

    def pending(self) -> str:
        """Sorted set: ``<run_id>:<step_key>`` of dispatched, unclaimed steps, scored by due time (ms)."""
        return f"{self.prefix}pending"

    def duty_lock(self, duty: str) -> str:
        """String with a TTL: name of the process that runs the duty this period (SET NX PX)."""
        return f"{self.prefix}duty:{duty}"

    def schedule(self, schedule_id: str) -> str:
        """Hash: one schedule's state (``flowjobs.schedules.ScheduleState``: a flow's Cron trigger
        ``flow-<flowId>-<triggerKey>`` or an application's recurring job; pause, cron override,
        next and last fire)."""
        return f"{self.prefix}schedule:{schedule_id}"

    def schedules(self) -> str:
        """Set: id of every schedule (paused ones included)."""
        return f"{self.prefix}schedules"

    def schedules_due(self) -> str:
        """Sorted set: ids of the schedules that fire (not paused), scored by next fire time (epoch ms)."""
        return f"{self.prefix}schedules:due"

    def schedule_tick(self, schedule_id: str, tick_ms: int) -> str:
        """String with a TTL: id of the job a recurring job's tick (schedule id + scheduled instant,
        epoch ms) enqueued; SET only once, so a tick fires once however many processes fire it."""
        return f"{self.prefix}schedule:{schedule_id}:tick:{tick_ms}"

    def idempotency(self, flow_id: UUID | str, trigger_key: str, key: str) -> str:
        """String: run id of the run triggered with that idempotency key (per flow and trigger key).
        The key is named by its SHA-256 (hex), whatever its length and characters: a caller's text
        never becomes part of a key name (the run hash keeps the key itself)."""
        digest = hashlib.sha256(key.encode(errors="surrogatepass")).hexdigest()
        return f"{self.prefix}idem:{flow_id}:{trigger_key}:{digest}"

    def webhook_bucket(self, flow_id: UUID | str) -> str:
        """Hash with a TTL: one flow's webhook token bucket (``tokens``: a float, ``at_ms``: Redis
        time of the last refill, epoch ms); gone once it would be full again."""
        return f"{self.prefix}webhook:{flow_id}:bucket"

    def webhook_seen(self, flow_id: UUID | str, trigger_key: str, nonce: str) -> str:
        """String with a TTL (twice the replay window): ``1``, for a signed delivery already received
        by that Webhook trigger; ``nonce`` is the SHA-256 (hex) of the bytes the sender signed."""
        return f"{self.prefix}webhook:{flow_id}:{trigger_key}:seen:{nonce}"

    def flow(self, flow_id: UUID | str) -> str:
        """Hash: flow definition record (``id, name, version, manifest_hash, is_enabled, …``)."""
        return f"{self.prefix}flow:{flow_id}"

    def flows(self) -> str:
        """Set: ids of every flow ever registered against this Redis."""
        return f"{self.prefix}flows"

    def manifest(self, manifest_hash: str) -> str:
        """String: a manifest's canonical JSON, under its content hash (pinned for runs)."""
        return f"{self.prefix}manifest:{manifest_hash}"


def step_member(run_id: UUID | str, step_key: str) -> str:
    """Member naming one step in the lease and pending sets; a run id never contains ``:``."""
    return f"{run_id}:{step_key}"


def split_step_member(member: str) -> tuple[str, str]:
    """Inverse of ``step_member``."""
    run_id, _, step_key = member.partition(":")
    return run_id, step_key
