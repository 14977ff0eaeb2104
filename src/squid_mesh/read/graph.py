"""A run drawn as a graph: its declared steps and edges with their status, and two renderers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squid_mesh.definition.workflow import COMPENSATION, COMPLETE, Definition
from squid_mesh.journal import facts as f
from squid_mesh.journal.fold import AttemptState, AttemptStatus, RunState


@dataclass(frozen=True)
class GraphNode:
    """A declared step (or ``complete``) and where the run stands with it.

    ``status``: ``completed``, ``running``, ``retrying``, ``pending``, ``waiting``, ``paused``,
    ``failed``, ``skipped`` or ``compensated``.
    """

    id: str
    kind: str
    status: str
    visits: int


@dataclass(frozen=True)
class GraphEdge:
    """A transition (``kind="transition"``, with ``on`` and ``condition``) or a DAG dependency.

    ``status``: ``selected`` (the run went this way), ``skipped`` (it went another way),
    ``pending`` (not decided yet) or ``blocked`` (the run ended before reaching it).
    """

    source: str
    target: str
    kind: str
    on: str | None
    condition: dict[str, Any] | None
    status: str


@dataclass(frozen=True)
class RunGraph:
    """What ``mesh.run_graph`` returns; ``to_dot()`` and ``to_mermaid()`` render it.

    Example:
        >>> print(mesh.run_graph(run.id).to_mermaid())  # doctest: +SKIP
    """

    run_id: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    current: tuple[str, ...]

    def to_dot(self) -> str:
        """Graphviz DOT text: node colours by status, the selected path drawn bold."""
        lines = [f'digraph "{self.run_id}" {{', "  rankdir=LR;"]
        for n in self.nodes:
            colour = _COLOURS.get(n.status, "white")
            lines.append(
                f'  "{n.id}" [label="{n.id}\\n{n.status}", style=filled, fillcolor="{colour}"];'
            )
        for e in self.edges:
            label = e.on or ""
            if e.condition:
                label += f" {_condition_text(e.condition)}"
            style = "bold" if e.status == "selected" else "dashed" if e.status == "skipped" else ""
            attrs = [f'label="{label.strip()}"'] if label.strip() else []
            if style:
                attrs.append(f"style={style}")
            lines.append(f'  "{e.source}" -> "{e.target}" [{", ".join(attrs)}];')
        lines.append("}")
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        """Mermaid flowchart text: one class per node status, selected edges thick."""
        ids = {n.id: f"n{i}" for i, n in enumerate(self.nodes)}
        lines = ["flowchart LR"]
        for n in self.nodes:
            lines.append(f'  {ids[n.id]}["{n.id} ({n.status})"]:::{n.status}')
        for e in self.edges:
            arrow = "==>" if e.status == "selected" else "-.->" if e.status == "skipped" else "-->"
            label = e.on or ""
            if e.condition:
                label += f" {_condition_text(e.condition)}"
            text = f"|{label.strip()}|" if label.strip() else ""
            lines.append(f"  {ids[e.source]} {arrow}{text} {ids[e.target]}")
        for status, colour in _COLOURS.items():
            lines.append(f"  classDef {status} fill:{colour}")
        return "\n".join(lines)


_COLOURS = {
    "completed": "#9be39b",
    "running": "#8cc8ff",
    "retrying": "#ffd27f",
    "pending": "#eeeeee",
    "waiting": "#d9c8ff",
    "paused": "#ffe680",
    "failed": "#ff9b9b",
    "skipped": "#ffffff",
    "compensated": "#c0c0c0",
}


def _condition_text(condition: dict[str, Any]) -> str:
    path = condition.get("path")
    (op, value), *_ = [(k, v) for k, v in condition.items() if k != "path"] or [("?", None)]
    return f"{path} {op} {value}".replace('"', "'")


def run_graph(state: RunState, d: Definition, entries: list[f.Entry]) -> RunGraph:
    """The graph of ``state`` on its definition ``d``, with the routes taken from its journal."""
    taken: dict[str, set[str | None]] = {}
    for entry in entries:
        if isinstance(entry.fact, f.ResultApplied | f.GateResolved):
            source_step = entry.fact.key.split(":")[0]
            taken.setdefault(source_step, set()).add(entry.fact.to)
    nodes = [_node(state, d, name) for name in d.steps]
    ends = any(t.to == COMPLETE for group in d.transitions.values() for t in group)
    if ends:
        done = state.status.value == "completed"
        nodes.append(GraphNode(COMPLETE, "end", "completed" if done else "pending", 0))
    status = {n.id: n.status for n in nodes}
    edges = []
    for (source, on), group in d.transitions.items():
        for t in group:
            edges.append(
                GraphEdge(
                    source,
                    t.to,
                    "transition",
                    on,
                    None if t.when is None else t.when.describe(),
                    _transition_status(state, source, t.to, taken),
                )
            )
    for name, step in d.steps.items():
        for dep in step.after or ():
            edges.append(
                GraphEdge(
                    dep, name, "dependency", None, None, _dependency_status(state, status[dep])
                )
            )
    current = tuple(dict.fromkeys(a.step for a in state.live_attempts()))
    return RunGraph(state.run_id, tuple(nodes), tuple(edges), current)


def _latest(attempts: list[AttemptState]) -> AttemptState | None:
    return max(attempts, key=lambda a: (a.visit, a.number), default=None)


def _node(state: RunState, d: Definition, name: str) -> GraphNode:
    mine = [a for a in state.attempts.values() if a.step == name]
    undone = any(
        a.step == name + COMPENSATION and a.status is AttemptStatus.COMPLETED
        for a in state.attempts.values()
    )
    kind = d.steps[name].kind
    visits = max((a.visit for a in mine), default=0)
    last = _latest(mine)
    if undone:
        return GraphNode(name, kind, "compensated", visits)
    if state.gate is not None and state.gate.get("step") == name:
        return GraphNode(name, kind, "paused", visits)
    if last is None:
        return GraphNode(name, kind, "skipped" if state.status.terminal else "pending", visits)
    by_status = {
        AttemptStatus.COMPLETED: "completed",
        AttemptStatus.RUNNING: "running",
        AttemptStatus.WAITING: "waiting",
        AttemptStatus.FAILED: "failed",
        AttemptStatus.CANCELLED: "skipped",
        AttemptStatus.DISCARDED: "skipped",
    }
    if last.status is AttemptStatus.SCHEDULED:
        return GraphNode(name, kind, "retrying" if last.number > 1 else "pending", visits)
    return GraphNode(name, kind, by_status[last.status], visits)


def _transition_status(
    state: RunState, source: str, target: str, taken: dict[str, set[str | None]]
) -> str:
    routes = taken.get(source)
    if routes:
        return "selected" if target in routes else "skipped"
    return "blocked" if state.status.terminal else "pending"


def _dependency_status(state: RunState, dep_status: str) -> str:
    if dep_status in ("completed", "compensated"):
        return "selected"
    return "blocked" if state.status.terminal else "pending"
