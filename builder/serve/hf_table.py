"""The tables of conf/hf/: how a Hugging Face family's config.json and tensors map onto one of our model configs.

A table (YAML), read by builder/serve/hf.py for every Hugging Face directory:

    model_type: llama                    config.json's model_type
    architecture: LlamaForCausalLM       written to config.json on export
    model: llama                         the graph: conf/model/llama.yaml
    set: {qk_norm: false}                model variables the family fixes
    config:                              config.json key -> model variable
      hidden_size: d_model                                   the value as it is
      hidden_act: {to: activation, values: {silu: swiglu}}   translated; any other value is refused
      mlp_bias: {to: mlp_bias, supported: [false, true]}     only these values are accepted
      rope_parameters: {to: rope, keys: {rope_theta: theta}} a mapping, key by key (with the same rules)
      ... default: the value when the key is absent; each: the items a list may hold; write: false for keys
      that are read but not written; skip_null: true to leave the key out rather than write null (and to keep
      the variable's default when it is null); a rule
      without `to` only checks the value (and writes the first supported one)
    tensors:                             HF tensor -> our parameter; * is a layer index
      model.layers.*.self_attn.q_proj.weight: layers.*.attn.q.weight
      transformer.h.*.attn.c_attn.weight: {to: layers.*.attn.qkv.weight, transpose: true}
      model.layers.*.self_attn.qkv_proj.weight: {to: [layers.*.attn.q.weight, ...]}  split / merged on dim 0
      bert.encoder.layer.*.attention.self.key.weight: {to: layers.*.attn.qkv.weight, part: 1, of: 3}
                                                     rows 1/3 .. 2/3 of ours: several HF tensors make one
    optional_prefix: model.              a prefix that some files leave out
    ignore: [...]                        tensors that are not weights
    extends: llama                       start from another table; a null entry removes one of its keys
    task: masked_lm                      the task the model loads with (default language_model), or a mapping:
                                         {name: classification, inputs: {...}, sizes: {...}} (its role bindings)
    data: text_classes                   the data source in the run config (default text)
    labels: num_classes                  config.json's id2label <-> this model variable and data.classes
    tokens: {pad_token: "[PAD]", ...}    special tokens written to tokenizer_config.json (and pad_token_id)
    input_names: [input_ids, ...]        the tokenizer's outputs (tokenizer_config.json's model_input_names)
    architectures:                       other heads of the same model_type (config.json's architectures[0]):
      BertForSequenceClassification: {model: ..., tensors: ...}   each changes the table as `extends` does
"""
from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

import yaml
from omegaconf import OmegaConf

from builder.config import CONF_DIR, compose, resolve
from builder.errors import CheckpointError, ConfigError

TABLES = CONF_DIR / "hf"
GRAPH_KEYS = ("inputs", "nodes", "outputs", "init", "imports", "dims")  # the rest of a model config: variables
MISSING = object()


def family_names() -> list[str]:
    return sorted(p.stem for p in TABLES.glob("*.yaml"))


@functools.cache
def read_table(name: str) -> dict[str, Any]:
    table = yaml.safe_load((TABLES / f"{name}.yaml").read_text())
    parent = table.pop("extends", None)
    return table if parent is None else _merge(read_table(parent), table)


def _merge(base: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """`table` over `base`: its keys replace base's, except config and tensors, merged key by key (null: removed)."""
    merged = {**base, **table}
    for section in ("config", "tensors"):
        both = {**base.get(section, {}), **table.get(section, {})}
        merged[section] = {k: v for k, v in both.items() if v is not None}
    return merged


def architectures(name: str) -> list[str]:
    """The architectures a table reads and writes, its own first."""
    table = read_table(name)
    return [table["architecture"], *(table.get("architectures") or {})]


def families() -> list["Family"]:
    """Every table with each of its architectures, in the order an export tries them."""
    return [Family(name, arch) for name in family_names() for arch in architectures(name)]


def _pattern(name: str) -> re.Pattern:
    return re.compile("^" + re.escape(name).replace(r"\*", r"(\d+)") + "$")  # *: a layer index


class Family:
    """One table of conf/hf/: a Hugging Face architecture as one of our model configs."""

    def __init__(self, name: str, architecture: str | None = None):
        table = copy.deepcopy(read_table(name))
        if architecture not in (None, table["architecture"]):
            table = _merge(table, {**table["architectures"][architecture], "architecture": architecture})
        self.name, self.model_type, self.architecture = name, table["model_type"], table["architecture"]
        self.model, self.set, self.config = table["model"], table.get("set") or {}, table["config"]
        task = table.get("task") or "language_model"
        self.task = task if isinstance(task, dict) else {"name": task}  # the task's name and role bindings
        self.data, self.labels, self.tokens = table.get("data") or "text", table.get("labels"), table.get("tokens")
        self.input_names = table.get("input_names")  # what the tokenizer returns (tokenizer_config.json)
        self.prefix = table.get("optional_prefix") or ""
        self.ignore = [_pattern(p) for p in table.get("ignore") or []]
        self.tensors = []  # (HF pattern, HF name, our names, transpose, (part, of) or None)
        for hf, rule in table["tensors"].items():
            rule = rule if isinstance(rule, dict) else {"to": rule}
            ours = rule["to"] if isinstance(rule["to"], list) else [rule["to"]]
            part = (int(rule["part"]), int(rule["of"])) if "part" in rule else None
            self.tensors.append((_pattern(hf), hf, ours, bool(rule.get("transpose")), part))

    # --- config.json <-> model variables ------------------------------------------------------------------

    def variables(self, hf: dict[str, Any], where: str) -> dict[str, Any]:
        """Model variables from an HF config; a value the table does not accept is a line naming its key."""
        found: dict[str, Any] = {}
        problems: list[str] = []
        for key, rule in self.config.items():
            _read(hf, key, rule, found, problems, f"{where}: ")
        if self.labels:
            found[self.labels] = len(class_names(hf))
        if problems:
            raise ConfigError(problems)
        return found

    def hf_config(self, variables: dict[str, Any]) -> dict[str, Any]:
        """An HF config from our model variables; raises ValueError for a value the family cannot hold."""
        out = {"model_type": self.model_type, "architectures": [self.architecture]}
        for key, rule in self.config.items():
            _write(variables, key, rule, out)
        if self.labels and isinstance(variables.get(self.labels), int):
            out["id2label"] = {str(i): f"LABEL_{i}" for i in range(variables[self.labels])}
            out["label2id"] = {name: i for i, name in enumerate(out["id2label"].values())}
        return out

    def run_config(self, variables: dict[str, Any]) -> dict[str, Any]:
        """The resolved run config (the table's task and data) of our model with these variables and the fixed ones."""
        cfg = OmegaConf.create(_composed(self.model, self.task["name"], self.data))
        cfg.task.merge_with({k: v for k, v in self.task.items() if k != "name"})
        for key, value in {**variables, **self.set}.items():
            if key not in cfg.model:
                raise ConfigError(f"conf/hf/{self.name}.yaml: conf/model/{self.model}.yaml has no variable '{key}'")
            cfg.model[key] = value
        return resolve(cfg, "")

    def fits(self, model_cfg: dict[str, Any]) -> str | None:
        """None when this family reproduces the model's graph from its HF config, else the reason it does not."""
        if model_cfg.get("imports"):
            return "the model imports modules of its own"
        ours = {k: v for k, v in model_cfg.items() if k not in GRAPH_KEYS}
        fixed = next((k for k, v in self.set.items() if k in ours and ours[k] != v), None)
        if fixed is not None:
            return f"{fixed}={json.dumps(ours[fixed])} (this family has {fixed}={json.dumps(self.set[fixed])})"
        try:
            back = self.variables(self.hf_config(ours), "config.json")
        except (ValueError, ConfigError) as e:
            return str(e).splitlines()[0]
        known = _composed(self.model, self.task["name"], self.data)["model"]
        rebuilt = self.run_config({**{k: v for k, v in ours.items() if k in known}, **back})["model"]
        for key in ("inputs", "outputs", "nodes"):
            if rebuilt[key] != model_cfg.get(key):
                where = key + _first_difference(rebuilt[key], model_cfg.get(key))
                return f"{where} is not as in conf/model/{self.model}.yaml"
        return None

    # --- tensors --------------------------------------------------------------------------------------------

    def weights_in(self, tensors: Any, model: Any, where: str, into_model: bool = False) -> dict[str, Any]:
        """Our state dict from HF tensors (a mapping read through `.items()`, which may read each tensor as it
        is asked for); every tensor must have a place and every parameter a tensor. With `into_model` each
        tensor is copied into the model's own parameter as it arrives, so a loaded model never holds the weights
        twice (builder/serve/hf.py reads a file a tensor at a time), and {} is returned."""
        import torch  # deferred: config errors are reported before torch is imported
        params = {k.removeprefix("graph."): v for k, v in model.state_dict().items()}  # the parameters' storage
        out: dict[str, Any] = params if into_model else {}
        problems, filled = [], {}
        # a safetensors file (builder/serve/hf.py) hands out tensors unread: one with a place of its own shape
        # is read straight into the model's parameter, so not even that tensor is held twice
        for name, t in (tensors.entries() if hasattr(tensors, "entries") else tensors.items()):
            match = self._match_hf(name)
            if match is None:
                if not any(p.match(name) or p.match(self.prefix + name) for p in self.ignore):
                    problems.append(f"{where}: tensor {name} has no counterpart in conf/hf/{self.name}.yaml")
                continue
            (_, _, ours, transpose, piece), i = match
            targets = [o.replace("*", i) for o in ours]
            absent = [x for x in targets if x not in params]
            if absent:
                problems.append(f"{where}: tensor {name} has no place in this model ({absent[0]}); config.json "
                                f"and the weights disagree")
                continue
            if hasattr(t, "copy_to"):
                x = targets[0]
                if (into_model and not transpose and piece is None and len(targets) == 1
                        and t.shape == tuple(params[x].shape)):
                    t.copy_to(params[x])
                    filled.setdefault(x, set()).add(None)
                    continue
                t = t.read()
            t = t.t() if transpose else t
            parts = t.split([params[x].shape[0] for x in targets]) if len(targets) > 1 else [t]
            for x, part in zip(targets, parts):
                need = params[x].shape if piece is None else (params[x].shape[0] // piece[1], *params[x].shape[1:])
                if part.shape != need:
                    problems.append(f"{where}: tensor {name} has shape {tuple(t.shape)}; {x} needs {tuple(need)}")
                    continue
                if x not in out:
                    out[x] = torch.empty_like(params[x])
                rows = slice(None) if piece is None else slice(piece[0] * need[0], (piece[0] + 1) * need[0])
                out[x][rows].copy_(part)  # several HF tensors, one of ours: rows in the order of their parts
                filled.setdefault(x, set()).add(None if piece is None else piece[0])
        complete = {x for x, got in filled.items() if None in got or len(got) == self._pieces_of(x)}
        for group in _tied(model):  # a tied matrix may be stored once
            given = [n for n in group if n in complete]
            for n in group if given else ():
                if n not in complete:
                    if not into_model:  # in the model the group is one tensor already
                        out[n] = out[given[0]]
                    complete.add(n)
        problems += [f"{where}: no tensor for {n} ({self._hf_name(n)})" for n in params if n not in complete]
        if problems:
            raise CheckpointError(problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else []))
        return {} if into_model else {f"graph.{k}": v for k, v in out.items()}

    def _pieces_of(self, ours: str) -> int:
        """How many HF tensors make up our parameter `ours` (1 unless the table splits it into parts)."""
        for _, _, targets, _, piece in self.tensors:
            if piece is not None and any(_pattern(o).match(ours) for o in targets):
                return piece[1]
        return 1

    def weights_out(self, model: Any) -> dict[str, Any]:
        """HF tensors from our model (a tied matrix once, under its first name in the table)."""
        import torch  # deferred: config errors are reported before torch is imported
        params = {k.removeprefix("graph."): v for k, v in model.state_dict().items()}
        out, written = {}, set()  # (data_ptr, part or None) of what is out
        for _, hf, ours, transpose, piece in self.tensors:
            first = _pattern(ours[0])
            for name, param in params.items():
                m = first.match(name)
                if m is None or (param.data_ptr(), piece) in written or (param.data_ptr(), None) in written:
                    continue
                i = m.group(1) if m.groups() else ""
                parts = [params[o.replace("*", i)] for o in ours]
                t = torch.cat(parts) if len(parts) > 1 else parts[0]
                t = t.chunk(piece[1])[piece[0]] if piece is not None else t
                out[hf.replace("*", i)] = (t.t() if transpose else t).contiguous()
                written.update((p.data_ptr(), piece) for p in parts)
        done = {ptr for ptr, piece in written if piece is None}
        for ptr, piece in written:  # one of ours written in parts: out once every part is
            if piece is not None and all((ptr, (k, piece[1])) in written for k in range(piece[1])):
                done.add(ptr)
        left = [n for n, p in params.items() if p.data_ptr() not in done]
        if left:
            raise ConfigError(f"format=hf: {left[0]} has no Hugging Face name in conf/hf/{self.name}.yaml")
        return out

    def _match_hf(self, name: str):
        for rule in self.tensors:
            m = rule[0].match(name) or (rule[0].match(self.prefix + name) if self.prefix else None)
            if m:
                return rule, (m.group(1) if m.groups() else "")
        return None

    def _hf_name(self, ours: str) -> str:
        for _, hf, names, _, _ in self.tensors:
            m = _pattern(names[0]).match(ours)
            if m:
                return hf.replace("*", m.group(1) if m.groups() else "")
        return "no name in the table"


@functools.cache
def _composed(model: str, task: str = "language_model", data: str = "text") -> dict[str, Any]:
    """The unresolved run config of `model=NAME` with this task and data source, as plain data (composed once)."""
    return OmegaConf.to_container(compose([f"model={model}", f"data={data}", f"task={task}"]), resolve=False)


def class_names(hf: dict[str, Any]) -> list[str]:
    """The class names of a classifier's config.json: id2label in id order, else num_labels (default 2) names."""
    labels = hf.get("id2label")
    if isinstance(labels, dict) and labels:
        return [str(labels[k]) for k in sorted(labels, key=int)]
    return [f"LABEL_{i}" for i in range(int(hf.get("num_labels") or 2))]


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """".layers.body.attn" where two nested dicts first differ (by key, in a's order), or ""."""
    if not isinstance(a, dict) or not isinstance(b, dict) or set(a) != set(b):
        return path
    key = next((k for k in a if a[k] != b[k]), None)
    return path if key is None else _first_difference(a[key], b[key], f"{path}.{key}")


def _tied(model: Any) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name.removeprefix("graph."))
    return [g for g in groups.values() if len(g) > 1]


def _read(source: dict, key: str, rule: Any, found: dict, problems: list[str], where: str) -> None:
    """Apply one config rule to source[key], putting the value under the rule's variable in `found`."""
    rule = rule if isinstance(rule, dict) else {"to": rule}
    if key not in source and "default" not in rule:
        return
    value = source.get(key, rule.get("default"))
    if value is None and rule.get("skip_null"):
        return  # null: the model variable keeps its default
    allowed = rule.get("supported", list(rule.get("values", {})) or None)
    if allowed is not None and value not in allowed:
        shown = ", ".join(json.dumps(a) for a in allowed)
        problems.append(f"{where}{key}={json.dumps(value)} is not supported (supported: {shown})")
        return
    if "each" in rule and any(v not in rule["each"] for v in value or []):
        problems.append(f"{where}{key}={json.dumps(value)} is not supported (each must be one of "
                        f"{', '.join(rule['each'])})")
        return
    if "values" in rule:
        value = rule["values"][value]
    if "keys" in rule:
        if value is None:
            return
        problems += [f"{where}{key}.{k} is not supported" for k in value if k not in rule["keys"]]
        sub: dict[str, Any] = {}
        for k, r in rule["keys"].items():
            _read(value, k, r, sub, problems, f"{where}{key}.")
        value = {**found.get(rule["to"], {}), **sub}
    if rule.get("to"):
        *path, last = rule["to"].split(".")
        node = found
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value


def _write(source: dict, key: str, rule: Any, out: dict) -> None:
    """The reverse of _read: out[key] from the rule's variable in `source`."""
    rule = rule if isinstance(rule, dict) else {"to": rule}
    if rule.get("write") is False or "each" in rule:
        return
    if not rule.get("to"):
        if "supported" in rule:
            out[key] = rule["supported"][0]
        return
    value = source
    for p in rule["to"].split("."):
        value = value.get(p, MISSING) if isinstance(value, dict) else MISSING
    if value is MISSING or (value is None and ("keys" in rule or rule.get("skip_null"))):
        return
    if "keys" in rule:
        out[key] = {}
        for k, r in rule["keys"].items():
            _write(value, k, r, out[key])
        return
    if "values" in rule:
        back = [h for h, o in rule["values"].items() if o == value]
        if not back:
            raise ValueError(f"{rule['to']}={json.dumps(value)} has no {key} value in this family")
        value = back[0]
    if "supported" in rule and value not in rule["supported"]:
        raise ValueError(f"{rule['to']}={json.dumps(value)} is not a supported {key}")
    out[key] = value
