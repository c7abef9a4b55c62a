"""The ``sdtop run`` lines of tests/gpu/run.sh, for the tests that check them on CPU."""

from __future__ import annotations

import shlex
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "gpu" / "run.sh"


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
