"""The GPU check script cannot run here; everything around it can be checked.

Every ``sdtop run`` line of tests/gpu/run.sh is parsed with the CLI's own parser and
validation, so a renamed option or value is caught on CPU, not on a scarce GPU lease.
"""

from __future__ import annotations

import subprocess

import pytest
from sdtop.tui import cli

from tests.helpers_gpu import SCRIPT, run_commands


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_script_has_the_seed_checks() -> None:
    cmds = [" ".join(c) for c in run_commands()]
    assert any("--attention classic,sdpa --compile none,reduce-overhead" in c and "--steps 50" in c for c in cmds)
    assert any("--pipeline sd-controlnet" in c for c in cmds)


@pytest.mark.parametrize("argv", run_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_run_line_is_valid_input(argv: list[str]) -> None:
    args = cli.build_run_parser().parse_args(argv)
    matrix = cli.matrix_from_args(args)
    assert matrix.n_cells(cuda_available=True) >= 1
