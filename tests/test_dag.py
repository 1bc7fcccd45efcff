"""The flows UI's drawings (flowjobs/web/dag.py): DAG layout and SVG, and the attempts timeline."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from flowjobs.core.manifest import FlowManifest
from flowjobs.core.statuses import StepStatus
from flowjobs.web.dag import AttemptTimes, DagNode, layout_dag, render_svg, timeline

DIAMOND = FlowManifest.model_validate(
    {
        "steps": {
            "fetch": {"type": "Fetch"},
            "left": {"type": "A", "run_after": ["fetch"]},
            "right": {"type": "B", "run_after": ["fetch"]},
            "join": {"type": "Join", "run_after": ["left", "right"]},
            "rescue": {"type": "Rescue", "run_after": {"join": ["Failed"]}},
        }
    }
)

LOOP = FlowManifest.model_validate(
    {
        "steps": {
            "images": {
                "type": "ForEach",
                "for_each": [1, 2, 3],
                "steps": {"resize": {"type": "Resize"}, "store": {"type": "Store", "run_after": ["resize"]}},
            },
            "export": {"type": "Export", "run_after": ["images"]},
        }
    }
)


def _nodes(manifest: FlowManifest, statuses: dict[str, StepStatus]) -> dict[str, DagNode]:
    return {node.key: node for node in layout_dag(manifest, statuses).nodes}


def test_steps_are_layered_below_their_deepest_prerequisite() -> None:
    nodes = _nodes(DIAMOND, {})
    assert nodes["fetch"].y < nodes["left"].y == nodes["right"].y < nodes["join"].y < nodes["rescue"].y
    assert nodes["left"].x < nodes["right"].x, "a row is in key order when its parents tie"
    layout = layout_dag(DIAMOND, {})
    for node in layout.nodes:
        assert node.x >= 0 and node.x + node.width <= layout.width
        assert node.y >= 0 and node.y + node.height <= layout.height


def test_edges_join_prerequisites_and_label_non_default_conditions() -> None:
    edges = {(e.source, e.target): e for e in layout_dag(DIAMOND, {}).edges}
    assert set(edges) == {
        ("fetch", "left"), ("fetch", "right"), ("left", "join"), ("right", "join"), ("join", "rescue")
    }  # fmt: skip
    assert edges[("fetch", "left")].label is None
    assert edges[("join", "rescue")].label == "Failed"
    nodes = _nodes(DIAMOND, {})
    start = edges[("fetch", "left")].path.split()[0]
    assert (
        start
        == f"M{nodes['fetch'].x + nodes['fetch'].width / 2:g},{nodes['fetch'].y + nodes['fetch'].height:g}"
    )


def test_nodes_carry_their_status_and_unreached_steps_none() -> None:
    nodes = _nodes(DIAMOND, {"fetch": StepStatus.Succeeded, "left": StepStatus.Failed})
    assert nodes["fetch"].status is StepStatus.Succeeded
    assert nodes["left"].status is StepStatus.Failed
    assert nodes["join"].status is None


def test_a_foreach_is_a_box_around_its_iteration_with_counts_per_child() -> None:
    statuses = {
        "images": StepStatus.Running,
        "images.0.resize": StepStatus.Succeeded,
        "images.1.resize": StepStatus.Failed,
        "images.2.resize": StepStatus.Succeeded,
        "images.0.store": StepStatus.Running,
    }
    nodes = _nodes(LOOP, statuses)
    group, resize, store = nodes["images"], nodes["images.resize"], nodes["images.store"]
    assert group.is_group and group.status is StepStatus.Running
    for child in (resize, store):
        assert group.x <= child.x and child.x + child.width <= group.x + group.width
        assert group.y < child.y and child.y + child.height <= group.y + group.height
    assert resize.counts == {StepStatus.Succeeded: 2, StepStatus.Failed: 1}
    assert resize.status is StepStatus.Failed, "a failed iteration is what the node shows"
    assert store.status is StepStatus.Running
    assert nodes["export"].y > group.y + group.height


def test_svg_is_well_formed_with_a_link_per_step_and_status_classes() -> None:
    layout = layout_dag(LOOP, {"images.0.resize": StepStatus.Failed})
    svg = render_svg(layout, lambda node: f"/runs/x?step={node.key}&amp=1", selected="export")
    root = ET.fromstring(svg)
    links = root.findall("{http://www.w3.org/2000/svg}a") or root.findall("a")
    assert {a.get("data-step") for a in links} == {"images", "images.resize", "images.store", "export"}
    classes = {a.get("data-step"): a.get("class", "") for a in links}
    assert "st-Failed" in classes["images.resize"]
    assert "st-none" in classes["export"] and "selected" in classes["export"]
    assert all(a.get("href", "").startswith("/runs/x?step=") for a in links)
    assert "iterations: 1 Failed" in svg


def test_svg_without_links_draws_plain_groups() -> None:
    svg = render_svg(layout_dag(DIAMOND, {}), lambda node: None)
    assert "<a " not in svg and svg.count('class="node st-') == 5


def test_timeline_places_attempts_on_the_run_span() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    attempts = [
        AttemptTimes("a", 1, StepStatus.Succeeded, t0, t0 + timedelta(seconds=2)),
        AttemptTimes("b", 1, StepStatus.Failed, t0 + timedelta(seconds=2), t0 + timedelta(seconds=3)),
        AttemptTimes("b", 2, StepStatus.Running, t0 + timedelta(seconds=3), None),
        AttemptTimes("c", 1, StepStatus.Pending, None, None),
    ]
    span = timeline(t0, None, attempts, now=t0 + timedelta(seconds=4))
    assert span.seconds == 4
    assert [(b.step_key, b.attempt) for b in span.bars] == [("a", 1), ("b", 1), ("b", 2)]
    first, second, running = span.bars
    assert (first.left, first.width) == (0, 50)
    assert (second.left, second.width) == (50, 25)
    assert (running.left, running.width) == (75, 25)


def test_timeline_keeps_instant_attempts_visible() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    span = timeline(
        t0, t0 + timedelta(seconds=100), [AttemptTimes("a", 1, StepStatus.Succeeded, t0, t0)], now=t0
    )
    assert span.bars[0].width == 0.5
