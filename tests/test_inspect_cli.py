"""builder-trace and builder-attention on trained checkpoints."""
from __future__ import annotations

import json

import pytest

from builder.cli import trace as trace_cli


def test_trace_command_prints_every_node_of_the_toy_classifier(toy_run, capsys):
    trace_cli.main([f"ckpt={toy_run.dir}", "input=[32,107,56,11.2]"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["x", "norm", "h", "act", "logits"]
    assert lines[0].split()[1:] == ["input", "(1,", "4)", "[[32,", "107,", "56,", "11.2]]"]


def test_trace_command_json_and_node_filter(toy_run, capsys):
    trace_cli.main([f"ckpt={toy_run.dir}", "input=[32,107,56,11.2]", "format=json", "node=h"])
    steps = json.loads(capsys.readouterr().out)
    assert [s["node"] for s in steps] == ["h"] and len(steps[0]["values"][0]) == 3
    with pytest.raises(SystemExit):
        trace_cli.main([f"ckpt={toy_run.dir}", "input=[32,107,56,11.2]", "node=nothing*"])
    assert "node: no node matches 'nothing*'" in capsys.readouterr().err
