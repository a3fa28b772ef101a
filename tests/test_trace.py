"""Tracing one input through a graph, node by node."""
from __future__ import annotations

import json

import torch

from builder.graph.build import build_model
from builder.graph.trace import format_steps, trace
from tests.test_graph import TINY, model_cfg, readme_example


def four_three_two():
    model = build_model(readme_example())
    with torch.no_grad():
        model.graph.hidden.weight[0] = torch.tensor([0.10, -0.29, -0.07, 0.46])
        model.graph.hidden.bias[0] = 0.0
    return model


def test_trace_of_the_four_three_two_network_shows_minus_26_6_at_h1():
    steps = trace(four_three_two(), torch.tensor([[32.0, 107.0, 56.0, 11.2]]))
    assert [s.name for s in steps] == ["x", "hidden", "act", "logits"]
    hidden = steps[1]
    assert hidden.block == "linear" and hidden.shape == (1, 3)
    assert round(hidden.values[0][0], 2) == -26.6
    text = format_steps(steps)
    assert "hidden  linear" in text and "[[-26.6, " in text
    assert json.loads(json.dumps([s.as_dict() for s in steps]))[1]["values"][0][0] == hidden.values[0][0]


def test_trace_matches_the_forward_pass_and_summarises_large_tensors():
    model = build_model(model_cfg("gpt", **TINY["gpt"])).eval()
    idx = torch.randint(0, 11, (1, 6))
    steps = trace(model, idx)
    assert torch.allclose(torch.tensor(steps[-1].stats["mean"]), model(idx).mean(), atol=1e-6)
    names = [s.name for s in steps]
    assert "layers.0.attn" in names and "layers.1.res2" in names
    only = trace(model, idx, only="layers.1.*")
    assert [s.name for s in only] == [n for n in names if n.startswith("layers.1.")]
    assert set(only[0].stats) == {"mean", "std", "min", "max"}
