"""Drawings of a run for the flows UI, pure (no Redis, no web framework): the DAG of a pinned
manifest as SVG, each step coloured by its status, and the timeline of a run's attempts.

Layout is layered top to bottom: a step's row is one below its deepest ``run_after``
prerequisite, steps of a row are ordered by where their prerequisites sit (one barycentre pass:
few crossings for the fan-out / fan-in shapes flows have), and a ForEach step is a box holding
its iteration's own DAG. Iterations are not drawn one by one (a ForEach over 10,000 items would
draw 10,000 boxes): a child node shows how many iterations reached each status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape

from flowjobs.core.manifest import FlowManifest, StepKind, StepMetadata, split_runtime_key
from flowjobs.core.statuses import StepStatus

NODE_WIDTH = 176
NODE_HEIGHT = 54
COLUMN_GAP = 28
ROW_GAP = 46
GROUP_PADDING = 14
GROUP_HEADER = 38
MARGIN = 12

#: The status a group of iterations shows: the first one present, in this order (a failure is
#: what a reader must see first, then work still going on).
_AGGREGATE_ORDER = (
    StepStatus.Failed,
    StepStatus.Running,
    StepStatus.Pending,
    StepStatus.Succeeded,
    StepStatus.Skipped,
)


@dataclass(frozen=True)
class DagNode:
    """One drawn step: a top-level step, a ForEach box, or a ForEach child (for all iterations)."""

    key: str
    """Manifest key: ``ship``, or ``<loop>.<child>`` for a ForEach child."""
    label: str
    """The step's own key (without its loop's)."""
    step_type: str
    """Handler type."""
    x: float
    y: float
    width: float
    height: float
    status: StepStatus | None
    """Its status (a child's: the aggregate of its iterations); None: not reached yet."""
    counts: Mapping[StepStatus, int] = field(default_factory=dict)
    """ForEach children: iterations per status."""
    is_group: bool = False
    """A ForEach box (its children are drawn inside it)."""


@dataclass(frozen=True)
class DagEdge:
    """An arrow from a prerequisite to the step that runs after it."""

    source: str
    target: str
    path: str
    """SVG path data."""
    label: str | None
    """The condition when it is not plain "after it succeeded": its statuses and/or ``when``."""


@dataclass(frozen=True)
class DagLayout:
    """Positions of every node and edge, in SVG user units."""

    width: float
    height: float
    nodes: list[DagNode]
    edges: list[DagEdge]


@dataclass
class _Box:
    """A laid-out block (one step, or a ForEach with its inside) relative to its own origin."""

    width: float
    height: float
    nodes: list[DagNode]
    edges: list[DagEdge]


def layout_dag(manifest: FlowManifest, statuses: Mapping[str, StepStatus]) -> DagLayout:
    """Lay out a manifest's steps; ``statuses`` maps runtime step keys (``ship``,
    ``resize_all.3.resize``) to their current status."""
    box = _layout_steps(manifest.steps, statuses, loop_key=None)
    nodes = [_moved(node, MARGIN, MARGIN) for node in box.nodes]
    edges = [_moved_edge(edge, MARGIN, MARGIN) for edge in box.edges]
    return DagLayout(box.width + 2 * MARGIN, box.height + 2 * MARGIN, nodes, edges)


def _rows(steps: Mapping[str, StepMetadata]) -> list[list[str]]:
    """Steps by layer: a step sits one row below its deepest prerequisite (validation has refused
    cycles, so this terminates; a dangling name is ignored rather than failing a page)."""
    depth: dict[str, int] = {}

    def row_of(key: str, trail: frozenset[str]) -> int:
        if key not in depth:
            parents = [p for p in steps[key].run_after if p in steps and p not in trail]
            depth[key] = 1 + max((row_of(p, trail | {key}) for p in parents), default=-1)
        return depth[key]

    for key in steps:
        row_of(key, frozenset())
    rows: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    position: dict[str, float] = {}
    for key in sorted(steps, key=lambda k: (depth[k], k)):
        rows[depth[key]].append(key)
    for row in rows:
        # Barycentre of the prerequisites' positions in the rows above; entry steps keep key order.
        def centre(key: str) -> float:
            parents = [position[p] for p in steps[key].run_after if p in position]
            return sum(parents) / len(parents) if parents else float("inf")

        row.sort(key=lambda k: (centre(k), k))
        position.update({key: float(i) for i, key in enumerate(row)})
    return rows


def _layout_steps(
    steps: Mapping[str, StepMetadata], statuses: Mapping[str, StepStatus], loop_key: str | None
) -> _Box:
    blocks = {key: _layout_step(key, step, statuses, loop_key) for key, step in steps.items()}
    rows = _rows(steps)
    width = max((_row_width([blocks[k] for k in row]) for row in rows), default=0.0)
    nodes: list[DagNode] = []
    edges: list[DagEdge] = []
    anchors: dict[str, tuple[float, float, float, float]] = {}  # key -> x, y, width, height
    y = 0.0
    for row in rows:
        row_height = max(blocks[k].height for k in row)
        x = (width - _row_width([blocks[k] for k in row])) / 2  # centred rows read as a tree
        for key in row:
            block = blocks[key]
            nodes.extend(_moved(node, x, y) for node in block.nodes)
            edges.extend(_moved_edge(edge, x, y) for edge in block.edges)
            anchors[key] = (x, y, block.width, block.height)
            x += block.width + COLUMN_GAP
        y += row_height + ROW_GAP
    for key, step in steps.items():
        for parent, condition in step.run_after.items():
            if parent not in anchors:
                continue
            px, py, pw, ph = anchors[parent]
            cx, cy, cw, _ = anchors[key]
            edges.append(
                DagEdge(
                    source=_qualified(parent, loop_key),
                    target=_qualified(key, loop_key),
                    path=_curve(px + pw / 2, py + ph, cx + cw / 2, cy),
                    label=_condition_label(condition.statuses, condition.when),
                )
            )
    return _Box(width, max(y - ROW_GAP, 0.0), nodes, edges)


def _layout_step(
    key: str, step: StepMetadata, statuses: Mapping[str, StepStatus], loop_key: str | None
) -> _Box:
    qualified = _qualified(key, loop_key)
    if step.kind is StepKind.for_each and step.steps and loop_key is None:
        inner = _layout_steps(step.steps, statuses, loop_key=key)
        width = max(inner.width + 2 * GROUP_PADDING, NODE_WIDTH)
        offset_x = (width - inner.width) / 2
        group = DagNode(
            key=qualified,
            label=key,
            step_type=step.type,
            x=0,
            y=0,
            width=width,
            height=inner.height + GROUP_HEADER + GROUP_PADDING,
            status=statuses.get(key),
            is_group=True,
        )
        return _Box(
            group.width,
            group.height,
            [group, *(_moved(node, offset_x, GROUP_HEADER) for node in inner.nodes)],
            [_moved_edge(edge, offset_x, GROUP_HEADER) for edge in inner.edges],
        )
    counts: Counter[StepStatus] = Counter()
    if loop_key is not None:
        counts.update(
            status
            for runtime_key, status in statuses.items()
            if split_runtime_key(runtime_key) == (loop_key, key)
        )
        status = next((s for s in _AGGREGATE_ORDER if counts[s]), None)
    else:
        status = statuses.get(key)
    node = DagNode(qualified, key, step.type, 0, 0, NODE_WIDTH, NODE_HEIGHT, status, dict(counts))
    return _Box(NODE_WIDTH, NODE_HEIGHT, [node], [])


def _row_width(blocks: Sequence[_Box]) -> float:
    return sum(b.width for b in blocks) + COLUMN_GAP * max(len(blocks) - 1, 0)


def _qualified(key: str, loop_key: str | None) -> str:
    return f"{loop_key}.{key}" if loop_key else key


def _curve(x1: float, y1: float, x2: float, y2: float) -> str:
    bend = max((y2 - y1) / 2, 12)
    return f"M{x1:g},{y1:g} C{x1:g},{y1 + bend:g} {x2:g},{y2 - bend:g} {x2:g},{y2:g}"


def _condition_label(statuses: Sequence[StepStatus], when: str | None) -> str | None:
    parts = [] if list(statuses) == [StepStatus.Succeeded] else ["/".join(s.value for s in statuses)]
    if when:
        parts.append("when")
    return " + ".join(parts) or None


def _moved(node: DagNode, dx: float, dy: float) -> DagNode:
    return DagNode(
        node.key, node.label, node.step_type, node.x + dx, node.y + dy, node.width, node.height,
        node.status, node.counts, node.is_group,
    )  # fmt: skip


def _moved_edge(edge: DagEdge, dx: float, dy: float) -> DagEdge:
    def shift(token: str) -> str:
        command = token[0] if token[0].isalpha() else ""
        x, y = token[len(command) :].split(",")
        return f"{command}{float(x) + dx:g},{float(y) + dy:g}"

    return DagEdge(edge.source, edge.target, " ".join(shift(t) for t in edge.path.split()), edge.label)


def render_svg(layout: DagLayout, link: Callable[[DagNode], str | None], selected: str | None = None) -> str:
    """The layout as an inline ``<svg>``: every step a link (``link(node)``; None: not a link) so
    the DAG is clickable and keyboard reachable; colours come from the page's CSS classes
    ``st-<Status>`` (``st-none`` for a step not reached yet)."""
    parts = [
        f'<svg class="dag" viewBox="0 0 {layout.width:g} {layout.height:g}" width="{layout.width:g}" '
        f'height="{layout.height:g}" role="group" aria-label="Steps of the run" '
        # The page shrinks it to fit a narrow screen, but never below half size (text stays
        # readable; a wider drawing scrolls in its box instead).
        f'style="min-width: {layout.width / 2:g}px">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    for node in (n for n in layout.nodes if n.is_group):
        parts.append(_node_svg(node, link(node), selected))
    for edge in layout.edges:
        css = "edge" + (" edge-conditional" if edge.label else "")
        parts.append(f'<path class="{css}" d="{edge.path}" marker-end="url(#arrow)"/>')
        if edge.label:
            x, y = _midpoint(edge.path)
            parts.append(f'<text class="edge-label" x="{x:g}" y="{y:g}">{escape(edge.label)}</text>')
    for node in (n for n in layout.nodes if not n.is_group):
        parts.append(_node_svg(node, link(node), selected))
    parts.append("</svg>")
    return "".join(parts)


def _node_svg(node: DagNode, href: str | None, selected: str | None) -> str:
    status = node.status.value if node.status else "none"
    label = node.status.value if node.status else "not reached"
    css = (
        f"node st-{status}"
        + (" group" if node.is_group else "")
        + (" selected" if node.key == selected else "")
    )
    detail = node.step_type
    if node.counts:
        detail = " ".join(f"{count} {s.value}" for s in _AGGREGATE_ORDER if (count := node.counts.get(s)))
        label = f"iterations: {detail}"
    title = f"{node.key} ({node.step_type}): {label}"
    rect = f'<rect x="{node.x:g}" y="{node.y:g}" width="{node.width:g}" height="{node.height:g}" rx="8"/>'
    if node.is_group:
        # One line in the group's header band: its children start right under it.
        text = (
            f'<text class="node-key" x="{node.x + 12:g}" y="{node.y + 24:g}">{escape(_clip(node.label, 20))}'
            f' <tspan class="node-detail">{escape(_clip(detail, 16))} · each item</tspan></text>'
        )
    else:
        text = (
            f'<text class="node-key" x="{node.x + 12:g}" y="{node.y + 22:g}">'
            f"{escape(_clip(node.label, 20))}</text>"
            f'<text class="node-detail" x="{node.x + 12:g}" y="{node.y + 40:g}">'
            f"{escape(_clip(detail, 24))}</text>"
        )
    body = f"{rect}{text}<title>{escape(title)}</title>"
    if href is None:
        return f'<g class="{css}" data-step="{escape(node.key)}">{body}</g>'
    return (
        f'<a class="{css}" href="{escape(href)}" data-step="{escape(node.key)}" '
        f'aria-label="{escape(title)}">{body}</a>'
    )


def _midpoint(path: str) -> tuple[float, float]:
    start, end = path.split()[0][1:], path.split()[-1]
    (x1, y1), (x2, y2) = (tuple(float(v) for v in p.split(",")) for p in (start, end))
    return (x1 + x2) / 2 + 4, (y1 + y2) / 2


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class TimelineBar:
    """One attempt on the run's timeline, as percentages of the run's span (CSS left/width)."""

    step_key: str
    attempt: int
    status: StepStatus
    left: float
    width: float
    started_at: datetime
    completed_at: datetime | None
    """None: still running (the bar reaches "now")."""


@dataclass(frozen=True)
class TimelineSpan:
    """A Gantt-like chart: one bar per attempt that started, on a shared time axis."""

    start: datetime
    end: datetime
    bars: list[TimelineBar]

    @property
    def seconds(self) -> float:
        """Length of the axis."""
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class AttemptTimes:
    """What the timeline needs of an attempt (records hold more)."""

    step_key: str
    attempt: int
    status: StepStatus
    started_at: datetime | None
    completed_at: datetime | None


def timeline(
    run_start: datetime, run_end: datetime | None, attempts: Sequence[AttemptTimes], now: datetime
) -> TimelineSpan:
    """Place every started attempt between the run's start and its end (``now`` while active);
    a bar is at least 0.5 % wide so an instant attempt stays visible."""
    started = [a for a in attempts if a.started_at is not None]
    end = max([run_end or now, *(a.completed_at or now for a in started)])
    span = max((end - run_start).total_seconds(), 0.001)
    bars = []
    for a in sorted(started, key=lambda a: (a.started_at or run_start, a.step_key, a.attempt)):
        begin = a.started_at or run_start
        left = max((begin - run_start).total_seconds() / span * 100, 0.0)
        finish = a.completed_at or end
        width = max((finish - begin).total_seconds() / span * 100, 0.5)
        bars.append(
            TimelineBar(
                a.step_key,
                a.attempt,
                a.status,
                left,
                min(width, 100 - min(left, 99.5)),
                begin,
                a.completed_at,
            )
        )
    return TimelineSpan(run_start, end, bars)
