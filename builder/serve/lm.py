"""Trained language models in Python: `builder.load(path).generate("To be", max_new_tokens=100)`.

`path` is anything `ckpt=` accepts, a Hugging Face directory included (config.json, model.safetensors,
tokenizer.json). Text is encoded with the tokenizer stored in the checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from builder.contract import context_length
from builder.errors import ConfigError
from builder.serve import checkpoint
from builder.serve.api import LoadedModel, as_texts, check_number
from builder.serve.generation import decode, lm_step
from builder.tokenizer import Tokenizer


class TextStream:
    """Token ids in, text out as soon as it is final: a character split across byte-level tokens decodes to
    U+FFFD until its last byte arrives, so a trailing U+FFFD is held back."""

    def __init__(self, tokenizer: Tokenizer, write: Callable[[str], None]):
        self.tokenizer, self.write = tokenizer, write
        self.ids: list[int] = []
        self.shown = 0  # characters already written

    def add(self, ids: list[int]) -> None:
        self.ids += ids
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            self.flush(text)

    def flush(self, text: str | None = None) -> None:
        text = self.tokenizer.decode(self.ids) if text is None else text
        if len(text) > self.shown:
            self.write(text[self.shown:])
            self.shown = len(text)


class LanguageModel(LoadedModel):
    def __init__(self, loaded):
        super().__init__(loaded)
        if not self.tokenizer_json:
            raise ConfigError(f"ckpt: {self.path} holds no tokenizer, so text cannot be encoded for it")
        self.tokenizer = Tokenizer.from_str(self.tokenizer_json)
        self.context = context_length(self.model.spec, self.roles.inputs["tokens"])  # None: no position table
        # where generation stops: a Hugging Face directory's eos_token_id, else the tokenizer's <|endoftext|>
        self.eos_id: int | None = (self.config.get("generation") or {}).get("eos_id", self.tokenizer.eos_id)

    def compiled(self, backend: str = "inductor") -> torch.nn.Module:
        """The model under torch.compile (made once): the same tokens, faster steps on GPUs; on a CPU the
        compilation costs more than a short generation saves."""
        if "_compiled" not in self.__dict__:
            self.__dict__["_compiled"] = torch.compile(self.model, dynamic=True, backend=backend)
        return self.__dict__["_compiled"]

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's ids; an empty prompt starts from the end-of-text token (GPT-2's <|endoftext|>) or a
        newline."""
        try:
            ids = self.tokenizer.encode(prompt)
        except ValueError as e:
            raise ConfigError(f"prompt: {e}") from None
        if ids:
            return ids
        if self.eos_id is not None:
            return [self.eos_id]
        try:
            return self.tokenizer.encode("\n") or [0]
        except ValueError:  # an alphabet without a newline
            return [0]

    def generate(self, prompt: str | list[str] = "", max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None, num_beams: int = 1,
                 length_penalty: float = 1.0, seed: int | None = None, stream: Callable[[str], None] | None = None,
                 use_cache: bool = True, stop_at_eos: bool = True, compile: bool = False) -> str | list[str]:
        """The continuation of `prompt` (without the prompt); for a list or tuple of prompts a list with one
        continuation each ([] -> []), each as if generated alone (the same seed for every prompt). Greedy at
        temperature 0, sampling otherwise, beam search with num_beams > 1. `stream(text)` receives the text piece
        by piece as it is produced (greedy and sampling; prompt after prompt). `seed` makes sampling repeatable.
        Stops early at <|endoftext|> if it has one. A prompt or setting out of range is a one-line ConfigError:
        max_new_tokens >= 0, temperature >= 0, top_k >= 1, 0 < top_p <= 1, num_beams >= 1."""
        prompts, one = as_texts("prompt", prompt)
        check_number("max_new_tokens", max_new_tokens, 0, integer=True)
        check_number("temperature", temperature, 0)
        check_number("top_k", top_k, 1, integer=True, optional=True)
        check_number("top_p", top_p, 0, 1, above=True, optional=True)
        check_number("num_beams", num_beams, 1, integer=True)
        check_number("length_penalty", length_penalty)
        check_number("seed", seed, integer=True, optional=True)
        if not one:
            return [self.generate(p, max_new_tokens, temperature, top_k, top_p, num_beams, length_penalty, seed,
                                  stream, use_cache, stop_at_eos, compile) for p in prompts]
        ids = self.prompt_ids(prompt)
        device = next(self.model.parameters()).device
        generator = torch.Generator(device).manual_seed(int(seed)) if seed is not None else None
        out_stream = TextStream(self.tokenizer, stream) if stream is not None else None
        eos = self.eos_id if stop_at_eos else None

        def on_token(nxt: torch.Tensor) -> None:
            if out_stream is not None and (eos is None or int(nxt[0]) != eos):
                out_stream.add([int(nxt[0])])

        model = self.compiled() if compile else self.model
        out = decode(lm_step(model, self.roles, use_cache), torch.tensor([ids], device=device),
                     max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_k=top_k, top_p=top_p,
                     num_beams=int(num_beams), length_penalty=float(length_penalty), eos_id=eos,
                     generator=generator, on_token=on_token)
        new = out[0, len(ids):].tolist()
        if eos is not None and eos in new:
            new = new[: new.index(eos)]
        if out_stream is not None:
            if num_beams > 1:
                out_stream.add(new)
            out_stream.flush()
        return self.tokenizer.decode(new)


def load(path: str | Path, allow_imports: bool = False) -> LanguageModel:
    """A language model from a run directory, .ckpt file, export directory or Hugging Face directory."""
    loaded = checkpoint.load(path, allow_imports=allow_imports)
    if loaded.config["task"]["name"] != "language_model":
        raise ConfigError(f"ckpt: {loaded.path} is a '{loaded.config['task']['name']}' model, not a language model")
    return LanguageModel(loaded)
