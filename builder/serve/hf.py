"""Hugging Face directories in and out: GPT-2, Llama, Mistral, Qwen2, Phi-3, BERT (one table each in conf/hf/).

A directory with config.json, model.safetensors (or the shards model.safetensors.index.json lists) and
tokenizer.json loads wherever a checkpoint does (`ckpt=DIR`, builder.load, builder-plan): config.json's
model_type picks the family's table (builder/serve/hf_table.py), and its architectures[0] the head where a table
has several (BERT: BertForMaskedLM, BertForSequenceClassification), which turns config.json into our model
variables and the tensors into our parameters. Only safetensors are read, so nothing is ever unpickled.

`export(loaded, out)` (builder-export format=hf) writes config.json, model.safetensors, tokenizer.json and
tokenizer_config.json for the first family whose table reproduces the model's graph; transformers'
AutoModelForCausalLM (AutoModelForMaskedLM, AutoModelForSequenceClassification) and AutoTokenizer load the result.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.errors import CheckpointError, ConfigError
from builder.graph.build import build_model
from builder.serve.hf_table import GRAPH_KEYS, Family, architectures, class_names, families, family_names, read_table

CONFIG, WEIGHTS, INDEX, TOKENIZER = "config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json"


def is_hf_dir(path: str | Path) -> bool:
    """A directory holding config.json (and not an export of ours, which holds config.yaml)."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / CONFIG).is_file() and not (p / "config.yaml").is_file()


def family_of(path: str | Path) -> tuple[dict[str, Any], Family]:
    """(config.json as a dict, its family); a family without a table is a one-line error naming model_type."""
    where = Path(path).expanduser() / CONFIG
    try:
        hf = json.loads(where.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"ckpt: {where} is not JSON: {e}") from None
    kind = hf.get("model_type") if isinstance(hf, dict) else None
    by_type = {read_table(n)["model_type"]: n for n in family_names()}
    if kind not in by_type:
        raise CheckpointError(f"{where}: model_type={json.dumps(kind)} is not supported (supported: "
                              f"{', '.join(sorted(by_type))}; each has a table in conf/hf/)")
    name = by_type[kind]
    if not read_table(name).get("architectures"):
        return hf, Family(name)  # one head: whatever the file calls its class
    heads = architectures(name)
    arch = (hf.get("architectures") or [heads[0]])[0]
    if arch not in heads:
        raise CheckpointError(f"{where}: architectures={json.dumps(hf.get('architectures'))} is not supported "
                              f"(supported: {', '.join(heads)}; conf/hf/{name}.yaml)")
    return hf, Family(name, arch)


def run_config(path: str | Path) -> dict[str, Any]:
    """The resolved run config of an HF directory's model (no weights read)."""
    hf, family = family_of(path)
    where = str(Path(path).expanduser() / CONFIG)
    cfg = family.run_config(family.variables(hf, where))
    if family.labels:
        cfg["data"]["classes"] = class_names(hf)
    eos = hf.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
    if isinstance(eos, int):  # where generation stops (GPT-2's <|endoftext|>, Llama's </s> or <|end_of_text|>)
        cfg["generation"] = {"eos_id": eos}
    return cfg


DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
          "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class SafetensorsFiles:
    """The tensors of safetensors files, read one at a time with plain reads as `.items()` yields them: a
    tensor lives until its caller drops it, and no file is memory-mapped (mapped pages would count as the
    process's memory once more until the file is closed). Headers are checked when the object is made."""

    def __init__(self, files: list[Path]):
        self.files = []
        for file in files:
            with open(file, "rb") as f:
                try:
                    size = int.from_bytes(f.read(8), "little")
                    header = json.loads(f.read(size)) if 0 < size < 100_000_000 else None
                except (UnicodeDecodeError, json.JSONDecodeError):
                    header = None
            if not isinstance(header, dict):
                raise CheckpointError(f"ckpt: {file} is not a safetensors file (its header cannot be read)")
            header.pop("__metadata__", None)
            bad = next((k for k, v in header.items() if v.get("dtype") not in DTYPES), None)
            if bad is not None:
                raise CheckpointError(f"ckpt: {file}: tensor {bad} has dtype {header[bad].get('dtype')!r}, "
                                      f"which is not read (supported: {', '.join(DTYPES)})")
            self.files.append((file, 8 + size, header))

    def items(self):
        """(name, tensor) pairs, each tensor read as it is asked for."""
        for name, entry in self.entries():
            yield name, entry.read()

    def entries(self):
        """(name, Stored) pairs in file order: a tensor's shape and dtype, read on request, into a new tensor
        or straight into one of the caller's (valid until the next pair is asked for)."""
        import torch  # deferred: config errors are reported before torch is imported
        for file, base, header in self.files:
            with open(file, "rb") as f:
                for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                    start, end = info["data_offsets"]
                    yield name, Stored(f, file, name, base + start, end - start, info["shape"],
                                       getattr(torch, DTYPES[info["dtype"]]))


class Stored:
    """One tensor of an open safetensors file, not read yet."""

    def __init__(self, f: Any, file: Path, name: str, offset: int, size: int, shape: list[int], dtype: Any):
        self.f, self.file, self.name, self.offset, self.size = f, file, name, offset, size
        self.shape, self.dtype = tuple(shape), dtype

    def _read(self, buffer: Any) -> None:
        self.f.seek(self.offset)
        if self.f.readinto(buffer) != self.size:
            raise CheckpointError(f"ckpt: {self.file} is truncated (tensor {self.name})")

    def read(self) -> Any:
        import torch  # deferred: config errors are reported before torch is imported
        data = bytearray(self.size)  # read into: f.read() would hold the bytes twice for a moment
        self._read(data)
        tensor = torch.frombuffer(data, dtype=self.dtype) if data else torch.empty(0, dtype=self.dtype)
        return tensor.reshape(self.shape)

    def read_into(self, out: Any) -> None:
        """The bytes straight into `out`, a contiguous CPU tensor of this shape and dtype (no copy made on the
        way); `out` counts as changed in place, so copies made of it before (graph/cpu_linear.py) are made again."""
        if (tuple(out.shape) != self.shape or out.dtype != self.dtype or not out.is_contiguous()
                or out.device.type != "cpu"):
            raise ValueError(f"{self.name}: cannot read {self.shape} {self.dtype} into {tuple(out.shape)} {out.dtype}")
        import torch  # deferred: config errors are reported before torch is imported
        if self.size:
            self._read(memoryview(out.detach().reshape(-1).view(torch.uint8).numpy()))
        torch.autograd.graph.increment_version(out)

    def copy_to(self, out: Any) -> None:
        """This tensor into `out` of its shape: read straight in where read_into can, else read and converted."""
        import torch  # deferred: config errors are reported before torch is imported
        if out.dtype == self.dtype and out.is_contiguous() and out.device.type == "cpu":
            self.read_into(out)
        else:
            with torch.no_grad():
                out.copy_(self.read())


def read_weights(path: Path) -> SafetensorsFiles:
    """The tensors of model.safetensors or of the shards its index lists; other weight files are refused."""
    if (path / WEIGHTS).is_file():
        return SafetensorsFiles([path / WEIGHTS])
    if (path / INDEX).is_file():
        shards = sorted(set(json.loads((path / INDEX).read_text())["weight_map"].values()))
        bad = [s for s in shards if Path(s).name != s or not (path / s).is_file()]
        if bad:
            raise CheckpointError(f"ckpt: {path / INDEX} lists {bad[0]}, which is not a file in {path}")
        return SafetensorsFiles([path / shard for shard in shards])
    other = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    raise CheckpointError(f"ckpt: {path} has no {WEIGHTS} or {INDEX}" + (
        f"; {other[0]} is not read: only safetensors weights are, since they hold no code" if other else ""))


def load_dir(path: str | Path) -> tuple[Any, dict[str, Any], str | None]:
    """(model in eval mode, run config, tokenizer.json or None) from an HF directory."""
    import torch  # deferred: config errors are reported before torch is imported

    path = Path(path).expanduser()
    cfg = run_config(path)
    _, family = family_of(path)
    tensors = read_weights(path)
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
        model = build_model(cfg["model"])
    family.weights_in(tensors, model, str(path), into_model=True)  # a tensor at a time: one copy of the weights
    tok = path / TOKENIZER
    return model.eval(), cfg, tok.read_text(encoding="utf-8") if tok.is_file() else None


def family_for(model_cfg: dict[str, Any]) -> Family:
    """The first family whose table reproduces this model's graph; otherwise one line with each one's reason."""
    reasons = []
    for family in families():
        reason = family.fits(model_cfg)
        if reason is None:
            return family
        several = len(architectures(family.name)) > 1  # a family of several heads names the head
        reasons.append(f"{family.architecture if several else family.model_type}: {reason}")
    raise ConfigError(f"format=hf: the model is none of the Hugging Face families ({'; '.join(reasons)})")


def export(loaded: Any, out: str | Path) -> Path:
    """Write `loaded` (builder.serve.checkpoint.Loaded) as a Hugging Face directory; returns it."""
    from safetensors.torch import save_file  # deferred: config errors are reported before torch is imported

    # deferred: config errors are reported before numpy and tokenizers are imported
    from builder.tokenizer import Tokenizer
    model_cfg = loaded.config["model"]
    family = family_for(model_cfg)
    config = family.hf_config({k: v for k, v in model_cfg.items() if k not in GRAPH_KEYS})
    tok = Tokenizer.from_str(loaded.tokenizer) if loaded.tokenizer is not None else None
    eos = tok.eos_id if tok is not None and not family.tokens else None
    special = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"} if eos is not None else {}
    if family.tokens and tok is not None:  # an encoder's [PAD], [CLS], [SEP], [MASK] where the tokenizer has them
        special = {k: t for k, t in family.tokens.items() if tok.tok.token_to_id(t) is not None}
    pad = tok.tok.token_to_id(special["pad_token"]) if "pad_token" in special else None
    config.update({"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": pad, "dtype": "float32"})
    classes = (loaded.config.get("data") or {}).get("classes")
    if family.labels and classes and len(classes) == len(config.get("id2label") or ()):  # the run's class names
        config["id2label"] = {str(i): str(c) for i, c in enumerate(classes)}
        config["label2id"] = {str(c): i for i, c in enumerate(classes)}
    tensors = family.weights_out(loaded.model)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(out / WEIGHTS),
              metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if loaded.tokenizer is not None:
        (out / TOKENIZER).write_text(loaded.tokenizer, encoding="utf-8")
        names = {"model_input_names": family.input_names} if family.input_names else {}
        (out / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", **special, **names}, indent=2) + "\n")
    return out
