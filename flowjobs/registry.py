"""The flows an application knows: validated at registration, loadable from a folder of files."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import yaml
from pydantic import ValidationError

from flowjobs.errors import FlowNotFound, FlowValidationError
from flowjobs.manifest import FlowDefinition, TriggerType
from flowjobs.validation import flow_problems

FLOW_FILE_SUFFIXES = (".yaml", ".yml", ".json")


class FlowRegistry:
    """Flow definitions by id and by name; only valid flows get in."""

    def __init__(self, definitions: list[FlowDefinition] | None = None) -> None:
        self._by_id: dict[UUID, FlowDefinition] = {}
        for definition in definitions or []:
            self.add(definition)

    def add(self, definition: FlowDefinition) -> FlowDefinition:
        """Validate and register (or replace, by id) a flow; ``FlowValidationError`` lists every problem."""
        problems = flow_problems(definition, webhook_slugs=self.webhook_slugs())
        clash = self._by_name(definition.name)
        if clash is not None and clash.id != definition.id:
            problems.append(f"flow name {definition.name!r} is already used by flow {clash.id}")
        if problems:
            raise FlowValidationError(definition.name, problems)
        self._by_id[definition.id] = definition
        return definition

    def add_file(self, path: str | Path) -> FlowDefinition:
        """Load, validate and register one YAML or JSON flow file."""
        return self.add(parse_flow_file(path))

    def load_dir(self, path: str | Path) -> list[FlowDefinition]:
        """Register every ``*.yaml``, ``*.yml`` and ``*.json`` flow in a folder (sorted by file name).

        Raises ``FlowValidationError`` naming every problem of every bad file; the good files of
        the folder are registered either way.
        """
        added: list[FlowDefinition] = []
        problems: list[str] = []
        for file in sorted(Path(path).iterdir()):
            if file.suffix.lower() not in FLOW_FILE_SUFFIXES:
                continue
            try:
                added.append(self.add_file(file))
            except FlowValidationError as error:
                problems.extend(f"{file.name}: {p}" for p in error.problems)
        if problems:
            raise FlowValidationError(str(path), problems)
        return added

    def get(self, flow: UUID | str) -> FlowDefinition:
        """A flow by id or name; ``FlowNotFound`` otherwise."""
        found: FlowDefinition | None = None
        try:
            found = self._by_id.get(flow if isinstance(flow, UUID) else UUID(str(flow)))
        except ValueError:
            found = None
        found = found or self._by_name(str(flow))
        if found is None:
            raise FlowNotFound(f"no flow with id or name {str(flow)!r}")
        return found

    def all(self) -> list[FlowDefinition]:
        """Every registered flow, by name."""
        return sorted(self._by_id.values(), key=lambda d: d.name)

    def webhook_slugs(self) -> dict[str, UUID]:
        """Webhook slug (lower-cased) → flow id, over every registered flow."""
        slugs: dict[str, UUID] = {}
        for definition in self._by_id.values():
            for trigger in definition.manifest.triggers.values():
                slug = trigger.inputs.get("webhookSlug")
                if trigger.type is TriggerType.Webhook and isinstance(slug, str):
                    slugs[slug.lower()] = definition.id
        return slugs

    def _by_name(self, name: str) -> FlowDefinition | None:
        return next((d for d in self._by_id.values() if d.name == name), None)

    def __len__(self) -> int:
        return len(self._by_id)


def parse_flow_file(path: str | Path) -> FlowDefinition:
    """A ``FlowDefinition`` from a YAML or JSON file; ``FlowValidationError`` if it does not parse."""
    file = Path(path)
    try:
        text = file.read_text()
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise FlowValidationError(file.name, [f"cannot read the file: {error}"]) from error
    if not isinstance(data, dict):
        raise FlowValidationError(file.name, ["the file must hold one flow as a mapping"])
    try:
        return FlowDefinition.model_validate(data)
    except ValidationError as error:
        raise FlowValidationError(str(data.get("name") or file.name), pydantic_problems(error)) from error


def pydantic_problems(error: ValidationError) -> list[str]:
    """A pydantic error as one readable line per problem (``steps.ship.type: Field required``)."""
    return [f"{'.'.join(str(p) for p in item['loc']) or 'flow'}: {item['msg']}" for item in error.errors()]
