"""builder-plan: validate a model config, print its node table and draw its graph, without training.

    builder-plan experiment=gpt2_small [overrides] [out=DIR]
    builder-plan path/to/model.yaml [out=DIR]
"""
from __future__ import annotations

from pathlib import Path

from builder.cli import command
from builder.cli.args import take_raw

DEFAULT_OUT = Path("outputs") / "plans"


def load_model_config(args: list[str]) -> tuple[object, str]:
    """The model config (unresolved) and a name for it: from a YAML file, or composed like builder-train."""
    from omegaconf import OmegaConf

    from builder.config import compose, register_resolvers
    register_resolvers()
    files = [a for a in args if a.endswith((".yaml", ".yml")) and "=" not in a]
    if files:
        path = Path(files[0])
        if not path.is_file():
            from builder.errors import ConfigError
            raise ConfigError(f"{path}: no such file")
        cfg = OmegaConf.create({"model": OmegaConf.load(path)})
        overrides = [a for a in args if a not in files]
        cfg.merge_with_dotlist([a if a.startswith("model.") else f"model.{a}" for a in overrides])
        return cfg, path.stem
    cfg = compose(args)
    name = next((a.split("=", 1)[1] for a in args if a.startswith("experiment=")), None)
    return cfg, name or next((a.split("=", 1)[1] for a in args if a.startswith("model=")), "default")


def main(argv: list[str] | None = None) -> None:
    command("builder-plan", __doc__, _main, argv)


def _main(argv: list[str]) -> None:
    mine, overrides = take_raw(argv, ("out",))
    cfg, name = load_model_config(overrides)
    from builder.graph import check_structure
    from builder.prepare import prepare_model_config
    model_cfg = prepare_model_config(cfg)
    spec = check_structure(model_cfg)  # structural errors print here, before torch is imported
    from builder.plan import make_plan, print_table, write_diagrams
    plan = make_plan(spec, quick=True)  # this process checks, prints and exits
    print_table(plan, f"plan of {name}")
    out = Path(mine.get("out") or DEFAULT_OUT / name)
    written = write_diagrams(plan, out)
    print(f"graph written to {', '.join(str(p) for p in written)}" + ("" if "out" in mine else "  (choose with out=DIR)"))


if __name__ == "__main__":
    main()
