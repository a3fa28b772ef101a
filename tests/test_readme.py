"""The README and every command's --help are tested: each shell command in the README's code blocks and each
example line of a command's docstring runs (builder-train with --check: composed and checked, shapes included,
nothing trained), against tiny runs made here whose paths stand in for outputs/latest, RUN and the like; the
README's Python blocks run too. A command that cannot run here is in NOT_RUN with the reason."""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

NOT_RUN = {  # a command that starts with one of these is not run, for the reason given
    "pip install": "installs packages: what CI itself does before the tests",
    "python -m pytest": "the test suite itself",
    "tensorboard": "a dashboard server; tests/test_loggers.py reads the event files it would show",
    "mlflow ui": "a dashboard server; tests/test_loggers.py reads the SQLite store it would show",
    "wandb sync": "uploads to wandb.ai, which this machine cannot reach; tests/test_loggers.py checks the files",
    "python benchmarks/": "a benchmark: minutes of measurement, run apart from the suite",
}
NEEDS_SERVER = "tracking_uri=http://HOST:PORT"
MY_BLOCKS = """from builder import block


@block("twice")
def twice(x):
    \"\"\"Double the input.\"\"\"
    return 2 * x
"""  # a tracking server: tests/test_loggers.py starts a real one


def shell_commands(text: str) -> list[str]:
    """Command lines of the ```bash blocks (continuations joined, comments and blank lines dropped)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def docstring_examples() -> list[tuple[str, str]]:
    """(module, example line) for each command module's docstring line that runs a builder command."""
    import ast
    found = []
    for path in sorted((ROOT / "builder" / "cli").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        for line in doc.splitlines():
            if line.startswith("    ") and "builder-" in line:
                found.append((path.stem, line.strip()))
    return found


def not_run(line: str) -> str | None:
    reason = next((why for start, why in NOT_RUN.items() if line.startswith(start)), None)
    return reason or ("needs a running MLflow tracking server" if NEEDS_SERVER in line else None)


# --- the tiny runs and files the commands are pointed at -------------------------------------------------

TINY = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.max_epochs=-1",
        "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null", "trainer.max_steps=2"]


@pytest.fixture(scope="module")
def world(toy_run, compose, tmp_path_factory):
    """A working directory holding what the README's commands name, and {placeholder: path}."""
    from builder.train.run import train
    work = tmp_path_factory.mktemp("readme")
    runs = {"toy": toy_run.dir}
    (work / "reviews.tsv").write_text("pos\ta very good film\nneg\ta bad film\n" * 8)
    for name, overrides in {
        "lm": ["experiment=gpt_char", "model.n_layer=2", "model.n_head=2", "model.d_model=32", "model.block_size=32",
               "data.max_val_windows=4", "task.sample_tokens=4"],
        "seq2seq": ["experiment=translate_numbers", "model.n_encoder_layers=3", "model.n_decoder_layers=3",
                    "model.d_model=16", "model.n_head=2", "model.d_ff=32", "data.n_train=200", "data.n_val=16",
                    "data.n_test=16", "data.tokenizer.kind=char"],
        "bert_classifier": ["experiment=bert_classifier", f"data.path={work / 'reviews.tsv'}", "model.n_layer=1",
                            "model.d_model=16", "model.d_ff=32", "model.n_head=2", "model.block_size=24"],
    }.items():
        run = work / "runs" / name
        extra = [f"data.cache_dir={work / 'cache'}"] if name == "lm" else []
        train(compose([*overrides, *TINY, *extra, f"run_dir={run}"]))
        runs[name] = run
    outputs = work / "outputs"
    for dated in ("2025-01-01/12-00-00", "2026-01-02/10-00-00", "2026-01-02/11-30-00"):
        shutil.copytree(runs["toy"], outputs / dated)
    sweep = outputs / "multirun" / "2026-01-02" / "10-00-00"
    for trial in ("0", "1"):
        shutil.copytree(runs["toy"], sweep / trial)
    (outputs / "latest").symlink_to("2026-01-02/11-30-00")
    hf_dirs(work / "path" / "to")
    user_conf(work / "my_conf")
    (work / "my_pkg").mkdir()
    (work / "my_pkg" / "__init__.py").write_text("")
    (work / "my_pkg" / "blocks.py").write_text(MY_BLOCKS)
    sys.path.insert(0, str(work))
    (work / "my_pairs.tsv").write_text("".join(f"{i}\tzahl {i}\n" for i in range(60)))
    (work / "prompt.txt").write_text("The")
    (work / "prompts.txt").write_text("The\nA longer prompt\n")
    (work / "my_text.txt").write_text("The capital of France is Paris. " * 50)
    (work / "sentences.txt").write_text("one\nseventeen\n")
    return work, runs, sweep


def hf_dirs(where: Path) -> None:
    """Tiny random Qwen2 and Mistral directories under the names the README uses, with a tokenizer."""
    import transformers

    from builder.tokenizer import bpe_tokenizer
    tok = bpe_tokenizer(["The capital of France is Paris. " * 20], 300)
    for name, cls, config in (
            ("Qwen2.5-0.5B", transformers.Qwen2ForCausalLM, transformers.Qwen2Config),
            ("Mistral-7B-v0.1", transformers.MistralForCausalLM, transformers.MistralConfig)):
        cfg = config(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        cls(cfg).save_pretrained(where / name)
        tok.save(where / name / "tokenizer.json")


def user_conf(where: Path) -> None:
    """The README's own-config example: a GPT whose input is `tokens` and embedding node `wte`."""
    import yaml
    from omegaconf import OmegaConf

    from builder.config import CONF_DIR
    text = yaml.safe_dump(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "gpt.yaml"), resolve=False),
                          sort_keys=False)
    for old, new in (("in: tok\n", "in: wte\n"), ("tie: tok", "tie: wte"), ("- tok\n", "- wte\n"),
                     ("\n  tok:", "\n  wte:"), ("idx", "tokens")):
        text = text.replace(old, new)
    (where / "model").mkdir(parents=True)
    (where / "experiment").mkdir()
    (where / "model" / "my_gpt.yaml").write_text(text)
    block = re.search(r"# my_conf/experiment/mine.yaml\n(.*?)```", README, re.S).group(1)
    (where / "experiment" / "mine.yaml").write_text(block)


def pointed(line: str, world) -> str:
    """The line with its placeholders replaced by the tiny runs and files that fit the command."""
    work, runs, sweep = world
    program = line.split()[0] if "|" not in line else line.split("|")[1].split()[0]
    if program in ("builder-translate",) or "text=" in line:
        run = runs["seq2seq"]
    elif program in ("builder-generate", "builder-attention") or "prompt" in line or "format=hf" in line \
            or "format=gguf" in line:
        run = runs["lm"]
    else:
        run = runs["toy"]
    line = line.replace("ckpt=outputs/latest", f"ckpt={run}").replace("outputs/latest/config.yaml",
                                                                      f"{run}/config.yaml")
    for name, path in (("GPT_RUN", runs["lm"]), ("TRANSLATE_RUN", runs["seq2seq"]),
                       ("BERT_CLASSIFIER", runs["bert_classifier"]), ("SWEEP_DIR", sweep),
                       ("RUN_DIR", run), ("<that sweep dir>", sweep), ("model_export/", work / "exported"),
                       ("path/to/hf_dir", work / "path" / "to" / "Qwen2.5-0.5B"),
                       ("path/to/model.yaml", ROOT / "conf" / "model" / "mlp.yaml"),
                       ("path/to/run/config.yaml", runs["toy"] / "config.yaml"), ("=DIR", f"={work / 'dir'}")):
        line = line.replace(name, str(path))
    return re.sub(r"\bRUN\b", str(run), line)


def run_line(line: str, world) -> str:
    """Run one command line in the working directory; its output (a failure raises)."""
    work, _, _ = world
    line = re.sub(r"\s{2,}#.*$", "", line)  # a trailing comment
    stdin = ""
    if "|" in line:
        feed, line = (part.strip() for part in line.split("|", 1))
        stdin = subprocess.run(["bash", "-c", feed], capture_output=True, text=True, check=True).stdout
    if " < " in line:
        line, name = (part.strip() for part in line.split(" < ", 1))
        stdin = (work / name).read_text()
    line = line.split(" > ")[0]
    argv = shlex.split(line, comments=True)
    if argv[0] == "python" and argv[1] == "-c":
        out = subprocess.run([sys.executable, "-c", argv[2]], capture_output=True, text=True, cwd=work)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout
    assert argv[0].startswith("builder-"), line
    module = importlib.import_module(f"builder.cli.{argv[0].removeprefix('builder-')}")
    args = argv[1:]
    if argv[0] == "builder-train":
        args = ["--check", *args]
    out, err = io.StringIO(), io.StringIO()
    previous, old_argv = os.getcwd(), sys.argv
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.stdin = io.StringIO(stdin)
            try:
                if argv[0] == "builder-train":
                    sys.argv = [argv[0], *args]
                    module.main()
                else:
                    module.main(args)
            except SystemExit as e:
                assert e.code in (0, None), f"{line}\n{err.getvalue()[-2000:]}"
    finally:
        os.chdir(previous)
        sys.argv, sys.stdin = old_argv, sys.__stdin__
        os.environ.pop("BUILDER_CHECK_ONLY", None)
    return out.getvalue()


LINES = shell_commands(README)


@pytest.mark.parametrize("line", LINES, ids=[f"{i:02d} {c[:60]}" for i, c in enumerate(LINES)])
def test_readme_command(line, world):
    reason = not_run(line)
    if reason:
        pytest.skip(f"not run: {reason}")
    run_line(pointed(line, world), world)


EXAMPLES = docstring_examples()


@pytest.mark.parametrize("module, line", EXAMPLES, ids=[f"{m}: {c[:50]}" for m, c in EXAMPLES])
def test_help_example(module, line, world):
    if line.startswith(f"builder-{module}:"):
        return  # the docstring's first line names the command
    run_line(pointed(line, world), world)


def test_every_command_has_help_with_its_arguments(capsys):
    for path in sorted((ROOT / "builder" / "cli").glob("*.py")):
        module = importlib.import_module(f"builder.cli.{path.stem}")
        if not hasattr(module, "main") or path.stem == "train":
            continue
        module.main(["--help"])
        out = capsys.readouterr().out
        assert f"builder-{path.stem}" in out
        spec = getattr(module, "SPEC", None)
        if spec:
            assert all(key in out for key in spec), path.stem


PYTHON = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("code", PYTHON, ids=[f"python block {i}" for i in range(len(PYTHON))])
def test_readme_python(code, world, tmp_path):
    import runpy
    work, runs, _ = world
    file = tmp_path / f"readme_block_{abs(hash(code))}.py"  # a module file: blocks read their own source
    file.write_text(code)
    previous = os.getcwd()
    os.chdir(work)
    try:
        runpy.run_path(str(file), init_globals={"gpt_run": runs["lm"], "translate_run": runs["seq2seq"]})
    finally:
        os.chdir(previous)


def test_a_split_a_data_source_lacks_is_one_line(world, capsys):
    _, runs, _ = world
    from builder.cli import eval as eval_cli
    with pytest.raises(SystemExit) as e:
        eval_cli.main([f"ckpt={runs['lm']}", "split=test"])
    assert e.value.code == 2
    assert "split: the text data source has no test split; evaluate with split=val" in capsys.readouterr().err


def source_text() -> str:
    files = [p for p in (ROOT / "builder").rglob("*.py") if p.name != "settings.py"]
    return "\n".join(p.read_text() for p in files + list((ROOT / "blocks").glob("*.py")))


EXEMPT = ("trainer.", "optim.optimizer.", "model.", "hydra.", "logger.", "task.inputs.", "task.outputs.",
          "task.sizes.", "sweep.", "cluster.")  # read by Lightning, torch, Hydra, the graph or a binding map


def leaf_keys(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaf_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    elif isinstance(node, list):
        for item in node:
            yield from leaf_keys(item, prefix)


def test_every_shipped_config_key_is_read_by_the_code():
    """A key no module reads would be a setting that does nothing: each one must be named in the code."""
    from omegaconf import OmegaConf

    from builder.config import compose
    code = source_text()
    unread = set()
    for experiment in sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")):
        cfg = OmegaConf.to_container(compose([f"experiment={experiment}"]), resolve=False)
        for key in set(leaf_keys(cfg)):
            if key.startswith(EXEMPT):
                continue
            name = key.rstrip(".").split(".")[-1]
            if not re.search(rf"[\"'.]{re.escape(name)}\b", code):
                unread.add(f"{experiment}: {key}")
    assert not unread, sorted(unread)


def test_files_named_in_comments_and_docs_exist():
    named = re.compile(r"\b((?:conf|builder|blocks|benchmarks|docs|tests)/[\w./-]+\.(?:yaml|py|md|png))")
    texts = {p: p.read_text() for p in [ROOT / "README.md", *(ROOT / "conf").rglob("*.yaml"),
                                        *(ROOT / "builder").rglob("*.py"), *(ROOT / "docs").glob("*.md")]}
    missing = sorted({f"{p.relative_to(ROOT)}: {m}" for p, text in texts.items() for m in named.findall(text)
                      if not (ROOT / m).exists() and "*" not in m})
    assert not missing, missing


DEFAULT_CLAIMS = [r"`([\w.]+)`[^`()]{0,40}\(default ([\w.-]+)\)", r"`([\w.]+)=([\w.-]+)` \(the default\)"]


def configured_default(key: str):
    """The value `key` has in the composed base config, or in the first option of its group that sets it."""
    from omegaconf import OmegaConf

    from builder.config import CONF_DIR, compose
    value = OmegaConf.select(compose([]), key)
    if value is None and "." in key:
        group, rest = key.split(".", 1)
        for option in sorted((CONF_DIR / group).glob("*.yaml")):
            value = OmegaConf.select(OmegaConf.load(option), rest)
            if value is not None:
                break
    return value


def test_defaults_the_readme_states_are_the_configs():
    """A README sentence "`key` ... (default V)" or "`key=V` (the default)" must agree with the shipped configs,
    so changing a default without the README fails here."""
    claims = [m for pattern in DEFAULT_CLAIMS for m in re.findall(pattern, README)]
    assert len(claims) >= 3, claims
    wrong = [(key, said, configured_default(key)) for key, said in claims
             if str(configured_default(key)) != said]
    assert not wrong, wrong
