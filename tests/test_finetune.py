"""init_from=HF_DIR|RUN|CKPT: a run that starts from another model's weights and tokenizer, its model taken from
there; tiny GPT-2 and Llama directories made here (random weights, a BPE tokenizer trained on the test's text)."""
import json
from pathlib import Path

import pytest
import torch

from builder.config import compose
from builder.errors import ConfigError
from builder.serve import checkpoint

transformers = pytest.importorskip("transformers")

TEXT = "the cat sat on the mat, and the dog sat on the log; the cat saw the dog and the dog saw the cat. " * 60
SIZES = {"gpt2": dict(n_positions=32, n_embd=32, n_layer=2, n_head=4),
         "llama": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)}


def hf_dir(path, arch):
    """A tiny random Hugging Face model directory with a byte-level BPE tokenizer."""
    from builder.tokenizer import bpe_tokenizer
    tok = bpe_tokenizer([TEXT], vocab_size=300)
    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0, **SIZES[arch])
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0, **SIZES[arch])
        model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save(path / "tokenizer.json")
    return path


def train_run(tmp_path, name, *overrides, steps=30):
    """(run directory, best val/loss) of a run on the test's text; experiment=gpt_char gives data and task."""
    from builder.train.run import train
    (tmp_path / "my.txt").write_text(TEXT)
    run_dir = tmp_path / name
    args = ["experiment=gpt_char", f"data.path={tmp_path / 'my.txt'}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.block_size=16", "data.batch_size=8", f"trainer.max_steps={steps}", "trainer.val_check_interval=10",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "task.sample_tokens=0",
            "optim.lr=3e-3", "optim.warmup_steps=0", "optim.decay_steps=20", f"outputs_dir={tmp_path / 'outputs'}",
            f"run_dir={run_dir}", *overrides]
    return run_dir, train(compose(args), overrides=args)


def val_loss_of(path, run_dir):
    """The val/loss of the model at `path` on the run's validation data (its data config and tokenizer)."""
    from omegaconf import OmegaConf

    from builder.train.evaluate import evaluate
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    return evaluate(checkpoint.load(path).model, cfg)["val/loss"]


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    source = hf_dir(tmp / "hf", "gpt2")
    run_dir, best = train_run(tmp, "run", f"init_from={source}")
    return tmp, source, run_dir, best


def test_a_gpt2_directory_fine_tunes_on_a_text_file(gpt2_run):
    from builder.serve import hf
    _, source, run_dir, best = gpt2_run
    cfg = json.loads(json.dumps(checkpoint.read_config(run_dir / "checkpoints" / "last.ckpt")[0]))
    assert cfg["model"] == hf.run_config(source)["model"]  # the source's model, not experiment=gpt_char's
    assert cfg["init_from"] == str(source.resolve())
    assert cfg["data"]["tokenizer"]["path"] == str(source / "tokenizer.json")
    assert (run_dir / "tokenizer.json").read_text() == (source / "tokenizer.json").read_text()
    before = val_loss_of(source, run_dir)
    assert best < before - 1.0, f"val loss {before:.3f} -> {best:.3f}"


def test_a_llama_directory_fine_tunes_and_generates(tmp_path):
    import builder
    source = hf_dir(tmp_path / "hf", "llama")
    run_dir, best = train_run(tmp_path, "run", f"init_from={source}")
    assert best < val_loss_of(source, run_dir) - 1.0
    model = builder.load(run_dir)
    assert model.config["model"]["kv_heads"] == 2 and model.generate("the cat", max_new_tokens=5, temperature=0)


def test_from_a_checkpoint_file_with_a_dropout_override(gpt2_run, capsys):
    tmp, source, run_dir, _ = gpt2_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    again, best = train_run(tmp, "again", f"init_from={ckpt}", "model.dropout=0.1", steps=10)
    cfg = checkpoint.read_config(again / "checkpoints" / "last.ckpt")[0]
    assert cfg["model"]["dropout"] == 0.1 and cfg["model"]["nodes"]["layers"]["body"]["attn"]["dropout"] == 0.1
    assert {k: v for k, v in cfg["model"].items() if "dropout" not in k and k != "nodes"} == {
        k: v for k, v in checkpoint.read_config(ckpt)[0]["model"].items() if "dropout" not in k and k != "nodes"}
    copy = cfg["data"]["tokenizer"]["path"]  # the checkpoint's tokenizer text, copied where the data reads it
    assert copy.startswith(str(tmp / "outputs" / "cache" / "tokenizers"))
    assert Path(copy).read_text() == checkpoint.read_config(ckpt)[1]
    assert f"weights from {ckpt}" in capsys.readouterr().out
    assert best < val_loss_of(source, run_dir)


@pytest.mark.parametrize("override, line", [
    ("model.n_layer=3", ("model.n_layer: init_from takes the model from its source, so the command line may not "
                         "change it (only its dropout variables, such as model.dropout=0.1)")),
    ("model=llama", "model: init_from takes the model from its source"),
    ("data.tokenizer.path=OTHER", "data.tokenizer.path: OTHER is not the tokenizer of init_from="),
])
def test_a_change_of_model_or_tokenizer_is_one_line(gpt2_run, override, line):
    from builder.tokenizer import char_tokenizer
    tmp, source, _, _ = gpt2_run
    other = tmp / "other.json"
    char_tokenizer("abc").save(other)
    override = override.replace("OTHER", str(other))
    with pytest.raises(ConfigError) as e:
        train_run(tmp, "refused", f"init_from={source}", override)
    assert len(e.value.problems) == 1 and line.replace("OTHER", str(other)) in e.value.problems[0]
    assert not (tmp / "refused").exists()


def test_a_missing_source_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=rf"^init_from: {tmp_path / 'nowhere'} does not exist$"):
        train_run(tmp_path, "run", f"init_from={tmp_path / 'nowhere'}")
