"""The GPU check script cannot run here; everything around it can be checked.

Every ``sdtop run`` line of tests/gpu/run.sh is parsed with the CLI's own parser and
validation, so a renamed option or value is caught on CPU, not on a scarce GPU lease.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from sdtop.tui import cli

SCRIPT = Path(__file__).resolve().parent / "gpu" / "run.sh"


def _run_commands() -> list[list[str]]:
    text = SCRIPT.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.strip()
        line = re.sub(r"^([A-Z_]+=\S+ )+", "", line)
        if line.startswith("$SDTOP run "):
            words = shlex.split(line.split("2>&1", 1)[0])
            commands.append([w.replace('"', "") for w in words[2:]])
    return commands


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_script_has_the_seed_checks() -> None:
    cmds = [" ".join(c) for c in _run_commands()]
    assert any("--attention classic,sdpa --compile none,reduce-overhead" in c and "--steps 50" in c for c in cmds)
    assert any("--pipeline sd-controlnet" in c for c in cmds)


@pytest.mark.parametrize("argv", _run_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_run_line_is_valid_input(argv: list[str]) -> None:
    args = cli.build_run_parser().parse_args(argv)
    matrix = cli.matrix_from_args(args)
    assert matrix.n_cells() >= 1
