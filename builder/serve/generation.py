"""Decoding over a step function: greedy, sampling (temperature, top-k, top-p) and beam search.

`decode` knows nothing about the model. A step function feeds what the state has not seen yet and returns
the next-token logits of the last position:

    def step(tokens, state):                       # tokens (B', T), the whole sequence so far
        logits = model(tokens[:, state.offset:], state=state)[:, -1]
        state.advance(tokens.shape[1] - state.offset)
        return logits                              # (B', V)

In beam search B' = B * num_beams, rows batch-major (row b * num_beams + k is beam k of item b), so a step
function that needs per-item inputs (an encoder's source) repeats them with `repeat_interleave(num_beams, 0)`.

Prompts of different lengths decode as one batch left-padded: `padding` (B, T0) marks the filler columns, the
state carries it (builder/graph/decoding.py) and each row decodes as it would alone.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from builder.contract import context_length
from builder.graph.decoding import DecodeState

Step = Callable[[torch.Tensor, DecodeState], torch.Tensor]
Agree = Callable[[bool], bool]


@torch.inference_mode()  # no autograd bookkeeping at all: the per-token overhead is what decoding pays for
def decode(step: Step, prefix: torch.Tensor, *, max_new_tokens: int, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, num_beams: int = 1, length_penalty: float = 1.0,
           eos_id: int | None = None, generator: torch.Generator | None = None,
           on_token: Callable[[torch.Tensor], None] | None = None,
           new_state: Callable[[], DecodeState] = DecodeState, agree: Agree | None = None,
           padding: torch.Tensor | None = None) -> torch.Tensor:
    """prefix (B, T0) -> (B, T0 + n), n <= max_new_tokens; rows that end early are padded with eos_id.
    `padding` (B, T0): True at the left padding of prompts shorter than T0.

    Greedy when temperature == 0, sampling otherwise; beam search when num_beams > 1 (then temperature,
    top_k and top_p are ignored). `on_token(next)` sees each new column (B,) as it is chosen (not in beam
    search, whose best sequence is known only at the end). `agree(finished)` turns "every row of this process
    is finished" into the decision to stop: processes decoding one sharded model must stop at the same step
    (builder.train.distributed.all_ranks); finished rows are padded meanwhile.
    """
    if num_beams > 1:
        return beam_search(step, prefix, max_new_tokens=max_new_tokens, num_beams=num_beams,
                           length_penalty=length_penalty, eos_id=eos_id, new_state=new_state, agree=agree,
                           padding=padding)
    agree = agree or bool
    state, tokens = new_state(), prefix
    if padding is not None:
        state.set_padding(padding)
    done = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)  # (B,) rows past their eos
    for _ in range(max_new_tokens):
        logits = step(tokens, state).float()  # (B, V)
        nxt = pick(logits, temperature, top_k, top_p, generator)  # (B,)
        if eos_id is not None:
            nxt = nxt.masked_fill(done, eos_id)
            done |= nxt == eos_id
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)  # (B, T + 1)
        if on_token is not None:
            on_token(nxt)
        if eos_id is not None and agree(bool(done.all())):
            break
    return tokens


def pick(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,): argmax at temperature 0, else a draw from the filtered softmax."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Keep the top_k largest logits, then the smallest set whose probability reaches top_p; the rest -> -inf."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the mass before this token already reaches top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    return logits


@torch.inference_mode()
def beam_search(step: Step, prefix: torch.Tensor, *, max_new_tokens: int, num_beams: int,
                length_penalty: float = 1.0, eos_id: int | None = None,
                new_state: Callable[[], DecodeState] = DecodeState, agree: Agree | None = None,
                padding: torch.Tensor | None = None) -> torch.Tensor:
    """The num_beams best continuations per item; a beam that emits eos is finished with the score
    sum(log p) / n ** length_penalty (n = new tokens, eos included), and an item stops once its worst
    finished beam beats the best that any live beam could still reach. Returns the best per item."""
    B, T0 = prefix.shape
    K, dev = num_beams, prefix.device
    state = new_state()
    if padding is not None:
        state.set_padding(padding.repeat_interleave(K, dim=0))  # (B*K, T0)
    tokens = prefix.repeat_interleave(K, dim=0)  # (B*K, T0)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # the K beams start identical: only one may expand at the first step
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(B)]
    closed = [False] * B
    for t in range(1, max_new_tokens + 1):
        logp = F.log_softmax(step(tokens, state).float(), dim=-1)  # (B*K, V)
        V = logp.shape[-1]
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)
        top, idx = cand.topk(2 * K, dim=1)  # (B, 2K): enough that K survive even if K of them end in eos
        beam_rows, new_tokens, new_scores = [], [], []
        for b in range(B):
            keep: list[tuple[int, int, float]] = []  # (source row, token, score)
            for s, i in zip(top[b].tolist(), idx[b].tolist()):
                row, tok = b * K + i // V, i % V
                if eos_id is not None and tok == eos_id:
                    if not closed[b] and len(keep) < K:  # eos ranked above the K-th live beam: a finished one
                        seq = torch.cat([tokens[row, T0:], tokens.new_tensor([tok])])
                        add_finished(finished[b], (s / t ** length_penalty, seq), K)
                else:
                    keep.append((row, tok, s))
                if len(keep) == K:
                    break
            if not closed[b] and len(finished[b]) == K:
                # log p only falls as a beam grows, so its best reachable normalised score is at the
                # longest length when length_penalty > 0, at the current one otherwise
                longest = max_new_tokens if length_penalty > 0 else t
                closed[b] = min(f[0] for f in finished[b]) >= keep[0][2] / longest ** length_penalty
            for row, tok, s in keep:
                beam_rows.append(row)
                new_tokens.append(tok)
                new_scores.append(s if not closed[b] else float("-inf"))
        index = torch.tensor(beam_rows, device=dev)
        state.reorder(index)
        tokens = torch.cat([tokens.index_select(0, index), torch.tensor(new_tokens, device=dev)[:, None]], dim=1)
        scores = torch.tensor(new_scores, device=dev).view(B, K)
        if (agree or bool)(all(closed)):
            break
    n = tokens.shape[1] - T0
    for b in range(B):  # live beams compete with the finished ones at the end
        for k in range(K):
            if scores[b, k] > float("-inf"):
                add_finished(finished[b], (scores[b, k].item() / n ** length_penalty, tokens[b * K + k, T0:]), K)
    best = [max(f, key=lambda h: h[0])[1] for f in finished]
    width = max(len(s) for s in best)
    pad = eos_id if eos_id is not None else 0
    out = prefix.new_full((B, T0 + width), pad)
    out[:, :T0] = prefix
    for b, seq in enumerate(best):
        out[b, T0:T0 + len(seq)] = seq
    return out


def add_finished(hyps: list[tuple[float, torch.Tensor]], hyp: tuple[float, torch.Tensor], k: int) -> None:
    """Keep the k best (score, tokens) hypotheses."""
    hyps.append(hyp)
    if len(hyps) > k:
        hyps.remove(min(hyps, key=lambda h: h[0]))


def lm_step(model: torch.nn.Module, roles: Any = None, use_cache: bool = True) -> Step:
    """The step function of a decoder-only language model; `roles` (builder.contract.Roles) names the input
    fed the tokens and the output read as logits (default: the model's only input and output).

    With the cache each new token costs one position. A model with a table of learned or sinusoidal
    positions (a `positions` block on the tokens' path) takes at most that many tokens: once the sequence is
    longer the window slides, absolute positions shift by one each token, so cached keys no longer apply and
    the last window is recomputed from a fresh state (each token then costs a full window). The logits are
    exactly those of the uncached model on the cropped context, so both agree token for token.
    """
    name = roles.inputs["tokens"] if roles is not None else model.input_names[0]
    window = context_length(model.spec, name) or 10**9
    read = roles.read if roles is not None else (lambda out: out if isinstance(out, torch.Tensor) else
                                                 next(iter(out.values())))

    def step(tokens: torch.Tensor, state: DecodeState) -> torch.Tensor:
        if not use_cache or tokens.shape[1] > window:
            pad = state.pad  # (B, T0) or None
            if state.offset:
                state.__init__(tuple(state.static), pad)  # drop the caches in place (beam search holds this object)
            if pad is None:
                return read(model(**{name: tokens[:, -window:]}))[:, -1]  # (B, V)
            flags = torch.zeros_like(tokens, dtype=torch.bool)  # (B, T): the window's columns keep their padding
            flags[:, :pad.shape[1]] = pad
            fresh = DecodeState(tuple(state.static), flags[:, -window:])
            return read(model(**{name: tokens[:, -window:]}, state=fresh))[:, -1]  # (B, V)
        logits = read(model(**{name: tokens[:, state.offset:]}, state=state))[:, -1]  # (B, V)
        state.advance(tokens.shape[1] - state.offset)
        return logits
    return step
