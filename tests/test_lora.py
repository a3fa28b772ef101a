"""adapters=lora: only the adapters train, checkpoints hold them alone, a resume continues exactly, the plan and
the run's start line count them, and merging (builder-export) gives the unmerged model's logits."""
import pytest
import torch

from builder.config import compose, resolve
from builder.errors import ConfigError
from builder.graph import adapters
from builder.graph.build import build_model
from builder.serve import checkpoint
from test_finetune import hf_dir, train_run, val_loss_of

LORA = ["adapters=lora", "adapters.targets=[layers.*.attn,layers.*.mlp]", "optim.lr=1e-2"]
TINY_LLAMA = ["experiment=llama_char", "model.vocab_size=40", "model.n_layer=2", "model.d_model=32", "model.d_ff=48",
              "model.kv_heads=2"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    source = hf_dir(tmp / "hf", "llama")
    run_dir, best = train_run(tmp, "run", f"init_from={source}", *LORA, steps=20)
    return tmp, source, run_dir, best


def test_only_the_adapters_train_and_checkpoints_hold_them(lora_run):
    _, source, run_dir, best = lora_run
    ckpt = checkpoint.read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["state_dict"] and all(k.endswith((".lora_a", ".lora_b")) for k in ckpt["state_dict"])
    assert len(ckpt["state_dict"]) == 2 * 2 * 7  # 2 layers x (q, k, v, proj, gate, up, down) x (A, B)
    base = checkpoint.load(source).model.state_dict()
    tuned = checkpoint.load(run_dir).model  # the base read from init_from, the adapters from the checkpoint
    for name, t in tuned.state_dict().items():
        if adapters.is_adapter_key(name):
            assert name.endswith("lora_a") or t.abs().max() > 0, name  # B started at zero and trained
        else:
            assert torch.equal(t, base[name]), name  # frozen
    assert best < val_loss_of(source, run_dir) - 0.3


def test_the_start_line_and_the_plan_count_trainable_parameters(lora_run, capsys):
    from builder.cli.plan import main as plan
    tmp, source, _, _ = lora_run
    train_run(tmp, "again", f"init_from={source}", *LORA, steps=1)
    # rank 8 on q (32->32), k, v (32->16), proj (32->32), gate, up (32->48), down (48->32), in 2 layers
    added = 2 * 8 * (64 + 48 + 48 + 64 + 80 + 80 + 80)
    total = added + sum(p.numel() for p in checkpoint.load(source).model.parameters())
    line = f"model: {total:,} parameters, {added:,} trainable ({100 * added / total:.3g}%): LoRA rank 8 on 14 linear"
    assert line in capsys.readouterr().out
    plan([*TINY_LLAMA, *LORA[:2], f"out={tmp / 'plan'}"])
    layer = 2 * 32 + 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 48  # norms, q, proj, k, v, gate, up, down
    assert f"{added:,} of {40 * 32 + 2 * layer + 32 + added:,}" in capsys.readouterr().out  # tied head: no more


def test_a_resume_continues_as_the_uninterrupted_run(lora_run):
    tmp, source, _, _ = lora_run
    whole, _ = train_run(tmp, "whole", f"init_from={source}", *LORA, steps=20)
    part, _ = train_run(tmp, "part", f"init_from={source}", *LORA, steps=10)
    train_run(tmp, "part", f"init_from={source}", *LORA, f"resume={part}", steps=20)
    a, b = (checkpoint.read_checkpoint(d / "checkpoints" / "last.ckpt")["state_dict"] for d in (whole, part))
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_merged_logits_equal_the_adapted_model_and_export_merges(lora_run, tmp_path, capsys):
    from builder.cli.export import main as export
    from builder.graph.cpu_linear import OneDNNLinear
    _, _, run_dir, _ = lora_run
    loaded = checkpoint.load(run_dir)
    layer = loaded.model.graph["layers"][0]["attn"].q
    assert isinstance(layer, adapters.LoRA) and isinstance(layer, OneDNNLinear)  # fast.py's class swap kept below
    idx = torch.randint(0, loaded.config["model"]["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = loaded.model(idx)
        merged = adapters.merge(checkpoint.load(run_dir).model)
        assert not adapters.adapted(merged) and (merged(idx) - want).abs().max().item() < 1e-5
    export([f"ckpt={run_dir}", f"out={tmp_path / 'ours'}"])
    export([f"ckpt={run_dir}", "format=hf", f"out={tmp_path / 'hf'}"])
    capsys.readouterr()
    with torch.no_grad():
        assert (checkpoint.load(tmp_path / "ours").model(idx) - want).abs().max().item() < 1e-5
        assert (checkpoint.load(tmp_path / "hf").model(idx) - want).abs().max().item() < 1e-5


def test_a_random_update_merges_exactly_in_every_layer_kind():
    cfg = resolve(compose([*TINY_LLAMA, "adapters=lora", "adapters.targets=[layers.*.attn.q,layers.*.mlp,head]",
                           "model.tie_embeddings=null"]), "")
    torch.manual_seed(0)
    model = adapters.apply(build_model(cfg["model"]).eval(), cfg["adapters"])
    for layer in adapters.adapted(model):
        layer.lora_b.data.normal_(0, 0.5)
    assert len(adapters.adapted(model)) == 2 * 4 + 1
    idx = torch.randint(0, 40, (3, 9))
    with torch.no_grad():
        want = model(idx)
        assert (adapters.merge(model)(idx) - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("targets, line", [
    ("[layers.*.atn]", ("adapters.targets[0]: 'layers.*.atn' names no node or layer of the model; its nodes: "
                        "tok, layers.*.ln1, layers.*.attn")),
    ("[layers.*.ln1]", "adapters.targets[0]: 'layers.*.ln1' holds no linear layer (layers.*.ln1)"),
    ("[head]", "adapters.targets[0]: 'head': head shares its weight with another node (tie:)"),
])
def test_a_target_that_does_not_fit_is_one_line(targets, line):
    from builder.train.check import check_shapes
    with pytest.raises(ConfigError) as e:
        check_shapes(compose([*TINY_LLAMA, "adapters=lora", "adapters.save=full", f"adapters.targets={targets}"]))
    assert len(e.value.problems) == 1 and line in e.value.problems[0]


def test_full_checkpoints_without_init_from(train_tiny, capsys):
    run_dir, _ = train_tiny(["adapters=lora", "adapters.targets=[h,logits]", "adapters.save=full", "adapters.rank=2",
                             "trainer.max_epochs=2"])
    ckpt = checkpoint.read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert {"model.graph.h.weight", "model.graph.h.lora_a"} <= set(ckpt["state_dict"])
    assert "LoRA rank 2 on 2 linear layers (h, logits)" in capsys.readouterr().out
    assert checkpoint.load(run_dir).model(torch.zeros(1, 4)).shape == (1, 2)
    with pytest.raises(ConfigError, match="adapters.save: adapters_only keeps the adapters alone, so the base weights "
                                          "must come from init_from"):
        train_tiny(["adapters=lora", "adapters.targets=[h]"])
