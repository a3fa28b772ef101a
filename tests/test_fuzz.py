"""Fuzzing (hypothesis, a bounded number of examples here; benchmarks/fuzz.py runs many more): mutated shipped
configs end in a model that trains one step or in keyed one-line errors, never a traceback or a hang, and so do
mutated command lines of every command."""
from __future__ import annotations

import contextlib
import io
import signal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from omegaconf import OmegaConf

from builder.errors import ConfigError, RunStopped
from fuzzing import arguments, keyed_lines, mutated

EXAMPLES = 15
TINY = ["trainer.max_steps=1", "trainer.max_epochs=-1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.val_check_interval=1", "trainer.check_val_every_n_epoch=null"]
EXPERIMENTS = {
    "toy": ["experiment=toy_classifier", "data.bayes_samples=0", "data.n_train=64", "data.n_val=32"],
    "lm": ["experiment=gpt_char", "model.n_layer=1", "model.n_head=2", "model.d_model=16", "model.block_size=16",
           "data.max_val_windows=2", "task.sample_tokens=4"],
    "seq2seq": ["experiment=translate_numbers", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
                "model.d_model=16", "model.n_head=2", "model.d_ff=32", "data.n_train=64", "data.n_val=8",
                "data.n_test=8", "data.tokenizer.kind=char"],
}
# keys whose other values start processes (devices, nodes, workers): a fuzzer must not fork the machine away
SPAWNING = ("trainer.devices", "trainer.num_nodes", "trainer.strategy", "data.num_workers", "hydra", "cluster",
            "sweep", "run_dir", "resume", "outputs_dir")


@contextlib.contextmanager
def time_limit(seconds: int):
    def hang(*_):
        raise TimeoutError(f"no answer within {seconds} s")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def shipped(compose, tmp_path_factory):
    cache = tmp_path_factory.mktemp("fuzz_cache")
    found = {}
    for name, overrides in EXPERIMENTS.items():
        extra = [f"data.cache_dir={cache}"] if name == "lm" else []
        cfg = OmegaConf.to_container(compose([*overrides, *TINY, *extra]), resolve=False)
        found[name] = {k: v for k, v in cfg.items()}
    return found


def outcome(cfg: dict, run_dir) -> str:
    """'trained', or 'refused' with keyed lines; anything else fails the test with the mutation's story."""
    from builder.train.check import check_shapes
    from builder.train.run import train
    config = OmegaConf.create({**cfg, "run_dir": str(run_dir)})
    with time_limit(120):
        try:
            check_shapes(config)
        except ConfigError as e:
            assert keyed_lines("\n".join(e.problems)), e.problems
            return "refused"
        try:
            train(config)
        except (ConfigError, RunStopped) as e:
            lines = getattr(e, "problems", None) or [str(e)]
            assert keyed_lines("\n".join(lines)) or isinstance(e, RunStopped), lines
            return "refused at run time"
    return "trained"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_config_runs_or_fails_in_keyed_lines(name, data, shipped, tmp_path_factory):
    base = {k: v for k, v in shipped[name].items()}
    cfg, story = data.draw(mutated(base).filter(lambda m: not m[1].split(" ", 1)[1].startswith(SPAWNING)))
    try:
        outcome(cfg, tmp_path_factory.mktemp("fuzz"))
    except AssertionError:
        raise
    except BaseException as e:  # noqa: BLE001 - the point: report which mutation gave a traceback
        raise AssertionError(f"{story}: {type(e).__name__}: {e}") from e


@pytest.fixture(scope="module")
def served(toy_run, compose, tmp_path_factory):
    """A run per task to point the commands at."""
    from builder.train.run import train
    runs = {"toy": toy_run.dir}
    for name in ("lm", "seq2seq"):
        run = tmp_path_factory.mktemp(f"fuzz_{name}")
        extra = [f"data.cache_dir={run.parent / 'fuzz_served_cache'}"] if name == "lm" else []
        train(compose([*EXPERIMENTS[name], *TINY, "trainer.max_steps=2", *extra, f"run_dir={run}"]))
        runs[name] = run
    return runs


COMMANDS = {  # command module, the run it serves, a valid command line
    "generate": ("lm", ["prompt=The", "max_new_tokens=4", "temperature=0.5", "top_k=3", "seed=1"]),
    "translate": ("seq2seq", ["text=one", "num_beams=2", "batch_size=4"]),
    "predict": ("toy", ["input=[32,107,56,11.2]"]),
    "trace": ("toy", ["input=[32,107,56,11.2]", "format=json", "digits=3"]),
    "attention": ("lm", ["prompt=The", "head=0"]),
    "eval": ("toy", ["split=val"]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_command_line_answers_or_fails_in_keyed_lines(command, data, served, tmp_path_factory,
                                                                 monkeypatch):
    import importlib
    module = importlib.import_module(f"builder.cli.{command}")
    run, valid = COMMANDS[command]
    args = data.draw(arguments(valid, module.SPEC))
    if command == "attention":
        args.append(f"out={tmp_path_factory.mktemp('maps')}")
    err = io.StringIO()
    monkeypatch.setattr("sys.stdin", io.StringIO("one\n"))  # without prompt= or text=, the input is read here
    with time_limit(60), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            module.main([f"ckpt={served[run]}", *args])
        except SystemExit as e:
            assert e.code == 2, (args, err.getvalue())
            lines = err.getvalue().strip().splitlines()[1:]  # under "builder-x: N problems ..."
            assert lines and keyed_lines("\n".join(line.strip() for line in lines if not
                                                   line.strip().startswith("usage:"))), (args, err.getvalue())
        except BaseException as e:  # noqa: BLE001
            raise AssertionError(f"{args}: {type(e).__name__}: {e}") from e


@pytest.mark.parametrize("overrides, line", [
    (["experiment=toy_classifier", "data.examples=abc"], "data.examples: 'abc' is not allowed; expected list"),
    (["experiment=gpt_char", "adapters.name=[none]"], "adapters.name: ['none'] is not allowed; expected one of"),
    (["experiment=gpt_char", "~data.batch_size"], "data.batch_size: required"),
    (["experiment=gpt_char", "logger.csv=verbose"], "logger.csv: expected a mapping of its settings, got 'verbose'"),
])
def test_what_fuzzing_found_is_refused_in_one_line(overrides, line, compose):
    """Findings of benchmarks/fuzz.py, each once a traceback: a string for a list, a list for a name, a required
    key removed, a logger's settings that are not a mapping."""
    from builder.errors import ConfigError
    from builder.train.check import check
    with pytest.raises(ConfigError) as e:
        check(compose(overrides))
    assert any(p.startswith(line) for p in e.value.problems), e.value.problems


def test_a_logger_section_that_is_not_a_mapping_is_one_line():
    from builder.train.check import check_loggers
    assert check_loggers("{'csv': {}}") == [
        "logger: expected a mapping of loggers (logger=csv, logger=[tensorboard,wandb]), got \"{'csv': {}}\""]
