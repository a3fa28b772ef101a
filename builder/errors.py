"""Configuration errors: every problem found, each on one line that starts with its config path."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from difflib import get_close_matches
from typing import Iterable, Iterator


class ConfigError(Exception):
    """One or more problems with a configuration; `problems` holds one line each."""

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class CheckpointError(ConfigError):
    """A checkpoint that cannot be found, read or trusted."""


class RunStopped(RuntimeError):
    """Training stopped for a reason its message states in one line (a non-finite loss, a process that
    stopped answering); the command prints that line and exits 1, without a traceback."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    match = get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


@contextmanager
def friendly_errors(command: str) -> Iterator[None]:
    """Print configuration errors as plain lines and exit 2, a stopped run's reason as one line and exit 1;
    a traceback only with HYDRA_FULL_ERROR=1."""
    try:
        yield
    except RunStopped as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{command}: {e}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 1))
    except ConfigError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        n = len(e.problems)
        print(f"{command}: {n} problem{'s' if n != 1 else ''} in the configuration:", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        sys.exit(2)
