"""The test tiers hold: the inner loop cannot start a worker, and no test module imports another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import starts_a_worker

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([sys.executable, "-P", "-m", "sdtop.profiler.worker.forkserver"], True),
        ([sys.executable, "-P", "-m", "sdtop.profiler.worker.cell"], True),
        ([sys.executable, "-m", "sdtop.tui.cli", "run", "--steps", "2"], True),
        (["/venv/bin/sdtop", "run"], True),
        ([sys.executable, "-m", "sdtop.tui.cli", "export", "runs/x"], False),
        ([sys.executable, "-c", "import sdtop.tui.app"], False),
        ("sdtop run", False),  # a string is no argv of ours (and never goes through a shell)
    ],
)
def test_what_counts_as_starting_a_worker(argv: list[str] | str, expected: bool) -> None:
    assert starts_a_worker(argv) is expected


def test_an_unmarked_test_cannot_start_a_worker() -> None:
    with pytest.raises(AssertionError, match=r"starts a worker: mark it @pytest.mark.e2e"):
        subprocess.Popen([sys.executable, "-P", "-m", "sdtop.profiler.worker.forkserver"])


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(n.rsplit(".", 1)[-1].startswith("test_") for n in names):
                offenders.append(f"{path.relative_to(TESTS)}: {names[0]}")
    assert offenders == []
