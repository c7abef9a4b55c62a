"""Worker paths that a clean matrix does not take: unsupported attention, weights that
cannot be had, the portable launcher, a device that is not there. Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sdtop.profiler.contract.events import Error, SettingsApplied, WorkerStarted
from sdtop.profiler.host.session import Session

ROOT = Path(__file__).resolve().parent.parent
Mixed = tuple[subprocess.CompletedProcess[str], Path]


def sdtop(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdtop.tui.cli", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the seed's runwayml id was removed from the hub


def fake_cache(root: Path) -> Path:
    """A hub cache whose SD 1.5 snapshot holds a model_index.json and no weights: the
    parent's preflight finds the model, and only the worker learns that it cannot load it."""
    snap = root / f"models--{SD15.replace('/', '--')}" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Mixed:
    out = tmp_path_factory.mktemp("mixed") / "s"
    cache = fake_cache(tmp_path_factory.mktemp("cache"))
    proc = sdtop(
        "run", "--pipeline", "sd-txt2img", "--weights", "hub,tiny",
        "--attention", "xformers,sdpa-efficient,sdpa-math",
        "--steps", "2", "--iterations", "1", "--out", str(out),
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)},
    )  # fmt: skip
    return proc, out


def test_unreachable_weights_are_one_error_line_and_exit_2(mixed: Mixed) -> None:
    proc, out = mixed
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("sdtop: error:")]
    assert len(errors) == 1
    assert f"cannot load {SD15!r}" in errors[0]
    assert "use --weights random" in errors[0]
    assert "Traceback" not in proc.stderr
    # and the session (the tiny cells' results) is complete on disk
    assert (out / "summary.csv").exists()


def test_a_hub_model_not_on_this_disk_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """The preflight: no cell runs, not even the tiny ones, and nothing is written."""
    out = tmp_path / "s"
    proc = sdtop(
        "run", "--pipeline", "sd-txt2img", "--weights", "hub,tiny", "--steps", "1", "--out", str(out),
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")},
    )  # fmt: skip
    assert proc.returncode == 2
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"sdtop: error: --weights hub: {SD15!r} is not on this disk")
    assert "use --weights random or tiny, or download it first" in errors[0]
    assert not out.exists()


def test_attention_that_cannot_run_is_a_not_supported_cell(mixed: Mixed) -> None:
    _, out = mixed
    events = Session.open(out).events()
    cells = {e.cell: e.settings for e in events if e.KIND == "cell_started"}
    status = {e.cell: e.status for e in events if e.KIND == "cell_finished"}
    by = {(cells[i]["weights"], cells[i]["attention"]): status[i] for i in cells}
    assert by[("tiny", "xformers")] == "not supported: xformers not installed"
    assert by[("tiny", "sdpa-efficient")].startswith("not supported: no SDPA kernel of that kind can run this")
    assert by[("tiny", "sdpa-math")] == "ok"
    for attention in ("xformers", "sdpa-efficient", "sdpa-math"):
        assert by[("hub", attention)].startswith("error: cannot load")
    kinds = {e.error_kind for e in events if isinstance(e, Error)}
    assert kinds == {"unsupported", "bad-input"}
    applied = [e for e in events if isinstance(e, SettingsApplied) and cells[e.cell]["attention"] == "sdpa-math"]
    assert applied and applied[0].sdpa_backend == "MATH"


def test_the_subprocess_launcher_runs_a_cell(tmp_path: Path) -> None:
    out = tmp_path / "s"
    proc = sdtop("run", "--pipeline", "sd-txt2img", "--steps", "2", "--iterations", "1", "--launcher", "subprocess",
                 "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = Session.open(out).events()
    started = [e for e in events if isinstance(e, WorkerStarted)]
    assert [e.launcher for e in started] == ["subprocess"]
    assert [e.status for e in events if e.KIND == "cell_finished"] == ["ok"]


def test_cuda_on_a_machine_without_it_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "s"
    proc = sdtop("run", "--device", "cuda", "--steps", "1", "--out", str(out))
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("sdtop: error:")]
    assert err == ["sdtop: error: --device cuda: no CUDA device is available to the worker's torch; use --device cpu"]
    assert not out.exists()
