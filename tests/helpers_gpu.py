"""The ``sdtop run`` lines of tests/gpu/run.sh, for the tests that check them on CPU."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "gpu" / "run.sh"


def run_commands() -> list[list[str]]:
    """Each ``$SDTOP run ...`` line's arguments after ``run``, continuation lines joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.strip()
        line = re.sub(r"^([A-Z_]+=\S+ )+", "", line)
        if line.startswith("$SDTOP run "):
            words = shlex.split(line.split("2>&1", 1)[0])
            commands.append([w.replace('"', "") for w in words[2:]])
    return commands
