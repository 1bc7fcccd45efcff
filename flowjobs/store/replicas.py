"""Redis ``WAIT`` after a new run: how many replicas must hold it before its trigger returns."""

from __future__ import annotations

from dataclasses import dataclass

from flowjobs.core.errors import ReplicasNotAcknowledged
from flowjobs.store.transitions import AdmissionRefusal, Created, Refused


@dataclass(frozen=True)
class ReplicaWait:
    """``WAIT replicas timeout_ms`` right after the script that writes a run, on its connection
    (``WAIT`` counts the replication of that connection's own writes only)."""

    replicas: int
    timeout_ms: int

    def check(
        self, answer: Created | Refused[AdmissionRefusal], acknowledged: int
    ) -> Created | Refused[AdmissionRefusal]:
        """``answer``, or ``ReplicasNotAcknowledged`` for a run the caller would be told exists
        while fewer replicas than required hold it (a refusal wrote no run: nothing to lose)."""
        if isinstance(answer, Created) and acknowledged < self.replicas:
            raise ReplicasNotAcknowledged(answer.run_id, acknowledged, self.replicas, self.timeout_ms)
        return answer
