"""tests/gpu/ for the tests that check it on CPU: the ``sdtop run`` lines of run.sh, and its
Python scripts loaded by path."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent / "gpu" / "run.sh"


def load_script(name: str) -> ModuleType:
    """A Python script of tests/gpu (not a package: the card runs them by path) as a module."""
    path = SCRIPT.with_name(name)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_commands() -> list[list[str]]:
    """Each ``sdtop_run NAME SECONDS ARGS...`` line's ARGS (continuation lines joined): the
    arguments ``sdtop run`` gets on a card."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line.strip(), comments=True) if "sdtop_run " in line else []
        while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
            words = words[1:]
        if words[:1] == ["sdtop_run"]:
            commands.append(words[3:])
    return commands
