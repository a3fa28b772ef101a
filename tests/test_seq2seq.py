"""A tiny translation run end to end, in-process: the loss falls, metrics.csv has the decoded-text metrics,
the checkpoint translates through builder.load and through builder-translate."""
import csv
import subprocess

import pytest
import torch

TINY = ["experiment=transformer_tiny", "data.n_train=300", "data.n_val=40", "data.n_test=40", "data.batch_size=32",
        "model.d_model=32", "model.d_ff=64", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
        "model.dropout=0.0", "model.max_len=80", "optim.lr=3e-3", "optim.warmup_steps=5", "trainer.max_steps=120",
        "trainer.val_check_interval=60", "trainer.log_every_n_steps=10", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def run(compose, tmp_path_factory):
    from builder.train.run import train
    run_dir = tmp_path_factory.mktemp("translate")
    overrides = [*TINY, f"run_dir={run_dir}"]
    train(compose(overrides), overrides=overrides)
    return run_dir


def test_training_logs_loss_and_text_metrics(run):
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 4 and losses[-1] < 0.7 * losses[0]
    val = [r for r in rows if r.get("val/exact_match")]
    assert len(val) == 2
    for r in val:
        assert 0 <= float(r["val/exact_match"]) <= 1
        assert 0 <= float(r["val/chrf"]) <= 100 and 0 <= float(r["val/bleu"]) <= 100
    assert float(val[-1]["val/chrf"]) > 0  # some characters come out right after 120 steps
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "tokenizer.json").is_file()


def test_translate_via_load_and_cli(run, cli_env):
    import builder
    model = builder.load(run)
    texts = ["three hundred twenty-one", "one", "nine hundred ninety-nine thousand"]
    greedy = model.translate(texts)
    assert isinstance(greedy, list) and len(greedy) == 3 and all(isinstance(t, str) for t in greedy)
    assert model.translate(texts[0]) == greedy[0]  # one string in, one string out; batching does not matter
    assert model.translate(texts, use_cache=False) == greedy
    assert len(model.translate(texts, num_beams=3, length_penalty=0.6)) == 3
    done = subprocess.run([cli_env.python, "-m", "builder.cli.translate", f"ckpt={run}", "batch_size=2"],
                          input="\n".join(texts) + "\n", capture_output=True, text=True, env=cli_env.env,
                          cwd=cli_env.cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == greedy  # one output line per input line, as in Python


def test_special_tokens_never_reach_the_text(run):
    """A model that predicts <s> at every position (as a briefly trained one does) translates to nothing,
    on every decoding path: greedy, beam search and the validation decodes."""
    import builder
    from builder.train.tasks import task_class
    from builder.pairs import pad_batch, special_ids
    model = builder.load(run)
    _, bos, _ = special_ids(model.tgt_tok)

    def favour_bos(module, inputs, logits):
        return logits.index_fill(-1, logits.new_tensor([bos], dtype=torch.long), 1e4)
    hook = model.model.register_forward_hook(favour_bos)
    try:
        assert model.translate(["one", "two hundred"]) == ["", ""]
        assert model.translate(["one", "two hundred"], num_beams=3) == ["", ""]
        task = task_class("seq2seq")(model.model, model.config)
        task.src_tok, task.tgt_tok = model.src_tok, model.tgt_tok
        src, src_pad = pad_batch([[5, 6]], 0)
        assert task.decode_batch({"src": src, "src_pad": src_pad}) == [""]
    finally:
        hook.remove()
    assert all("<s>" not in t for t in model.translate(["one", "two hundred"]))


def test_test_split_metrics(run):
    import lightning as L

    from builder.serve.checkpoint import load
    from builder.train.data import datamodule
    from builder.train.tasks import task_class
    loaded = load(run)
    task = task_class("seq2seq")(loaded.model, loaded.config)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (result,) = trainer.test(task, datamodule=datamodule(loaded.config["data"]), verbose=False)
    assert set(result) == {"test/loss", "test/exact_match", "test/chrf", "test/bleu"}


def test_attention_command_draws_cross_attention_over_source_tokens(run, tmp_path, capsys):
    from PIL import Image

    from builder.cli import attention as attention_cli
    attention_cli.main([f"ckpt={run}", "text=four hundred seventy-two", "target=vierhundertzweiundsiebzig",
                        f"out={tmp_path}", "layer=decoder.0.cross", "head=0"])
    out = capsys.readouterr().out
    assert "in decoder.0.cross, head 0:" in out and "3 heatmaps written" in out
    assert "four hundred seventy-two" in out  # the source, coloured by what the last target token attends to
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["decoder.0.cross.png", "decoder.0.self_attn.png", "encoder.0.attn.png"]
    with Image.open(tmp_path / "decoder.0.cross.png") as image:
        image.verify()  # a valid PNG


def test_cross_attention_axes_are_target_by_source(run):
    import builder
    from builder.graph.attention import token_axes
    model = builder.load(run)
    tokens = {"src": list("four"), "tgt": ["<s>", *"vier"]}
    spec = model.model.spec
    assert token_axes(spec, "decoder.0.cross", tokens) == (tokens["tgt"], tokens["src"])
    assert token_axes(spec, "decoder.0.self_attn", tokens) == (tokens["tgt"], tokens["tgt"])
    assert token_axes(spec, "encoder.0.attn", tokens) == (tokens["src"], tokens["src"])


def test_trace_command_follows_a_translation(run, capsys):
    from builder.cli import trace as trace_cli
    trace_cli.main([f"ckpt={run}", "text=one", "target=eins", "node=decoder.0.*"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines][:2] == ["decoder.0.self_attn", "decoder.0.norm1"]


def test_attention_map_callback_draws_at_validation(compose, tmp_path):
    from builder.train.run import train
    overrides = [*TINY, "trainer.max_steps=10", "trainer.val_check_interval=10", "attention_maps=true",
                 "logger=tensorboard", f"run_dir={tmp_path}"]
    train(compose(overrides), overrides=overrides)
    drawn = sorted(p.name for p in (tmp_path / "attention" / "step_10").glob("*.png"))
    assert drawn == ["decoder.0.cross.png", "decoder.0.self_attn.png", "encoder.0.attn.png"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents*")).parent)).Reload()
    assert "attention/decoder.0.cross" in events.Tags()["images"]
