"""When clauses: the last gate before a step is dispatched, with an evaluation trace when it skips."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from flowjobs.core.expressions import ExpressionScope, StepView, evaluate_condition, referenced_steps
from flowjobs.core.manifest import FlowManifest, child_key
from flowjobs.core.planner import Admit
from flowjobs.store.run_store import RunStore
from flowjobs.store.transitions import StoredStep


class WhenGate:
    """Evaluates When clauses of steps about to be dispatched, reading referenced outputs once."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        manifest: FlowManifest,
        run_fields: Mapping[str, str],
        traces: dict[str, str],
        known: Mapping[str, StoredStep] | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.manifest = manifest
        self.run_fields = run_fields
        self.traces = traces
        self.views: dict[str, StoredStep] = dict(known or {})

    def admit(self, loop_key: str | None, index: int | None) -> Admit:
        """The admit callback for top-level steps (``loop_key`` None) or one ForEach iteration."""
        steps = self.manifest.steps[loop_key].steps if loop_key is not None else self.manifest.steps

        def check(key: str) -> str | None:
            conditions = [cond.when for cond in steps[key].run_after.values() if cond.when]
            if not conditions:
                return None
            own = child_key(loop_key, index, key) if loop_key is not None and index is not None else key
            names = set().union(*(referenced_steps(text) for text in conditions))
            runtime = {name: self.manifest.reference_key(name, own) for name in names}
            missing = [key for key in runtime.values() if key not in self.views]
            if missing:
                self.views.update(self.store.history.step_views(self.run_id, missing))
            scope = expression_scope(
                self.run_fields,
                {name: self.views[key] for name, key in runtime.items()},
                partial(self.store.runs.trigger_data_json, self.run_id),
            )
            for text in conditions:
                outcome = evaluate_condition(text, scope)
                if not outcome.result:
                    self.traces[own] = json.dumps(outcome.trace())
                    detail = f" ({outcome.error})" if outcome.error else ""
                    return f"When condition was not met: {outcome.resolved}{detail}"
            return None

        return check


def expression_scope(
    run_fields: Mapping[str, str],
    views: Mapping[str, StoredStep],
    read_trigger_data: Callable[[], str | None] | None = None,
) -> ExpressionScope:
    """What expressions of a run can see: its trigger data and headers, and some steps.

    Run fields read without the trigger data (``RunStore.runs.claim``) pass ``read_trigger_data``,
    called only if an expression reads the trigger body.
    """
    data = run_fields.get("trigger_data_json")
    loader = None
    if data is None and read_trigger_data is not None:
        read = read_trigger_data

        def loader() -> Any:
            text = read()
            return json.loads(text) if text is not None else None

    return ExpressionScope(
        trigger_body=json.loads(data) if data is not None else None,
        trigger_loader=loader,
        trigger_headers=json.loads(run_fields.get("trigger_headers", "{}")),
        steps={
            name: StepView(
                status=view.status.value if view.status else None,
                output=json.loads(view.output_json) if view.output_json else None,
                error=view.error,
            )
            for name, view in views.items()
        },
    )
