"""Signal records: delivering a signal (and resuming its parked steps), and reading its waiters."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from flowjobs.core.keys import step_member
from flowjobs.store.base import StorePart
from flowjobs.store.codec import command_slices
from flowjobs.store.transitions import Delivered, Refused, SignalRefusal, SignalResume


class SignalRecords(StorePart):
    """Per run, one record per signal name: its waiters (parked steps), delivery and payload."""

    def deliver_signal(
        self,
        run_id: UUID | str,
        name: str,
        payload_json: str,
        *,
        declared: bool,
        resumes: Mapping[str, SignalResume],
        open_waits: Mapping[str, Sequence[str]] | None = None,
    ) -> Delivered | Refused[SignalRefusal]:
        """Deliver a signal once and, in the same script, resume every step parked on it.

        ``resumes`` are the waiters the caller read (``signal_waiters``), each with its resume job.
        A name nobody parked on is kept if ``declared`` (a literal name of the flow) or while a step
        named by an expression (``open_waits``: ``Manifest.expression_signal_waits``) has neither
        parked nor ended.
        Returns the steps resumed (none: the signal is kept until a step parks on it), or a
        refusal: ``changed`` (the waiters moved since they were read: nothing written),
        ``no_run``, ``not_active``, ``unknown`` (no step of the run waits for that name),
        ``already``.
        """
        argv: list[bytes] = []
        args = self.context.run_args(run_id)
        args.update(
            {
                "name": name,
                "payload_json": payload_json,
                "declared": declared,
                "open_waits": [
                    {"key": key, "children": list(children)} for key, children in (open_waits or {}).items()
                ],
                "loops_key": self.keys.loops(run_id),
                "signals_key": self.keys.signals(run_id),
                "steps_key": self.keys.run_steps(run_id),
                "jobs_key": self.keys.jobs(),
                "pending_key": self.keys.pending(),
                "expected": [
                    {
                        "step_key": key,
                        "attempt": resume.attempt,
                        "job_id": resume.job_id,
                        "member": step_member(run_id, key),
                        "commands": command_slices(argv, resume.commands),
                    }
                    for key, resume in resumes.items()
                ],
            }
        )
        return self.scripts.deliver_signal(args, argv)

    def signal_waiters(self, run_id: UUID | str, name: str) -> dict[str, int]:
        """Steps parked on a signal name: step key → the attempt that resumes it."""
        record = self.signal_record(run_id, name) or {}
        return {key: int(w["attempt"]) for key, w in (record.get("waiters") or {}).items()}

    def signal_record(self, run_id: UUID | str, name: str) -> dict[str, Any] | None:
        """The signal record (waiter, expiry, delivery, payload) of one signal name."""
        raw = self.redis.hget(self.keys.signals(run_id), name)
        return dict(json.loads(raw)) if raw else None
