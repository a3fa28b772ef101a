"""BERT: conf/model/bert.yaml and bert_classifier.yaml against transformers' BertForMaskedLM and
BertForSequenceClassification (shared weights, several variants), Hugging Face directories in and out, the new
blocks against references, the masked-LM task (masking, training, fill_mask) and a classifier trained from
config on a TSV (text_classes) that exports to transformers."""
import contextlib
import io
import json

import pytest
import torch

from builder.errors import CheckpointError, ConfigError
from builder.serve import checkpoint, hf

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=40, hidden_size=32, num_attention_heads=4, intermediate_size=64, max_position_embeddings=24,
             pad_token_id=0)
VARIANTS = {  # name: (layers, token types given, padding in the batch)
    "1-layer": (1, False, False),
    "2-layers-token-types": (2, True, False),
    "2-layers-padding": (2, False, True),
    "1-layer-token-types-padding": (1, True, True),
}
HEADS = {"BertForMaskedLM": "AutoModelForMaskedLM",
         "BertForSequenceClassification": "AutoModelForSequenceClassification"}
WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "ran", "to", "##s", "big", "red"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def hf_bert(arch, layers, **config):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**{**SIZES, **config}, num_hidden_layers=layers, attn_implementation="eager")
    model = getattr(transformers, arch)(cfg)
    with torch.no_grad():
        for p in model.parameters():  # biases and norms too, so that every tensor's place is tested
            p.normal_(0.0, 0.2)
    return model.eval()  # transformers 5 builds in train mode


def batch(types, padding, n=3, T=11):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, SIZES["vocab_size"], (n, T), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones(n, T, dtype=torch.long)
    if padding:
        for i, length in enumerate([T, 7, 4][:n]):
            mask[i, length:], ids[i, length:] = 0, 0
    token_types = (torch.arange(T) >= T // 2).long().expand(n, T).clone() if types else None
    return ids, mask, token_types


def ours_of(loaded, ids, mask, token_types):
    return loaded.model(input_ids=ids, attention_mask=mask,
                        token_type_ids=token_types if token_types is not None else torch.zeros_like(ids))


@pytest.mark.parametrize("arch", HEADS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_same_logits_as_transformers_and_back(arch, variant, tmp_path):
    layers, types, padding = VARIANTS[variant]
    ref = hf_bert(arch, layers, **({"num_labels": 3} if "Sequence" in arch else {}))
    ref.save_pretrained(tmp_path / "hf")
    loaded = checkpoint.load(tmp_path / "hf")
    assert loaded.config["task"]["name"] == ("masked_lm" if "Masked" in arch else "classification")
    ids, mask, token_types = batch(types, padding)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=token_types).logits
        diff = (ours_of(loaded, ids, mask, token_types) - expected).abs().max().item()
    print(f"{arch} {variant}: max |logit difference| {diff:.2e}")
    assert diff < 1e-4, f"{arch} {variant}: max |logit difference| {diff:.2e}"
    back = getattr(transformers, HEADS[arch]).from_pretrained(hf.export(loaded, tmp_path / "back")).eval()
    assert type(back) is type(ref)
    theirs = ref.state_dict()
    assert all(torch.equal(t, theirs[n]) for n, t in back.state_dict().items())
    with torch.no_grad():
        again = back(input_ids=ids, attention_mask=mask, token_type_ids=token_types).logits
    assert (again - expected).abs().max() < 1e-4


# ---------------------------------------------------------------- the new blocks against references

def test_padding_mask_reaches_attention_as_torch_key_padding_mask():
    from blocks.attention import SelfAttention
    from blocks.masks import padding_mask
    torch.manual_seed(0)
    ours, ref = SelfAttention(16, 4).eval(), torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight), ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight), ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, 6, 16)
    attention_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    with torch.no_grad():
        expected = ref(x, x, x, key_padding_mask=attention_mask == 0, need_weights=False)[0]
        diff = (ours(x, pad_mask=padding_mask(attention_mask)) - expected).abs().max().item()
    assert diff < 1e-6
    assert torch.equal(padding_mask(attention_mask.bool()), attention_mask == 0)


def test_pool_against_bert_pooler_and_a_per_row_mean():
    from blocks.pooling import pool
    ref = hf_bert("BertModel", 1).pooler
    x = torch.randn(3, 5, 32)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    with torch.no_grad():
        ours = torch.tanh(torch.nn.functional.linear(pool(x, pad), ref.dense.weight, ref.dense.bias))
        assert (ours - ref(x)).abs().max() < 1e-6
    expected = torch.stack([x[i, :n].mean(0) for i, n in enumerate([5, 3, 1])])
    assert (pool(x, pad, mode="mean") - expected).abs().max() < 1e-6
    assert torch.allclose(pool(x, mode="mean"), x.mean(1))


# ---------------------------------------------------------------- masking

def test_masking_rates_never_special_and_repeatable():
    from builder.train.tasks.masked_lm import IGNORE, mask_tokens
    special, regular, mask_id = torch.tensor([0, 1, 2, 3]), torch.arange(4, 50), 3
    x = torch.randint(4, 50, (64, 128))
    x[:, 0], x[:, -1], x[:, 10] = 1, 2, 0
    inputs, labels = mask_tokens(x, special, regular, mask_id, 0.15, generator=torch.Generator().manual_seed(0))
    chosen = labels != IGNORE
    assert chosen.float().mean().item() == pytest.approx(0.15 * 125 / 128, abs=0.01)
    assert not chosen[:, [0, 10, -1]].any() and torch.equal(labels[chosen], x[chosen])
    assert torch.equal(inputs[~chosen], x[~chosen])
    masked = (inputs[chosen] == mask_id).float().mean().item()
    kept = (inputs[chosen] == x[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1 + 0.1 / 46, abs=0.03)
    assert not torch.isin(inputs[chosen & (inputs != mask_id)], special).any()
    again = mask_tokens(x, special, regular, mask_id, 0.15, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


# ---------------------------------------------------------------- training, serving, export

TEXT = ("The object is returned by the function. A class defines the methods of its objects; the "
        "interpreter looks names up in the local, the global and the built-in namespaces. ") * 60


@pytest.fixture(scope="module")
def mlm_run(compose, tmp_path_factory):
    from builder.train.run import train
    run_dir = tmp_path_factory.mktemp("bert_run")
    (run_dir.parent / "corpus.txt").write_text(TEXT)
    overrides = ["experiment=bert_char", "model.n_layer=1", "model.d_model=32", "model.d_ff=64",
                 "model.block_size=32", f"data.path={run_dir.parent / 'corpus.txt'}",
                 f"data.cache_dir={run_dir.parent / 'cache'}", "data.max_val_windows=16", "trainer.max_steps=60",
                 "trainer.val_check_interval=30", "trainer.enable_progress_bar=false",
                 "trainer.enable_model_summary=false", "optim.warmup_steps=10", f"run_dir={run_dir}"]
    with contextlib.redirect_stdout(io.StringIO()):
        train(compose(overrides), overrides=overrides)
    return run_dir


def test_masked_lm_trains_and_fills_masks(mlm_run):
    import builder
    from builder.train.metrics_csv import read_metrics
    val = [r for r in read_metrics(mlm_run / "metrics.csv") if "val/loss" in r]
    assert len(val) == 2 and val[1]["val/loss"] < val[0]["val/loss"] and 0 < val[1]["val/acc"] <= 1
    model = builder.load(mlm_run)
    assert type(model).__name__ == "MaskedLM" and "[MASK]" in model.tokenizer.tok.get_vocab()
    one = model.fill_mask("The object is [MASK]eturned", top_k=3)
    assert len(one) == 1 and len(one[0]) == 3 and one[0][0].prob >= one[0][1].prob
    two = model.fill_mask(["[MASK]he", "a [MASK] [MASK]", "The object is [MASK]eturned"], top_k=2)
    assert [len(a) for a in two] == [1, 2, 1]
    assert [f.id for f in two[2][0]] == [f.id for f in one[0][:2]]  # padded in a batch: the same answer
    assert abs(two[2][0][0].prob - one[0][0].prob) < 1e-5
    with pytest.raises(ConfigError, match=r"text: no \[MASK\] in 'no mask'"):
        model.fill_mask("no mask")
    from builder.cli.eval import run
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = run([f"ckpt={mlm_run}", "data.max_val_windows=4"])
    assert set(metrics) == {"val/loss", "val/acc"}


def test_masked_lm_exports_to_transformers_with_its_tokenizer(mlm_run, tmp_path, capsys):
    import builder
    from builder.cli.export import main as export
    export([f"ckpt={mlm_run}", "format=hf", f"out={tmp_path}"])
    assert "tokenizer.json, tokenizer_config.json" in capsys.readouterr().out
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["mask_token"] == "[MASK]"
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "The object is [MASK]eturned"
    enc = hf_tok(text, return_tensors="pt")
    ours = builder.load(mlm_run)
    assert enc["input_ids"][0].tolist() == ours.tokenizer.tok.encode(text).ids
    with torch.no_grad():
        diff = (theirs(**enc).logits - ours(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])).abs().max()
    assert diff < 1e-4
    again = builder.load(tmp_path)  # an HF directory of ours loads back as a masked LM
    assert [f.id for f in again.fill_mask(text, top_k=2)[0]] == [f.id for f in ours.fill_mask(text, top_k=2)[0]]


def test_masked_lm_needs_the_mask_token(compose, tmp_path):
    from builder.train.run import train
    (tmp_path / "c.txt").write_text(TEXT[:3000])
    overrides = ["experiment=bert_char", "model.n_layer=1", "model.d_model=16", "model.d_ff=16", "model.block_size=16",
                 f"data.path={tmp_path / 'c.txt'}", f"data.cache_dir={tmp_path / 'cache'}", "task.special_tokens=[]",
                 "trainer.max_steps=1", "trainer.enable_progress_bar=false", f"run_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match=r"task.mask_token: the tokenizer has no \[MASK\] token"):
        train(compose(overrides), overrides=overrides)


def wordpiece_dir(path):
    """A BERT tokenizer.json (WordPiece, lower-casing, [CLS] text [SEP]) written into `path`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    vocab.update({f"w{i}": len(vocab) for i in range(SIZES["vocab_size"] - len(vocab))})
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(SPECIAL)
    tok.save(str(path / "tokenizer.json"))


def test_fill_mask_on_a_hugging_face_bert_directory(tmp_path):
    import builder
    ref = hf_bert("BertForMaskedLM", 2)
    ref.save_pretrained(tmp_path)
    wordpiece_dir(tmp_path)
    model = builder.load(tmp_path)
    found = model.fill_mask("The cat [MASK] on the mat", top_k=4)[0]
    ids = torch.tensor([[2, 5, 6, 4, 9, 5, 10, 3]])  # [CLS] the cat [MASK] on the mat [SEP]
    with torch.no_grad():
        probs, top = ref(input_ids=ids).logits[0, 3].softmax(-1).topk(4)
    assert [f.id for f in found] == top.tolist()
    assert max(abs(f.prob - p) for f, p in zip(found, probs.tolist())) < 1e-5


def test_unsupported_bert_directories_fail_in_one_line(tmp_path):
    config = {"model_type": "bert", "architectures": ["BertForTokenClassification"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r'architectures=\["BertForTokenClassification"\] is not supported '
                                              r"\(supported: BertForMaskedLM, BertForPreTraining, "
                                              r"BertForSequenceClassification"):
        hf.run_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_act": "relu"}))
    with pytest.raises(ConfigError, match=r'config.json: hidden_act="relu" is not supported \(supported: "gelu"\)'):
        hf.run_config(tmp_path)


TSV = "".join(f"{label}\t{text}\n" for label, text in [
    ("pos", "a good film"), ("neg", "a bad film"), ("pos", "good, good"), ("neg", "bad bad"), ("pos", "so good"),
    ("neg", "so bad"), ("pos", "good fun"), ("neg", "bad fun"), ("pos", "very good"), ("neg", "very bad")] * 8)


@pytest.fixture(scope="module")
def classifier_run(compose, tmp_path_factory):
    from builder.train.run import train
    run_dir = tmp_path_factory.mktemp("bert_classifier")
    (run_dir.parent / "reviews.tsv").write_text(TSV)
    overrides = ["experiment=bert_classifier", f"data.path={run_dir.parent / 'reviews.tsv'}", "model.n_layer=1",
                 "model.d_model=32", "model.d_ff=64", "model.block_size=16", "data.batch_size=16",
                 "trainer.max_epochs=12", "optim.warmup_steps=5", "trainer.enable_progress_bar=false",
                 "trainer.enable_model_summary=false",
                 f"run_dir={run_dir}"]
    with contextlib.redirect_stdout(io.StringIO()):
        score = train(compose(overrides), overrides=overrides)
    return run_dir, score


def test_classifier_trains_from_config_and_predicts_texts(classifier_run):
    import builder
    run_dir, score = classifier_run
    assert score == 1.0
    model = builder.load(run_dir)
    assert model.classes == ["neg", "pos"] and model.config["model"]["num_classes"] == 2
    labels, probs = model.predict(["a very good film", "so bad", "a " * 40 + "bad"])  # the last one is cut
    assert labels[:2] == ["pos", "neg"] and probs.shape == (3, 2)
    assert model.predict("good fun").labels == ["pos"]
    from builder.cli.predict import main as predict
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        predict([f"ckpt={run_dir}", "text=a very good, good film"])
    assert out.getvalue().startswith("pos  (neg 0.")
    with pytest.raises(ConfigError, match=r"inputs: characters not in the tokenizer's alphabet: 'z'"):
        model.predict("zzz")


def test_classifier_exports_to_transformers_with_its_labels(classifier_run, tmp_path):
    import builder
    from builder.serve.api import token_inputs
    run_dir, _ = classifier_run
    ours = builder.load(run_dir)
    out = hf.export(checkpoint.load(run_dir), tmp_path)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert theirs.config.id2label == {0: "neg", 1: "pos"}
    feed, _ = token_inputs(ours, ["a good film", "bad"], "features", "texts")
    with torch.no_grad():
        assert (theirs(**feed).logits - ours(**feed)).abs().max() < 1e-4
    assert builder.load(out).predict(["a good film", "bad"]).labels == ours.predict(["a good film", "bad"]).labels


def test_a_mean_pooled_classifier_is_no_hugging_face_bert(compose):
    from builder.config import resolve
    cfg = resolve(compose(["experiment=bert_classifier", "model.pool=mean", "model.vocab_size=50",
                           "model.num_classes=2"]), "")
    with pytest.raises(ConfigError, match=r'BertForSequenceClassification: pool="mean" '
                                          r'\(this family has pool="first"\)'):
        hf.family_for(cfg["model"])


def test_a_malformed_tsv_line_is_named(tmp_path):
    from builder.train.data.text_classes import TextClassesData
    (tmp_path / "x.tsv").write_text("pos\tgood\nno tab here\n")
    with pytest.raises(ConfigError, match=r"data.path: .*x.tsv line 2: expected label<TAB>text, got 'no tab here'"):
        TextClassesData({"name": "text_classes", "path": str(tmp_path / "x.tsv")}).model_sizes()
