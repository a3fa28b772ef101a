"""Leaf or flower? (R, G, B, ml) measurements drawn around three examples with Gaussian noise.

Each sample picks one example uniformly (leaf, flower or sunflower; the sunflower is a flower) and adds
independent Gaussian noise with a per-feature std. The class densities are therefore known exactly, so the
best possible (Bayes) accuracy can be estimated by Monte Carlo and printed next to what the model reaches.

    python -m builder.train.data.leaf_flower [noise_std=[58,58,58,14]]   # prints the Bayes accuracy
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from builder.errors import ConfigError


class LeafFlowerData(L.LightningDataModule):
    def __init__(self, cfg: dict[str, Any], seed: int = 0):
        super().__init__()
        self.cfg, self.shuffle_seed = cfg, seed
        self.classes = list(cfg["classes"])
        unknown = [e["label"] for e in cfg["examples"] if e["label"] not in self.classes]
        if unknown:
            raise ConfigError(f"data.examples: label(s) {unknown} are not in data.classes {self.classes}")
        if not cfg["examples"]:
            raise ConfigError("data.examples: empty; give at least one example per class")
        width = len(cfg["noise_std"])
        for i, e in enumerate(cfg["examples"]):
            if len(e["features"]) != width:
                raise ConfigError(f"data.examples[{i}].features: {len(e['features'])} values, but data.noise_std "
                                  f"has {width} (one per feature)")
        self.means = torch.tensor([e["features"] for e in cfg["examples"]], dtype=torch.float64)  # (K, F)
        self.labels = torch.tensor([self.classes.index(e["label"]) for e in cfg["examples"]])  # (K,)
        self.std = torch.tensor(cfg["noise_std"], dtype=torch.float64)  # (F,)
        if self.std.shape != self.means.shape[1:]:
            raise ConfigError(f"data.noise_std: needs one std per feature ({self.means.shape[1]}), "
                              f"got {cfg['noise_std']}")
        self.train_set = self.val_set = None

    def sample(self, n: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples from the fixed random stream (data.seed, stream): same seed, same data, on any machine."""
        g = torch.Generator().manual_seed(int(self.cfg["seed"]) * 1000 + stream)
        k = torch.randint(len(self.means), (n,), generator=g)  # (n,) which example
        x = self.means[k] + torch.randn(n, self.means.shape[1], generator=g, dtype=torch.float64) * self.std
        return x.float(), self.labels[k]  # (n, F), (n,)

    def bayes_accuracy(self, n: int | None = None) -> float:
        """Accuracy of the optimal rule argmax_c p(c) p(x | c), with the true densities, by Monte Carlo."""
        n = n or int(self.cfg.get("bayes_samples", 200_000))
        g = torch.Generator().manual_seed(12345)  # independent of data.seed: one estimate per noise level
        k = torch.randint(len(self.means), (n,), generator=g)
        x = self.means[k] + torch.randn(n, self.means.shape[1], generator=g, dtype=torch.float64) * self.std
        # log p(x | example) up to a shared constant; every example has the same prior and covariance
        log_p = -0.5 * (((x[:, None, :] - self.means[None]) / self.std) ** 2).sum(-1)  # (n, K)
        per_class = torch.stack([torch.logsumexp(log_p[:, self.labels == c], dim=1)
                                 for c in range(len(self.classes))], dim=1)  # (n, C)
        return (per_class.argmax(1) == self.labels[k]).double().mean().item()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = TensorDataset(*self.sample(int(self.cfg["n_train"]), stream=0))
        self.val_set = TensorDataset(*self.sample(int(self.cfg["n_val"]), stream=1))
        self.test_set = TensorDataset(*self.sample(int(self.cfg.get("n_test") or self.cfg["n_val"]), stream=2))
        if self.cfg.get("bayes_samples", 0):
            print(f"leaf_flower: noise std {list(self.cfg['noise_std'])} -> best possible (Bayes) accuracy "
                  f"{100 * self.bayes_accuracy():.2f}% (Monte Carlo, {int(self.cfg['bayes_samples'])} samples)")

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.shuffle_seed)  # the shuffling order depends only on the run's seed
        return DataLoader(self.train_set, batch_size=int(self.cfg["batch_size"]), shuffle=True, generator=g,
                          num_workers=int(self.cfg.get("num_workers") or 0))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=max(int(self.cfg["batch_size"]), 512))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=max(int(self.cfg["batch_size"]), 512))


if __name__ == "__main__":
    import sys

    from omegaconf import OmegaConf

    from builder.config import CONF_DIR
    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "data" / "leaf_flower.yaml"), OmegaConf.from_dotlist(sys.argv[1:]))
    cfg.bayes_samples = cfg.bayes_samples or 200_000
    LeafFlowerData(OmegaConf.to_container(cfg, resolve=True)).setup()
