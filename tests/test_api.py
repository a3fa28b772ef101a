"""The loaded models' public methods check their inputs: lists, numpy arrays and tensors behave the same, empty
inputs give empty results, and anything else is refused in one line that names the argument."""
import contextlib
import io
import math

import numpy as np
import pytest
import torch

import builder
from builder.errors import ConfigError
from tests.test_language_model import TINY_GPT
from tests.test_seq2seq import TINY as TINY_SEQ2SEQ

ROWS = [[32, 107, 56, 11.2], [241, 200, 4, 59.5], [180, 60, 200, 30.0]]
WIDTH = "each row needs 4 values (the model's input x has shape [batch, 4])"


def refused(call, *args, **kwargs) -> str:
    """The one-line ConfigError message of call(*args, **kwargs)."""
    with pytest.raises(ConfigError) as e:
        call(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    return message


def short_run(compose, tmp_path_factory, name, overrides, steps):
    """A run of `steps` training steps (enough to load and decode; these tests check inputs, not quality)."""
    from builder.train.run import train
    run_dir = tmp_path_factory.mktemp(name)
    keep = [o for o in overrides if not o.startswith(("trainer.max_steps=", "trainer.val_check_interval="))]
    overrides = [*keep, f"run_dir={run_dir}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}"]
    with contextlib.redirect_stdout(io.StringIO()):
        train(compose(overrides), overrides=overrides)
    return builder.load(run_dir)


@pytest.fixture(scope="module")
def classifier(toy_run):
    return builder.load(toy_run.dir)


@pytest.fixture(scope="module")
def lm(compose, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "text_cache"
    overrides = [o for o in TINY_GPT if not o.startswith("model.n_layer=")]
    return short_run(compose, tmp_path_factory, "api_lm", [*overrides, "model.n_layer=2", "task.sample_tokens=4",
                                                            "data.max_val_windows=4", f"data.cache_dir={cache}"], 4)


@pytest.fixture(scope="module")
def translator(compose, tmp_path_factory):
    return short_run(compose, tmp_path_factory, "api_translate", TINY_SEQ2SEQ, 4)


# --- Classifier.predict and LoadedModel.__call__ --------------------------------------------------------------

def test_predict_takes_lists_arrays_and_tensors_alike(classifier):
    for rows in (ROWS, ROWS[0], []):
        labels, probs = classifier.predict(rows)
        for other in (np.array(rows), np.array(rows, dtype=np.float32), torch.tensor(rows), tuple(rows)):
            again = classifier.predict(other)
            assert again.labels == labels and torch.equal(again.probs, probs)
    assert len(classifier.predict(ROWS[0]).labels) == 1  # one row is a batch of one


@pytest.mark.parametrize("empty", [[], np.zeros((0, 4)), torch.zeros(0, 4), torch.zeros(0)], ids=repr)
def test_predict_empty_batch(classifier, empty):
    labels, probs = classifier.predict(empty)
    assert labels == [] and probs.shape == (0, 2) and probs.dtype == torch.float32


@pytest.mark.parametrize("inputs, expected", [
    ([[1, 2, 3]], f"inputs: {WIDTH}; got rows of 3"),
    (np.zeros((2, 3)), f"inputs: {WIDTH}; got rows of 3"),
    (torch.zeros(2, 5), f"inputs: {WIDTH}; got rows of 5"),
    ([1, 2, 3], f"inputs: {WIDTH}; got rows of 3"),
    (np.zeros((0, 3)), f"inputs: {WIDTH}; got rows of 3"),
    ([[ROWS[0]]], "inputs: expected one row or a batch; " + WIDTH + "; got a 3-dimensional array of shape [1, 1, 4]"),
    (torch.zeros(1, 1, 4), "got a 3-dimensional array of shape [1, 1, 4]"),
    (5.0, "inputs: expected one row or a batch; " + WIDTH + "; got 5.0"),
    ([ROWS[0], [1, 2, 3]], f"inputs: rows differ in length (3, 4); {WIDTH}"),
    ([["a", 1, 2, 3]], f"inputs: expected numbers; {WIDTH}; got 'a'"),
    ([[None, 1, 2, 3]], f"inputs: expected numbers; {WIDTH}; got None"),
    (None, f"inputs: expected numbers; {WIDTH}; got None"),
], ids=lambda v: type(v).__name__ if not isinstance(v, str) else "")
def test_predict_refuses_in_one_line(classifier, inputs, expected):
    assert expected in refused(classifier.predict, inputs)


def test_call_checks_the_model_inputs(classifier):
    x = torch.tensor(ROWS)
    assert torch.equal(classifier(ROWS), classifier(x)) and torch.equal(classifier(x=np.array(ROWS)), classifier(x))
    assert refused(classifier, torch.zeros(2, 3)) == f"x: {WIDTH}; got rows of 3"
    assert refused(classifier, x[0]).startswith("x: expected a batch; ")  # the raw model has no one-row form
    assert refused(classifier, x, x) == "inputs: the model takes 1 input (x); got 2"
    assert refused(classifier) == "x: missing; the model's inputs are x"
    assert refused(classifier, x, x=x) == "x: given twice; the model's inputs are x"


# --- LanguageModel.generate ---------------------------------------------------------------------------------

def test_generate_takes_a_list_of_prompts(lm):
    kw = dict(max_new_tokens=6, temperature=0)
    one = [lm.generate("The", **kw), lm.generate("A", **kw)]
    assert lm.generate(["The", "A"], **kw) == one and lm.generate(("The", "A"), **kw) == one
    assert lm.generate([], **kw) == [] and lm.generate(["The"], **kw) == one[:1]
    sampled = lm.generate(["The", "A"], max_new_tokens=6, temperature=1.0, seed=3, batch_size=1)
    assert sampled == [lm.generate(p, max_new_tokens=6, temperature=1.0, seed=3) for p in ("The", "A")]
    batch = lm.generate(["The", "A"], max_new_tokens=6, temperature=1.0, seed=3)  # one batch, one generator
    assert batch == lm.generate(["The", "A"], max_new_tokens=6, temperature=1.0, seed=3) and len(batch) == 2


def test_prompts_of_different_lengths_are_generated_in_batches_as_one_at_a_time(lm):
    prompts = ["The", "A longer prompt than", "", "To be, or not to be, that", "x", "An"]
    alone = [lm.generate(p, max_new_tokens=12, temperature=0) for p in prompts]
    assert lm.generate(prompts, max_new_tokens=12, temperature=0) == alone  # one batch of 6, left-padded
    assert lm.generate(prompts, max_new_tokens=12, temperature=0, batch_size=4) == alone  # batches of 4 and 2
    assert lm.generate(prompts, max_new_tokens=5, num_beams=2) == [lm.generate(p, max_new_tokens=5, num_beams=2)
                                                                   for p in prompts]
    pieces: list[str] = []
    assert lm.generate(prompts[:2], max_new_tokens=12, temperature=0, stream=pieces.append) == alone[:2]
    assert pieces == alone[:2]  # a list streams each continuation whole
    assert lm.generate("The", max_new_tokens=0) == "" and len(lm.generate("The", max_new_tokens=3, top_p=1.0)) == 3


@pytest.mark.parametrize("prompt, expected", [
    (5, "prompt: expected a str or a list of str; got 5 (int)"),
    (None, "prompt: expected a str or a list of str; got None (NoneType)"),
    (["The", 3], "prompt: expected a str or a list of str; item 1 is 3 (int)"),
    ([b"The"], "prompt: expected a str or a list of str; item 0 is b'The' (bytes)"),
])
def test_generate_refuses_other_prompts(lm, prompt, expected):
    assert refused(lm.generate, prompt, max_new_tokens=2) == expected


@pytest.mark.parametrize("setting, expected", [
    ({"max_new_tokens": -1}, "max_new_tokens: expected an integer >= 0; got -1"),
    ({"max_new_tokens": 2.5}, "max_new_tokens: expected an integer >= 0; got 2.5"),
    ({"max_new_tokens": "10"}, "max_new_tokens: expected an integer >= 0; got '10'"),
    ({"temperature": -0.5}, "temperature: expected a number >= 0; got -0.5"),
    ({"temperature": math.nan}, "temperature: expected a number >= 0; got nan"),
    ({"top_k": 0}, "top_k: expected an integer >= 1 or None; got 0"),
    ({"top_p": 0}, "top_p: expected a number in (0, 1] or None; got 0"),
    ({"top_p": 1.5}, "top_p: expected a number in (0, 1] or None; got 1.5"),
    ({"num_beams": 0}, "num_beams: expected an integer >= 1; got 0"),
    ({"num_beams": True}, "num_beams: expected an integer >= 1; got True"),
    ({"seed": "x"}, "seed: expected an integer or None; got 'x'"),
    ({"batch_size": 0}, "batch_size: expected an integer >= 1; got 0"),
])
def test_generate_checks_its_settings(lm, setting, expected):
    assert refused(lm.generate, "The", **{"max_new_tokens": 2, **setting}) == expected
    assert refused(lm.generate, [], **{"max_new_tokens": 2, **setting}) == expected  # even with nothing to do


# --- Translator.translate -----------------------------------------------------------------------------------

def test_translate_takes_lists_and_checks_texts(translator):
    texts = ["one", "two hundred"]
    assert translator.translate([]) == [] and translator.translate(tuple(texts)) == translator.translate(texts)
    assert refused(translator.translate, ["one", 2]) == "texts: expected a str or a list of str; item 1 is 2 (int)"
    assert refused(translator.translate, 7) == "texts: expected a str or a list of str; got 7 (int)"


@pytest.mark.parametrize("setting, expected", [
    ({"num_beams": 0}, "num_beams: expected an integer >= 1; got 0"),
    ({"batch_size": 0}, "batch_size: expected an integer >= 1; got 0"),
    ({"batch_size": 2.0}, "batch_size: expected an integer >= 1; got 2.0"),
    ({"length_penalty": "long"}, "length_penalty: expected a number; got 'long'"),
])
def test_translate_checks_its_settings(translator, setting, expected):
    assert refused(translator.translate, ["one"], **setting) == expected
