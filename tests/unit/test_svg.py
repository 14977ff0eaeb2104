"""The console's run graph drawing: layered layout, classes, colours, escaping, well-formed SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squid_mesh.read.graph import GraphEdge, GraphNode, RunGraph
from squid_mesh.web._svg import graph_svg

SVG = "{http://www.w3.org/2000/svg}"
STATUSES = (
    "completed",
    "running",
    "retrying",
    "pending",
    "waiting",
    "paused",
    "failed",
    "skipped",
    "compensated",
)


def node(id_: str, status: str = "pending", visits: int = 0, kind: str = "task") -> GraphNode:
    return GraphNode(id_, kind, status, visits)


def edge(
    source: str,
    target: str,
    status: str = "pending",
    on: str | None = "ok",
    condition: dict[str, Any] | None = None,
) -> GraphEdge:
    return GraphEdge(source, target, "transition", on, condition, status)


def graph(
    nodes: list[GraphNode], edges: list[GraphEdge], current: tuple[str, ...] = ()
) -> RunGraph:
    return RunGraph("run-1", tuple(nodes), tuple(edges), current)


def chain(*ids: str) -> list[GraphEdge]:
    return [edge(a, b) for a, b in pairwise(ids)]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def node_groups(root: ET.Element) -> dict[str, ET.Element]:
    return {g.attrib["data-node"]: g for g in root.iter(f"{SVG}g") if "data-node" in g.attrib}


def rects(root: ET.Element) -> dict[str, ET.Element]:
    found = {}
    for name, group in node_groups(root).items():
        rect = group.find(f"{SVG}rect")
        assert rect is not None, name
        found[name] = rect
    return found


def positions(svg: str) -> dict[str, tuple[float, float]]:
    """Each node's centre, as drawn."""
    centres = {}
    for name, rect in rects(parse(svg)).items():
        x, y = float(rect.attrib["x"]), float(rect.attrib["y"])
        w, h = float(rect.attrib["width"]), float(rect.attrib["height"])
        centres[name] = (x + w / 2, y + h / 2)
    return centres


def edge_paths(root: ET.Element) -> dict[str, list[ET.Element]]:
    found: dict[str, list[ET.Element]] = {}
    for group in root.iter(f"{SVG}g"):
        if "data-edge" in group.attrib:
            path = group.find(f"{SVG}path")
            assert path is not None
            found.setdefault(group.attrib["data-edge"], []).append(path)
    return found


def classes(element: ET.Element) -> set[str]:
    return set(element.attrib["class"].split())


def test_a_linear_chain_runs_left_to_right_on_one_row() -> None:
    ids = ["fetch", "check", "charge", "complete"]
    svg = graph_svg(
        graph([node(i) for i in ids[:-1]] + [node("complete", kind="end")], chain(*ids))
    )
    at = positions(svg)
    xs = [at[i][0] for i in ids]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    assert len({at[i][1] for i in ids}) == 1


def test_a_diamond_puts_the_join_after_both_branches_and_keeps_declaration_order() -> None:
    nodes = [node(i) for i in ("start", "left", "right", "join")]
    edges = [edge("start", "left"), edge("start", "right"), edge("left", "join")]
    edges.append(edge("right", "join"))
    at = positions(graph_svg(graph(nodes, edges)))
    assert at["left"][0] == at["right"][0] > at["start"][0]
    assert at["join"][0] > at["left"][0]
    assert at["left"][1] < at["right"][1]  # declared first, drawn on top


def test_the_longest_path_decides_the_layer() -> None:
    # start -> a -> b -> join and start -> join: join goes after b, not right after start.
    nodes = [node(i) for i in ("start", "join", "a", "b")]
    edges = [*chain("start", "a", "b", "join"), edge("start", "join")]
    at = positions(graph_svg(graph(nodes, edges)))
    assert at["start"][0] < at["a"][0] < at["b"][0] < at["join"][0]


def test_complete_is_drawn_last_even_when_declared_or_reached_early() -> None:
    nodes = [node("complete", kind="end"), node("a"), node("b"), node("c")]
    edges = [edge("a", "complete"), *chain("a", "b", "c")]
    at = positions(graph_svg(graph(nodes, edges)))
    assert at["complete"][0] > max(at[i][0] for i in ("a", "b", "c"))


@pytest.mark.timeout(10)
def test_a_loop_back_to_an_earlier_step_terminates_and_draws_every_node() -> None:
    ids = ["a", "b", "c", "d"]
    nodes = [node(i) for i in ids] + [node("complete", kind="end")]
    edges = [*chain("a", "b", "c", "d", "complete"), edge("c", "b", on="error")]
    svg = graph_svg(graph(nodes, edges))
    at = positions(svg)
    assert set(at) == {*ids, "complete"}
    # The loop does not pile the cycle and what follows into one column.
    assert at["a"][0] < at["b"][0] < at["c"][0] < at["d"][0] < at["complete"][0]
    assert set(edge_paths(parse(svg))) == {"a->b", "b->c", "c->d", "d->complete", "c->b"}


@pytest.mark.timeout(10)
def test_graphs_made_only_of_cycles_and_self_loops_terminate() -> None:
    nodes = [node(i) for i in ("x", "y", "z", "solo")]
    edges = [*chain("x", "y", "z", "x"), edge("solo", "solo"), edge("y", "x", on="error")]
    svg = graph_svg(graph(nodes, edges))
    at = positions(svg)
    assert set(at) == {"x", "y", "z", "solo"}
    assert at["x"][0] < at["y"][0] < at["z"][0]  # freed in declaration order
    paths = edge_paths(parse(svg))
    assert len(paths["solo->solo"]) == 1
    assert len(paths["y->x"]) == 1


def test_back_edges_curve_outside_the_row_of_nodes() -> None:
    nodes = [node(i) for i in ("a", "b", "c")]
    svg = graph_svg(graph(nodes, [*chain("a", "b", "c"), edge("c", "a", on="error")]))
    root = parse(svg)
    (back,) = edge_paths(root)["c->a"]
    numbers = [
        float(v) for part in back.attrib["d"][1:].split() for v in part.strip("C").split(",")
    ]
    ys = numbers[1::2]
    bottom = max(float(r.attrib["y"]) + float(r.attrib["height"]) for r in rects(root).values())
    assert max(ys) > bottom  # its control points dip below the nodes, so the loop stays visible


def test_each_node_has_its_status_class_and_colour_and_the_current_one_is_marked() -> None:
    nodes = [node(s, status=s) for s in STATUSES]
    svg = graph_svg(graph(nodes, [], current=("running", "paused")))
    drawn = rects(parse(svg))
    fills = {}
    for status in STATUSES:
        cls = classes(drawn[status])
        assert {"node", f"node-{status}"} <= cls
        assert ("node-current" in cls) is (status in ("running", "paused"))
        fills[status] = drawn[status].attrib["fill"]
    assert fills["running"] == fills["retrying"]
    assert fills["paused"] == fills["waiting"]
    assert len({fills[s] for s in ("completed", "running", "failed", "paused", "compensated")}) == 5
    assert float(drawn["running"].attrib["stroke-width"]) > float(
        drawn["pending"].attrib["stroke-width"]
    )


def test_the_label_shows_the_id_the_status_and_the_visits_when_more_than_one() -> None:
    nodes = [node("poll", status="running", visits=3), node("once", status="completed", visits=1)]
    groups = node_groups(parse(graph_svg(graph(nodes, [edge("poll", "once")]))))
    texts = {name: [t.text for t in g.iter(f"{SVG}text")] for name, g in groups.items()}
    assert texts["poll"] == ["poll", "running \u00d73"]
    assert texts["once"] == ["once", "completed"]


def test_a_selected_edge_is_thicker_than_a_pending_one_and_classed_by_status() -> None:
    nodes = [node("a", "completed"), node("b", "completed"), node("c"), node("d"), node("e")]
    edges = [
        edge("a", "b", status="selected"),
        edge("b", "c", status="pending"),
        edge("a", "d", status="skipped", on="error"),
        edge("d", "e", status="blocked"),
    ]
    paths = edge_paths(parse(graph_svg(graph(nodes, edges))))
    for pair, status in (("a->b", "selected"), ("b->c", "pending"), ("a->d", "skipped")):
        assert {"edge", f"edge-{status}"} <= classes(paths[pair][0])
    assert "edge-blocked" in classes(paths["d->e"][0])
    selected = float(paths["a->b"][0].attrib["stroke-width"])
    assert selected > float(paths["b->c"][0].attrib["stroke-width"])
    assert "stroke-dasharray" in paths["a->d"][0].attrib
    assert paths["a->b"][0].attrib["marker-end"].startswith("url(#")


def test_every_arrow_marker_an_edge_points_at_is_defined() -> None:
    nodes = [node("a"), node("b"), node("c")]
    edges = [edge("a", "b", status="selected"), edge("a", "c", status="skipped")]
    root = parse(graph_svg(graph(nodes, edges)))
    defined = {m.attrib["id"] for m in root.iter(f"{SVG}marker")}
    used = {p.attrib["marker-end"][5:-1] for ps in edge_paths(root).values() for p in ps}
    assert used and used <= defined


def test_edge_labels_show_the_outcome_and_the_condition() -> None:
    nodes = [node("check"), node("approve"), node("reject")]
    edges = [
        edge("check", "approve", on="ok", condition={"path": "amount", "greater_than": 100}),
        edge("check", "reject", on="error"),
    ]
    root = parse(graph_svg(graph(nodes, edges)))
    labels = {t.text for t in root.iter(f"{SVG}text") if "edge-label" in classes(t)}
    assert labels == {"ok if amount > 100", "error"}


def test_parallel_edges_between_the_same_nodes_do_not_overlap() -> None:
    nodes = [node("a"), node("b")]
    edges = [edge("a", "b", on="ok"), edge("a", "b", on="error")]
    paths = edge_paths(parse(graph_svg(graph(nodes, edges))))["a->b"]
    assert len(paths) == 2
    assert paths[0].attrib["d"] != paths[1].attrib["d"]


def test_ids_and_labels_from_the_workflow_are_escaped() -> None:
    evil = '<script>"&'
    nodes = [node(evil, status="running"), node("b")]
    edges = [edge(evil, "b", on="<b>", condition={"path": "a", "equals": "x'\"<"})]
    run = RunGraph('run"<&>', tuple(nodes), tuple(edges), (evil,))
    svg = graph_svg(run)
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;&quot;&amp;" in svg
    root = parse(svg)  # would raise on a stray quote, ampersand or tag
    assert evil in node_groups(root)
    assert f"{evil}->b" in edge_paths(root)
    assert root.attrib["aria-label"] == 'Graph of run run"<&>'
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == 'Graph of run run"<&>'


def test_a_hostile_status_cannot_break_out_of_the_class_attribute() -> None:
    svg = graph_svg(graph([node("a", status='x" onclick="alert(1)')], []))
    rect = rects(parse(svg))["a"]
    assert "onclick" not in rect.attrib
    assert classes(rect) == {"node", "node-x-onclick-alert-1"}


def test_the_svg_element_is_sized_from_the_layout_and_accessible() -> None:
    small = parse(graph_svg(graph([node("a")], [])))
    ids = [f"step_{i}" for i in range(6)]
    wide = parse(graph_svg(graph([node(i) for i in ids], chain(*ids))))
    for root in (small, wide):
        assert root.attrib["role"] == "img"
        assert "run-1" in root.attrib["aria-label"]
        _, _, w, h = (float(v) for v in root.attrib["viewBox"].split())
        assert (w, h) == (float(root.attrib["width"]), float(root.attrib["height"]))
        assert w > 0 and h > 0
    assert float(wide.attrib["width"]) > 3 * float(small.attrib["width"])


def test_every_node_lies_inside_the_view_box() -> None:
    nodes = [node(i) for i in ("a", "b", "c", "d")]
    edges = [*chain("a", "b", "c", "d"), edge("d", "a", on="error"), edge("b", "b")]
    root = parse(graph_svg(graph(nodes, edges)))
    x0, y0, w, h = (float(v) for v in root.attrib["viewBox"].split())
    for rect in rects(root).values():
        x, y = float(rect.attrib["x"]), float(rect.attrib["y"])
        assert x0 <= x and x + float(rect.attrib["width"]) <= x0 + w
        assert y0 <= y and y + float(rect.attrib["height"]) <= y0 + h


def test_an_empty_graph_still_draws_a_valid_svg() -> None:
    root = parse(graph_svg(graph([], [])))
    assert node_groups(root) == {}
    assert float(root.attrib["width"]) > 0


def test_edges_to_unknown_nodes_are_left_out_rather_than_failing() -> None:
    root = parse(graph_svg(graph([node("a")], [edge("a", "ghost"), edge("ghost", "a")])))
    assert set(node_groups(root)) == {"a"}
    assert edge_paths(root) == {}


def test_the_same_graph_gives_the_same_string() -> None:
    def build() -> RunGraph:
        nodes = [node(i, status="completed") for i in ("a", "b", "c")]
        edges = [*chain("a", "b", "c"), edge("c", "a", on="error", status="selected")]
        return graph(nodes, edges, current=("c",))

    assert graph_svg(build()) == graph_svg(build())
    other = RunGraph("run-2", build().nodes, build().edges, ())
    assert graph_svg(other) != graph_svg(build())


names = st.sampled_from(["a", "b", "c", "d", "e", "complete", "<x>", 'q"&'])


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(names, min_size=0, max_size=7, unique=True),
    pairs=st.lists(st.tuples(names, names), max_size=14),
    status=st.sampled_from(STATUSES),
)
def test_any_graph_with_any_loops_draws_every_node_as_well_formed_svg(
    ids: list[str], pairs: list[tuple[str, str]], status: str
) -> None:
    run = graph([node(i, status=status) for i in ids], [edge(s, t) for s, t in pairs])
    svg = graph_svg(run)
    root = parse(svg)
    assert set(node_groups(root)) == set(ids)
    known = set(ids)
    drawn = sum(len(p) for p in edge_paths(root).values())
    assert drawn == sum(1 for s, t in pairs if s in known and t in known)
    assert svg == graph_svg(run)
