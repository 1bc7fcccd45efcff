"""Benchmark: parse once, resolve many; prints resolutions and condition evaluations per second.

Run as ``python bench/expressions_bench.py [--floor N] [--seconds S]``; exits 1 below the floor.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    import flowjobs.core.expressions as expressions
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import flowjobs.core.expressions as expressions

INPUTS = {
    "orderId": "@triggerBody()?.orderId",
    "firstSku": "@triggerBody().items[0].sku",
    "tenant": "@triggerHeaders()['X-Tenant']",
    "customer": "@steps('fetch').output.customer.id",
    "total": "@steps('price').output.total",
    "note": "plain text",
    "options": {"retries": 3, "tags": ["a", "b"]},
}
CONDITION = "@steps('price').output.total >= 1000 && @triggerHeaders()['x-tenant'] == \"acme\""

SCOPE = expressions.ExpressionScope(
    trigger_body={"orderId": "o-1", "items": [{"sku": "s-1", "qty": 2}, {"sku": "s-2", "qty": 1}]},
    trigger_headers={"X-Tenant": "acme", "Content-Type": "application/json"},
    steps={
        "fetch": expressions.StepView("Succeeded", {"customer": {"id": "c-9", "name": "Ann"}}),
        "price": expressions.StepView("Succeeded", {"total": 1500, "currency": "EUR"}),
    },
)


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Calls of ``operation`` per second, measured over about ``seconds``."""
    batch = 1000
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            operation()
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--floor", type=float, default=20000, help="minimum resolutions/s (default 20000)")
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent on each measurement")
    args = parser.parse_args(argv)

    # Parse once (and check the result) so the timed loops measure resolution only.
    resolved = expressions.resolve_inputs(INPUTS, SCOPE)
    assert resolved["total"] == 1500 and resolved["tenant"] == "acme", resolved
    assert expressions.evaluate_condition(CONDITION, SCOPE).result

    resolutions = rate(lambda: expressions.resolve_inputs(INPUTS, SCOPE), args.seconds)
    evaluations = rate(lambda: expressions.evaluate_condition(CONDITION, SCOPE), args.seconds)
    print(f"resolutions_per_second={resolutions:.0f}")
    print(f"condition_evaluations_per_second={evaluations:.0f}")
    if resolutions < args.floor:
        print(
            f"FAIL: {resolutions:.0f} resolutions/s of a 5-reference input dict is below the floor "
            f"of {args.floor:.0f}/s",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
