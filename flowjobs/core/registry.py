"""The flows an application knows: validated at registration, loadable from a folder of files."""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from pydantic import ValidationError

from flowjobs.core.errors import FlowNotFound, FlowValidationError
from flowjobs.core.manifest import FlowDefinition, TriggerType
from flowjobs.core.validation import flow_problems

FLOW_FILE_SUFFIXES = (".yaml", ".yml", ".json")
#: The largest flow file read, in bytes.
MAX_FLOW_FILE_BYTES = 1024 * 1024
#: The most YAML nodes a flow file may expand to, each alias counted as a copy of what it names
#: (a few kilobytes of nested aliases otherwise expand to millions of values).
MAX_FLOW_FILE_NODES = 100_000


class FlowRegistry:
    """Flow definitions by id and by name; only valid flows get in."""

    def __init__(self, definitions: list[FlowDefinition] | None = None) -> None:
        self._by_id: dict[UUID, FlowDefinition] = {}
        self._files: dict[UUID, Path] = {}
        self._invalid_files: dict[Path, list[str]] = {}
        for definition in definitions or []:
            self.add(definition)

    def add(self, definition: FlowDefinition) -> FlowDefinition:
        """Validate and register (or replace, by id) a flow; ``FlowValidationError`` lists every problem."""
        return self._add(definition, [])

    def _add(self, definition: FlowDefinition, problems: list[str]) -> FlowDefinition:
        """``add``, with the ``problems`` the caller already found."""
        problems = [*flow_problems(definition, webhook_slugs=self.webhook_slugs()), *problems]
        clash = self._by_name(definition.name)
        if clash is not None and clash.id != definition.id:
            problems.append(f"flow name {definition.name!r} is already used by flow {clash.id}")
        if problems:
            raise FlowValidationError(definition.name, problems)
        self._by_id[definition.id] = definition
        return definition

    def add_file(self, path: str | Path) -> FlowDefinition:
        """Load, validate and register one YAML or JSON flow file.

        A file may replace the flow it registered before, never one of another file with the same
        id (copied files keep the id): the later one is refused, as a clashing name is.
        """
        file = Path(path)
        definition = parse_flow_file(file)
        other = self._files.get(definition.id)
        clash = []
        if other is not None and other.resolve() != file.resolve():
            first = self._by_id[definition.id].name
            clash.append(f"flow id {definition.id} is already used by flow {first!r} ({other.name})")
        self._add(definition, clash)
        self._files[definition.id] = file
        return definition

    def load_dir(self, path: str | Path, *, strict: bool = True) -> list[FlowDefinition]:
        """Register every ``*.yaml``, ``*.yml`` and ``*.json`` flow in a folder (sorted by file name).

        The good files of the folder are registered either way, and each bad file is kept with
        its problems in ``invalid_files``. With ``strict`` (the default) a bad file then raises
        ``FlowValidationError`` naming every problem of every bad file; without, the caller reads
        ``invalid_files`` (one bad file must not stop commands that do not need it).
        """
        added: list[FlowDefinition] = []
        problems: list[str] = []
        for file in sorted(Path(path).iterdir()):
            if file.suffix.lower() not in FLOW_FILE_SUFFIXES:
                continue
            try:
                added.append(self.add_file(file))
            except FlowValidationError as error:
                self._invalid_files[file] = list(error.problems)
                problems.extend(f"{file.name}: {p}" for p in error.problems)
            else:
                self._invalid_files.pop(file, None)
        if problems and strict:
            raise FlowValidationError(str(path), problems)
        return added

    @property
    def invalid_files(self) -> dict[Path, list[str]]:
        """Flow files ``load_dir`` could not register, with their problems (by path, sorted)."""
        return dict(sorted(self._invalid_files.items()))

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


class _FlowFileLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key repeated in one mapping (PyYAML keeps the last), and a
    document that expands to more than ``MAX_FLOW_FILE_NODES`` nodes or refers to itself."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, MAX_FLOW_FILE_NODES) is None:
            raise ValueError(
                f"it expands to more than {MAX_FLOW_FILE_NODES} YAML nodes (aliases count as copies)"
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then overriding a merged key is not a duplicate
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key!r} (first at line {seen[key]})",
                    problem_mark=key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _expanded_size(root: yaml.Node, limit: int) -> int | None:
    """How many nodes the composed document is once every alias is expanded; None past ``limit``.

    Iterative and memoised per node, so the cost is that of the composed (unexpanded) graph.
    ``ValueError`` when an alias names a node it is inside of (PyYAML would build a cyclic value).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # being sized: their children are above them on the stack
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_sized = stack.pop()
        if id(node) in sizes:
            continue
        if children_sized:
            open_nodes.discard(id(node))
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > limit:
                return None
            sizes[id(node)] = size
            continue
        if id(node) in open_nodes:
            raise ValueError(f"line {node.start_mark.line + 1}: an alias refers to a node it is inside of")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _read_problem(error: Exception) -> str:
    """One line: YAML's errors span several (with a snippet); keep the line number and the problem."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        context = f"{error.context} " if error.context else ""
        return f"line {error.problem_mark.line + 1}: {context}{error.problem}"
    return str(error)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing a key repeated in one JSON object (``json`` keeps the last)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"duplicate key {key!r}")
        data[key] = value
    return data


def parse_flow_file(path: str | Path) -> FlowDefinition:
    """A ``FlowDefinition`` from a YAML or JSON file; ``FlowValidationError`` if it does not parse.

    Stricter than the loaders: a key repeated in one mapping is refused (with its line), and so
    is a number as ``version`` (YAML reads ``version: 1.10`` as 1.1; the text is lost by then).
    """
    file = Path(path)
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_FLOW_FILE_BYTES + 1)
        if len(raw) > MAX_FLOW_FILE_BYTES:
            raise ValueError(f"it is larger than {MAX_FLOW_FILE_BYTES} bytes")
        text = raw.decode()
        if file.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_unique_keys)
        else:
            data = yaml.load(text, Loader=_FlowFileLoader)  # a SafeLoader: builds plain data only
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as error:
        raise FlowValidationError(file.name, [f"cannot read the file: {_read_problem(error)}"]) from error
    if not isinstance(data, dict):
        raise FlowValidationError(file.name, ["the file must hold one flow as a mapping"])
    version = data.get("version")
    if version is not None and not isinstance(version, str):
        raise FlowValidationError(
            str(data.get("name") or file.name),
            [
                f"version must be a string, not the number {version!r}: quote it "
                '(version: "1.10"; YAML reads an unquoted 1.10 as the number 1.1)'
            ],
        )
    try:
        return FlowDefinition.model_validate(data)
    except ValidationError as error:
        # A file writes `steps` at top level: name the place as the file spells it.
        under = () if "manifest" in data else ("manifest",)
        raise FlowValidationError(
            str(data.get("name") or file.name), pydantic_problems(error, under)
        ) from error


def pydantic_problems(error: ValidationError, drop_prefix: tuple[str, ...] = ()) -> list[str]:
    """A pydantic error as one readable line per problem (``steps.ship.type: Field required``),
    with ``drop_prefix`` removed from the start of each location."""
    problems = []
    for item in error.errors():
        loc = tuple(str(p) for p in item["loc"])
        if drop_prefix and loc[: len(drop_prefix)] == drop_prefix:
            loc = loc[len(drop_prefix) :]
        problems.append(f"{'.'.join(loc) or 'flow'}: {item['msg']}")
    return problems
