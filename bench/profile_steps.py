"""Profile: where a flowjobs step's time goes, on one in-process RQ SimpleWorker.

Run as ``python bench/profile_steps.py [--runs M] [--cprofile N]``; prints ``name=value`` lines.

It triggers M runs (default 100) of a linear 10-step ``Noop`` flow on its own prefix and queue
(``fjprof<random>``), then drains them in this process with flowjobs' SimpleWorker (burst, no
scheduler), and reports per step (the trigger jobs' share included, as in ``steps_vs_rq.py``):

* ``round_trips_per_step``: requests this process sent to Redis (``Connection.send_packed_command``
  calls: a pipeline or a script call is one);
* ``commands_per_step`` and ``server_usec_per_step``: ``INFO commandstats`` deltas (calls and
  ``usec``) over the drain, all commands, and ``evalsha_*`` for flowjobs' Lua scripts alone
  (the server's time inside them); plus the top commands by server time;
* ``python_cpu_usec_per_step``: this process's CPU time (``time.process_time``) over the drain;
* ``wall_usec_per_step``.

With ``--cprofile N`` the drain runs under cProfile and the N functions with the most own time
are printed (cProfile slows Python down: the per-step figures above then include its overhead).
Other clients of the same Redis add to the server figures. Cleanup: ``bench/space.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis import Redis
from redis.connection import Connection

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.space import remove_space  # noqa: E402
from bench.steps_vs_rq import STEPS_PER_RUN, linear_flow  # noqa: E402
from flowjobs.client import FlowClient  # noqa: E402
from flowjobs.core.handlers import HandlerRegistry  # noqa: E402
from flowjobs.core.registry import FlowRegistry  # noqa: E402
from flowjobs.core.statuses import RunStatus  # noqa: E402
from flowjobs.factory import engine_from_settings  # noqa: E402
from flowjobs.jobs import install_engine  # noqa: E402
from flowjobs.logs import configure_logging  # noqa: E402
from flowjobs.settings import Settings  # noqa: E402
from flowjobs.worker import build_worker  # noqa: E402


@contextmanager
def counting_round_trips() -> Iterator[list[int]]:
    """Count ``send_packed_command`` calls of every connection of this process meanwhile."""
    counter = [0]
    original: Any = Connection.send_packed_command

    def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        original(self, command, check_health)

    setattr(Connection, "send_packed_command", counted)  # noqa: B010 (patching a method)
    try:
        yield counter
    finally:
        setattr(Connection, "send_packed_command", original)  # noqa: B010


def commandstats(redis: Redis) -> dict[str, tuple[int, int]]:
    """``INFO commandstats``: command → (calls, usec)."""
    stats: dict[str, Any] = redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in stats.items()}


def profile(redis: Redis, url: str, runs: int, top: int) -> None:
    """Trigger, drain and report (see the module docstring); the space is removed at the end."""
    token = f"fjprof{uuid.uuid4().hex[:10]}"
    prefix, queue = f"{token}:", f"{token}-q"
    handlers = HandlerRegistry()
    handlers.register("Noop", lambda ctx, inputs: None)
    settings = Settings(redis_url=url, queue=queue, key_prefix=prefix, handler_modules="")
    definition = linear_flow(f"{token}-linear", STEPS_PER_RUN)
    client = FlowClient(redis, FlowRegistry([definition]), queue, key_prefix=prefix)
    install_engine(engine_from_settings(settings, redis=redis, handlers=handlers))
    worker = build_worker(redis, queue, simple=True, name=f"{token}-w")
    steps = runs * STEPS_PER_RUN
    try:
        run_ids = [client.trigger(definition.name).run_id for _ in range(runs)]
        profiler = cProfile.Profile() if top else None
        before = commandstats(redis)
        with counting_round_trips() as trips:
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            sent = trips[0]
        after = commandstats(redis)
        runs_read = [client.get_run(r) for r in run_ids]
        bad = [r for r in runs_read if r is None or r.status is not RunStatus.Succeeded]
        if bad:
            raise SystemExit(f"error: {len(bad)} run(s) did not succeed")
        zero = (0, 0)
        delta = {k: (c - before.get(k, zero)[0], u - before.get(k, zero)[1]) for k, (c, u) in after.items()}
        delta.pop("info", None)
        calls = sum(c for c, _ in delta.values())
        usec = sum(u for _, u in delta.values())
        lua_calls, lua_usec = delta.get("evalsha", (0, 0))
        print(f"runs={runs} steps={steps} (+{runs} trigger jobs)")
        print(f"round_trips_per_step={sent / steps:.1f}")
        print(f"commands_per_step={calls / steps:.1f}")
        print(f"server_usec_per_step={usec / steps:.0f}")
        print(f"evalsha_per_step={lua_calls / steps:.2f}")
        print(f"evalsha_usec_per_step={lua_usec / steps:.0f}")
        print(f"python_cpu_usec_per_step={cpu / steps * 1e6:.0f}")
        print(f"wall_usec_per_step={wall / steps * 1e6:.0f}")
        for name, (c, u) in sorted(delta.items(), key=lambda item: -item[1][1])[:8]:
            print(f"  server {name:12} {c / steps:6.2f} calls/step {u / steps:7.1f} usec/step")
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
            print(out.getvalue())
    finally:
        install_engine(None)
        remove_space(redis, prefix=prefix, token=token, queue=queue)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100, help="linear 10-step runs to drain")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="profile the drain and print the N functions with the most own time")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    profile(Redis.from_url(url), url, args.runs, args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
