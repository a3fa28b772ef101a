"""builder-predict: run a trained model on inputs given on the command line.

    builder-predict ckpt=RUN_DIR input=[32,107,56,11.2]
    builder-predict ckpt=model_export/ input=[[32,107,56,11.2],[241,200,4,59.5]]
    builder-predict ckpt=BERT_CLASSIFIER text="a very good film"    # a classifier of texts (verbatim)

ckpt= is a run directory (its best checkpoint), a .ckpt file or an export directory. allow_imports=true lets
the model's user block modules be imported.
"""
from __future__ import annotations

from builder.cli import command
from builder.cli.args import parse_args, take_raw
from builder.errors import ConfigError
from builder.settings import S

SPEC = {"ckpt": S("Any", doc="a run directory, .ckpt file or export directory"),
        "input": S("list | None", None, doc="one row [..] or several [[..], [..]] of raw values"),
        "text": S("str | None", None, doc="one text, for a classifier with a tokenizer (taken verbatim)"),
        "allow_imports": S("bool", False)}


def main(argv: list[str] | None = None) -> None:
    command("builder-predict", __doc__, _main, argv, SPEC)


def _main(argv: list[str]) -> None:
    raw, rest = take_raw(argv, ("text",))
    args = parse_args(rest, SPEC)
    if args["input"] is None and "text" not in raw:
        raise ConfigError("input: required, e.g. input=[32,107,56,11.2] (or text=\"...\" for a classifier of texts)")
    # deferred: config errors are reported before torch is imported
    from builder.serve.api import Classifier, as_input, load
    model = load(str(args["ckpt"]), allow_imports=bool(args["allow_imports"]))
    if not isinstance(model, Classifier):
        raise ConfigError(f"ckpt: builder-predict handles classifiers; this model's task is '{model.task}'")
    if "text" in raw:
        labels, probs = model.predict([raw["text"]])
    else:
        name = model.roles.inputs["features"]
        spec = model.model.input_specs[name]
        labels, probs = model.predict(as_input("input", args["input"], name, spec, one_row=True))
    classes = model.classes
    for label, row in zip(labels, probs.tolist()):
        shown = ", ".join(f"{c} {p:.4f}" for c, p in zip(classes, row))
        print(f"{label}  ({shown})")


if __name__ == "__main__":
    main()
