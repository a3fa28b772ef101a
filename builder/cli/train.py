"""builder-train: train a model from configuration (Hydra).

    builder-train                                   # the toy leaf/flower classifier
    builder-train experiment=toy_classifier trainer.max_steps=50 optim=sgd
    builder-train -m optim.lr=0.01,0.03             # a sweep, under outputs/multirun/

The run directory (outputs/<date>/<time>) receives config.yaml, overrides.yaml, metrics.csv and
checkpoints/{best,last}.ckpt.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from builder.config import CONF_DIR, compose, register_resolvers
from builder.errors import friendly_errors


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _run(cfg: DictConfig) -> float:
    with friendly_errors("builder-train"):
        from builder.train import train
        return train(cfg)


def main() -> None:
    register_resolvers()
    args = sys.argv[1:]
    if not any(a.startswith("-") for a in args):
        with friendly_errors("builder-train"):
            compose(args)  # overrides checked first: a misspelt key gets one line with a did-you-mean
    _run()


if __name__ == "__main__":
    main()
