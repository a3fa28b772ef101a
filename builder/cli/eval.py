"""builder-eval: the task's validation metrics of a trained model, on its data set or a changed one.

    builder-eval ckpt=RUN_DIR
    builder-eval ckpt=RUN_DIR data.seed=3 data.n_val=500

`data.*` overrides change the run's stored data config (unknown keys are errors).
"""
from __future__ import annotations

from typing import Any

from builder.cli import command
from builder.settings import S
from builder.cli.args import apply_overrides, parse_args

SPEC = {"ckpt": S("Any", doc="a run directory, .ckpt file or export directory"),
        "split": S("Literal['val', 'test']", "val"), "allow_imports": S("bool", False)}
SPLITS = ("val", "test")


def evaluate(model: Any, cfg: dict[str, Any], split: str = "val", tokenizer: Any = None) -> dict[str, float]:
    """Run the task's validation (or test) step over that split of the data config; {metric: value}."""
    import logging
    import warnings

    import lightning as L
    import torch

    from builder.train.data import datamodule
    from builder.train.tasks import task_class
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no accelerator banner around the results
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs newer torch
    seed = int(cfg.get("seed", 0))  # the run's seed, for anything random in the data module
    L.seed_everything(seed, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    task = task_class(cfg["task"]["name"])(model, cfg)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    run_split = trainer.test if split == "test" else trainer.validate
    data = datamodule(cfg["data"], seed=seed)
    if split == "test" and type(data).test_dataloader is L.LightningDataModule.test_dataloader:
        from builder.errors import ConfigError
        raise ConfigError(f"split: the {cfg['data']['name']} data source has no test split; evaluate with "
                          "split=val, or on other data with data.* overrides")
    if tokenizer is not None and hasattr(data, "use_tokenizer"):
        data.use_tokenizer(tokenizer)  # the model's own vocabulary, whatever data.path now points at
    results = run_split(task, datamodule=data, verbose=False)
    return {k: float(v) for k, v in sorted(results[0].items())}


def main(argv: list[str] | None = None) -> None:
    command("builder-eval", __doc__, run, argv, SPEC)


def run(argv: list[str]) -> dict[str, float]:
    """Parse, load, evaluate and print; the metrics are returned for callers in Python."""
    args = parse_args(argv, SPEC, groups=("data",))
    if args["split"] not in SPLITS:
        from builder.errors import ConfigError, suggest
        raise ConfigError(f"split: '{args['split']}' is not one of {', '.join(SPLITS)}{suggest(args['split'], SPLITS)}")
    from builder.serve.checkpoint import load
    loaded = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    cfg = dict(loaded.config, data=apply_overrides(loaded.config["data"], args["data"], "data"))
    metrics = evaluate(loaded.model, cfg, args["split"], tokenizer=loaded.tokenizer)
    which = "test" if args["split"] == "test" else "validation"
    print(f"{loaded.path} on {cfg['data']['name']} ({which} set, data.seed={cfg['data'].get('seed')}):")
    for key, value in metrics.items():
        print(f"  {key:<12} {value:.4f}")
    return metrics


if __name__ == "__main__":
    main()
