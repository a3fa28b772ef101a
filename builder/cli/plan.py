"""builder-plan: validate a model config, print its node table and draw its graph, without training.

    builder-plan experiment=gpt2_small model.n_layer=6 out=outputs/plans/gpt2_6
    builder-plan --config-dir my_conf experiment=mine              # with a project's own config directory
    builder-plan path/to/model.yaml out=outputs/plans/mine
    builder-plan ckpt=RUN_DIR              # a trained model as stored: a run, a .ckpt file or an export
    builder-plan path/to/run/config.yaml   # a run's or an export's config

A stored config (a checkpoint's, a run's config.yaml) already holds the run's `auto` sizes (vocab_size, ...),
so its plan is the model that was trained. `ckpt=` reads no weights and unpickles nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from builder.cli import command
from builder.cli.args import take_raw
from builder.config import CONF_DIR, compose, config_dirs, register_resolvers
from builder.errors import ConfigError
from builder.graph.build import check_structure
from builder.graph.prepare import prepare_model_config
from builder.serve import hf
from builder.serve.checkpoint import CheckpointError, check_imports, locate, read_config

DEFAULT_OUT = Path("outputs") / "plans"
MODEL_KEYS = ("inputs", "nodes", "outputs")


def load_model_config(args: list[str], ckpt: str | None = None, allow_imports: bool = False) -> tuple[object, str]:
    """The model config (unresolved) and a name for it: from a checkpoint, a YAML file, or composed like
    builder-train."""
    register_resolvers()
    files = [a for a in args if a.endswith((".yaml", ".yml")) and "=" not in a]
    if ckpt is not None and files:
        raise ConfigError(f"ckpt: give a checkpoint or a YAML file ({files[0]}), not both")
    if ckpt is not None or files:
        if ckpt is not None:
            model, name = stored_model(ckpt, allow_imports)
        else:
            model, name = model_of_file(Path(files[0]))
        cfg = OmegaConf.create({"model": model})
        overrides = [a for a in args if a not in files]
        cfg.merge_with_dotlist([a if a.startswith("model.") else f"model.{a}" for a in overrides])
        return cfg, name
    dirs, args = config_dirs(args)
    cfg = compose(args, dirs=dirs)
    name = next((a.split("=", 1)[1] for a in args if a.startswith("experiment=")), None)
    return cfg, name or next((a.split("=", 1)[1] for a in args if a.startswith("model=")), "default")


def model_of_file(path: Path) -> tuple[Any, str]:
    """A bare model config, or the `model` section of a run's (or an export's) stored config.yaml."""
    if not path.is_file() and not path.is_absolute() and (CONF_DIR.parent / path).is_file():
        path = CONF_DIR.parent / path  # conf/model/gpt.yaml names a shipped config from any directory
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    loaded = OmegaConf.load(path)
    if isinstance(loaded, DictConfig) and "defaults" in loaded:  # a file Hydra composes, such as an experiment
        group = path.resolve().parent
        how = (f"builder-plan {group.name}={path.stem}" if group.parent == CONF_DIR
               else "builder-plan experiment=NAME or model=NAME [overrides]")
        raise ConfigError(f"{path}: a Hydra config with a defaults list, not a model or a run's stored config; "
                          f"plan it by name: {how}")
    if (isinstance(loaded, DictConfig) and isinstance(loaded.get("model"), DictConfig)
            and not any(k in loaded for k in MODEL_KEYS)):
        return loaded.model, path.resolve().parent.name  # a run's config: the run directory names the plan
    return loaded, path.stem


def stored_model(ckpt: str, allow_imports: bool) -> tuple[dict[str, Any], str]:
    """The model section of a trained model's config (a run directory, .ckpt file, export or Hugging Face
    directory), read without its weights."""
    if not ckpt:
        raise ConfigError("ckpt: empty; give a run directory, a .ckpt file or an export directory")
    path = Path(ckpt).expanduser()
    if hf.is_hf_dir(path):
        return hf.run_config(path)["model"], path.name
    found = locate(path)
    cfg, _ = read_config(found)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"ckpt: {found} holds no model config")
    check_imports(cfg, allow_imports, found)
    run = found.parent.parent if found.parent.name == "checkpoints" else found.parent
    return cfg["model"], (found.name if found.is_dir() else run.name)


def main(argv: list[str] | None = None) -> None:
    command("builder-plan", __doc__, _main, argv)


def _main(argv: list[str]) -> None:
    mine, overrides = take_raw(argv, ("out", "ckpt", "allow_imports"))
    allow = mine.get("allow_imports", "false").lower()
    if allow not in ("true", "false"):
        raise ConfigError(f"allow_imports: expected true or false, got '{mine['allow_imports']}'")
    cfg, name = load_model_config(overrides, mine.get("ckpt"), allow == "true")
    model_cfg = prepare_model_config(cfg)
    spec = check_structure(model_cfg)  # structural errors print here, before torch is imported
    # deferred: config errors are reported before torch is imported
    from builder.graph.plan import make_plan, print_table, write_diagrams
    plan = make_plan(spec, quick=True)  # this process checks, prints and exits
    print_table(plan, f"plan of {name}", trainable_row(cfg, spec, plan))
    out = Path(mine.get("out") or DEFAULT_OUT / name)
    written = write_diagrams(plan, out)
    print(f"graph written to {', '.join(str(p) for p in written)}" + ("" if "out" in mine else "  (choose with out=DIR)"))


def trainable_row(cfg: Any, spec: Any, plan: Any) -> str | None:
    """With `adapters=lora`: the adapters' parameters (the ones that train) of the total with them."""
    section = OmegaConf.to_container(cfg.adapters, resolve=True) if OmegaConf.is_dict(cfg.get("adapters")) else {}
    from builder.graph import adapters  # deferred: config errors are reported before torch is imported
    if not adapters.enabled(section):
        return None
    added, layers = adapters.plan_counts(spec, section)
    total = plan.total + added
    return f"{added:,} of {total:,} ({100 * added / total:.3g}%; LoRA rank {section['rank']}, {layers} layers)"


if __name__ == "__main__":
    main()
