"""A model's plan from its config alone: per-node output shapes and parameter counts, and the block graph
drawn as Mermaid and Graphviz DOT (SVG too when Graphviz's `dot` is installed)."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder.graph.shapes import NodeInfo, example_sizes, human, infer_shapes
from builder.graph.spec import GraphSpec, ModelSpec


@dataclass
class Plan:
    spec: ModelSpec
    infos: dict[str, NodeInfo]  # qualified name -> info
    shapes: dict[str, str]  # qualified name -> "(batch, seq, 768)"
    total: int


def make_plan(spec: ModelSpec, quick: bool = False) -> Plan:
    """Infer shapes twice with different example sizes: dimensions that follow an input's named
    dimension are shown by its name (batch, seq), the rest as numbers."""
    first = example_sizes(spec)
    second = {d: (n - i - 1 if n - i - 1 >= 1 else n + i + 1) for i, (d, n) in enumerate(first.items())}
    a = {i.name: i for i in infer_shapes(spec, first, quick)}
    b = {i.name: i for i in infer_shapes(spec, second, quick)}
    by_pair = {(first[d], second[d]): d for d in first}
    shapes = {}
    for name, info in a.items():
        other = b[name].shape or ()
        dims = [by_pair.get((x, y), str(x)) if x != y else str(x) for x, y in zip(info.shape or (), other)]
        shapes[name] = "(" + ", ".join(dims) + ")"
    return Plan(spec, a, shapes, sum(i.params for i in a.values()))


def rows(plan: Plan) -> list[tuple[str, str, str, str]]:
    """(node, block, output shape, parameters); a repeat shows its first copy's nodes once, indented."""
    out: list[tuple[str, str, str, str]] = []
    _rows(plan, plan.spec.graph, "", "", out)
    return out


def _rows(plan: Plan, graph: GraphSpec, prefix: str, indent: str, out: list) -> None:
    for name in graph.order:
        node = graph.nodes[name]
        if node.body is not None:
            params = sum(i.params for q, i in plan.infos.items() if q.startswith(f"{prefix}{name}."))
            last = f"{prefix}{name}.{node.repeat - 1}.{node.out}"
            out.append((indent + name, f"repeat ×{node.repeat}", plan.shapes.get(last, "?"), f"{params:,}"))
            _rows(plan, node.body, f"{prefix}{name}.0.", indent + "  ", out)
            continue
        q = prefix + name
        info = plan.infos.get(q)
        label = node.block + (f" (tied to {node.tie})" if node.tie else "")
        out.append((indent + name, label, plan.shapes.get(q, "?"), f"{info.params:,}" if info else "?"))


def print_table(plan: Plan, title: str, trainable: str | None = None) -> None:
    """The node table; `trainable`, when some parameters are frozen, is shown under the total."""
    table = Table(title=title, title_justify="left")
    for col, just in (("node", "left"), ("block", "left"), ("output shape", "left"), ("parameters", "right")):
        table.add_column(col, justify=just)
    for name, s in plan.spec.inputs.items():
        table.add_row(name, f"input ({s.dtype})", "(" + ", ".join(map(str, s.shape)) + ")", "")
    for row in rows(plan):
        table.add_row(*map(escape, row))
    table.add_section()
    table.add_row("total", "", "", f"{plan.total:,} ({human(plan.total)})")
    if trainable:
        table.add_row("trainable", "", "", trainable)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # keep rows whole in logs and pipes
    console.print(table)


# ---------------------------------------------------------------- diagrams

def diagram_items(plan: Plan) -> list[tuple]:
    """The drawing, independent of format: ("node", id, label, kind), ("edge", src, dst, label, dotted),
    ("begin", id, label) ... ("end",) for a repeat's body."""
    items: list[tuple] = []
    visible = {name: name for name in plan.spec.inputs}
    for name, s in plan.spec.inputs.items():
        items.append(("node", name, f"{name}\n({', '.join(map(str, s.shape))})", "input"))
    _walk(plan, plan.spec.graph, "", "", visible, items)
    for out, node in plan.spec.outputs.items():
        items.append(("node", f"out_{out}", out, "output"))
        items.append(("edge", visible[node], f"out_{out}", "", False))
    return items


def _walk(plan: Plan, graph: GraphSpec, prefix: str, scope: str, visible: dict[str, str], items: list) -> None:
    visible.update({name: scope + name for name in graph.nodes})
    for name in graph.order:
        node, nid = graph.nodes[name], scope + name
        if node.body is not None:
            items.append(("begin", nid, f"{name} ×{node.repeat}"))
            items.append(("node", f"{nid}__in", node.carry, "carry"))
            items.append(("edge", visible[node.inputs["in"]], f"{nid}__in", "", False))
            inner = {**visible, node.carry: f"{nid}__in"}
            _walk(plan, node.body, f"{prefix}{name}.0.", f"{nid}__", inner, items)
            items.append(("end",))
            visible[name] = inner[node.out]  # readers of the repeat see its last layer's output
            continue
        q = prefix + name
        info = plan.infos.get(q)
        params = f" · {human(info.params)} params" if info and info.params else ""
        items.append(("node", nid, f"{name}\n{node.block}\n{plan.shapes.get(q, '')}{params}", "block"))
        for port, src in node.inputs.items():
            items.append(("edge", visible[src], nid, "" if port in ("x", "in") else port, False))
        if node.tie:
            items.append(("edge", visible.get(node.tie, node.tie), nid, "tied", True))


def mermaid(plan: Plan) -> str:
    shapes = {"input": ('(["', '"])'), "output": ('[/"', '"/]'), "carry": ('(("', '"))'), "block": ('["', '"]')}
    lines = ["flowchart TD"]
    for item in diagram_items(plan):
        if item[0] == "node":
            left, right = shapes[item[3]]
            lines.append(f"  {item[1]}{left}{item[2].replace(chr(10), '<br/>')}{right}")
        elif item[0] == "edge":
            arrow = "-.-" if item[4] else "-->"
            lines.append(f"  {item[1]} {arrow}{'|' + item[3] + '|' if item[3] else ''} {item[2]}")
        elif item[0] == "begin":
            lines.append(f'  subgraph {item[1]}["{item[2]}"]')
        else:
            lines.append("  end")
    return "\n".join(lines) + "\n"


def _dot_escape(label: str) -> str:
    return label.replace('"', "'").replace("\n", "\\n")


def dot(plan: Plan) -> str:
    shapes = {"input": "oval", "output": "parallelogram", "carry": "circle", "block": "box"}
    lines = ["digraph model {", '  rankdir=TB; node [style="rounded", fontname="Helvetica"];']
    for item in diagram_items(plan):
        if item[0] == "node":
            lines.append(f'  {item[1]} [shape={shapes[item[3]]}, label="{_dot_escape(item[2])}"];')
        elif item[0] == "edge":
            style = ", style=dotted, arrowhead=none" if item[4] else ""
            lines.append(f'  {item[1]} -> {item[2]} [label="{item[3]}"{style}];')
        elif item[0] == "begin":
            lines.append(f'  subgraph cluster_{item[1]} {{ label="{item[2]}"; style=dashed;')
        else:
            lines.append("  }")
    return "\n".join(lines + ["}"]) + "\n"


def write_diagrams(plan: Plan, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "graph.mmd", out / "graph.dot"]
    written[0].write_text(mermaid(plan))
    written[1].write_text(dot(plan))
    if shutil.which("dot"):
        svg = out / "graph.svg"
        subprocess.run(["dot", "-Tsvg", str(written[1]), "-o", str(svg)], check=False, capture_output=True)
        if svg.exists():
            written.append(svg)
    return written
