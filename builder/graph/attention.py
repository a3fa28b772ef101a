"""Attention weights of every layer and head, drawn: PNG heatmaps and the prompt coloured in the terminal.

Attention blocks compute weights explicitly only while their `capture` switch is on, so the fused SDPA path
used in training is untouched; `capture_attention` turns it on for one forward pass.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from rich.text import Text

from builder.contract import attention_inputs
from builder.graph.assemble import GraphModel, block_modules


@contextmanager
def capturing(model: GraphModel) -> Iterator[dict[str, torch.nn.Module]]:
    """Attention modules by qualified node name ("layers.0.attn"), capturing while inside the block."""
    found = {name: m for name, (m, _) in block_modules(model.graph, model.spec.graph).items() if hasattr(m, "capture")}
    for m in found.values():
        m.capture, m.weights = True, None
    try:
        yield found
    finally:
        for m in found.values():
            m.capture = False


@torch.no_grad()
def capture_attention(model: GraphModel, run: Callable[[], Any]) -> dict[str, torch.Tensor]:
    """Run `run()` (a forward pass of `model`) and return each attention node's weights (B, H, T, S)."""
    with capturing(model) as modules:
        run()
        return {name: m.weights for name, m in modules.items() if m.weights is not None}


def save_heatmaps(maps: dict[str, torch.Tensor], queries: list[str], keys: dict[str, list[str]] | list[str],
                  out: Path, title: str = "") -> list[Path]:
    """One PNG per attention node: a grid of heads, query tokens down, key tokens across (batch row 0)."""
    import matplotlib  # deferred: pyplot is imported once the Agg backend is chosen, and only to draw
    matplotlib.use("Agg")  # files, never a window
    import matplotlib.pyplot as plt  # deferred: after the backend is chosen
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, w in maps.items():
        w = w[0].float().cpu()  # (H, T, S)
        cols = keys.get(name, queries) if isinstance(keys, dict) else keys
        heads = w.shape[0]
        ncols = min(heads, 4)
        nrows = (heads + ncols - 1) // ncols
        cell = max(2.5, 0.22 * max(w.shape[1], w.shape[2]))
        fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows), squeeze=False)
        for h in range(nrows * ncols):
            ax = axes[h // ncols][h % ncols]
            if h >= heads:
                ax.axis("off")
                continue
            ax.imshow(w[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_title(f"head {h}", fontsize=9)
            _ticks(ax, queries[: w.shape[1]], cols[: w.shape[2]])
        fig.suptitle(f"{title}{name}", fontsize=11)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def _ticks(ax: Any, rows: list[str], cols: list[str]) -> None:
    show = lambda t: repr(t)[1:-1] if t.strip() == t and t else repr(t)  # noqa: E731 - spaces and newlines visible
    if len(cols) <= 64:
        ax.set_xticks(range(len(cols)), [show(t) for t in cols], rotation=90, fontsize=7)
    if len(rows) <= 64:
        ax.set_yticks(range(len(rows)), [show(t) for t in rows], fontsize=7)


def last_token_attention(w: torch.Tensor, head: int | None = None) -> torch.Tensor:
    """What the last query pays each key: (S,), averaged over heads unless one is chosen."""
    row = w[0, :, -1, :].float()  # (H, S)
    return row.mean(0) if head is None else row[head]


def coloured(tokens: list[str], weights: torch.Tensor) -> Any:
    """A rich Text of the tokens, each on a background as strong as its (max-normalised) weight."""
    text = Text()
    top = float(weights.max()) or 1.0
    for tok, w in zip(tokens, weights.tolist()):
        level = int(255 * (w / top))
        text.append(tok, style=f"on rgb({level},{level // 3},0)" + (" black" if level > 160 else ""))
    return text


def token_axes(spec: Any, qualified: str, tokens: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The tokens along the query and key axes of attention node `qualified` ("layers.0.attn"): those of the
    model inputs its query and key ports come from (builder/contract.py attention_inputs); `tokens` maps
    model input names to their tokens."""
    queries, keys = attention_inputs(spec, qualified)
    return tokens.get(queries, []), tokens.get(keys, [])
