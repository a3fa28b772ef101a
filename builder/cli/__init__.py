"""Command-line entry points."""
from __future__ import annotations

import sys
from typing import Any, Callable

from builder.errors import friendly_errors
from builder.settings import describe


def command(name: str, doc: str | None, body: Callable[[list[str]], Any], argv: list[str] | None = None,
            spec: dict[str, Any] | None = None) -> None:
    """A command's entry point: -h/--help prints its docstring and, from `spec`, every argument with its type,
    default and range; configuration problems print as lines and exit 2 (no traceback unless
    HYDRA_FULL_ERROR=1). Returns nothing, so no value becomes the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(doc)
        if spec:
            print("arguments (key=value):\n" + "\n".join(describe(spec)))
        return
    with friendly_errors(name):
        body(argv)
