"""builder-compare: several runs, or a sweep's trials, drawn in one PNG (a curve per run in each panel, a table
of results and differing overrides as the legend), the table printed; one-line errors for bad arguments."""
from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from builder.cli.compare import main

TAB_BLUE, TAB_ORANGE, TAB_GREEN = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # tab10's first three colours


def fake_run(run_dir, lr, acc, status="completed", steps=20):
    """A run directory as train() leaves it: metrics.csv, overrides.yaml, result.yaml."""
    run_dir.mkdir(parents=True)
    overrides = ["experiment=toy_classifier", f"optim.lr={lr}", f"run_dir={run_dir}"]
    OmegaConf.save(OmegaConf.create(overrides), run_dir / "overrides.yaml")
    rows = ["step,train/loss,val/loss,val/acc"]
    for step in range(steps):
        rows.append(f"{step},{1 / (1 + lr * step):.4f},,")
        if step % 5 == 4:
            rows.append(f"{step},,{1 / (1 + lr * step):.4f},{acc * step / steps:.4f}")
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    if status is not None:
        OmegaConf.save(OmegaConf.create({"status": status, "monitor": "val/acc", "mode": "max", "value": acc,
                                         "steps": steps, "seconds": 1.0, "overrides": overrides}),
                       run_dir / "result.yaml")


def pixels_of(png, colour, tolerance=12):
    from PIL import Image
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(image - np.array(colour)).max(axis=-1) <= tolerance).sum())


def test_runs_in_one_picture_with_what_differs(tmp_path, capsys):
    from builder.train.compare import compare
    fake_run(tmp_path / "a", 0.01, 0.7)
    fake_run(tmp_path / "b", 0.3, 0.9)
    picture, table = compare([tmp_path / "a", tmp_path / "b"], tmp_path / "out" / "c.png")
    assert picture.is_file()
    lines = table.splitlines()
    assert lines[0] == "runs compared (2 runs, best first):"
    assert lines[1].split() == ["run", "status", "val/acc", "steps", "seconds", "optim.lr"]  # run_dir is left out
    assert lines[2].split()[:3] == ["b", "completed", "0.9000"] and lines[2].split()[-1] == "0.3"
    # each run has its colour (best first: b is tab10's first colour) in the curves and in the table's swatch
    assert pixels_of(picture, TAB_BLUE) > 500 and pixels_of(picture, TAB_ORANGE) > 500
    assert pixels_of(picture, TAB_GREEN) == 0


def test_a_sweep_directory_gives_every_trial(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", 0.01, 0.5)
    fake_run(sweep / "1", 0.1, 0.8, status="failed")
    fake_run(sweep / "2", 1.0, 0.6, status=None)  # still running: no result.yaml yet
    (sweep / "optuna.db").write_text("")
    main([str(sweep), "metrics=[train/loss,val/acc]"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "runs compared (3 runs, best first):"
    assert [line.split()[:2] for line in out[2:5]] == [["0", "completed"], ["1", "failed"], ["2", "running"]]
    assert out[-1] == f"picture: {sweep / 'compare.png'}"
    assert pixels_of(sweep / "compare.png", TAB_GREEN) > 200


def test_bad_arguments_are_one_line(tmp_path, capsys):
    fake_run(tmp_path / "a", 0.01, 0.7)
    (tmp_path / "empty").mkdir()
    for argv, line in [
        ([str(tmp_path / "nowhere")], f"{tmp_path / 'nowhere'}: does not exist"),
        ([str(tmp_path / "empty")], f"{tmp_path / 'empty'}: neither a run directory (no metrics.csv) nor a sweep "
                                    "directory (no trial directory holding one)"),
        ([str(tmp_path / "a"), "metrics=[val/bleu]"], "metrics: val/bleu not logged by any of these runs; logged: "
                                                      "train/loss, val/acc, val/loss"),
        ([], "RUN_OR_SWEEP_DIR: give one or more run or sweep directories"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.splitlines()[1:] == [f"  {line}"]
