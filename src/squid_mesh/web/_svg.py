"""A run's graph drawn as inline SVG, for the server-rendered operator console.

The console must show a run's steps and the way it went without JavaScript, a CDN or Graphviz
on the host, so the drawing is made here in plain Python with no dependency and no I/O: a
``RunGraph`` in, one ``<svg>`` string out, the same string for the same graph.

Layout: layered left to right, a node's layer being its longest path from a source (Kahn's
algorithm, freeing one node of a cycle whenever it stalls on one), and ``complete`` always comes
last. Within a layer nodes keep their declaration order. Forward edges are curves between
layers, edges going back curve below (or above) the nodes so a loop stays visible.

The page's CSS styles the classes (``node-<status>``, ``node-current``, ``edge-<status>``), but
every colour and stroke is also given as an attribute, so the SVG reads on its own. Node ids and
edge labels come from user-defined workflows: every text and attribute value is escaped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from squid_mesh.definition.workflow import COMPLETE
from squid_mesh.read.graph import GraphEdge, GraphNode, RunGraph

_NODE_H = 46.0
_NODE_MIN_W = 110.0
_NODE_MAX_W = 230.0
_NODE_PAD = 14.0
_ROW_GAP = 26.0
_COL_GAP_MIN = 70.0
_COL_GAP_MAX = 240.0
_MARGIN = 20.0
_ID_CHAR_W = 7.6  # approximate advance of a 13px sans-serif character
_SMALL_CHAR_W = 6.4  # 11px
_MAX_ID_CHARS = 28
_MAX_LABEL_CHARS = 32
_PARALLEL_SPREAD = 10.0

# status -> (fill, stroke)
_NODE_COLOURS = {
    "completed": ("#d4f4d4", "#2e7d32"),
    "running": ("#d8e8ff", "#1f6feb"),
    "retrying": ("#d8e8ff", "#1f6feb"),
    "failed": ("#ffd8d6", "#cf222e"),
    "paused": ("#fff0c2", "#b07d00"),
    "waiting": ("#fff0c2", "#b07d00"),
    "pending": ("#eeeeee", "#8c8c8c"),
    "skipped": ("#f4f4f4", "#b4b4b4"),
    "compensated": ("#eadcff", "#8250df"),
}
_NODE_DEFAULT = _NODE_COLOURS["pending"]

# status -> (stroke, stroke-width, dash array or "")
_EDGE_STYLES = {
    "selected": ("#24292f", 3.0, ""),
    "pending": ("#8c8c8c", 1.5, ""),
    "skipped": ("#bdbdbd", 1.5, "5 4"),
    "blocked": ("#bdbdbd", 1.5, "2 4"),
}
_EDGE_DEFAULT = _EDGE_STYLES["pending"]

_OPERATORS = {"equals": "==", "greater_than": ">", "less_than": "<", "in": "in"}


def graph_svg(graph: RunGraph) -> str:
    """The run's graph as one ``<svg>`` element, ready to be placed inline in an HTML page.

    Example:
        >>> svg = graph_svg(mesh.run_graph(run.id))  # doctest: +SKIP
    """
    nodes = _unique(graph.nodes)
    layers = _layers(nodes, graph.edges)
    boxes = _place(nodes, layers, graph.edges)
    bounds = _Bounds()
    for box in boxes.values():
        bounds.include(box.x, box.y)
        bounds.include(box.right, box.bottom)
    prefix = "sm-" + hashlib.sha256(graph.run_id.encode("utf-8", "replace")).hexdigest()[:10]
    edge_parts, statuses = _draw_edges(graph.edges, boxes, bounds, prefix)
    current = set(graph.current)
    node_parts = [_draw_node(box, box.node.id in current) for box in boxes.values()]
    if not boxes:
        bounds.include(0, 0)
        bounds.include(160, 24)
        node_parts.append(
            '<text class="graph-empty" x="80" y="16" text-anchor="middle" font-size="13" '
            'fill="#57606a">no steps</text>'
        )
    x0, y0 = bounds.min_x - _MARGIN, bounds.min_y - _MARGIN
    width, height = (
        bounds.max_x - bounds.min_x + 2 * _MARGIN,
        bounds.max_y - bounds.min_y + 2 * _MARGIN,
    )
    run = _esc(graph.run_id)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="run-graph" width="{_num(width)}" '
            f'height="{_num(height)}" viewBox="{_num(x0)} {_num(y0)} {_num(width)} {_num(height)}" '
            f'role="img" aria-label="Graph of run {run}" '
            f'font-family="system-ui, -apple-system, Segoe UI, sans-serif">',
            f"<title>Graph of run {run}</title>",
            _markers(prefix, statuses),
            '<g class="edges">',
            *edge_parts,
            "</g>",
            '<g class="nodes">',
            *node_parts,
            "</g>",
            "</svg>",
        ]
    )


@dataclass(frozen=True)
class _Box:
    node: GraphNode
    layer: int
    row: int
    rows: int
    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class _Bounds:
    min_x: float = field(default=float("inf"))
    min_y: float = field(default=float("inf"))
    max_x: float = field(default=float("-inf"))
    max_y: float = field(default=float("-inf"))

    def include(self, x: float, y: float) -> None:
        self.min_x, self.max_x = min(self.min_x, x), max(self.max_x, x)
        self.min_y, self.max_y = min(self.min_y, y), max(self.max_y, y)


@dataclass(frozen=True)
class _Route:
    d: str
    points: tuple[tuple[float, float], ...]
    label_x: float
    label_y: float
    anchor: str


def _unique(nodes: Iterable[GraphNode]) -> list[GraphNode]:
    """The nodes in declaration order, the first one of a repeated id kept."""
    seen: dict[str, GraphNode] = {}
    for node in nodes:
        seen.setdefault(node.id, node)
    return list(seen.values())


def _layers(nodes: list[GraphNode], edges: Iterable[GraphEdge]) -> dict[str, int]:
    """Each node's layer: its longest path from a source (Kahn's algorithm), ``complete`` last.

    Where Kahn stalls on a cycle, one node of it is freed (the first declared one an edge reaches,
    else the first declared) and the walk goes on: a step routing back to an earlier one then
    draws as a back edge, instead of the cycle and all after it piling up in a single column.
    Every turn places one node, so a graph of loops ends too.
    """
    ids = [n.id for n in nodes if n.id != COMPLETE]
    known = set(ids)
    successors: dict[str, list[str]] = {i: [] for i in ids}
    indegree = dict.fromkeys(ids, 0)
    for e in edges:
        if e.source in known and e.target in known and e.source != e.target:
            successors[e.source].append(e.target)
            indegree[e.target] += 1
    depth = dict.fromkeys(ids, 0)
    reached: set[str] = set()
    placed: dict[str, int] = {}
    ready = deque(i for i in ids if indegree[i] == 0)
    while len(placed) < len(ids):
        if not ready:
            left = [i for i in ids if i not in placed]
            ready.append(next((i for i in left if i in reached), left[0]))
        node = ready.popleft()
        placed[node] = depth[node]
        for target in successors[node]:
            reached.add(target)
            indegree[target] -= 1
            if target not in placed:
                depth[target] = max(depth[target], depth[node] + 1)
                if indegree[target] == 0:
                    ready.append(target)
    if any(n.id == COMPLETE for n in nodes):
        placed[COMPLETE] = max(placed.values(), default=-1) + 1
    return placed


def _place(
    nodes: list[GraphNode], layers: dict[str, int], edges: Iterable[GraphEdge]
) -> dict[str, _Box]:
    """A box per node: layers as columns, declaration order from the top, columns centred."""
    columns: dict[int, list[GraphNode]] = {}
    for node in nodes:
        columns.setdefault(layers[node.id], []).append(node)
    order = sorted(columns)
    widths = {node.id: _node_width(node) for node in nodes}
    col_w = {c: max(widths[n.id] for n in columns[c]) for c in order}
    col_h = {c: len(columns[c]) * (_NODE_H + _ROW_GAP) - _ROW_GAP for c in order}
    tallest = max(col_h.values(), default=0.0)
    gaps = _column_gaps(layers, edges)
    boxes: dict[str, _Box] = {}
    x = 0.0
    for c in order:
        y = (tallest - col_h[c]) / 2
        for row, node in enumerate(columns[c]):
            w = widths[node.id]
            box = _Box(node, c, row, len(columns[c]), x + (col_w[c] - w) / 2, y, w, _NODE_H)
            boxes[node.id] = box
            y += _NODE_H + _ROW_GAP
        x += col_w[c] + gaps.get(c, _COL_GAP_MIN)
    return boxes


def _column_gaps(layers: dict[str, int], edges: Iterable[GraphEdge]) -> dict[int, float]:
    """Room after each column for the labels of the edges leaving it."""
    need: dict[int, float] = {}
    for e in edges:
        if e.source not in layers or e.target not in layers:
            continue
        source, target = layers[e.source], layers[e.target]
        room = len(_edge_label(e)) * _SMALL_CHAR_W + 28
        if target == source:
            room += 40  # the curve bulges out to the right of the column
        elif target < source:
            continue
        need[source] = max(need.get(source, 0.0), room)
    return {c: min(max(v, _COL_GAP_MIN), _COL_GAP_MAX) for c, v in need.items()}


def _node_width(node: GraphNode) -> float:
    label = len(_clip(node.id, _MAX_ID_CHARS)) * _ID_CHAR_W
    status = len(_status_line(node)) * _SMALL_CHAR_W
    return min(max(label, status, _NODE_MIN_W - 2 * _NODE_PAD) + 2 * _NODE_PAD, _NODE_MAX_W)


def _status_line(node: GraphNode) -> str:
    return f"{node.status} \u00d7{node.visits}" if node.visits > 1 else node.status


def _draw_node(box: _Box, current: bool) -> str:
    node = box.node
    fill, stroke = _NODE_COLOURS.get(node.status, _NODE_DEFAULT)
    classes = f"node node-{_token(node.status)}" + (" node-current" if current else "")
    radius = _NODE_H / 2 if node.id == COMPLETE else 8.0
    return (
        f'<g class="node-group" data-node="{_esc(node.id)}" data-kind="{_esc(node.kind)}">'
        f"<title>{_esc(node.id)}: {_esc(_status_line(node))}</title>"
        f'<rect class="{_esc(classes)}" x="{_num(box.x)}" y="{_num(box.y)}" width="{_num(box.w)}" '
        f'height="{_num(box.h)}" rx="{_num(radius)}" ry="{_num(radius)}" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{"3" if current else "1.5"}"/>'
        f'<text class="node-label" x="{_num(box.cx)}" y="{_num(box.y + 20)}" '
        f'text-anchor="middle" font-size="13" font-weight="600" fill="#1f2328">'
        f"{_esc(_clip(node.id, _MAX_ID_CHARS))}</text>"
        f'<text class="node-status" x="{_num(box.cx)}" y="{_num(box.y + 36)}" '
        f'text-anchor="middle" font-size="11" fill="#57606a">{_esc(_status_line(node))}</text>'
        "</g>"
    )


def _draw_edges(
    edges: Iterable[GraphEdge], boxes: dict[str, _Box], bounds: _Bounds, prefix: str
) -> tuple[list[str], list[str]]:
    """The edges' SVG and the edge statuses met (one arrow marker each), both in order."""
    drawable = [e for e in edges if e.source in boxes and e.target in boxes]
    siblings: dict[tuple[str, str], int] = {}
    for e in drawable:
        siblings[e.source, e.target] = siblings.get((e.source, e.target), 0) + 1
    seen: dict[tuple[str, str], int] = {}
    parts: list[str] = []
    statuses: dict[str, None] = {}
    for e in drawable:
        pair = (e.source, e.target)
        index = seen[pair] = seen.get(pair, -1) + 1
        offset = (index - (siblings[pair] - 1) / 2) * _PARALLEL_SPREAD
        route = _route(boxes[e.source], boxes[e.target], offset)
        label = _clip(_edge_label(e), _MAX_LABEL_CHARS)
        for px, py in route.points:
            bounds.include(px, py)
        if label:
            half = len(label) * _SMALL_CHAR_W / 2
            left = route.label_x - (half if route.anchor == "middle" else 0)
            bounds.include(left, route.label_y - 11)
            bounds.include(left + 2 * half, route.label_y + 3)
        status = _token(e.status)
        statuses[status] = None
        parts.append(_draw_edge(e, route, label, f"{prefix}-{status}"))
    return parts, list(statuses)


def _draw_edge(e: GraphEdge, route: _Route, label: str, marker: str) -> str:
    colour, width, dash = _EDGE_STYLES.get(e.status, _EDGE_DEFAULT)
    classes = f"edge edge-{_token(e.status)} edge-{_token(e.kind)}"
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    text = (
        f'<text class="edge-label" x="{_num(route.label_x)}" y="{_num(route.label_y)}" '
        f'text-anchor="{route.anchor}" font-size="11" fill="#57606a" stroke="#ffffff" '
        f'stroke-width="3" paint-order="stroke">{_esc(label)}</text>'
        if label
        else ""
    )
    return (
        f'<g class="edge-group" data-edge="{_esc(f"{e.source}->{e.target}")}">'
        f'<path class="{_esc(classes)}" d="{route.d}" fill="none" stroke="{colour}" '
        f'stroke-width="{_num(width)}"{dashes} marker-end="url(#{_esc(marker)})"/>'
        f"{text}</g>"
    )


def _route(s: _Box, t: _Box, offset: float) -> _Route:
    """The path from ``s`` to ``t``: forward, within a column, back to an earlier one, or a loop."""
    if s.node.id == t.node.id:
        x1, x2, y = s.cx + 12 + offset, s.cx - 12 + offset, s.y
        top = y - 40
        return _Route(
            _curve((x1, y), (x1 + 26, top), (x2 - 26, top), (x2, y)),
            ((x1, y), (x1 + 26, top), (x2 - 26, top), (x2, y)),
            s.cx + offset,
            top - 2,
            "middle",
        )
    if t.layer > s.layer:
        p1, p2 = (s.right, s.cy + offset), (t.x, t.cy + offset)
        dx = max((p2[0] - p1[0]) / 2, 30.0)
        c1, c2 = (p1[0] + dx, p1[1]), (p2[0] - dx, p2[1])
        mid_x, mid_y = (p1[0] + p2[0]) / 2, (p1[1] + p2[1]) / 2
        return _Route(_curve(p1, c1, c2, p2), (p1, c1, c2, p2), mid_x, mid_y - 5, "middle")
    if t.layer == s.layer:
        bulge = 36 + 6 * abs(t.row - s.row) + offset
        p1, p2 = (s.right, s.cy), (t.right, t.cy)
        c1, c2 = (p1[0] + bulge, p1[1]), (p2[0] + bulge, p2[1])
        mid_x, mid_y = max(p1[0], p2[0]) + 0.75 * bulge + 4, (p1[1] + p2[1]) / 2 + 4
        return _Route(_curve(p1, c1, c2, p2), (p1, c1, c2, p2), mid_x, mid_y, "start")
    # Back to an earlier layer: under the nodes, or over them when the source tops its column.
    above = s.row == 0 and s.rows > 1
    depth = 34 + 14 * (s.layer - t.layer)
    y1, y2 = (s.y, t.y) if above else (s.bottom, t.bottom)
    yc = min(y1, y2) - depth if above else max(y1, y2) + depth
    p1, p2 = (s.cx + offset, y1), (t.cx + offset, y2)
    c1, c2 = (p1[0], yc), (p2[0], yc)
    extreme = 0.75 * yc + 0.125 * (y1 + y2)  # the curve's point at t = 1/2
    label_y = extreme - 6 if above else extreme + 14
    mid_x = (p1[0] + p2[0]) / 2
    return _Route(_curve(p1, c1, c2, p2), (p1, c1, c2, p2), mid_x, label_y, "middle")


def _curve(
    p1: tuple[float, float],
    c1: tuple[float, float],
    c2: tuple[float, float],
    p2: tuple[float, float],
) -> str:
    return "M{} C{} {} {}".format(*(f"{_num(x)},{_num(y)}" for x, y in (p1, c1, c2, p2)))


def _markers(prefix: str, statuses: list[str]) -> str:
    """One arrowhead per edge status, coloured like its edges (ids unique to the run)."""
    markers = []
    for status in statuses:
        colour = _EDGE_STYLES.get(status, _EDGE_DEFAULT)[0]
        markers.append(
            f'<marker id="{_esc(f"{prefix}-{status}")}" viewBox="0 0 10 10" refX="10" refY="5" '
            f'markerWidth="7" markerHeight="7" markerUnits="userSpaceOnUse" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    return "<defs>" + "".join(markers) + "</defs>"


def _edge_label(e: GraphEdge) -> str:
    label = e.on or ""
    if e.condition:
        condition = _condition_text(e.condition)
        label = f"{label} if {condition}" if label else f"if {condition}"
    return label


def _condition_text(condition: dict[str, Any]) -> str:
    path = str(condition.get("path", "?"))
    operands = [(k, v) for k, v in condition.items() if k != "path"]
    if not operands:
        return path
    op, value = operands[0]
    if op == "exists":
        return f"{path} exists" if value else f"{path} missing"
    return f"{path} {_OPERATORS.get(op, op)} {_json(value)}"


def _json(value: object) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except ValueError:  # a circular structure; conditions are JSON-safe, so only defensively
        return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _token(value: str) -> str:
    """A CSS class token from a status or kind (those are ours, but never trust a class name)."""
    return re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-") or "unknown"


def _esc(value: str) -> str:
    """Text or attribute value, escaped: ids and labels come from user-defined workflows."""
    return escape(value, quote=True)


def _num(value: float) -> str:
    rounded = round(value, 1)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:.1f}"
