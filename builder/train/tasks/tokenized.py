"""A task whose data comes with a tokenizer (masked LM, text classification): the tokenizer is checked against
the model's embedding table, saved beside the run as tokenizer.json and inside every checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.tokenizer import Tokenizer
from builder.train.tasks.base import check_vocabulary


class TokenizedTask:
    """Mixed in before Task: `self.tokenizer` is the data module's, once `take_tokenizer` has run in setup."""

    tokenizer: Tokenizer | None = None

    def take_tokenizer(self, stage: str, role: str, predicted: bool) -> Tokenizer | None:
        """The data module's tokenizer (None when it has none), checked against the embedding of the input `role`
        (and the logits when the model `predicted` its ids); saved beside the run when fitting."""
        dm = getattr(self.trainer, "datamodule", None)
        if self.tokenizer is None and dm is not None and hasattr(dm, "get_tokenizer"):
            self.tokenizer = dm.get_tokenizer()
        if self.tokenizer is not None:
            check_vocabulary(self.model.spec, self.roles, role, "vocab", self.tokenizer.vocab_size, predicted)
            if stage == "fit":
                self.tokenizer.save(Path(self.trainer.default_root_dir) / "tokenizer.json")
        return self.tokenizer

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.tokenizer is not None:
            checkpoint["builder"]["tokenizer"] = self.tokenizer.to_str()  # a str: weights_only loading still works
