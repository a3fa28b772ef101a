"""Decoding: greedy, sampling filters, beam search against brute force, eos handling, KV-cached generation."""
import itertools
import math

import pytest
import torch

from builder.config import compose, resolve
from builder.graph.decoding import DecodeState
from builder.serve.generation import decode, filter_logits, lm_step
from builder.graph.build import build_model


def chain_step(table):
    """A Markov chain as a step function: next-token log-probs depend only on the last token."""
    def step(tokens, state):
        state.advance(tokens.shape[1] - state.offset)
        return table[tokens[:, -1]]  # (B, V)
    return step


def log_table(rows):
    return torch.tensor(rows, dtype=torch.float).log()


def seq_logp(table, prefix, seq):
    last, total = prefix, 0.0
    for t in seq:
        total += table[last, t].item()
        last = t
    return total


def test_greedy_and_filters():
    table = log_table([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    out = decode(chain_step(table), torch.tensor([[0], [2]]), max_new_tokens=3)
    assert out.tolist() == [[0, 1, 0, 1], [2, 2, 2, 2]]
    g = torch.Generator().manual_seed(0)  # top_k=1 and a tiny top_p leave only the argmax to sample
    assert torch.equal(decode(chain_step(table), torch.tensor([[0]]), max_new_tokens=5, temperature=1.0, top_k=1,
                              generator=g), decode(chain_step(table), torch.tensor([[0]]), max_new_tokens=5))
    assert torch.equal(decode(chain_step(table), torch.tensor([[0]]), max_new_tokens=5, temperature=1.0, top_p=0.01,
                              generator=g), decode(chain_step(table), torch.tensor([[0]]), max_new_tokens=5))
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, None)).tolist() == [[True, False, False, True]]
    # probabilities ~ [0.09, 0.67, 0.24, 0.03]: 0.67 < 0.8, so the second largest is kept too
    assert torch.isinf(filter_logits(logits, None, 0.8)).tolist() == [[True, False, False, True]]


def test_sampling_is_seeded_and_streams():
    table = log_table([[0.3, 0.4, 0.3]] * 3)
    seen = []
    a = decode(chain_step(table), torch.tensor([[0]]), max_new_tokens=20, temperature=1.0,
               generator=torch.Generator().manual_seed(3), on_token=lambda t: seen.append(int(t[0])))
    b = decode(chain_step(table), torch.tensor([[0]]), max_new_tokens=20, temperature=1.0,
               generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a[0, 1:].tolist() == seen and len(set(seen)) > 1


def test_eos_pads_finished_rows_and_stops():
    eos = 2  # row 0 reaches eos at once, row 1 after two tokens
    table = log_table([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    table[1] = torch.tensor([0.1, 0.8, 0.1]).log()
    step = chain_step(table)
    out = decode(step, torch.tensor([[0], [1]]), max_new_tokens=10, eos_id=eos)
    assert out.tolist() == [[0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]
    table[1] = torch.tensor([0.1, 0.45, 0.45]).log()
    table[1, 1] -= 1e-3  # ties broken towards eos after the first step
    out = decode(chain_step(table), torch.tensor([[0], [1]]), max_new_tokens=10, eos_id=eos)
    assert out.tolist() == [[0, 2], [1, 2]]  # every row finished: decoding stops early


def brute_force(table, prefix, n, eos, length_penalty):
    """The best finished sequence (ends in eos, or n tokens long) by exhaustive search."""
    best, best_score = None, -math.inf
    for length in range(1, n + 1):
        for seq in itertools.product(range(table.shape[0]), repeat=length):
            if eos in seq[:-1] or (length < n and seq[-1] != eos):
                continue
            score = seq_logp(table, prefix, seq) / length ** length_penalty
            if score > best_score:
                best, best_score = list(seq), score
    return best


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_search_with_enough_beams_is_exhaustive(length_penalty):
    torch.manual_seed(0)
    V, n, eos = 3, 4, 2
    table = torch.randn(V, V).mul(2).log_softmax(-1)
    out = decode(chain_step(table), torch.tensor([[0], [1]]), max_new_tokens=n, num_beams=V ** n, eos_id=eos,
                 length_penalty=length_penalty)
    for b, prefix in enumerate((0, 1)):
        expect = brute_force(table, prefix, n, eos, length_penalty)
        got = out[b, 1:].tolist()
        got = got[: got.index(eos) + 1] if eos in got else got
        assert got == expect


def test_beam_search_beats_greedy():
    # token 0 looks best first (0.6), but every continuation after it is 1/3; token 1 is followed by 0.99
    table = log_table([[0.3, 0.3, 0.4], [0.005, 0.99, 0.005], [0.6 * 0.999, 0.4 * 0.999, 0.001]])
    table[0] = torch.full((3,), 1 / 3).log()
    greedy = decode(chain_step(table), torch.tensor([[2]]), max_new_tokens=2)
    beam = decode(chain_step(table), torch.tensor([[2]]), max_new_tokens=2, num_beams=2)
    assert greedy[0, 1].item() == 0 and beam[0, 1:].tolist() == [1, 1]


def tiny_gpt(block_size=16):
    torch.manual_seed(0)
    cfg = compose(["model=gpt", "model.vocab_size=11", f"model.block_size={block_size}", "model.n_layer=2",
                   "model.n_head=2", "model.d_model=16"])
    return build_model(resolve(cfg.model, "model")).eval()


def test_cached_and_uncached_generation_agree_past_the_window():
    model = tiny_gpt()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for kwargs in ({}, {"temperature": 1.0}):  # 40 new tokens: the 16-token window slides 27 times
        runs = [decode(lm_step(model, use_cache=use_cache), prompt, max_new_tokens=40,
                       generator=torch.Generator().manual_seed(1), **kwargs) for use_cache in (True, False)]
        assert torch.equal(runs[0], runs[1])
    beams = [decode(lm_step(model, use_cache=use_cache), prompt, max_new_tokens=20, num_beams=3)
             for use_cache in (True, False)]
    assert torch.equal(beams[0], beams[1])  # caches follow their beams through state.reorder


def test_llama_with_rotary_positions_and_a_window_decodes_alike_with_and_without_cache():
    """No position table: the cache is never dropped; rotary keys are cached rotated, the window trims them,
    and beam search reorders the KV caches (blocks/kv_cache.py) with the beams."""
    torch.manual_seed(0)
    cfg = compose(["model=llama", "model.vocab_size=11", "model.block_size=16", "model.n_layer=2", "model.n_head=4",
                   "model.kv_heads=2", "model.d_model=16", "model.d_ff=24", "model.sliding_window=5"])
    model = build_model(resolve(cfg.model, "model")).eval()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for kwargs in ({}, {"temperature": 1.0}, {"num_beams": 3}):  # 24 new tokens: past block_size and the window
        runs = [decode(lm_step(model, use_cache=use_cache), prompt, max_new_tokens=24,
                       generator=torch.Generator().manual_seed(1), **kwargs) for use_cache in (True, False)]
        assert torch.equal(runs[0], runs[1]) and runs[0].shape == (2, 27)


def test_module_hooks_run_while_decoding():
    """Decoding skips nn.Module.__call__'s layers only when no hook would run."""
    model = tiny_gpt()
    prompt = torch.tensor([[1, 2, 3]])
    plain = decode(lm_step(model), prompt, max_new_tokens=5)
    seen, everywhere = [], []
    model.graph["layers"][1]["attn"].register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
    model.graph["layers"][0].register_forward_pre_hook(lambda m, args: seen.append("layer 0"))
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: everywhere.append(type(m)))
    try:
        hooked = decode(lm_step(model), prompt, max_new_tokens=5)
    finally:
        handle.remove()
    assert torch.equal(hooked, plain)
    assert seen == ["layer 0", 3, "layer 0", 1, "layer 0", 1, "layer 0", 1, "layer 0", 1]  # prompt, then 1 a step
    assert sum(t.__name__ == "SelfAttention" for t in everywhere) == 2 * 5


def test_decode_drives_an_encoder_decoder_with_static_inputs():
    torch.manual_seed(0)
    cfg = compose(["model=transformer", "model.src_vocab_size=13", "model.tgt_vocab_size=13", "model.max_len=32",
                   "model.d_model=16", "model.n_head=2", "model.d_ff=32", "model.n_encoder_layers=1",
                   "model.n_decoder_layers=1", "model.dropout=0.0"])
    model = build_model(resolve(cfg.model, "model")).eval()
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 0]])
    src_pad = torch.tensor([[False] * 4, [False, False, False, True]])
    K = 3

    def step(cached):
        def run(tokens, state):
            k = tokens.shape[0] // src.shape[0]  # beam search: rows are batch-major
            s, sp = src.repeat_interleave(k, 0), src_pad.repeat_interleave(k, 0)
            tgt = tokens[:, state.offset:] if cached else tokens
            out = model(s, sp, tgt, torch.zeros_like(tgt, dtype=torch.bool), state=state if cached else None)
            if cached:
                state.advance(tgt.shape[1])
            return out[:, -1]
        return run

    make = lambda: DecodeState(static=("src", "src_pad"))  # noqa: E731
    bos = torch.ones(2, 1, dtype=torch.long)
    for beams in (1, K):
        a = decode(step(True), bos, max_new_tokens=8, num_beams=beams, eos_id=2, new_state=make)
        b = decode(step(False), bos, max_new_tokens=8, num_beams=beams, eos_id=2, new_state=make)
        assert torch.equal(a, b)


def left_padded(prompts, filler=0):
    width = max(len(p) for p in prompts)
    prefix = torch.tensor([[filler] * (width - len(p)) + p for p in prompts])  # (B, T0)
    padding = torch.tensor([[True] * (width - len(p)) + [False] * len(p) for p in prompts])
    return prefix, padding


def tiny_llama(window=5):
    torch.manual_seed(0)
    cfg = compose(["model=llama", "model.vocab_size=11", "model.block_size=16", "model.n_layer=2", "model.n_head=4",
                   "model.kv_heads=2", "model.d_model=16", "model.d_ff=24", f"model.sliding_window={window}"])
    return build_model(resolve(cfg.model, "model")).eval()


@pytest.mark.parametrize("make", [tiny_gpt, tiny_llama], ids=["gpt-learned-positions", "llama-rotary-window"])
def test_prompts_of_different_lengths_decode_in_one_batch_as_they_would_alone(make):
    """Left padding: each row gets its own positions (learned or rotary) and ignores the filler columns as keys,
    through the cache, the sliding window, the 16-token position table's sliding recomputation and beam search."""
    model = make()
    with torch.no_grad():  # weights larger than an initialisation's: a row that read the filler picks other tokens
        for p in model.parameters():
            p.mul_(5)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8], [3, 9, 2], [10, 10, 4, 1, 7, 2]]
    prefix, padding = left_padded(prompts, filler=5)
    unmasked = decode(lm_step(model), prefix, max_new_tokens=14)[:, prefix.shape[1]:]
    for kwargs in ({"max_new_tokens": 14}, {"max_new_tokens": 14, "use_cache": False},
                   {"max_new_tokens": 6, "num_beams": 3}):
        use_cache = kwargs.pop("use_cache", True)
        batch = decode(lm_step(model, use_cache=use_cache), prefix, padding=padding, **kwargs)[:, prefix.shape[1]:]
        alone = [decode(lm_step(model, use_cache=use_cache), torch.tensor([p]), **kwargs)[0, len(p):] for p in prompts]
        assert [row.tolist() for row in batch] == [a.tolist() for a in alone], kwargs
        if kwargs == {"max_new_tokens": 14}:  # without the padding flags the short rows go elsewhere
            assert [row.tolist() == a.tolist() for row, a in zip(unmasked, alone)] == [True, False, False, False]
    # the filler is never read: another filler id gives the same logits for every row's real positions
    state_a, state_b = DecodeState(pad=padding), DecodeState(pad=padding)
    a = model(left_padded(prompts, filler=1)[0], state=state_a)
    b = model(left_padded(prompts, filler=9)[0], state=state_b)
    assert torch.allclose(a[~padding], b[~padding], atol=1e-6)


def test_key_padding_covers_the_cached_keys_and_ends_past_the_prompts():
    """The flags of the last S cached keys after a call of T columns: the prompt's filler columns among them,
    False past the prompt, None once every key in view is past it (a sliding window moved on)."""
    state = DecodeState(pad=torch.tensor([[True, True, False], [False, False, False]]))  # (B, T0)
    assert state.key_padding(3, 3).tolist() == [[True, True, False], [False, False, False]]
    assert state.key_padding(3, 2).tolist() == [[True, False], [False, False]]  # a window of 2 keys
    state.advance(3)
    assert state.key_padding(1, 4).tolist() == [[True, True, False, False], [False] * 4]
    assert state.key_padding(1, 2).tolist() == [[False, False], [False, False]]
    assert state.key_padding(1, 1) is None  # the one key in view is past the prompts
    assert DecodeState().key_padding(1, 4) is None
