"""Any names: the shipped GPT, Transformer and 4-3-2 graphs with every input and every node renamed (repeat
bodies included) train and serve through every command, the task's roles bound in task.inputs. Nothing in
the code may read a node or input by its shipped name."""
from __future__ import annotations

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from builder.config import CONF_DIR, compose
from builder.errors import ConfigError

PREFIX = "n_"


def rename_graph(graph: dict, names: dict[str, str]) -> dict:
    """Nodes renamed, with every edge, tie, carry and out that names them."""
    from builder.graph import registry
    local = dict(names)
    local.update({n: PREFIX + n for n in graph})
    out = {}
    for name, node in graph.items():
        node = dict(node)
        if "body" in node:
            carry = node.get("input", "x")
            body_names = {**local, carry: PREFIX + carry}
            node["body"] = rename_graph(node["body"], body_names)
            node["input"] = PREFIX + carry
            node["out"] = PREFIX + node["out"] if "out" in node else None
            node = {k: v for k, v in node.items() if v is not None}
            edges = ["in"]
        else:
            block = node["block"]
            ports = [p.name for p in registry.get(block).ports] if "${" not in block else []
            edges = ["in", *ports, "tie"]
        for key in edges:
            if key in node:
                value = node[key]
                node[key] = [local.get(v, v) for v in value] if isinstance(value, list) else local.get(value, value)
        out[PREFIX + name] = node
    return out


def renamed_model(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"), resolve=False)
    inputs = {n: PREFIX + n for n in cfg["inputs"]}
    cfg["inputs"] = {PREFIX + n: v for n, v in cfg["inputs"].items()}
    nodes = set(cfg["nodes"])
    for key, value in list(cfg.items()):  # variables naming a node (a tie target chosen by a variable)
        if isinstance(value, str) and value in nodes:
            cfg[key] = PREFIX + value
    cfg["nodes"] = rename_graph(cfg["nodes"], inputs)
    outputs = cfg["outputs"]
    cfg["outputs"] = [PREFIX + o for o in outputs] if isinstance(outputs, list) else \
        {k: PREFIX + v for k, v in outputs.items()}
    return cfg


RUNS = {
    "lm": ["experiment=gpt_char", "model=renamed_gpt", "task.inputs.tokens=n_idx", "model.n_layer=1",
           "model.n_head=2", "model.d_model=32", "model.block_size=16", "data.max_val_windows=4",
           "task.sample_tokens=8", "trainer.max_steps=4", "trainer.val_check_interval=2"],
    "seq2seq": ["experiment=transformer_tiny", "model=renamed_transformer", "task.inputs.source=n_src",
                "task.inputs.source_padding=n_src_pad", "task.inputs.target=n_tgt", "task.inputs.target_padding=n_tgt_pad",
                "data.n_train=200", "data.n_val=16", "data.n_test=16", "data.batch_size=16", "model.d_model=32",
                "model.d_ff=64", "model.n_encoder_layers=1", "model.n_decoder_layers=1", "model.max_len=80",
                "trainer.max_steps=4", "trainer.val_check_interval=2"],
    "toy": ["experiment=toy_classifier", "model=renamed_mlp", "task.inputs.features=n_x", "data.bayes_samples=0",
            "data.n_train=256", "data.n_val=64", "trainer.max_epochs=1"],
}
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "attention_maps=true",
         "trainer.max_epochs=-1", "trainer.check_val_every_n_epoch=null"]


@pytest.fixture(scope="module")
def conf(tmp_path_factory):
    d = tmp_path_factory.mktemp("user_conf")
    (d / "model").mkdir()
    for name in ("gpt", "transformer", "mlp"):
        (d / "model" / f"renamed_{name}.yaml").write_text(yaml.safe_dump(renamed_model(name), sort_keys=False))
    return d


@pytest.fixture(scope="module")
def runs(conf, tmp_path_factory):
    from builder.train.run import train
    found = {}
    for task, overrides in RUNS.items():
        run = tmp_path_factory.mktemp(f"renamed_{task}")
        extra = QUIET if task != "toy" else QUIET[:3]
        args = [*overrides, *extra, f"run_dir={run}", f"data.cache_dir={run.parent / 'cache'}"] if task == "lm" \
            else [*overrides, *extra, f"run_dir={run}"]
        train(compose(args, dirs=[conf]), overrides=args)
        found[task] = (run, args)
    return found


def test_every_name_differs_from_the_shipped_one(runs):
    for run, _ in runs.values():
        cfg = OmegaConf.load(run / "config.yaml")
        assert all(n.startswith(PREFIX) for n in [*cfg.model.inputs, *cfg.model.nodes])


def test_training_drew_attention_and_samples(runs):
    lm, _ = runs["lm"]
    assert (lm / "samples.txt").read_text().count("--- step") == 2
    assert sorted(p.name for p in (lm / "attention" / "step_4").iterdir()) == ["n_layers.0.n_attn.png"]
    seq, _ = runs["seq2seq"]
    assert sorted(p.name for p in (seq / "attention" / "step_4").iterdir()) == [
        "n_decoder.0.n_cross.png", "n_decoder.0.n_self_attn.png", "n_encoder.0.n_attn.png"]


def test_serving_commands(runs, tmp_path, capsys):
    from builder.cli import attention, eval as eval_cli, export, generate, plan, predict, trace, translate
    lm, seq, toy = (runs[k][0] for k in ("lm", "seq2seq", "toy"))
    generate.main([f"ckpt={lm}", "prompt=The", "max_new_tokens=30", "temperature=0"])  # past the 16-token window
    translate.main([f"ckpt={seq}", "text=one hundred"])
    predict.main([f"ckpt={toy}", "input=[32,107,56,11.2]"])
    assert capsys.readouterr().out.count("\n") >= 3
    for run in (lm, seq, toy):
        assert eval_cli.run([f"ckpt={run}"])
        export.main([f"ckpt={run}", f"out={tmp_path / run.name}"])
        plan.main([f"ckpt={run}", f"out={tmp_path / 'plans'}"])
    trace.main([f"ckpt={lm}", "prompt=The", "node=n_layers.0.*"])
    trace.main([f"ckpt={toy}", "input=[32,107,56,11.2]"])
    assert "n_layers.0.n_attn" in capsys.readouterr().out
    attention.main([f"ckpt={lm}", "prompt=The cat", f"out={tmp_path / 'a'}"])
    attention.main([f"ckpt={seq}", "text=one", "target=eins", f"out={tmp_path / 'b'}", "layer=n_decoder.0.n_cross"])
    out = capsys.readouterr().out
    assert "in n_decoder.0.n_cross" in out and "3 heatmaps written" in out


def test_the_python_api(runs):
    import builder
    lm, seq, toy = (builder.load(runs[k][0]) for k in ("lm", "seq2seq", "toy"))
    assert len(lm.generate("The", max_new_tokens=20, temperature=0)) >= 1
    assert isinstance(seq.translate("one"), str)
    assert builder.load(runs["toy"][0]).predict([[32, 107, 56, 11.2]]).probs.shape == (1, 2)
    out = toy(n_x=[[32.0, 107.0, 56.0, 11.2]])
    assert torch.allclose(out.softmax(-1), toy.predict([32, 107, 56, 11.2]).probs)


def test_resume(runs, conf):
    from builder.train.run import train
    run, args = runs["toy"]
    train(compose([*args, "trainer.max_epochs=2", f"resume={run}"], dirs=[conf]))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8  # 4 steps an epoch


def test_an_unbound_or_misspelt_role_fails_before_torch(conf):
    from builder.train.check import check
    with pytest.raises(ConfigError) as e:
        check(compose(["experiment=gpt_char", "model=renamed_gpt"], dirs=[conf]))
    assert str(e.value) == "task.inputs.tokens: the model has no input 'idx' (did you mean 'n_idx'?); its inputs: n_idx"
    with pytest.raises(ConfigError) as e:
        check(compose(["experiment=gpt_char", "model=renamed_gpt", "+task.inputs.tokenz=n_idx"], dirs=[conf]))
    assert "task.inputs.tokenz: the language_model task has no input role 'tokenz' (did you mean 'tokens'?)" \
        in str(e.value)
    with pytest.raises(ConfigError) as e:
        check(compose(["experiment=translate_numbers", "task.outputs.logits=logit"]))
    assert "task.outputs.logits: the model has no output 'logit' (did you mean 'logits'?)" in str(e.value)
