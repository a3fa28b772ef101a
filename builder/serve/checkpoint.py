"""Finding and loading trained models safely, and exporting them.

`ckpt=` may name a run directory (its checkpoints/best.ckpt), a .ckpt file, an export directory
(model.safetensors + config.yaml), or a Hugging Face directory (config.json + safetensors, builder/serve/hf.py).
Checkpoints are read with torch.load(weights_only=True): plain data and tensors only, so a checkpoint can never
run code while loading. The modules a model's config lists under
`imports:` are imported only when the caller allows it.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from builder.errors import CheckpointError, ConfigError  # noqa: F401 - CheckpointError: this module's error
from builder.graph.build import build_model
from builder.plugins import import_modules
from builder.serve import hf

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.yaml", "tokenizer.json"


@dataclass
class Loaded:
    model: Any  # the GraphModel, weights loaded, in eval mode
    config: dict[str, Any]  # the run's resolved config (plain data)
    path: Path  # the file or export directory actually read
    tokenizer: str | None = None  # tokenizer.json contents, when the run has one


def locate(path: str | Path) -> Path:
    """The .ckpt file or export directory that `ckpt=path` means."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        if (p / WEIGHTS).is_file() and (p / CONFIG).is_file():
            return p
        for name in ("best.ckpt", "last.ckpt"):  # best by the task's metric; last when no validation ran
            for candidate in (p / "checkpoints" / name, p / name):
                if candidate.is_file():
                    return candidate
        raise CheckpointError(f"ckpt: {p} holds no checkpoints/best.ckpt, checkpoints/last.ckpt or "
                              f"{WEIGHTS} + {CONFIG}; give a run directory, a .ckpt file or an export directory")
    raise CheckpointError(f"ckpt: {p} does not exist")


def read_checkpoint(file: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded as plain data; anything else is refused, never unpickled, and named for what
    it is: not a checkpoint at all, a damaged one, an unsafe one (pickled objects), or another program's."""
    import torch  # deferred: config errors are reported before torch is imported
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - whatever the file is, one line that says so
        raise CheckpointError(_unreadable(Path(file), e)) from None
    if not isinstance(ckpt, dict) or "builder" not in ckpt or "state_dict" not in ckpt:
        keys = ", ".join(map(str, list(ckpt)[:6])) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"ckpt: {file} is a PyTorch file from another program, not a checkpoint written by "
                              f"builder-train (no 'builder' entry; it holds {keys})")
    return ckpt


def _unreadable(file: Path, error: Exception) -> str:
    """Why `file` could not be read: its first bytes tell a zip (a torch checkpoint) or a pickle from the rest."""
    text = str(error)
    with file.open("rb") as f:
        head = f.read(64)
    if not head:
        return f"ckpt: {file} is empty, not a checkpoint (a save that never finished, or a file cut off at its start)"
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found or "Weights only load failed" in text:
        what = f" (it contains {found.group(1)})" if found else ""
        return (f"ckpt: {file} holds pickled Python objects other than tensors and plain data{what}; refusing to "
                "load it, since unpickling them could run arbitrary code")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        reason = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        return (f"ckpt: {file} is a damaged checkpoint, cut off or corrupted ({reason}); use another copy, or the "
                "run's other checkpoint")
    try:
        sample = head.decode("utf-8")
        kind = f"a text file beginning {sample[:24]!r}"
    except UnicodeDecodeError:
        kind = f"binary data beginning with bytes {head[:8].hex(' ')}"
    return f"ckpt: {file} is not a checkpoint: it is {kind}, while a checkpoint is a zip written by torch.save"


def read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    """(config, tokenizer json or None) of a located checkpoint file or export directory, without weights."""
    if path.is_dir():
        cfg = OmegaConf.to_container(OmegaConf.load(path / CONFIG), resolve=True)
        tok = path / TOKENIZER
        return cfg, tok.read_text() if tok.is_file() else None
    payload = read_checkpoint(path)["builder"]
    return payload["config"], payload.get("tokenizer")


def check_imports(cfg: dict[str, Any], allow_imports: bool, where: Path) -> None:
    """Refuse a model that needs user modules (its blocks under model.imports, its task or data source under
    imports) unless the caller allows importing them; when allowed, import the task and data modules."""
    modules = list(cfg.get("model", {}).get("imports") or []) + list(cfg.get("imports") or [])
    if modules and not allow_imports:
        raise CheckpointError(
            f"ckpt: {where} needs the Python module(s) {', '.join(modules)} for its blocks, task or data, and "
            "importing a module runs its code; if you trust them, pass allow_imports=true (allow_imports=True in "
            "Python)")
    import_modules(list(cfg.get("imports") or []))


def load(path: str | Path, allow_imports: bool = False) -> Loaded:
    """Find, check and load a trained model (see the module docstring for what `path` may be)."""
    if hf.is_hf_dir(path):  # a Hugging Face directory: config.json, safetensors weights, tokenizer.json
        model, cfg, tokenizer = hf.load_dir(path)
        return Loaded(model, cfg, Path(path).expanduser(), tokenizer)
    file = locate(path)
    if file.is_dir():
        cfg, tokenizer = read_config(file)
        check_imports(cfg, allow_imports, file)
        import torch  # deferred: config errors are reported before torch is imported
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
            model = build_model(cfg["model"])
        read_weights_into(model, file / WEIGHTS)
    else:
        ckpt = read_checkpoint(file)
        cfg, tokenizer = ckpt["builder"]["config"], ckpt["builder"].get("tokenizer")
        check_imports(cfg, allow_imports, file)
        model = model_with_weights(cfg["model"], ckpt["state_dict"], cfg, allow_imports)
    return Loaded(model.eval(), cfg, file, tokenizer)


def read_weights_into(model: Any, file: Path) -> None:
    """An exported model.safetensors read a tensor at a time straight into the model's parameters, so loading
    never holds the weights twice (the safetensors library's load_model reads the whole file first). Every
    tensor must have a place of its shape and every parameter a tensor (a tied one is stored once)."""
    params = model.state_dict()  # the parameters' storage, by name
    filled: set[int] = set()
    for name, stored in hf.SafetensorsFiles([file]).entries():
        target = params.get(name)
        if target is None:
            raise CheckpointError(f"ckpt: {file}: tensor {name} has no place in this model")
        if stored.shape != tuple(target.shape):
            raise CheckpointError(f"ckpt: {file}: tensor {name} has shape {stored.shape}; the model's is "
                                  f"{tuple(target.shape)}")
        stored.copy_to(target)
        filled.add(target.data_ptr())
    missing = [n for n, t in params.items() if t.numel() and t.data_ptr() not in filled]
    if missing:
        raise CheckpointError(f"ckpt: {file} has no tensor for {missing[0]}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def model_with_weights(model_cfg: dict[str, Any], task_state: dict[str, Any], run_cfg: dict[str, Any] | None = None,
                       allow_imports: bool = False) -> Any:
    """A GraphModel built from its config, holding the weights of a task's state dict (whose entries are
    "model.<name>": the task keeps the graph as `self.model`); with the run's adapters (builder/graph/adapters.py)
    when `run_cfg` has them, the base weights read from its init_from when the checkpoint holds adapters only."""
    import torch  # deferred: config errors are reported before torch is imported

    from builder.graph import adapters  # deferred: config errors are reported before torch is imported
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
        model = build_model(model_cfg)
        section = (run_cfg or {}).get("adapters") or {}
        only = adapters.enabled(section) and section.get("save") == "adapters_only"
        if only:
            base = load(run_cfg["init_from"], allow_imports=allow_imports)  # the frozen weights the run started from
            model.load_state_dict(adapters.merged_state(base.model), strict=True)
        adapters.apply(model, section)
    state = {k.removeprefix("model."): v for k, v in task_state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=not only)
    lacking = [k for k in missing if adapters.is_adapter_key(k)]
    if unexpected or lacking:
        raise CheckpointError(f"ckpt: the checkpoint's adapters do not fit the model its config builds "
                              f"({(unexpected or lacking)[0]})")
    return model


def export(loaded: Loaded, out: str | Path) -> Path:
    """Write model.safetensors + config.yaml (+ tokenizer.json) into `out`; every command reads it as ckpt=out."""
    from safetensors.torch import save_model  # deferred: config errors are reported before torch is imported

    from builder.graph import adapters  # deferred: config errors are reported before torch is imported
    model, config = loaded.model, loaded.config
    if adapters.adapted(model):  # the updates merged into the weights: an export is a plain model
        model, config = adapters.merge(copy.deepcopy(model)), dict(config, adapters={"name": "none"})
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "builder", "task": str(config["task"]["name"])}
    save_model(model, str(out / WEIGHTS), metadata=meta)
    OmegaConf.save(OmegaConf.create(config), out / CONFIG)
    if loaded.tokenizer is not None:
        (out / TOKENIZER).write_text(loaded.tokenizer)
    return out
