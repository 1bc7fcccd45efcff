"""Redis Sentinel: a failover under running workers and a web process, runs triggered with ``WAIT``.

The test starts its own primary (append-only file), replica and three Sentinels on free ports,
then SIGKILLs the primary while 30 runs are in flight: every process follows the promoted replica
without a restart, every run ends Succeeded there with each step recorded once.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq.utils import utcparse

from flowjobs import RunStatus, StepStatus
from flowjobs.core.clock import utcnow
from flowjobs.core.cron import latest_tick
from flowjobs.core.errors import ReplicasNotAcknowledged
from flowjobs.embedded import server_binary
from flowjobs.factory import client_from_settings, connect, flows_from_settings
from flowjobs.schedules.firing import ScheduleFirer
from tests.conftest import Space, free_port, wait_until
from tests.integration.test_schedules import FLOW_ID, SCHEDULE, calm_cron, client_for, write_flow

MASTER = "flowjobs-test"
API = "/flows/api"
RUNS = 30
#: Sentinel timings: a primary silent this long is down; a failover stuck this long is retried.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 6000
FLOW_FILE = """\
id: 6f1c2b7e-3a55-4a0e-9a51-5e2f7c9d1b33
name: failover
triggers:
  manual: {type: Manual}
steps:
  first: {type: Sleep, inputs: {seconds: 0.3}}
  second: {type: Sleep, inputs: {seconds: 0.3}, run_after: [first]}
  third: {type: Sleep, inputs: {seconds: 0.2}, run_after: [second]}
  later: {type: PendingUntil, inputs: {delay: 1, done_on: 2}, run_after: [third]}
"""
#: ``later`` runs again a second after its first attempt: through RQ's scheduler, which must follow too.
STEPS = ("first", "second", "third", "later")
TERMINAL = {status for status in RunStatus if status.is_terminal}


def _binary() -> str:
    """redis-server, else the embedded server's binary (valkey-server runs Sentinels too); neither:
    this test fails (``EmbeddedServerUnavailable``) rather than skips."""
    return shutil.which("redis-server") or server_binary()


@dataclass
class Node:
    """One server of the cluster: a data node or a Sentinel."""

    port: int
    config: Path
    sentinel: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self, binary: str) -> None:
        log = self.config.with_suffix(".log").open("ab")
        self.process = subprocess.Popen(
            [binary, str(self.config), *(["--sentinel"] if self.sentinel else [])],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def client(self) -> Redis:
        return Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except RedisError:
            return False


@dataclass
class SentinelCluster:
    """A primary and a replica (both append-only) and three Sentinels watching them, on 127.0.0.1."""

    folder: Path
    binary: str = field(default_factory=_binary)
    nodes: list[Node] = field(default_factory=list)

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    @property
    def replica(self) -> Node:
        return self.nodes[1]

    @property
    def sentinels(self) -> list[Node]:
        return self.nodes[2:]

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)

    def start(self) -> None:
        primary_port = free_port()
        data = "bind 127.0.0.1\nappendonly yes\nappendfsync always\nsave ''\n"
        self._node(primary_port, "primary", data)
        self._node(free_port(), "replica", f"{data}replicaof 127.0.0.1 {primary_port}\n")
        for number in range(3):
            self._node(
                free_port(),
                f"sentinel{number}",
                f"bind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER} 1\n",
                sentinel=True,
            )
        for node in self.nodes:
            node.start(self.binary)
        wait_until(lambda: all(n.answers() for n in self.nodes), timeout=20, what="every server to answer")
        wait_until(self._replicating, timeout=20, what="the replica to be in sync")
        wait_until(self._sentinels_ready, timeout=30, what="each Sentinel to know the replica and the others")

    def _node(self, port: int, name: str, config: str, *, sentinel: bool = False) -> None:
        folder = self.folder / name
        folder.mkdir()
        path = folder / f"{name}.conf"
        path.write_text(f"port {port}\ndir {folder}\n{config}")
        self.nodes.append(Node(port, path, sentinel=sentinel))

    def _replicating(self) -> bool:
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for node in self.sentinels:
            client = node.client()
            if len(client.sentinel_slaves(MASTER)) != 1 or len(client.sentinel_sentinels(MASTER)) != 2:
                return False
        return True

    def primary_port(self) -> int | None:
        """The port the Sentinels agree is the primary's (None while they disagree or cannot say)."""
        ports = set()
        for node in self.sentinels:
            try:
                address = node.client().sentinel_get_master_addr_by_name(MASTER)
            except RedisError:
                return None
            ports.add(int(address[1]) if address else None)
        return ports.pop() if len(ports) == 1 else None

    def demoted(self) -> bool:
        """The old primary follows the new one: its clients are sent elsewhere (``READONLY``)."""
        return bytes(self.primary.client().role()[0]) == b"slave"

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _through(cluster: SentinelCluster, space: Space, flows_dir: Path) -> Space:
    """``space`` moved onto the cluster, every process connecting through its Sentinels."""
    settings = space.settings.model_copy(
        update={
            "redis_sentinels": cluster.addresses,
            "redis_sentinel_master": MASTER,
            "redis_wait_replicas": 1,
            "redis_wait_timeout_ms": 2000,
            "flows_dir": flows_dir,
        }
    )
    return replace(space, redis=connect(settings), settings=settings, processes=space.processes)


def _heartbeat(redis: Redis, scheduler: str) -> datetime:
    """When the named RQ scheduler last heartbeat (the epoch if it has no record)."""
    beat = redis.hget(f"rq:scheduler:{scheduler}", "last_heartbeat")
    return utcparse(beat.decode()) if beat else datetime.fromtimestamp(0, UTC)


def _health(http: httpx.Client) -> int:
    try:
        return http.get(f"{API}/health").status_code
    except httpx.TransportError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("switch", ["kill", "failover-command"])
def test_runs_in_flight_survive_a_sentinel_failover(
    cluster: SentinelCluster, space: Space, tmp_path: Path, switch: str
) -> None:
    """``kill``: the primary SIGKILLed (a crash). ``failover-command``: ``SENTINEL FAILOVER``, as
    for maintenance: the old primary lives on, turns replica, and refuses writes (``READONLY``)."""
    # ``cluster`` is requested before ``space``: the servers outlive the processes the space stops.
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    (flows_dir / "failover.yaml").write_text(FLOW_FILE)
    sentinel = _through(cluster, space, flows_dir)
    port = free_port()
    processes = [
        sentinel.start_worker("one"),
        sentinel.start_worker("two"),
        sentinel.start("web", "--host", "127.0.0.1", "--port", str(port)),
    ]
    client = client_from_settings(sentinel.settings)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        wait_until(lambda: _health(http) == 200, timeout=60, what="the web process to see the workers")
        with http.stream("GET", "/flows/events") as events:  # its own asyncio client, through Sentinel
            assert events.status_code == 200
            assert "event: ready" in next(events.iter_text())
        run_ids = []
        for number in range(RUNS):
            if number % 2:  # half through the HTTP API (asyncio client), half through FlowClient
                answer = http.post(f"{API}/flows/failover/trigger", json={"n": number})
                assert answer.status_code == 202, answer.text
                run_ids.append(answer.json()["runId"])
            else:
                run_ids.append(str(client.trigger("failover", data={"n": number}).run_id))
        store = sentinel.engine().store
        wait_until(
            lambda: any(store.runs.step_fields(r, "second").get("status") for r in run_ids),
            timeout=30,
            what="runs to be in flight when the primary dies",
        )
        lock = f"rq:scheduler-lock:{sentinel.settings.queue}"
        killed_at, killed_on = time.monotonic(), utcnow()
        if switch == "kill":
            cluster.primary.kill()
        else:
            assert cluster.sentinels[0].client().sentinel_failover(MASTER)
        # After a kill, Sentinels call the primary down only after DOWN_AFTER_MS: nothing answers till then.
        during = _health(http)
        during_at = time.monotonic() - killed_at
        promoted = wait_until(
            lambda: cluster.primary_port() == cluster.replica.port, timeout=60, what="the replica's promotion"
        )
        promoted_after = time.monotonic() - killed_at
        if switch != "kill":
            wait_until(cluster.demoted, timeout=60, what="the old primary to follow the new one")
        demoted_after = time.monotonic() - killed_at
        wait_until(lambda: _health(http) == 200, timeout=60, what="the web process to answer 200 again")
        healthy_after = time.monotonic() - killed_at

        def ended() -> bool:
            try:
                return all(getattr(client.get_run(r), "status", None) in TERMINAL for r in run_ids)
            except RedisError:  # this test's own client too loses the command in flight at a switch
                return False

        wait_until(ended, timeout=120, what="every run to end")
        ended_after = time.monotonic() - killed_at
        for run_id in run_ids:
            detail = client.get_run_detail(run_id)
            assert detail is not None and detail.steps is not None, f"run {run_id} was lost"
            assert detail.status is RunStatus.Succeeded, f"run {run_id} ended {detail.status}"
            steps = {step.step_key: step for step in detail.steps}
            assert {key: steps[key].status for key in STEPS} == dict.fromkeys(STEPS, StepStatus.Succeeded)
            for key in STEPS:
                succeeded = [a for a in steps[key].attempts or [] if a.status is StepStatus.Succeeded]
                assert len(succeeded) == 1, f"step {key} of run {run_id}: {len(succeeded)} Succeeded attempts"
        assert [p.poll() for p in processes] == [None, None, None], "a flowjobs process exited"
        # The delayed attempts ran: a live RQ scheduler holds its lock on the new primary. Which one
        # depends on where each worker was at the switch: the scheduler from before (RQ's dequeue
        # retries a lost connection itself; a scheduler reclaims a lock in its own name), or a new
        # one a worker loop ended by the switch started. A lock left in a dead scheduler's name
        # would hold delayed attempts back for its 61 s TTL: its holder must heartbeat after the switch.
        holder = sentinel.redis.get(lock)
        assert holder is not None, "no RQ scheduler holds its lock on the new primary"
        wait_until(
            lambda: _heartbeat(sentinel.redis, holder.decode()) > killed_on,
            timeout=30,
            what=f"scheduler {holder!r}, holding the lock, to heartbeat on the new primary",
        )
        if switch == "kill":
            # No replica is left to acknowledge a trigger (the old primary is dead): refused, 503.
            with pytest.raises(ReplicasNotAcknowledged):
                client.trigger("failover")
            answer = http.post(f"{API}/flows/failover/trigger", json={})
            assert answer.status_code == 503 and answer.json()["error"] == "ReplicasNotAcknowledged"
        else:
            # The old primary follows the new one as its replica and acknowledges triggers again.
            answer = wait_until(
                lambda: http.post(f"{API}/flows/failover/trigger", json={}).status_code == 202,
                timeout=30,
                what="a trigger acknowledged by the demoted primary",
            )
            assert client.trigger("failover").created
    assert promoted
    print(
        f"sentinel {switch} (down-after {DOWN_AFTER_MS} ms): health {during} {during_at:.2f}s after the "
        f"switch; replica promoted after {promoted_after:.1f}s, old primary demoted (or dead) after "
        f"{demoted_after:.1f}s; web 200 again after {healthy_after:.1f}s; "
        f"all {RUNS} runs ended after {ended_after:.1f}s"
    )
    if switch == "kill":
        assert during == 503, f"health answered {during} {during_at:.2f}s after the kill"


def test_a_trigger_too_few_replicas_acknowledge_is_refused_with_the_run_named(space: Space) -> None:
    # The test Redis has fewer than 100 replicas: WAIT answers with fewer once its timeout passes.
    settings = {"redis_wait_replicas": 100, "redis_wait_timeout_ms": 50}
    space.settings = space.settings.model_copy(update=settings)
    client = client_from_settings(space.settings, flows_from_settings(space.settings))
    with pytest.raises(ReplicasNotAcknowledged) as refused:
        client.trigger("hello-flow")
    assert refused.value.wanted == 100 and refused.value.acknowledged < 100
    run = client.get_run(refused.value.run_id)
    assert run is not None and run.status is RunStatus.Pending, "the run is written on the primary"

    answer = space.cli("trigger", "hello-flow")
    assert answer.returncode == 4
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1 and "replica(s) required acknowledged it within 50 ms" in lines[0], answer.stderr


def test_a_cron_tick_too_few_replicas_acknowledge_stays_due_and_fires_as_the_same_run(
    space: Space, tmp_path: Path
) -> None:
    cron = calm_cron()
    write_flow(tmp_path, cron)
    space.settings = space.settings.model_copy(update={"flows_dir": tmp_path})
    plain = client_for(space, tmp_path)
    plain.sync_schedules()
    due = latest_tick(cron, utcnow())  # a tick owed now
    plain.schedules.change(SCHEDULE, lambda s: s and s.model_copy(update={"next_fire_at": due}))
    waiting = {"redis_wait_replicas": 100, "redis_wait_timeout_ms": 20}
    space.settings = space.settings.model_copy(update=waiting)

    assert ScheduleFirer(client_for(space, tmp_path), grace_seconds=600).fire_due() == 0
    assert plain.schedules.require(SCHEDULE).next_fire_at == due, "the unacknowledged tick was dropped"
    assert len(plain.list_runs(flow_id=FLOW_ID)) == 1, "the run is written on the primary"
    # Once replicas acknowledge (here: none required), the next pass finds that run and moves on.
    ScheduleFirer(plain, grace_seconds=600).fire_due()
    assert plain.schedules.require(SCHEDULE).next_fire_at != due
    assert len(plain.list_runs(flow_id=FLOW_ID)) == 1
