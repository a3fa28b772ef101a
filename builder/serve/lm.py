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
                 use_cache: bool = True, stop_at_eos: bool = True, compile: bool = False,
                 batch_size: int = 8) -> str | list[str]:
        """The continuation of `prompt` (without the prompt); for a list or tuple of prompts a list with one
        continuation each ([] -> []). Greedy at temperature 0, sampling otherwise, beam search with num_beams > 1.
        Stops early at <|endoftext|> if it has one, each prompt on its own.

        A list is decoded `batch_size` prompts at a time in one left-padded batch: each row computes what it
        would alone, so greedy and beam continuations equal one-at-a-time ones. Sampling is repeatable with
        `seed`; a batch draws from one generator, so batch_size=1 gives each prompt the draws it would get alone.
        `stream(text)` receives a single prompt's text piece by piece as it is produced (greedy and sampling);
        for a list, each continuation whole as its batch finishes. A prompt or setting out of range is a one-line
        ConfigError: max_new_tokens >= 0, temperature >= 0, top_k >= 1, 0 < top_p <= 1, num_beams >= 1,
        batch_size >= 1."""
        prompts, one = as_texts("prompt", prompt)
        check_number("max_new_tokens", max_new_tokens, 0, integer=True)
        check_number("temperature", temperature, 0)
        check_number("top_k", top_k, 1, integer=True, optional=True)
        check_number("top_p", top_p, 0, 1, above=True, optional=True)
        check_number("num_beams", num_beams, 1, integer=True)
        check_number("length_penalty", length_penalty)
        check_number("seed", seed, integer=True, optional=True)
        check_number("batch_size", batch_size, 1, integer=True)
        ids = [self.prompt_ids(p) for p in prompts]  # every prompt is checked before any is decoded
        device = next(self.model.parameters()).device
        settings = dict(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_k=top_k, top_p=top_p,
                        num_beams=int(num_beams), length_penalty=float(length_penalty),
                        eos_id=self.eos_id if stop_at_eos else None)
        step = lm_step(self.compiled() if compile else self.model, self.roles, use_cache)
        texts: list[str] = []
        for start in range(0, len(ids), int(batch_size)):
            # a fresh generator per batch: the same prompts and seed give the same text, whatever came before
            generator = torch.Generator(device).manual_seed(int(seed)) if seed is not None else None
            batch = ids[start:start + int(batch_size)]
            out_stream = TextStream(self.tokenizer, stream) if stream is not None and one else None
            for new in self._decode(step, batch, device, generator, out_stream, settings):
                texts.append(self.tokenizer.decode(new))
                if stream is not None and not one:
                    stream(texts[-1])
        return texts[0] if one else texts

    def _decode(self, step, batch: list[list[int]], device: torch.device, generator: torch.Generator | None,
                out_stream: TextStream | None, settings: dict) -> list[list[int]]:
        """The new ids of each prompt of `batch` (cut at eos), decoded as one batch, right-aligned."""
        eos = settings["eos_id"]
        width = max(len(i) for i in batch)
        filler = eos if eos is not None else 0  # never seen: padding columns are masked out
        prefix = torch.tensor([[filler] * (width - len(i)) + i for i in batch], device=device)  # (B, T0)
        padding = torch.tensor([[True] * (width - len(i)) + [False] * len(i) for i in batch], device=device)

        def on_token(nxt: torch.Tensor) -> None:
            if out_stream is not None and (eos is None or int(nxt[0]) != eos):
                out_stream.add([int(nxt[0])])

        out = decode(step, prefix, generator=generator, on_token=on_token, padding=padding, **settings)
        news = []
        for row in out[:, width:].tolist():
            news.append(row[: row.index(eos)] if eos is not None and eos in row else row)
        if out_stream is not None:
            if settings["num_beams"] > 1:
                out_stream.add(news[0])
            out_stream.flush()
        return news


def load(path: str | Path, allow_imports: bool = False) -> LanguageModel:
    """A language model from a run directory, .ckpt file, export directory or Hugging Face directory."""
    loaded = checkpoint.load(path, allow_imports=allow_imports)
    if loaded.config["task"]["name"] != "language_model":
        raise ConfigError(f"ckpt: {loaded.path} is a '{loaded.config['task']['name']}' model, not a language model")
    return LanguageModel(loaded)
