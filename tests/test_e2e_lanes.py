"""``--lanes`` end to end: real fork servers, one per lane, on tiny weights.

A 6-cell matrix runs once in order and once on two lanes: the same cells with the same
statuses; each lane's workers stay on their share of the cores; a stop reaches both lanes
at once, and ``--resume`` runs what every lane left unfinished.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sdtop.pipelines.settings import MatrixSpec, Placement
from sdtop.profiler.contract.events import (
    CellFinished,
    CellStarted,
    Environment,
    Event,
    SessionFinished,
    SessionStarted,
    StepTimed,
)
from sdtop.profiler.host.runner import prepare, resume
from sdtop.profiler.host.session import Session
from sdtop.profiler.report.render import finalize

ROOT = Path(__file__).resolve().parent.parent
#: 6 cells, each a few tenths of a second of work on a tiny UNet.
MATRIX = ["--pipeline", "sd-txt2img", "--weights", "tiny", "--attention", "sdpa,classic", "--batch", "1,2,3",
          "--steps", "4", "--iterations", "2", "--warmup", "1"]  # fmt: skip
#: What a row is, speed aside: these must be equal whatever ran the cells.
SAME = ("cell", "pipeline", "weights", "attention", "compile_mode", "dtype", "batch_size", "height", "width",
        "steps", "status", "baseline_cell", "psnr_db")  # fmt: skip


def _run(out: Path, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "sdtop.tui.cli", "run", *MATRIX, *extra, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.stderr


def _rows(out: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    return [{k: r[k] for k in SAME} for r in rows]


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="needs CPU affinity")
def test_two_lanes_give_the_sequential_runs_cells_and_statuses(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _run(one)
    err = _run(two, "--lanes", "2")
    assert "(2 lanes)" in err
    assert _rows(two) == _rows(one)
    assert {r["status"] for r in _rows(two)} == {"ok"}
    events = Session.open(two).events()
    started = next(e for e in events if isinstance(e, SessionStarted))
    assert [lane["label"] for lane in started.lanes] == ["CPU 0", "CPU 1"]
    lane_of = {e.cell: e.lane for e in events if isinstance(e, CellStarted)}
    assert set(lane_of.values()) == {0, 1}  # both lanes took cells
    # each worker ran on its lane's core only, with one torch thread
    cpus = {e.cell: e.data["cpus"] for e in events if isinstance(e, Environment) and "cpus" in e.data}
    assert cpus == {cell: str(lane) for cell, lane in lane_of.items()}
    assert (two / "worker.log").exists() and (two / "worker-lane1.log").exists()


def test_a_stop_reaches_both_lanes_within_two_seconds_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "s"
    matrix = MatrixSpec(
        pipelines=("sd-txt2img",), weights=("tiny",), attention=("sdpa", "classic"), batch_sizes=(1, 2),
        steps=(150,), iterations=1, warmup=0,
    )  # fmt: skip
    stepping: set[int] = set()
    both = threading.Event()

    def observe(ev: Event) -> None:
        if isinstance(ev, StepTimed):
            stepping.add(ev.cell)
            if len(stepping) >= 2:
                both.set()

    runner = prepare(matrix, out, on_event=observe, derive=finalize, placement=Placement(lanes=2), sample_ms=0)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(runner.run()))
    t.start()
    assert both.wait(120), "both lanes should be stepping"
    t0 = time.monotonic()
    runner.stop()
    t.join(30)
    took = time.monotonic() - t0
    assert result == ["interrupted"]
    assert took <= 2.0, f"stopping two lanes took {took:.2f} s"
    events = Session.open(out).events()
    finished = {e.cell: e.status for e in events if isinstance(e, CellFinished)}
    assert sorted(finished) == sorted(stepping) and set(finished.values()) == {"interrupted"}
    assert isinstance(events[-1], SessionFinished) and events[-1].status == "interrupted"

    # --resume: the same two lanes (recorded), every unfinished cell of both lanes
    again = resume(out, derive=finalize, sample_ms=0)
    assert again.placement == Placement(lanes=2) and len(again.lanes) == 2
    assert sorted(again.queue) == [0, 1, 2, 3]
    assert {c.steps for c in again.cells} == {150}  # the recorded specs, as they were
    assert again.run() == "complete"
    events = Session.open(out).events()
    last: dict[int, str] = {}
    for e in events:
        if isinstance(e, CellFinished):
            last[e.cell] = e.status
    assert last == {0: "ok", 1: "ok", 2: "ok", 3: "ok"}
    resumed = [e for e in events if isinstance(e, SessionStarted)]
    assert len(resumed) == 2 and resumed[1].resumed and len(resumed[1].lanes) == 2
