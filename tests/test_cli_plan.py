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
