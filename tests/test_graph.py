"""The graph language: validation errors by their text, repeat, tying, shapes before allocation, init."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from builder.config import register_resolvers
from builder.errors import ConfigError
from builder.graph.build import build_model, check_structure

ROOT = Path(__file__).resolve().parent.parent
register_resolvers()

TINY = {
    "mlp": {},
    "gpt": {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "d_model": 16},
    "llama": {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "kv_heads": 1, "d_model": 16, "d_ff": 24},
    "transformer": {"src_vocab_size": 13, "tgt_vocab_size": 11, "max_len": 16, "d_model": 16, "n_head": 2,
                    "d_ff": 32, "n_encoder_layers": 2, "n_decoder_layers": 2},
    "bert": {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "d_model": 16, "d_ff": 32},
    "bert_classifier": {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "d_model": 16, "d_ff": 32,
                        "num_classes": 3},
}


def model_cfg(name: str, **overrides):
    cfg = OmegaConf.create({"model": OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")})
    cfg.model.merge_with(overrides)
    return cfg.model


def graph(nodes: dict, inputs=None, outputs=None, **extra) -> dict:
    return {"inputs": inputs or {"x": {"shape": ["batch", 4]}}, "nodes": nodes,
            "outputs": outputs or [list(nodes)[-1]], **extra}


def problems(cfg: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        build_model(cfg)
    return e.value.problems


def test_every_model_config_in_conf_builds_at_tiny_sizes():
    assert {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")} <= set(TINY), "add new model files to TINY"
    for name, sizes in TINY.items():
        model = build_model(model_cfg(name, **sizes))
        args = [torch.randn(3, 4)] if name == "mlp" else None
        if name in ("gpt", "llama"):
            args = [torch.randint(0, 11, (3, 8))]
        if name in ("bert", "bert_classifier"):  # input ids, token types, attention mask (a padded row)
            args = [torch.randint(0, 11, (3, 8)), torch.zeros(3, 8, dtype=torch.long),
                    torch.tensor([[1] * 8, [1] * 8, [1] * 5 + [0] * 3])]
        if name == "transformer":
            args = [torch.randint(0, 13, (3, 5)), torch.zeros(3, 5, dtype=torch.bool),
                    torch.randint(0, 11, (3, 7)), torch.zeros(3, 7, dtype=torch.bool)]
        out = model(*args)
        assert torch.isfinite(out).all(), name


# ---------------------------------------------------------------- errors, by their text

def test_unknown_block_suggests_the_right_name():
    found = problems(graph({"h": {"block": "lienar", "in": "x", "in_features": 4, "out_features": 3}}))
    assert found == ["model.nodes.h.block: unknown block 'lienar' (did you mean 'linear'?); `builder-blocks` lists them"]


def test_argument_errors_name_the_key_and_are_reported_together():
    found = problems(graph({
        "h": {"block": "linear", "in": "x", "in_feature": 4, "out_features": "three"},
        "o": {"block": "classifier_head", "in": "h", "in_features": 3},
    }))
    text = "\n".join(found)
    assert "model.nodes.h.in_feature: unknown argument for block 'linear' (did you mean 'in_features'?)" in text
    assert "model.nodes.h.out_features: expected int, got 'three' (str)" in text
    assert "model.nodes.h.in_features: missing argument (int) for block 'linear'" in text
    assert "model.nodes.o.num_classes: missing argument (int) for block 'classifier_head'" in text
    assert len(found) == 4


def test_edge_to_unknown_node_inside_a_repeat_names_the_port_path():
    cfg = model_cfg("transformer", **TINY["transformer"])
    cfg.nodes.decoder.body.cross.kv = "encodr"
    with pytest.raises(ConfigError, match=re.escape(
            "model.nodes.decoder.body.cross.kv: unknown node 'encodr' (did you mean 'encoder'?)")):
        build_model(cfg)


def test_cycle_is_reported():
    found = problems(graph({
        "a": {"block": "add", "x": "x", "y": "b"},
        "b": {"block": "relu", "in": "a"},
    }, outputs=["b"]))
    assert any(re.match(r"model\.nodes\.\w+: cycle (a -> b -> a|b -> a -> b)", p) for p in found), found


def test_dangling_node_is_an_error_unless_marked_unused():
    nodes = {
        "h": {"block": "linear", "in": "x", "in_features": 4, "out_features": 3},
        "side": {"block": "relu", "in": "h"},
        "o": {"block": "sigmoid", "in": "h"},
    }
    found = problems(graph(nodes, outputs=["o"]))
    assert found == ["model.nodes.side: no output depends on this node (a mistyped edge?); "
                     "mark it `unused: true` if that is intended"]
    nodes["side"]["unused"] = True
    build_model(graph(nodes, outputs=["o"]))


def test_unread_input_and_unknown_output_are_errors():
    found = problems(graph({"h": {"block": "relu", "in": "x"}}, inputs={"x": [2, 4]}, outputs=["hh"]))
    assert found == ["model.outputs.hh: unknown node 'hh' (did you mean 'h'?)"]
    found = problems(graph({"h": {"block": "relu", "in": "x"}}, inputs={"x": [2, 4], "y": [2, 4]}))
    assert found == ["model.inputs.y: no node reads this input"]


def test_broken_interpolation_is_reported_with_its_path():
    cfg = model_cfg("gpt", **TINY["gpt"])
    cfg.nodes.tok.dim = "${model.d_modl}"
    with pytest.raises(ConfigError, match=re.escape("model.nodes.tok.dim: interpolation ${model.d_modl}")):
        check_structure(cfg)


# ---------------------------------------------------------------- shapes, before any allocation

def test_shape_mismatch_is_caught_before_any_weight_is_allocated(monkeypatch):
    import builder.graph.assemble
    monkeypatch.setattr(builder.graph.assemble.GraphModel, "__init__", lambda *a, **k: pytest.fail("allocated"))
    found = problems(graph({
        "a": {"block": "linear", "in": "x", "in_features": 4, "out_features": 512},
        "b": {"block": "linear", "in": "x", "in_features": 4, "out_features": 256},
        "norm1": {"block": "add_norm", "x": "a", "y": "b", "dim": 512},
    }))
    assert found == ["model.nodes.norm1: add_norm `norm1`: inputs have last dimension 512 and 256 "
                     "(x (2, 512), y (2, 256))"]


def test_linear_with_wrong_in_features_names_the_argument():
    found = problems(graph({"h": {"block": "linear", "in": "x", "in_features": 5, "out_features": 3}}))
    assert found == ["model.nodes.h: linear `h`: input has last dimension 4 but in_features = 5 (input x (2, 4))"]


def test_block_refusing_its_arguments_is_reported_at_its_node():
    found = problems(graph({"a": {"block": "self_attention", "in": "x", "dim": 4, "heads": 3}},
                           inputs={"x": [2, 5, 4]}))
    assert len(found) == 1 and found[0].startswith("model.nodes.a: self_attention `a`:")


# ---------------------------------------------------------------- repeat, tying, variables, init

def test_repeat_copies_have_their_own_weights_and_see_outer_values():
    cfg = model_cfg("transformer", **TINY["transformer"])
    model = build_model(cfg)
    layers = model.graph.decoder
    assert len(layers) == 2
    w0, w1 = layers[0].cross.q.weight, layers[1].cross.q.weight
    assert w0.data_ptr() != w1.data_ptr() and not torch.equal(w0, w1)
    names = [n for n, _ in model.named_parameters()]
    assert "graph.decoder.1.cross.q.weight" in names


def test_tie_shares_one_tensor():
    model = build_model(model_cfg("gpt", **TINY["gpt"]))
    assert model.graph.head.weight is model.graph.tok.weight
    n_unique = sum(p.numel() for p in model.parameters())  # parameters() counts a shared tensor once
    assert n_unique == sum(p.numel() for n, p in model.state_dict(keep_vars=True).items()
                           if n != "graph.head.weight" and p.requires_grad)


def test_tie_with_mismatched_shapes_is_reported():
    found = problems(graph({
        "tok": {"block": "token_embedding", "in": "idx", "num_embeddings": 10, "dim": 8},
        "head": {"block": "lm_head", "in": "tok", "dim": 8, "vocab_size": 12, "tie": "tok"},
    }, inputs={"idx": {"shape": ["batch", 3], "dtype": "long"}}))
    assert found == ["model.nodes.head.tie: cannot share `weight`: (12, 8) here, (10, 8) in 'tok'"]


def test_model_variables_and_overrides_reach_every_node():
    model = build_model(model_cfg("gpt", **{**TINY["gpt"], "d_model": 24, "n_layer": 3}))
    assert len(model.graph.layers) == 3
    assert all(layer.mlp.fc1.out_features == 96 for layer in model.graph.layers)  # ${calc:4*${model.d_model}}
    assert model.graph.ln_f.normalized_shape == (24,)


def test_gpt2_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    model = build_model(model_cfg("gpt", **{**TINY["gpt"], "d_model": 128, "n_layer": 8}))
    proj = torch.cat([layer.attn.proj.weight.flatten() for layer in model.graph.layers])
    qkv = torch.cat([layer.attn.qkv.weight.flatten() for layer in model.graph.layers])
    assert abs(qkv.std().item() - 0.02) < 0.001
    assert abs(proj.std().item() - 0.02 / 4) < 0.0005  # 16 residual projections: std / sqrt(16)
    assert torch.all(model.graph.layers[0].attn.qkv.bias == 0)


def test_xavier_initialisation_and_per_node_override():
    cfg = graph({"h": {"block": "linear", "in": "x", "in_features": 400, "out_features": 300,
                       "init": {"weights": "normal", "std": 0.5}},
                 "o": {"block": "linear", "in": "h", "in_features": 300, "out_features": 200}},
                init={"weights": "xavier_uniform"}, inputs={"x": [2, 400]})
    model = build_model(cfg)
    bound = (6 / (300 + 200)) ** 0.5
    assert model.graph.o.weight.abs().max() <= bound and model.graph.o.weight.abs().max() > 0.9 * bound
    assert abs(model.graph.h.weight.std().item() - 0.5) < 0.02


def test_unknown_init_scheme_suggests():
    found = problems(graph({"h": {"block": "relu", "in": "x"}}, init={"weights": "xavier_unifrom"}))
    assert found == ["model.init.weights: unknown scheme 'xavier_unifrom' (did you mean 'xavier_uniform'?); "
                     "one of normal, xavier_uniform, xavier_normal, torch"]


# ---------------------------------------------------------------- the 4-3-2 example of README

def readme_example() -> dict:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example:4-3-2 -->\s*```yaml\n(.*?)```", text, re.S).group(1)
    return OmegaConf.to_container(OmegaConf.create({"model": OmegaConf.create(block)}).model, resolve=True)


def test_readme_four_three_two_example_gives_h1_of_minus_26_6():
    model = build_model(readme_example())
    hidden = model.graph.hidden
    with torch.no_grad():
        hidden.weight[0] = torch.tensor([0.10, -0.29, -0.07, 0.46])
        hidden.bias[0] = 0.0
        leaf = torch.tensor([[32.0, 107.0, 56.0, 11.2]])
        assert hidden(leaf)[0, 0].item() == pytest.approx(-26.6, abs=0.005)
        hidden.bias[0] = 0.25
        assert hidden(leaf)[0, 0].item() == pytest.approx(-26.35, abs=0.005)
        assert model(leaf).shape == (1, 2)


# ---------------------------------------------------------------- user blocks

def test_user_block_module_named_in_imports_is_registered(tmp_path, monkeypatch):
    (tmp_path / "my_blocks.py").write_text(
        "import torch\nfrom builder import block\n\n"
        "@block('scale')\ndef scale(x, *, factor: float = 2.0):\n    '''Multiply by a constant.'''\n"
        "    return x * factor\n")
    from builder.graph import registry
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry.registry()))  # `scale` leaves with this test
    cfg = graph({"s": {"block": "scale", "in": "x", "factor": 3.0}}, imports=["my_blocks"])
    model = build_model(cfg)
    assert torch.equal(model(torch.ones(2, 4)), torch.full((2, 4), 3.0))
    found = problems(graph({"s": {"block": "scale", "in": "x", "factor": "big"}}, imports=["my_blocks"]))
    assert found == ["model.nodes.s.factor: expected float, got 'big' (str)"]
    sys.modules.pop("my_blocks")


def test_missing_import_module_is_a_config_error():
    found = problems(graph({"s": {"block": "relu", "in": "x"}}, imports=["no_such_blocks_module"]))
    assert found[0].startswith("imports: cannot import block module 'no_such_blocks_module'")


def test_entry_point_group_registers_blocks(tmp_path, monkeypatch):
    import importlib.metadata as md

    from builder.graph import registry
    (tmp_path / "ep_blocks.py").write_text(
        "from builder import block\n\n@block('negate')\ndef negate(x):\n    '''Flip the sign.'''\n    return -x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = md.EntryPoint(name="ep", value="ep_blocks", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(md, "entry_points", lambda group=None: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert "negate" in registry.registry()


def test_a_user_block_cannot_take_a_builtin_name():
    from builder.graph import registry
    with pytest.raises(registry.RegistryError, match="block 'relu' is registered twice"):
        @registry.block("relu")
        def my_relu(x):
            return x
