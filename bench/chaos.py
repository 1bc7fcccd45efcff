"""Chaos: runs flow while worker processes are SIGKILLed with their whole process tree and restarted.

Run as ``python bench/chaos.py [--runs N] [--kill-every SECONDS] [--step-seconds SECONDS]``; prints
one ``name=value`` line per figure and exits 1 when a run did not succeed, a step was recorded
Succeeded more than once, or the runs did not all end within the deadline.

What it does, on its own key prefix ``fjchaos<random>:`` and queue ``fjchaos<random>-q``:

* **Load.** N runs of a 5-step flow (a chain of ``ChaosStep`` steps, each sleeping
  ``--step-seconds``, then counting its execution), triggered at once with ``FlowClient``.
* **Workers.** 3 ``flowjobs worker`` processes (forking, as deployed) with default settings (claim
  lease, recovery interval, limits) except the queue, prefix and handler module.
* **Chaos.** Every ``--kill-every`` seconds, the next worker in turn is SIGKILLed with its whole
  process tree (its process group, RQ's scheduler in it, then its work-horse, which RQ puts in a
  group of its own: as a container or node loss, never a crash of the step alone) and a new worker
  is started in its place, until every run has ended.
* **Printed.** ``runs``, ``succeeded``, ``failed`` (with the first reasons), ``kills``,
  ``duplicate_records`` (steps with more than one Succeeded attempt in their record: must be 0),
  ``handler_reruns`` (steps whose handler ran to its end more than once: at-least-once execution,
  possible only when a kill lands between a handler's return and its record), ``lost_attempts``
  and ``crashed_attempts`` over all steps, and ``duration_seconds``.

Cleanup: the workers (SIGTERM, then SIGKILL), every key under its prefix, RQ's keys of its jobs,
and its queue's keys. It never flushes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.space import bench_redis, remove_space  # noqa: E402
from flowjobs import StepContext, handler  # noqa: E402
from flowjobs.client import FlowClient, RunHandle  # noqa: E402
from flowjobs.core.manifest import FlowDefinition  # noqa: E402
from flowjobs.core.registry import FlowRegistry  # noqa: E402
from flowjobs.core.statuses import RunStatus, StepStatus  # noqa: E402
from flowjobs.factory import client_from_settings  # noqa: E402
from flowjobs.processes import stop_processes  # noqa: E402
from flowjobs.settings import Settings  # noqa: E402

WORKERS = 3
STEPS = ("a", "b", "c", "d", "e")
#: Seconds to wait for every run to end, beyond what the steps take on the workers.
SLACK_SECONDS = 300.0
#: Counts of handler executions that ran to their end, per ``<run id>:<step key>`` (a hash).
CALLS_ENV = "FLOWJOBS_CHAOS_CALLS_KEY"
_redis: Redis | None = None


@handler("ChaosStep")
def chaos_step(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``inputs.seconds``, then counts this execution of the step."""
    global _redis
    time.sleep(float(inputs["seconds"]))
    if _redis is None:  # in the work-horse: the worker's connection is not shared across the fork
        _redis = Redis.from_url(os.environ["REDIS_URL"])
    _redis.hincrby(os.environ[CALLS_ENV], f"{ctx.run_id}:{ctx.step_key}", 1)
    return {"attempt": ctx.attempt}


def chaos_flow(step_seconds: float) -> FlowDefinition:
    steps: dict[str, Any] = {}
    for index, key in enumerate(STEPS):
        steps[key] = {"type": "ChaosStep", "inputs": {"seconds": step_seconds}}
        if index:
            steps[key]["run_after"] = [STEPS[index - 1]]
    return FlowDefinition.model_validate({"id": str(uuid.uuid4()), "name": "chaos", "steps": steps})


class Workers:
    """The worker processes, each in its own process group, replaced as they are killed."""

    def __init__(self, env: dict[str, str], token: str) -> None:
        self.env, self.token = env, token
        self.started = 0
        self.alive: list[subprocess.Popen[bytes]] = []
        self.all: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        name = f"{self.token}-w{self.started}"
        self.started += 1
        process = subprocess.Popen(
            [sys.executable, "-m", "flowjobs", "worker", "--name", name],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.alive.append(process)
        self.all.append(process)

    def kill_oldest(self) -> None:
        """SIGKILL the oldest worker's whole process tree, then start another."""
        victim = self.alive.pop(0)
        tree = _descendants(victim.pid)
        os.killpg(victim.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        victim.wait()
        self.start()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), read before the kill orphans them."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def wait_for_runs(
    client: FlowClient, handles: list[RunHandle], workers: Workers, args: argparse.Namespace
) -> int:
    """Kill a worker every ``kill_every`` seconds until every run has ended; the kills made."""
    store = client.store
    open_runs = [str(h.run_id) for h in handles]
    deadline = time.monotonic() + SLACK_SECONDS + len(handles) * len(STEPS) * args.step_seconds / WORKERS
    next_kill = time.monotonic() + args.kill_every
    kills = 0
    while open_runs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(open_runs)} runs still open at the deadline")
        if time.monotonic() >= next_kill:
            workers.kill_oldest()
            kills += 1
            next_kill += args.kill_every
        statuses = store.runs.run_fields_many(open_runs, ("status",))
        open_runs = [
            run_id
            for run_id, fields in zip(open_runs, statuses, strict=True)
            if fields.get("status") in (RunStatus.Pending, RunStatus.Running)
        ]
        time.sleep(0.1)
    return kills


def tally(client: FlowClient, redis: Redis, handles: list[RunHandle], calls_key: str) -> dict[str, Any]:
    """What the records say about the runs, and how often the handlers ran to their end."""
    calls = {k.decode(): int(v) for k, v in redis.hgetall(calls_key).items()}
    figures: dict[str, Any] = dict.fromkeys(
        ("succeeded", "failed", "duplicate_records", "lost_attempts", "crashed_attempts"), 0
    )
    reasons: list[str] = []
    for handle in handles:
        detail = client.get_run_detail(handle.run_id)
        if detail is None or detail.status is not RunStatus.Succeeded:
            figures["failed"] += 1
            reasons.append(f"{handle.run_id}: {detail.status if detail else 'missing'}")
        else:
            figures["succeeded"] += 1
        for step in (detail.steps if detail else None) or []:
            succeeded = sum(a.status is StepStatus.Succeeded for a in step.attempts or [])
            figures["duplicate_records"] += succeeded > 1
            errors = [a.error_message or "" for a in step.attempts or []]
            if detail is not None and detail.status is not RunStatus.Succeeded and step.error_message:
                reasons[-1] += f" [{step.step_key}: {step.error_message}]"
            figures["lost_attempts"] += sum("Claim lease expired" in e for e in errors)
            figures["crashed_attempts"] += sum(e.startswith("Work-horse") for e in errors)
    figures["handler_reruns"] = sum(count > 1 for count in calls.values())
    figures["reasons"] = reasons[:5]
    return figures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1000, help="runs of the 5-step flow")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between worker kills")
    parser.add_argument("--step-seconds", type=float, default=0.05, help="how long each step sleeps")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.kill_every <= 0 or args.step_seconds < 0:
        parser.error("--runs must be at least 1, --kill-every positive, --step-seconds not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url, server = bench_redis()
    token = f"fjchaos{uuid.uuid4().hex[:8]}"
    prefix, queue, calls_key = f"{token}:", f"{token}-q", f"{token}:chaos:calls"
    redis = Redis.from_url(url)
    workers: Workers | None = None
    try:
        with TemporaryDirectory() as flows_dir:  # no flow files: the runs' manifests are pinned in Redis
            settings = Settings(redis_url=url, queue=queue, key_prefix=prefix, flows_dir=Path(flows_dir))
            definition = chaos_flow(args.step_seconds)
            client = client_from_settings(settings, FlowRegistry([definition]), redis=redis)
            path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            env = {
                **os.environ,
                "PYTHONPATH": path,
                "REDIS_URL": url,
                "FLOWJOBS_QUEUE": queue,
                "FLOWJOBS_KEY_PREFIX": prefix,
                "FLOWJOBS_HANDLER_MODULES": "bench.chaos",
                "FLOWJOBS_FLOWS_DIR": flows_dir,
                "FLOWJOBS_LOG_LEVEL": "warning",
                CALLS_ENV: calls_key,
            }
            workers = Workers(env, token)
            started = time.monotonic()
            for _ in range(WORKERS):
                workers.start()
            handles = [client.trigger("chaos") for _ in range(args.runs)]
            kills = wait_for_runs(client, handles, workers, args)
            duration = time.monotonic() - started
            figures = tally(client, redis, handles, calls_key)
    except TimeoutError as error:
        print(f"error: {error}")
        return 1
    finally:
        if workers is not None:
            stop_processes(workers.alive)
        remove_space(redis, prefix=prefix, token=token, queue=queue)
        if server is not None:
            server.stop()
    print(f"runs={args.runs}")
    print(f"succeeded={figures['succeeded']}")
    print(f"failed={figures['failed']}")
    for reason in figures["reasons"]:
        print(f"failed_run={reason}")
    print(f"kills={kills}")
    print(f"duplicate_records={figures['duplicate_records']}")
    print(f"handler_reruns={figures['handler_reruns']}")
    print(f"lost_attempts={figures['lost_attempts']}")
    print(f"crashed_attempts={figures['crashed_attempts']}")
    print(f"duration_seconds={duration:.1f}")
    if figures["failed"] or figures["duplicate_records"]:
        print("FAIL: a run did not succeed or a step was recorded Succeeded more than once")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
