"""``sdtop run`` end to end on tiny weights: real worker processes, real pipelines.

One matrix of every UNet pipeline (the seed's six) x {sdpa, classic} is run once per
test session (module fixture; the transformer pipelines are tests/test_e2e_dit.py's)
through the console entry point; the tests then read the session directory as a user would.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sdtop.pipelines.registry import PIPELINES
from sdtop.profiler.contract.events import SettingsApplied, StageTimed, StepTimed
from sdtop.profiler.host.session import Session
from sdtop.profiler.report import summary

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_NAMES = tuple(name for name, spec in PIPELINES.items() if spec.family == "unet")
STEPS = 3
ITERATIONS = 2


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "session"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdtop.tui.cli",
            "run",
            "--pipeline",
            ",".join(PIPELINE_NAMES),
            "--attention",
            "sdpa,classic",
            "--weights",
            "tiny",
            "--steps",
            str(STEPS),
            "--iterations",
            str(ITERATIONS),
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # the summary table in the seed's layout is printed last
    assert "| pipeline | sdpa | classic |" in proc.stdout
    return out


def test_every_cell_ran_and_the_files_are_there(session_dir: Path) -> None:
    for name in ("events.jsonl", "session.json", "summary.csv", "summary.md"):
        assert (session_dir / name).is_file()
    rows = list(csv.DictReader(io.StringIO((session_dir / "summary.csv").read_text())))
    # five single-stage pipelines and if-cascade's three stages, under two attention settings
    assert len(rows) == (5 + 3) * 2
    bad = [(r["pipeline"], r["stage"], r["attention"], r["status"]) for r in rows if r["status"] != "ok"]
    assert not bad
    for r in rows:
        assert float(r["it_per_s"]) > 0 and float(r["step_ms_p50"]) > 0
    info = json.loads((session_dir / "session.json").read_text())
    env = info["environment"]
    assert env["torch"].startswith("2.") and env["diffusers"] and env["python"]
    assert info["status"] == "complete"


def test_summary_rebuilt_from_events_equals_the_written_one(session_dir: Path) -> None:
    events = Session.open(session_dir).events()
    assert summary.to_csv(summary.rows(events)) == (session_dir / "summary.csv").read_bytes().decode()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "sdtop.tui.cli", "export", str(session_dir), "--format", "md"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert rebuilt == (session_dir / "summary.md").read_text()


def test_every_step_of_every_call_is_an_event(session_dir: Path) -> None:
    """Legacy-callback pipelines (IF stages, x4 upscaler) included."""
    events = Session.open(session_dir).events()
    stages = [e for e in events if isinstance(e, StageTimed)]
    steps = [e for e in events if isinstance(e, StepTimed)]
    assert {s.stage for s in stages} == {"main", "I", "II", "upscaler"}
    for st in stages:
        mine = [s for s in steps if (s.cell, s.call, s.stage) == (st.cell, st.call, st.stage)]
        assert [s.step for s in mine] == list(range(st.steps))
        assert st.steps >= STEPS
        assert abs(sum(s.ms for s in mine) / 1000.0 - st.loop_s) < 1e-6 + 1e-3 * st.loop_s
    calls = {(s.cell, s.call) for s in stages}
    assert len(calls) == 12 * (1 + ITERATIONS)


def test_attention_is_verifiably_applied(session_dir: Path) -> None:
    events = Session.open(session_dir).events()
    cells = {e.cell: e.settings for e in events if e.KIND == "cell_started"}
    applied = {e.cell: e for e in events if isinstance(e, SettingsApplied)}
    assert len(applied) == 12
    for cell, ev in applied.items():
        classes = {c for v in ev.attention_processors.values() for c in v}
        assert classes, ev
        if cells[cell]["attention"] == "sdpa":
            assert all(c.endswith("2_0") for c in classes), classes
        else:
            assert not any(c.endswith("2_0") for c in classes), classes
