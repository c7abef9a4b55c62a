"""sdtop lives under ``sdtop.*`` only: a user's own ``pipelines/``, ``profiler/`` or ``tui/``
folder (common names in ML repositories) never replaces sdtop's, in the parent or a worker."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sdtop.profiler.host.launcher import module_argv, stderr_tail

HOSTILE = ("pipelines", "profiler", "tui", "sdtop")


def _hostile_dir(root: Path) -> Path:
    """A working directory whose packages would break sdtop if it ever imported them."""
    root.mkdir(parents=True, exist_ok=True)
    for name in HOSTILE:
        pkg = root / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(f'raise ImportError("the user\'s own {name}/ was imported")\n')
    return root


@pytest.mark.parametrize("name", ["profiler", "tui", "pipelines"])
def test_no_top_level_package_of_sdtop_is_importable(tmp_path: Path, name: str) -> None:
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and f"No module named '{name}'" in proc.stderr
    ok = subprocess.run([sys.executable, "-c", f"import sdtop.{name}"], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_module_argv_keeps_the_working_directory_off_sys_path(tmp_path: Path) -> None:
    """What every worker is started with: a hostile folder in the cwd is never imported."""
    _hostile_dir(tmp_path)
    (tmp_path / "probe_mod.py").write_text("")
    argv = module_argv(sys.executable, "json.tool")
    proc = subprocess.run([*argv, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code = "import sys, importlib.util; print(importlib.util.find_spec('probe_mod') is None)"
    if sys.version_info >= (3, 11):
        assert argv[1] == "-P"
        out = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True)
        assert out.stdout.strip() == "True"


def test_stderr_tail_folds_the_last_lines_from_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("an earlier server's noise\n")
    offset = log.stat().st_size
    with open(log, "a") as fh:
        fh.write("Traceback (most recent call last):\n  File x\n\nModuleNotFoundError: No module named 'torch'\n")
    expected = "Traceback (most recent call last): | File x | ModuleNotFoundError: No module named 'torch'"
    assert stderr_tail(log, offset) == expected
    assert stderr_tail(log, log.stat().st_size) == ""
    assert stderr_tail(tmp_path / "missing.log", 0) == ""


@pytest.mark.e2e
def test_a_run_from_a_directory_with_hostile_packages(tmp_path: Path) -> None:
    """The issue's reproduction: `sdtop run` from inside a repository with its own packages."""
    cwd = _hostile_dir(tmp_path / "repo")
    sdtop = Path(sys.executable).with_name("sdtop")
    argv = [str(sdtop)] if sdtop.exists() else [sys.executable, "-P", "-m", "sdtop.tui.cli"]
    proc = subprocess.run(
        [*argv, "run", "--pipeline", "sd-txt2img", "--weights", "tiny", "--steps", "2", "--iterations", "1",
         "--warmup", "0", "--out", "s"],
        cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the user's own" not in proc.stderr
    with open(cwd / "s" / "summary.csv", newline="") as fh:
        assert [row["status"] for row in csv.DictReader(fh)] == ["ok"]
