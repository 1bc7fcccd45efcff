"""Flow records: the flow hash, and manifests pinned under their content hash."""

from __future__ import annotations

from uuid import UUID

from flowjobs.clock import iso, utcnow
from flowjobs.manifest import FlowDefinition, FlowManifest
from flowjobs.store.base import StoreBase


class FlowRecords(StoreBase):
    """Saving flows and loading the manifests runs are pinned to."""

    def save_flow(self, definition: FlowDefinition) -> str:
        """Store the flow record and pin its manifest under its content hash; returns the hash."""
        manifest_hash = definition.manifest.content_hash()
        if (definition.id, manifest_hash) in self._saved_flows:
            return manifest_hash
        now = iso(utcnow())
        key = self.keys.flow(definition.id)
        with self.redis.pipeline() as pipe:
            pipe.set(self.keys.manifest(manifest_hash), definition.manifest.canonical_json(), nx=True)
            pipe.hset(
                key,
                mapping={
                    "id": str(definition.id),
                    "name": definition.name,
                    "version": definition.version,
                    "manifest_hash": manifest_hash,
                    "updated_at": now,
                },
            )
            pipe.hsetnx(key, "created_at", now)
            pipe.hsetnx(key, "is_enabled", "1")
            pipe.sadd(self.keys.flows(), str(definition.id))
            pipe.execute()
        self._saved_flows.add((definition.id, manifest_hash))
        self._manifests[manifest_hash] = definition.manifest
        return manifest_hash

    def flow_enabled(self, flow_id: UUID | str) -> bool:
        """False only when the flow was explicitly disabled."""
        return self.redis.hget(self.keys.flow(flow_id), "is_enabled") != b"0"

    def set_flow_enabled(self, flow_id: UUID | str, enabled: bool) -> None:
        """Persist the flow's enabled flag (``save_flow`` keeps it across registrations)."""
        self.redis.hset(self.keys.flow(flow_id), "is_enabled", "1" if enabled else "0")

    def load_manifest(self, manifest_hash: str) -> FlowManifest:
        """The pinned manifest a run plans against (immutable, so cached in-process)."""
        manifest = self._manifests.get(manifest_hash)
        if manifest is None:
            raw = self.redis.get(self.keys.manifest(manifest_hash))
            if raw is None:
                raise LookupError(f"manifest {manifest_hash} is not stored")
            manifest = FlowManifest.model_validate_json(raw)
            self._manifests[manifest_hash] = manifest
        return manifest
