"""The GPU check script cannot run its card checks here; everything around it can be checked.

Every ``sdtop run`` of tests/gpu/run.sh is parsed with the CLI's own parser and validation (as
on a card, and as its CPU rehearsal rewrites it), so a renamed option or value is caught on
CPU, not on a scarce GPU lease; the rehearsal itself runs end to end (``--dry-run``).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from sdtop.tui import cli

from tests.helpers_gpu import SCRIPT, load_script, run_commands

checks_py = load_script("checks.py")


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_script_runs_what_issue_12_asks_for() -> None:
    """Random weights in fp16: the six pipelines eager, SD 1.5 under every attention setting,
    an OOM at batch 16, reduce-overhead on sd-txt2img (with a new size) and sd-controlnet."""
    cmds = [c for c in (" ".join(a) for a in run_commands()) if "--dtype bf16" not in c]
    assert all("--weights random" in c and "--dtype fp16" in c for c in cmds)
    assert any("sd-txt2img,sd-img2img,sd-inpaint,sd-controlnet,if-cascade,sdxl-txt2img" in c for c in cmds)
    assert any("--attention sdpa,classic,sdpa-flash,sdpa-efficient,sdpa-cudnn,sdpa-math" in c for c in cmds)
    assert any("--batch 1,16" in c for c in cmds)
    assert any("--compile reduce-overhead --resolutions 512x512,768x768" in c for c in cmds)
    assert any("--pipeline sd-controlnet" in c and "--compile reduce-overhead" in c for c in cmds)
    text = SCRIPT.read_text()
    for check in ("all-ok", "kernels", "cudagraphs", "recompile", "oom", "steps", "fork-safe", "overhead"):
        assert f"check {check} " in text, check


def test_the_script_runs_what_issue_13_asks_for() -> None:
    """One line per new pipeline (random weights, bf16, eager and regional compile) and one
    float8 cell beside its bf16 baseline, each judged by its own check."""
    cmds = [c for c in (" ".join(a) for a in run_commands()) if "--dtype bf16" in c]
    for pipeline in ("flux-txt2img", "sd3-txt2img", "qwen-image", "wan-t2v"):
        line = next(c for c in cmds if f"--pipeline {pipeline} " in c and "--quant" not in c)
        assert "--weights random" in line and "--compile none,default --compile-scope regional" in line
    assert any("--quant none,fp8dq" in c for c in cmds)
    text = SCRIPT.read_text()
    assert text.count("check levers ") == 4 and "check fp8 " in text


def test_the_script_runs_what_issue_14_asks_for() -> None:
    """One profiled SD 1.5 cell pair (sdpa beside classic) whose kernels the check reads."""
    line = next(" ".join(a) for a in run_commands() if "--profile" in a)
    assert "--pipeline sd-txt2img " in line and "--attention sdpa,classic" in line and "--weights random" in line
    assert "check profile " in SCRIPT.read_text()


def test_the_script_runs_the_lane_path_on_its_card() -> None:
    """``--gpus all`` (one card lent: the lane path with one lane) on a small SD 1.5 matrix,
    judged by ``check lanes``; the rehearsal runs the same lane path as two CPU lanes."""
    argv = next(a for a in run_commands() if "--gpus" in a)
    line = " ".join(argv)
    assert "--pipeline sd-txt2img " in line and "--weights random" in line and "--gpus all" in line
    placement = cli.placement_from_args(cli.build_run_parser().parse_args(argv))
    assert placement.all_gpus and placement.wants_gpus
    dry = cli.build_run_parser().parse_args(checks_py.dry_argv(argv))
    placement = cli.placement_from_args(dry)
    assert placement.lanes == 2 and not placement.wants_gpus and dry.device == "cpu"
    text = SCRIPT.read_text()
    assert 'check lanes "$S/gpus"' in text and "[eager|compile|dit|profile|gpus|all]" in text


@pytest.mark.parametrize("argv", run_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_run_line_is_valid_input_on_a_card_and_in_the_rehearsal(argv: list[str]) -> None:
    args = cli.build_run_parser().parse_args(argv)
    assert cli.matrix_from_args(args).n_cells(cuda_available=True) >= 1
    cli.placement_from_args(args)  # --gpus and the like: BadInput on a bad value or pair
    dry = list(checks_py.dry_argv(argv))
    assert "--device" in dry and "random" not in dry
    dry_args = cli.build_run_parser().parse_args(dry)
    assert cli.matrix_from_args(dry_args).n_cells(cuda_available=False) >= 1
    cli.placement_from_args(dry_args)


def test_without_a_gpu_it_says_so_and_fails_at_once(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout.startswith("FAIL no GPU on this machine")


#: The checks each part of the script makes (a dry run makes them all on this CPU).
PART_CHECKS = {
    "eager": ("all-ok", "fork-safe", "kernels", "steps", "oom"),
    "compile": ("cudagraphs", "recompile", "steps"),
    "dit": ("levers", "fp8", "fork-safe"),
    "profile": ("profile", "report"),
    "gpus": ("lanes", "fork-safe"),
}


def test_the_rehearsal_covers_every_part_and_check() -> None:
    """The parts rehearsed one by one below are the script's parts (``all`` is every one of
    them), and between them they make every check checks.py has."""
    usage = re.search(r"usage: bash tests/gpu/run.sh \[([a-z|]+)\]", SCRIPT.read_text())
    assert usage is not None
    assert set(usage.group(1).split("|")) == {*PART_CHECKS, "all"}
    made = {c for checks in PART_CHECKS.values() for c in checks}
    assert made == set(checks_py.CHECKS) - {"overhead"}  # overhead: a card's benchmark, never dry


@pytest.mark.e2e
@pytest.mark.parametrize("part", list(PART_CHECKS))
def test_the_cpu_rehearsal_passes_every_check_it_can_make(part: str, tmp_path: Path) -> None:
    """``--dry-run``: the same steps on tiny weights on this CPU, judged by the same checks
    (those only a card can pass are SKIP lines); exit 0, and results.md says what ran. One
    part per test, so the parts spread over the suite's workers."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHONPATH": ""}
    proc = subprocess.run(
        ["bash", str(SCRIPT), part, "--dry-run"], capture_output=True, text=True, env=env, timeout=600
    )
    results = (out / "results.md").read_text()
    assert proc.returncode == 0, results + proc.stderr[-2000:] + (out / "log.txt").read_text()[-3000:]
    assert "FAIL" not in results
    for check in PART_CHECKS[part]:
        assert f"PASS {check}:" in results, check
    assert "failed checks and steps: 0" in results and (out / "sessions.tgz").stat().st_size > 0
