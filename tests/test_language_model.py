"""A tiny gpt_char run end to end: the loss falls, the checkpoint carries the tokenizer, and the trained model
generates through builder.load(...).generate and the builder-generate command."""
import contextlib
import io
import json
import math
import subprocess
from types import SimpleNamespace

import pytest
import torch

TINY_GPT = ["experiment=gpt_char", "model.n_layer=1", "model.n_head=2", "model.d_model=32", "model.block_size=32",
            "data.max_val_windows=16", "task.sample_tokens=30", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "trainer.log_every_n_steps=10", "optim.warmup_steps=10"]


@pytest.fixture(scope="module")
def lm_run(compose, tmp_path_factory):
    from builder.train.run import train
    run_dir = tmp_path_factory.mktemp("lm_run")
    overrides = [*TINY_GPT, f"run_dir={run_dir}", f"data.cache_dir={run_dir.parent / 'text_cache'}",
                 "trainer.max_steps=80", "trainer.val_check_interval=40"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        score = train(compose(overrides), overrides=overrides)
    return SimpleNamespace(dir=run_dir, score=score, stdout=out.getvalue())


def test_loss_falls_and_metrics_are_logged(lm_run):
    from builder.train.metrics_csv import read_metrics
    rows = read_metrics(lm_run.dir / "metrics.csv")
    train_loss = [r["train/loss"] for r in rows if "train/loss" in r]
    val = [r for r in rows if "val/loss" in r]
    assert len(val) == 2 and val[1]["val/loss"] < val[0]["val/loss"] < math.log(100)
    assert train_loss[-1] < train_loss[0] - 0.5
    assert val[1]["val/bpc"] == pytest.approx(val[1]["val/loss"] / math.log(2), rel=1e-5)
    # lr and throughput are logged only on the batches whose values the loggers write: every row has them,
    # and the lr is that step's (Lightning would write an earlier batch's value again)
    from omegaconf import OmegaConf

    from builder.train.optim import WarmupCosine
    optim = OmegaConf.load(lm_run.dir / "config.yaml").optim
    schedule = WarmupCosine(optim.warmup_steps, 80, optim.min_lr / optim.lr)
    train_rows = [r for r in rows if "train/loss" in r]
    assert len(train_rows) == 8 and all("train/tokens_per_s" in r for r in train_rows)
    assert [r["lr"] for r in train_rows] == pytest.approx([optim.lr * schedule(int(r["step"])) for r in train_rows])
    assert "sample after 80 steps:" in lm_run.stdout  # training ends by printing a sample
    assert (lm_run.dir / "samples.txt").read_text().count("--- step") == 2


def test_sample_after_training_samples_once_the_same_text(lm_run, compose, tmp_path):
    """task.sample_after=training: no sample at each validation, one after the last step, the same text as the
    last validation's sample of the same run (sampling draws from its own seeded generator)."""
    from builder.train.run import train
    overrides = [*TINY_GPT, f"run_dir={tmp_path / 'run'}", f"data.cache_dir={lm_run.dir.parent / 'text_cache'}",
                 "trainer.max_steps=80", "trainer.val_check_interval=40", "task.sample_after=training"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train(compose(overrides), overrides=overrides)
    samples = (tmp_path / "run" / "samples.txt").read_text()
    assert samples.count("--- step") == 1 and samples.startswith("--- step 80\n")
    assert samples == "--- step 80\n" + (lm_run.dir / "samples.txt").read_text().split("--- step 80\n")[1]
    assert "sample after 80 steps:" in out.getvalue()


def test_progress_bar_shows_each_steps_loss_while_loggers_get_theirs(compose):
    """train/loss is logged only on the steps the loggers write (every log_every_n_steps); the progress bar
    still shows every step's own loss, read from the step's output."""
    import lightning as L
    from omegaconf import OmegaConf

    from builder.graph.build import build_model
    from builder.graph.prepare import prepare_model_config
    from builder.train.internals import ProgressBar
    from builder.train.tasks.language_model import LanguageModelTask
    cfg = compose(TINY_GPT)
    plain = OmegaConf.to_container(cfg, resolve=True) | {"model": prepare_model_config(cfg, sizes={"vocab_size": 50})}
    task = LanguageModelTask(build_model(plain["model"]), plain)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 50, (4, 32), generator=g), torch.randint(0, 50, (4, 32), generator=g))
               for _ in range(12)]
    seen = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, i):
            logged = trainer.logged_metrics.get("train/loss")
            seen.append((float(outputs["loss"]), bar.get_metrics(trainer, module)["loss"],
                         None if logged is None else float(logged)))

    bar = ProgressBar()
    trainer = L.Trainer(max_steps=12, log_every_n_steps=5, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[bar, Probe()],
                        accelerator="cpu")
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(task, torch.utils.data.DataLoader(batches, batch_size=None))
    assert len(seen) == 12 and [shown for _, shown, _ in seen] == pytest.approx([loss for loss, _, _ in seen])
    # what the loggers got: the loss of steps 5 and 10 (and of the last, where the run stops)
    logged = [i for i, (loss, _, value) in enumerate(seen, 1) if value == pytest.approx(loss)]
    assert logged[:2] == [5, 10] and len({v for _, _, v in seen[4:9]}) == 1


def test_checkpoint_carries_the_tokenizer(lm_run):
    ckpt = torch.load(lm_run.dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["builder"]["tokenizer"] == (lm_run.dir / "tokenizer.json").read_text()
    from builder.tokenizer import Tokenizer
    assert ckpt["builder"]["config"]["model"]["vocab_size"] == Tokenizer.from_str(ckpt["builder"]["tokenizer"]).vocab_size


def test_load_and_generate(lm_run):
    import builder
    model = builder.load(lm_run.dir)
    pieces = []
    greedy = model.generate("def f(x):", max_new_tokens=25, temperature=0, stream=pieces.append)
    assert len(greedy) == 25 and "".join(pieces) == greedy  # streamed piece by piece, same text
    assert greedy == model.generate("def f(x):", max_new_tokens=25, temperature=0, use_cache=False)
    a = model.generate("The ", max_new_tokens=25, temperature=1.0, top_k=10, top_p=0.9, seed=1)
    assert a == model.generate("The ", max_new_tokens=25, temperature=1.0, top_k=10, top_p=0.9, seed=1)
    assert len(model.generate("The ", max_new_tokens=10, num_beams=3)) == 10


def test_generate_command_takes_the_prompt_verbatim(lm_run, cli_env):
    import builder
    prompt = 'x = f("a, b", key=\'c\'), y == 2'
    done = subprocess.run([cli_env.python, "-m", "builder.cli.generate", f"ckpt={lm_run.dir}", f"prompt={prompt}",
                           "max_new_tokens=20", "temperature=0"], env=cli_env.env, cwd=cli_env.cwd,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = builder.load(lm_run.dir).generate(prompt, max_new_tokens=20, temperature=0)
    assert done.stdout == prompt + expected + "\n"


def test_generate_command_decodes_a_file_of_prompts_in_batches(lm_run, cli_env, tmp_path):
    import builder
    prompts = ["def f(x):", "", "The quick brown fox", "x"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    done = subprocess.run([cli_env.python, "-m", "builder.cli.generate", f"ckpt={lm_run.dir}", "max_new_tokens=15",
                           f"prompts_file={tmp_path / 'prompts.txt'}", "temperature=0", "batch_size=3"],
                          env=cli_env.env, cwd=cli_env.cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    model = builder.load(lm_run.dir)
    expected = [{"prompt": p, "completion": model.generate(p, max_new_tokens=15, temperature=0)} for p in prompts]
    assert [json.loads(line) for line in done.stdout.splitlines()] == expected
    assert done.stderr.splitlines()[-2:] == ["builder-generate: 3/4 prompts", "builder-generate: 4/4 prompts"]
    (tmp_path / "bad.jsonl").write_text('"fine"\n{"text": "no prompt key"}\n')
    bad = subprocess.run([cli_env.python, "-m", "builder.cli.generate", f"ckpt={lm_run.dir}",
                          f"prompts_file={tmp_path / 'bad.jsonl'}"], env=cli_env.env, cwd=cli_env.cwd,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().endswith(f"prompts_file: {tmp_path / 'bad.jsonl'}, line 2: expected a JSON string or an "
                                       "object with a string 'prompt'; got {\"text\": \"no prompt key\"}")


def test_compiled_model_trains_under_bf16_autocast(compose, tmp_path):
    from builder.train.run import train  # torch.compile on CPU: about 20 s the first time, then cached by inductor
    overrides = [*TINY_GPT, f"run_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=3",
                 "trainer.val_check_interval=3", "data.max_val_windows=4", "task.sample_tokens=5", "compile=true",
                 "trainer.precision=bf16-mixed"]
    with contextlib.redirect_stdout(io.StringIO()):
        score = train(compose(overrides), overrides=overrides)
    assert math.isfinite(score)


def test_attention_command_colours_the_prompt_and_writes_one_png_per_layer(lm_run, tmp_path, capsys):
    from PIL import Image

    from builder.cli import attention as attention_cli
    attention_cli.main([f"ckpt={lm_run.dir}", "prompt=To be, or not", f"out={tmp_path}", "head=1"])
    out = capsys.readouterr().out
    assert "attention of the last token ('t') in layers.0.attn, head 1:" in out
    assert "To be, or not" in out and "1 heatmaps written" in out
    with Image.open(tmp_path / "layers.0.attn.png") as image:
        image.verify()
    with pytest.raises(SystemExit):
        attention_cli.main([f"ckpt={lm_run.dir}", "prompt=To be", "head=5"])
    assert "head: 5 is out of range; layer layers.0.attn has heads 0..1" in capsys.readouterr().err


def test_causal_attention_maps_are_distributions_with_nothing_above_the_diagonal(lm_run):
    import builder
    from builder.graph.attention import capture_attention
    model = builder.load(lm_run.dir)
    idx = torch.tensor([model.prompt_ids("def f(x): return")])
    weights = capture_attention(model.model, lambda: model.model(idx))["layers.0.attn"][0]  # (H, T, T)
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-6)
    assert torch.all(weights.triu(1) == 0)
    assert all(m.capture is False for m in model.model.modules() if hasattr(m, "capture"))  # switched back off


def test_model_flops_utilisation_is_logged_against_a_given_peak(compose, tmp_path):
    """train/mfu = tokens/s x (6 x parameters + 12 x context x attention width per layer) / peak FLOP/s."""
    from builder.train.metrics_csv import read_metrics
    from builder.train.run import train
    train(compose(["experiment=gpt_char", "model.n_layer=2", "model.n_head=2", "model.d_model=32",
                   "model.block_size=16", "data.max_val_windows=2", "task.sample_tokens=0", "trainer.max_steps=6",
                   "trainer.log_every_n_steps=1", "trainer.peak_flops=1e9", "trainer.enable_progress_bar=false",
                   f"run_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}"]))
    import builder
    model = builder.load(tmp_path).model
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    per_token = 6 * params + 12 * 16 * 32 * 2  # two attention layers 32 wide, context 16
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if "train/mfu" in r]
    assert rows and all(r["train/mfu"] == pytest.approx(r["train/tokens_per_s"] * per_token / 1e9, rel=1e-4)
                        for r in rows)


def test_compiled_kv_cached_decoding_gives_the_eager_tokens(compose, tmp_path):
    import builder
    from builder.train.run import train
    train(compose(["experiment=gpt_char", "model.n_layer=1", "model.n_head=2", "model.d_model=16",
                   "model.block_size=16", "data.max_val_windows=2", "task.sample_tokens=0", "trainer.max_steps=3",
                   "trainer.enable_progress_bar=false", f"run_dir={tmp_path}", f"data.cache_dir={tmp_path / 'c'}"]))
    model = builder.load(tmp_path)
    eager = model.generate("The", max_new_tokens=24, temperature=0)  # past the 16-token window too
    model.compiled(backend="aot_eager")  # dynamo traces the decoding step as for inductor, without its C++ build
    assert model.generate("The", max_new_tokens=24, temperature=0, compile=True) == eager
