"""builder-plan and builder-blocks: the table, the diagrams, the schema, and errors without tracebacks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder.cli import blocks as blocks_cli
from builder.cli import plan as plan_cli

ROOT = Path(__file__).resolve().parent.parent


def test_plan_of_gpt2_small_reports_124m_parameters_and_draws_the_graph(tmp_path, capsys):
    plan_cli.main(["model=gpt", f"out={tmp_path}"])
    out = capsys.readouterr().out
    assert "124,439,808 (124.44M)" in out
    assert "repeat ×12" in out and "(batch, seq, 50257)" in out
    mermaid = (tmp_path / "graph.mmd").read_text()
    assert 'subgraph layers["layers ×12"]' in mermaid
    assert "layers__attn" in mermaid and "2.36M params" in mermaid
    assert "tok -.-|tied| head" in mermaid
    assert (tmp_path / "graph.dot").read_text().startswith("digraph model {")


def test_plan_of_a_model_file_with_overrides(tmp_path, capsys):
    plan_cli.main([str(ROOT / "conf/model/transformer.yaml"), "n_encoder_layers=1", "n_decoder_layers=1", f"out={tmp_path}"])
    out = capsys.readouterr().out
    assert "repeat ×1" in out and "cross_attention" in out
    assert "encoder__norm2 -->|kv| decoder__cross" in (tmp_path / "graph.mmd").read_text()


def test_structural_error_exits_2_with_one_line_before_torch_is_imported():
    code = ("import sys\nfrom builder.cli.plan import main\n"
            "try:\n    main(['model=transformer', 'model.nodes.decoder.body.cross.kv=encodr'])\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "exit 2 False"
    assert done.stderr.strip().splitlines() == [
        "builder-plan: 1 problem in the configuration:",
        "  model.nodes.decoder.body.cross.kv: unknown node 'encodr' (did you mean 'encoder'?)"]


def test_shape_error_and_unknown_group_option_are_reported(capsys):
    with pytest.raises(SystemExit) as e:
        plan_cli.main(["model=transformer", "model.nodes.decoder.body.ff.dim=256"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "model.nodes.decoder.body.ff: feed_forward `ff`: input has last dimension 512 but dim = 256" in err
    with pytest.raises(SystemExit):
        plan_cli.main(["model=transfomer"])
    assert "model=transfomer: no such config (did you mean 'transformer'?)" in capsys.readouterr().err


def test_blocks_lists_typed_arguments_and_writes_a_json_schema(tmp_path, capsys):
    schema_path = tmp_path / "model.schema.json"
    blocks_cli.main([f"schema={schema_path}"])
    out = capsys.readouterr().out
    assert "self_attention" in out and "causal: bool = False" in out and "list[float]" in out
    schema = json.loads(schema_path.read_text())
    linear = schema["$defs"]["block_linear"]
    assert linear["required"] == ["block", "in_features", "out_features"]
    assert linear["additionalProperties"] is False
    assert {"type": "integer"} in linear["properties"]["in_features"]["anyOf"]


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A GPT run as builder-train stores it (vocab_size filled in from the data), with a checkpoint holding the
    config and no weights, and an export directory."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from builder.config import register_resolvers
    from builder.graph.prepare import prepare_model_config
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=gpt_char", "model.n_layer=1", "model.n_head=2",
                                                      "model.d_model=16", "model.block_size=8"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["model"] = prepare_model_config(cfg, sizes={"vocab_size": 77})
    root = tmp_path_factory.mktemp("stored")
    run, export = root / "gpt_run", root / "gpt_export"
    (run / "checkpoints").mkdir(parents=True)
    export.mkdir()
    for where in (run, export):
        (where / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
    (export / "model.safetensors").write_bytes(b"")
    torch.save({"builder": {"config": plain, "tokenizer": None}, "state_dict": {}}, run / "checkpoints" / "best.ckpt")
    return run, export, plain


def test_plan_of_a_stored_run_checkpoint_export_or_config_is_the_trained_model(stored_run, tmp_path, capsys):
    run, export, _ = stored_run
    totals = set()
    for arg in (f"ckpt={run}", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", f"ckpt={export}",
                str(run / "config.yaml"), str(export / "config.yaml")):
        plan_cli.main([arg, f"out={tmp_path}"])
        out = capsys.readouterr().out
        assert "(batch, seq, 77)" in out, arg  # the run's vocabulary, not a placeholder
        assert "plan of gpt_run" in out or "plan of gpt_export" in out, arg
        totals.add(next(line for line in out.splitlines() if "total" in line))
    assert len(totals) == 1


def test_plan_of_a_checkpoint_that_imports_modules_needs_allow_imports(stored_run, tmp_path, capsys):
    import torch
    _, _, plain = stored_run
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    config = dict(plain, model=dict(plain["model"], imports=["my_blocks"]))
    torch.save({"builder": {"config": config}, "state_dict": {}}, tmp_path / "run" / "checkpoints" / "best.ckpt")
    with pytest.raises(SystemExit) as e:
        plan_cli.main([f"ckpt={tmp_path / 'run'}", f"out={tmp_path}"])
    assert e.value.code == 2
    assert "needs the Python module(s) my_blocks for its blocks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plan_cli.main([f"ckpt={tmp_path / 'nothing'}"])
    assert f"  ckpt: {tmp_path / 'nothing'} does not exist" in capsys.readouterr().err


def test_plan_of_an_experiment_file_says_to_plan_it_by_name(capsys):
    with pytest.raises(SystemExit):
        plan_cli.main([str(ROOT / "conf/experiment/gpt_char.yaml")])
    assert ("gpt_char.yaml: a Hydra config with a defaults list, not a model or a run's stored config; "
            "plan it by name: builder-plan experiment=gpt_char") in capsys.readouterr().err


def test_blocks_listing_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks_cli.main([])
    assert "linear" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_a_block_option_typo_is_a_config_error_before_torch():
    # an option that a block checks itself (feed_forward's activation) is also in its typed signature, so the
    # config check names it with a suggestion instead of the build failing after the imports
    code = ("import sys\nfrom builder.cli.plan import main\n"
            "try:\n    main(['model=gpt', 'model.activation=relux'])\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "exit 2 False", done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "  model.nodes.layers.body.mlp.activation: expected one of 'gelu', 'gelu_tanh', 'leaky_relu', 'relu', "
        "'sigmoid', 'step', 'tanh', got 'relux' (did you mean 'relu'?)")
