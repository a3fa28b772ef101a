"""Structural validation of a model config: keys, blocks, arguments, edges, cycles, dangling nodes.

Runs on plain data with the torch-free registry, so every problem of this kind is reported (all at once,
each naming its config path) before torch is imported. Shapes are checked later, in `shapes.py`.
"""
from __future__ import annotations

from typing import Any

from builder.graph import registry
from builder.errors import ConfigError, suggest
from builder.graph.spec import (DTYPES, INPUT_KEYS, MODEL_KEYS, REPEAT_KEYS, GraphSpec, InputSpec, ModelSpec,
                          NodeSpec, is_name)
from builder.graph.typecheck import mismatch, type_ok

NODE_KEYS = ("block", "in", "tie", "unused", "init")
INIT_SCHEMES = ("normal", "xavier_uniform", "xavier_normal", "torch")
INIT_KEYS = ("weights", "std", "scaled_residual")


def parse_model(cfg: dict[str, Any], root: str = "model") -> ModelSpec:
    """Parse and validate a resolved model config; raise ConfigError listing every problem."""
    problems: list[str] = []
    if not isinstance(cfg, dict):
        raise ConfigError(f"{root}: expected a mapping with inputs, nodes and outputs, got {type(cfg).__name__}")
    for key in ("inputs", "nodes", "outputs"):
        if key not in cfg:
            problems.append(f"{root}.{key}: missing (a model needs inputs, nodes and outputs)")
    imports = cfg.get("imports") or []
    if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
        problems.append(f"{root}.imports: expected a list of Python module names")
        imports = []
    try:
        blocks = registry.registry(imports)
    except registry.RegistryError as e:
        problems.append(str(e))
        blocks = registry.registry()
    inputs = _parse_inputs(cfg.get("inputs") or {}, f"{root}.inputs", problems)
    graph = _parse_graph(cfg.get("nodes") or {}, f"{root}.nodes", blocks, problems)
    outputs = _parse_outputs(cfg.get("outputs"), f"{root}.outputs", problems)
    dims = cfg.get("dims") or {}
    if not isinstance(dims, dict) or not all(isinstance(v, int) and v > 0 for v in dims.values()):
        problems.append(f"{root}.dims: expected a mapping of dimension names to positive integers")
        dims = {}
    init = cfg.get("init") or {}
    problems += check_init(init, f"{root}.init")
    variables = {k: v for k, v in cfg.items() if k not in MODEL_KEYS}
    spec = ModelSpec(inputs, graph, outputs, init, list(imports), dict(dims), variables)
    if not problems:
        _check_edges(spec, problems)
    if problems:
        raise ConfigError(problems)
    return spec


def check_init(init: Any, path: str) -> list[str]:
    if not isinstance(init, dict):
        return [f"{path}: expected a mapping such as {{weights: normal, std: 0.02}}"]
    problems = [f"{path}.{k}: unknown key{suggest(k, INIT_KEYS)}; init takes {', '.join(INIT_KEYS)}"
                for k in init if k not in INIT_KEYS]
    scheme = init.get("weights", "torch")
    if scheme not in INIT_SCHEMES:
        problems.append(f"{path}.weights: unknown scheme '{scheme}'{suggest(scheme, INIT_SCHEMES)}; "
                        f"one of {', '.join(INIT_SCHEMES)}")
    return problems


def _parse_inputs(raw: Any, path: str, problems: list[str]) -> dict[str, InputSpec]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{path}: expected a mapping of input names to {{shape: [...], dtype: ...}}")
        return {}
    out = {}
    for name, item in raw.items():
        p = f"{path}.{name}"
        if not is_name(name):
            problems.append(f"{p}: input names must be identifiers")
            continue
        if isinstance(item, list):
            item = {"shape": item}
        if not isinstance(item, dict):
            problems.append(f"{p}: expected {{shape: [...], dtype: float|long|bool}}")
            continue
        for key in item:
            if key not in INPUT_KEYS:
                problems.append(f"{p}.{key}: unknown key{suggest(key, INPUT_KEYS)}; an input has {', '.join(INPUT_KEYS)}")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
            problems.append(f"{p}.shape: expected a list of sizes (integers or dimension names such as batch)")
            shape = []
        dtype = item.get("dtype", "float")
        if dtype not in DTYPES:
            problems.append(f"{p}.dtype: '{dtype}' is not one of {', '.join(DTYPES)}{suggest(dtype, DTYPES)}")
        out[name] = InputSpec(name, shape, dtype)
    return out


def _parse_outputs(raw: Any, path: str, problems: list[str]) -> dict[str, str]:
    if isinstance(raw, str):
        return {raw: raw}
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw) and raw:
        return {x: x for x in raw}
    if isinstance(raw, dict) and raw and all(isinstance(v, str) for v in raw.values()):
        return dict(raw)
    if raw is not None:
        problems.append(f"{path}: expected a node name, a list of node names, or a mapping output name -> node")
    return {}


def _parse_graph(raw: Any, path: str, blocks: dict, problems: list[str]) -> GraphSpec:
    graph = GraphSpec(path)
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{path}: expected a mapping of node names to nodes")
        return graph
    for name, item in raw.items():
        p = f"{path}.{name}"
        if not is_name(name):
            problems.append(f"{p}: node names must be identifiers (letters, digits, _)")
            continue
        if not isinstance(item, dict):
            problems.append(f"{p}: expected a mapping with `block: NAME` (or `repeat: N` and `body:`)")
            continue
        node = _parse_repeat(name, item, p, blocks, problems) if "repeat" in item else _parse_block(name, item, p, blocks, problems)
        if node is not None:
            graph.nodes[name] = node
    return graph


def _parse_repeat(name: str, item: dict, p: str, blocks: dict, problems: list[str]) -> NodeSpec | None:
    for key in item:
        if key not in REPEAT_KEYS:
            problems.append(f"{p}.{key}: unknown key for a repeat{suggest(key, REPEAT_KEYS)}; a repeat has {', '.join(REPEAT_KEYS)}")
    n = item.get("repeat")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        problems.append(f"{p}.repeat: expected a positive integer (the number of copies), got {n!r}")
        n = 1
    carry = item.get("input", "x")
    if not is_name(carry):
        problems.append(f"{p}.input: expected a name for the value carried into each copy")
    if "in" not in item or not isinstance(item["in"], str):
        problems.append(f"{p}.in: a repeat needs `in: NODE`, the value fed to its first copy")
    body = _parse_graph(item.get("body"), f"{p}.body", blocks, problems)
    out = item.get("out", list(body.nodes)[-1] if body.nodes else None)
    if body.nodes and out not in body.nodes:
        problems.append(f"{p}.out: '{out}' is not a node of the body{suggest(out, body.nodes)}")
    return NodeSpec(name, p, inputs={"in": item.get("in", "")}, input_paths={"in": f"{p}.in"},
                    unused=bool(item.get("unused", False)), repeat=n, body=body, carry=carry, out=out)


def _parse_block(name: str, item: dict, p: str, blocks: dict, problems: list[str]) -> NodeSpec | None:
    kind = item.get("block")
    if kind is None:
        problems.append(f"{p}: missing `block:` (or `repeat:`); known blocks: {', '.join(sorted(blocks))}")
        return None
    if not isinstance(kind, str):
        problems.append(f"{p}.block: expected a block name, got {kind!r}; `builder-blocks` lists them")
        return None
    if kind not in blocks:
        problems.append(f"{p}.block: unknown block '{kind}'{suggest(kind, blocks)}; `builder-blocks` lists them")
        return None
    schema = blocks[kind]
    ports = [port.name for port in schema.ports]
    node = NodeSpec(name, p, block=kind, tie=item.get("tie"), unused=bool(item.get("unused", False)), init=item.get("init"))
    _parse_in(item.get("in"), ports, node, p, problems)
    for key, value in item.items():
        if key in NODE_KEYS:
            continue
        if key in ports:
            if key in node.inputs:
                problems.append(f"{p}.{key}: port '{key}' is given twice (also by `in:`)")
            elif not isinstance(value, str):
                problems.append(f"{p}.{key}: expected the name of a node or input feeding port '{key}'")
            else:
                node.inputs[key], node.input_paths[key] = value, f"{p}.{key}"
        elif key in schema.args:
            arg = schema.args[key]
            if not type_ok(value, arg.type):
                problems.append(f"{p}.{key}: {mismatch(value, arg.type)}")
            node.args[key] = value
        else:
            known = list(schema.args) + ports
            problems.append(f"{p}.{key}: unknown argument for block '{kind}'{suggest(key, known)}; "
                            f"it takes {', '.join(a.describe() for a in schema.args.values()) or 'no arguments'}"
                            f" and ports {', '.join(ports)}")
    for arg in schema.args.values():
        if arg.required and arg.name not in item:
            problems.append(f"{p}.{arg.name}: missing argument ({arg.type}) for block '{kind}'")
    for port in schema.ports:
        if port.required and port.name not in node.inputs:
            problems.append(f"{p}.{port.name}: nothing feeds port '{port.name}' of block '{kind}' (use `in:` or `{port.name}: NODE`)")
    if node.init is not None:
        problems += check_init(node.init, f"{p}.init")
    if node.tie is not None and not is_name(node.tie):
        problems.append(f"{p}.tie: expected the name of the node whose weights this node shares")
    return node


def _parse_in(raw: Any, ports: list[str], node: NodeSpec, p: str, problems: list[str]) -> None:
    if raw is None:
        return
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        if len(raw) > len(ports):
            problems.append(f"{p}.in: {len(raw)} inputs given but block '{node.block}' has ports {', '.join(ports)}")
        for i, (port, src) in enumerate(zip(ports, raw)):
            if not isinstance(src, str):
                problems.append(f"{p}.in[{i}]: expected a node or input name")
                continue
            node.inputs[port], node.input_paths[port] = src, f"{p}.in" if len(raw) == 1 else f"{p}.in[{i}]"
    elif isinstance(raw, dict):
        for port, src in raw.items():
            if port not in ports:
                problems.append(f"{p}.in.{port}: block '{node.block}' has no port '{port}'{suggest(port, ports)}; ports: {', '.join(ports)}")
            elif not isinstance(src, str):
                problems.append(f"{p}.in.{port}: expected a node or input name")
            else:
                node.inputs[port], node.input_paths[port] = src, f"{p}.in.{port}"
    else:
        problems.append(f"{p}.in: expected a node name, a list of names, or a mapping port -> name")


def _check_edges(spec: ModelSpec, problems: list[str]) -> None:
    """Unknown edge targets, tie targets, cycles, and nodes no output depends on."""
    _check_scope(spec.graph, set(spec.inputs), problems)
    for out, node in spec.outputs.items():
        if node not in spec.graph.nodes:
            problems.append(f"model.outputs.{out}: unknown node '{node}'{suggest(node, list(spec.graph.nodes) + list(spec.inputs))}")
    all_nodes = _all_block_nodes(spec.graph)
    for node in all_nodes.values():
        if node.tie is not None and node.tie not in all_nodes:
            problems.append(f"{node.path}.tie: unknown node '{node.tie}'{suggest(node.tie, all_nodes)}")
    if problems:
        return
    _order_and_prune(spec.graph, list(spec.outputs.values()), problems)
    used = set(spec.graph.outer_reads())
    for name in spec.inputs:
        if name not in used:
            problems.append(f"model.inputs.{name}: no node reads this input")


def _check_scope(graph: GraphSpec, outer: set[str], problems: list[str]) -> None:
    visible = outer | set(graph.nodes)
    for node in graph.nodes.values():
        for port, src in node.inputs.items():
            if src not in visible:
                problems.append(f"{node.input_paths[port]}: unknown node '{src}'{suggest(src, visible)}")
        if node.body is not None:
            _check_scope(node.body, visible | {node.carry}, problems)


def _all_block_nodes(graph: GraphSpec) -> dict[str, NodeSpec]:
    found = {}
    for node in graph.nodes.values():
        if node.body is not None:
            found.update(_all_block_nodes(node.body))
        else:
            found.setdefault(node.name, node)
    return found


def _order_and_prune(graph: GraphSpec, wanted: list[str], problems: list[str]) -> None:
    """Fill `graph.order` (YAML order where the edges allow), report cycles and nodes no output needs."""
    deps = {n: [s for s in node.sources() if s in graph.nodes] for n, node in graph.nodes.items()}
    state: dict[str, int] = {}
    order: list[str] = []

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = trail[trail.index(n):] + [n]
            problems.append(f"{graph.nodes[n].path}: cycle {' -> '.join(reversed(cycle))}")
            return
        state[n] = 1
        for d in deps[n]:
            visit(d, trail + [n])
        state[n] = 2
        order.append(n)

    for n in graph.nodes:
        visit(n, [])
    graph.order = order
    needed: set[str] = set()
    stack = [w for w in wanted if w in graph.nodes]
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(deps[n])
    for n, node in graph.nodes.items():
        if n not in needed and not node.unused:
            problems.append(f"{node.path}: no output depends on this node (a mistyped edge?); "
                            f"mark it `unused: true` if that is intended")
        if node.body is not None:
            _order_and_prune(node.body, [node.out], problems)
