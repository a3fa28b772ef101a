"""The contract between a task and a model graph: roles bound to the graph's own names, checked before torch.

A task (builder/plugins.py TASKS) declares roles; the task config binds them:

    task.inputs:  {tokens: idx}          the model input each input role is fed to
    task.outputs: {logits: null}         the model output each output role is read from (null: the only one)
    task.sizes:   {vocab: vocab_size}    the model variable each size the data knows goes to (when `auto`)

What a task or command needs to know beyond names comes from the blocks of the graph, never from a node or
variable name: how many positions a model takes (a block with the `positions` trait, e.g. a learned position
table, on the path from the input), how large a vocabulary it embeds or predicts (the `vocabulary` trait), and
which nodes are attention (the `attention` trait, with its query and key ports). See builder/graph/registry.py.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from builder import settings
from builder.config import CONF_DIR
from builder.errors import suggest
from builder.graph import registry
from builder.plugins import DATA, TASKS

MODES = ("min", "max")
GROUPS = ("inputs", "outputs", "sizes")


def check_task(task_cfg: Any, path: str = "task") -> list[str]:
    """Problems with a task config, one line each (empty when fine)."""
    if not hasattr(task_cfg, "get"):
        return [f"{path}: expected a mapping with at least `name`, got {task_cfg!r}"]
    name = task_cfg.get("name")
    if name not in TASKS.names():
        return [TASKS.unknown(name, f"{path}.name")]
    problems = []
    meta = TASKS.entries[name].meta
    losses = meta.get("losses") or ()
    loss = task_cfg.get("loss")
    if loss is not None and not losses:
        problems.append(f"{path}.loss: the {name} task has one loss (cross-entropy); remove task.loss")
    elif loss is not None and loss not in losses:
        problems.append(f"{path}.loss: unknown loss '{loss}'{suggest(loss, losses)}; available: {', '.join(losses)}")
    if task_cfg.get("mode", "min") not in MODES:
        problems.append(f"{path}.mode: must be 'min' or 'max', got '{task_cfg.get('mode')}'")
    for group in GROUPS:
        bound = task_cfg.get(group)
        if bound is None:
            continue  # a stored config that predates the binding: the shipped defaults apply (binding())
        if not hasattr(bound, "keys"):
            problems.append(f"{path}.{group}: expected a mapping of roles ({', '.join(meta[group])}), got {bound!r}")
            continue
        for role in bound:
            if role not in meta[group]:
                problems.append(f"{path}.{group}.{role}: the {name} task has no {group[:-1]} role '{role}'"
                                f"{suggest(role, meta[group])}; its roles: {', '.join(meta[group]) or 'none'}")
        for role in meta[group]:
            if group != "outputs" and not bound.get(role) and role not in (meta.get("optional") or ()):
                problems.append(f"{path}.{group}.{role}: missing; name the model {group[:-1]} for the role {role}")
    return problems + _check_settings(task_cfg, meta.get("settings") or settings.TASKS.get(name), path,
                                      skip=("loss", "mode"))


def _check_settings(values: Any, schema: Any, path: str, skip: tuple[str, ...] = ()) -> list[str]:
    """`values` against a task's or data source's typed settings (none declared: any keys pass)."""
    if schema is None:
        return []
    try:
        plain = OmegaConf.to_container(values, resolve=True) if isinstance(values, DictConfig) else dict(values)
    except Exception:  # noqa: BLE001 - a broken interpolation is reported with its path elsewhere
        return []
    return settings.check({k: v for k, v in plain.items() if k not in skip}, schema, path)


def check_data(data_cfg: Any, task_cfg: Any = None, path: str = "data") -> list[str]:
    """The data source exists (and provides what the task needs)."""
    name = data_cfg.get("name") if hasattr(data_cfg, "get") else None
    if name not in DATA.names():
        return [DATA.unknown(name, f"{path}.name")]
    task = task_cfg.get("name") if hasattr(task_cfg, "get") else None
    needs = TASKS.entries[task].meta.get("needs") if task in TASKS.entries else None
    provides = DATA.entries[name].meta.get("provides")
    if needs and provides and needs != provides:
        fitting = [n for n, e in DATA.entries.items() if e.meta.get("provides") == needs]
        return [f"{path}.name: the {task} task needs data that provides {needs} ({', '.join(fitting)}); "
                f"'{name}' provides {provides}"]
    return _check_settings(data_cfg, DATA.entries[name].meta.get("settings") or settings.DATA.get(name), path)


def binding(task_cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{inputs|outputs|sizes: {role: name}} of a (resolved) task config; a stored config that predates the
    binding gets the shipped task config's names, which are the names its model was built with."""
    found = {g: dict(task_cfg.get(g) or {}) for g in GROUPS}
    if any(task_cfg.get(g) is None for g in GROUPS):
        shipped = CONF_DIR / "task" / f"{task_cfg['name']}.yaml"
        if shipped.is_file():
            defaults = OmegaConf.to_container(OmegaConf.load(shipped))
            found = {g: found[g] if task_cfg.get(g) is not None else dict(defaults.get(g) or {}) for g in GROUPS}
    return found


def check_binding(task_cfg: Any, spec: Any, path: str = "task") -> list[str]:
    """Problems binding the task's roles to a model graph (a ModelSpec), with did-you-means."""
    bound = binding(task_cfg)
    problems = []
    for role, name in bound["inputs"].items():
        if name is None and role in optional_roles(task_cfg):
            continue
        if name not in spec.inputs:
            problems.append(f"{path}.inputs.{role}: the model has no input '{name}'{suggest(name, spec.inputs)}; "
                            f"its inputs: {', '.join(spec.inputs)}")
    for role, name in bound["outputs"].items():
        if name is None and len(spec.outputs) > 1:
            problems.append(f"{path}.outputs.{role}: the model has outputs {', '.join(spec.outputs)}; name the one "
                            f"the task reads as {role}")
        elif name is not None and name not in spec.outputs:
            problems.append(f"{path}.outputs.{role}: the model has no output '{name}'{suggest(name, spec.outputs)}; "
                            f"its outputs: {', '.join(spec.outputs)}")
    for role, variable in bound["sizes"].items():
        value = spec.variables.get(variable, "missing") if variable is not None else None
        if value == "missing":
            problems.append(f"{path}.sizes.{role}: the model has no variable '{variable}'"
                            f"{suggest(variable, spec.variables)}; the {role} size from the data goes to it")
    return problems


def optional_roles(task_cfg: Any) -> tuple[str, ...]:
    """The roles of a task that a model may leave unbound (an attention mask, token types)."""
    entry = TASKS.entries.get(task_cfg.get("name"))
    return tuple(entry.meta.get("optional") or ()) if entry else ()


class Roles:
    """A task's roles bound to one model: what to feed it, what to read from it."""

    def __init__(self, task_cfg: dict[str, Any], spec: Any):
        bound = binding(task_cfg)
        entry = TASKS.entries.get(task_cfg.get("name"))
        declared = {role: None for role in (entry.meta["outputs"] if entry else ())}  # unbound: the only output
        self.inputs: dict[str, str] = {r: n for r, n in bound["inputs"].items() if n is not None}  # optional: unbound
        self.outputs: dict[str, str] = {role: name if name is not None else next(iter(spec.outputs))
                                        for role, name in {**declared, **bound["outputs"]}.items()}
        self.sizes: dict[str, str] = bound["sizes"]
        self.several_outputs = len(spec.outputs) > 1

    def feed(self, **by_role: Any) -> dict[str, Any]:
        """Model keyword arguments from values by role: feed(tokens=x) -> {"idx": x}; an optional role the
        model has no input for is left out."""
        return {self.inputs[role]: value for role, value in by_role.items() if role in self.inputs}

    def read(self, out: Any, role: str = "logits") -> Any:
        """The output a role reads from what the model returned (a tensor, or a dict for several outputs)."""
        return out[self.outputs[role]] if isinstance(out, dict) else out

    def model_sizes(self, data_sizes: dict[str, int]) -> dict[str, int]:
        """The data's sizes by role -> the model variables they fill (`auto` variables take them)."""
        return {self.sizes[role]: n for role, n in data_sizes.items() if self.sizes.get(role)}


# --- what the graph's blocks say ------------------------------------------------------------------------

def primary_input(spec: Any, source: str) -> str | None:
    """The model input that `source` comes from along first ports (the main path: an embedding's ids, a
    residual stream through its layers, a repeat's input), or None."""
    graph, seen = spec.graph, set()
    while source not in spec.inputs:
        if source in seen or source not in graph.nodes:
            return None
        seen.add(source)
        node = graph.nodes[source]
        source = node.inputs.get("in") if node.body is not None else next(iter(node.inputs.values()), None)
        if source is None:
            return None
    return source


def _block_nodes(spec: Any):
    """(top-level name, node, enclosing repeat or None) for every block node, repeat bodies included."""
    for name in spec.graph.order:
        node = spec.graph.nodes[name]
        if node.body is None:
            yield name, node, None
        else:
            for inner in node.body.order:
                yield inner, node.body.nodes[inner], node


def _origin(spec: Any, source: str, repeat: Any) -> str | None:
    """primary_input for a source named inside a repeat's body (its carry comes from the repeat's input)."""
    if repeat is not None:
        body, seen = repeat.body, set()
        while source in body.nodes and source not in seen:
            seen.add(source)
            node = body.nodes[source]
            source = next(iter(node.inputs.values()), None)
        if source == repeat.carry:
            source = repeat.inputs["in"]
    return primary_input(spec, source) if source is not None else None


def trait_nodes(spec: Any, trait: str):
    """(node, its trait value, enclosing repeat or None) for every block node whose block has `trait`."""
    for _, node, repeat in _block_nodes(spec):
        value = registry.get(node.block).traits.get(trait)
        if value is not None:
            yield node, value, repeat


def context_length(spec: Any, input_name: str) -> int | None:
    """Positions the model takes along `input_name`: the smallest table of a `positions` block on its path
    (learned or sinusoidal positions), or None when no block limits it."""
    limits = [int(node.args[arg]) for node, arg, repeat in trait_nodes(spec, "positions")
              if _origin(spec, next(iter(node.inputs.values())), repeat) == input_name and arg in node.args]
    return min(limits) if limits else None


def vocabulary(spec: Any, input_name: str) -> int | None:
    """Rows of the embedding table that `input_name`'s ids index (a `vocabulary` block reading it)."""
    sizes = [int(node.args[arg]) for node, arg, _ in trait_nodes(spec, "vocabulary")
             if next(iter(node.inputs.values()), None) == input_name and arg in node.args]
    return min(sizes) if sizes else None


def output_vocabulary(spec: Any, output_name: str) -> int | None:
    """Classes the output predicts, when a `vocabulary` block (an LM head) makes it."""
    node = spec.graph.nodes.get(spec.outputs.get(output_name))
    if node is None or node.body is not None:
        return None
    arg = registry.get(node.block).traits.get("vocabulary")
    return int(node.args[arg]) if arg and arg in node.args else None


def attention_inputs(spec: Any, qualified: str) -> tuple[str | None, str | None]:
    """(model input along the queries, along the keys) of attention node "name" or "repeat.i.name"."""
    top, *rest = qualified.split(".")
    node, repeat = spec.graph.nodes[top], None
    if rest:
        repeat, node = node, node.body.nodes[rest[-1]]
    ports = registry.get(node.block).traits["attention"]
    queries = _origin(spec, node.inputs[ports[0]], repeat)
    keys = _origin(spec, node.inputs[ports[1]], repeat) if len(ports) > 1 else queries
    return queries, keys
