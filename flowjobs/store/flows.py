"""Flow records: the flow hash, and manifests pinned under their content hash."""

from __future__ import annotations

from uuid import UUID

from flowjobs.core.clock import iso, utcnow
from flowjobs.core.manifest import FlowDefinition, FlowManifest
from flowjobs.store.base import StoreContext, StorePart


class FlowRecords(StorePart):
    """Saving flows and loading the manifests runs are pinned to."""

    def __init__(self, context: StoreContext) -> None:
        super().__init__(context)
        # This process's memory of what it saved and read: a manifest never changes under its hash.
        self._manifests: dict[str, FlowManifest] = {}
        self._saved_flows: set[tuple[UUID, str]] = set()

    def save_flow(self, definition: FlowDefinition) -> str:
        """Store the flow record and pin its manifest under its content hash; returns the hash."""
        manifest_hash = definition.manifest.content_hash()
        commands = self.flow_commands(definition, manifest_hash)
        if commands:
            with self.redis.pipeline() as pipe:
                for command in commands:
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                pipe.execute()
            self.note_flow_saved(definition, manifest_hash)
        return manifest_hash

    def flow_commands(self, definition: FlowDefinition, manifest_hash: str) -> list[list[bytes]]:
        """The commands that save the flow record and pin its manifest; none when this process
        saved that version already (a trigger sends them inside ``create_run.lua``)."""
        if (definition.id, manifest_hash) in self._saved_flows:
            return []
        now = iso(utcnow()).encode()
        key = self.keys.flow(definition.id).encode()
        flow_id = str(definition.id).encode()
        fields = {
            b"id": flow_id,
            b"name": definition.name.encode(),
            b"version": definition.version.encode(),
            b"manifest_hash": manifest_hash.encode(),
            b"updated_at": now,
        }
        manifest = definition.manifest.canonical_json().encode()
        return [
            [b"SET", self.keys.manifest(manifest_hash).encode(), manifest, b"NX"],
            [b"HSET", key, *(part for pair in fields.items() for part in pair)],
            [b"HSETNX", key, b"created_at", now],
            [b"HSETNX", key, b"is_enabled", b"1"],
            [b"SADD", self.keys.flows().encode(), flow_id],
        ]

    def note_flow_saved(self, definition: FlowDefinition, manifest_hash: str) -> None:
        """Remember that this version of the flow is saved (its commands are not sent again)."""
        self._saved_flows.add((definition.id, manifest_hash))
        self._manifests[manifest_hash] = definition.manifest

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
