"""builder-eval: the task's validation metrics of a trained model, on its data set or a changed one.

    builder-eval ckpt=RUN_DIR
    builder-eval ckpt=RUN_DIR data.seed=3 data.n_val=500

`data.*` overrides change the run's stored data config (unknown keys are errors).
"""
from __future__ import annotations

from builder.cli import command
from builder.cli.args import apply_overrides, parse_args
from builder.errors import ConfigError, suggest
from builder.serve.checkpoint import load
from builder.settings import S

SPEC = {"ckpt": S("Any", doc="a run directory, .ckpt file or export directory"),
        "split": S("Literal['val', 'test']", "val"), "allow_imports": S("bool", False)}
SPLITS = ("val", "test")


def main(argv: list[str] | None = None) -> None:
    command("builder-eval", __doc__, run, argv, SPEC)


def run(argv: list[str]) -> dict[str, float]:
    """Parse, load, evaluate and print; the metrics are returned for callers in Python."""
    args = parse_args(argv, SPEC, groups=("data",))
    if args["split"] not in SPLITS:
        raise ConfigError(f"split: '{args['split']}' is not one of {', '.join(SPLITS)}{suggest(args['split'], SPLITS)}")
    loaded = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    cfg = dict(loaded.config, data=apply_overrides(loaded.config["data"], args["data"], "data"))
    from builder.train.evaluate import evaluate  # deferred: config errors are reported before torch is imported
    metrics = evaluate(loaded.model, cfg, args["split"], tokenizer=loaded.tokenizer)
    which = "test" if args["split"] == "test" else "validation"
    print(f"{loaded.path} on {cfg['data']['name']} ({which} set, data.seed={cfg['data'].get('seed')}):")
    for key, value in metrics.items():
        print(f"  {key:<12} {value:.4f}")
    return metrics


if __name__ == "__main__":
    main()
