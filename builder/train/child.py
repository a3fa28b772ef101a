"""A process that ConfigLauncher (builder/train/launch.py) starts: train the parent's resolved config,
handed over in an environment variable, as one more rank of the same run."""
from __future__ import annotations

import os

from omegaconf import OmegaConf

from builder.config import register_resolvers
from builder.errors import friendly_errors
from builder.train.launch import CONFIG_ENV
from builder.train.run import train


def main() -> None:
    register_resolvers()
    with friendly_errors("builder-train"):
        train(OmegaConf.create(os.environ.pop(CONFIG_ENV)))


if __name__ == "__main__":
    main()
