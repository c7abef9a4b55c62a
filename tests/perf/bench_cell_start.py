"""Benchmark 3, cell start: from a cell's start to its first step event.

Why: a matrix is many cells, and what a user waits for between them is fork + build +
settings + the first call's text encoding and first step. The fork server exists so that
this is not Python + torch + diffusers' ~5 s import per cell; this measures that it is not.

How: one ``sdtop run`` of several tiny cells on CPU (or ``--from DIR``: any recorded
session, a GPU one too), read back from ``events.jsonl``. For each cell, with event
timestamps (the parent's ``CellStarted``, the worker's events; one host clock):

- ``launch``: ``CellStarted`` -> ``WorkerStarted`` (request to the fork server, fork,
  the child's first line);
- ``build`` / ``apply``: the worker's ``PhaseEnded`` durations;
- ``to step``: the rest, up to the cell's first ``StepTimed`` (first call's encoding and
  first denoising step; on CPU the step event is written in the step's callback), and
  in brackets that first step's own ``ms`` (loop entry to its callback);
- ``total``: ``CellStarted`` -> first ``StepTimed``.

The first cell is reported apart: it is the first fork of a fresh server (cold page
cache for the child, first oneDNN/OpenMP start). Target after the first: <= 1 s.

Run: ``python tests/perf/bench_cell_start.py`` or ``python tests/perf/bench_cell_start.py --from runs/X``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf.common import Report, median, run_checked

TARGET_S = 1.0
DEFAULT_MATRIX = [
    "--pipeline",
    "sd-txt2img,sd-controlnet,sdxl-txt2img",
    "--attention",
    "sdpa,classic",
    "--weights",
    "tiny",
    "--device",
    "cpu",
    "--steps",
    "2",
    "--iterations",
    "1",
]


def cell_starts(events: list[Any]) -> list[dict[str, Any]]:
    """Per cell (last attempt): launch, build, apply, to-first-step and total seconds."""
    from sdtop.profiler.contract.events import CellStarted, PhaseEnded, StepTimed, WorkerStarted

    out: dict[int, dict[str, Any]] = {}
    for ev in events:
        if isinstance(ev, CellStarted):
            out[ev.cell] = {"cell": ev.cell, "label": _label(ev.settings), "t0": ev.ts}
            continue
        cur = out.get(ev.cell)
        if cur is None or "total" in cur:
            continue
        if isinstance(ev, WorkerStarted):
            cur["launch"] = ev.ts - cur["t0"]
        elif isinstance(ev, PhaseEnded) and ev.phase in ("build", "apply"):
            cur[ev.phase] = cur.get(ev.phase, 0.0) + ev.duration_s
        elif isinstance(ev, StepTimed):
            cur["total"] = ev.ts - cur["t0"]
            cur["step0"] = ev.ms / 1000.0
            cur["to_step"] = cur["total"] - cur.get("launch", 0.0) - cur.get("build", 0.0) - cur.get("apply", 0.0)
    return [c for _, c in sorted(out.items()) if "total" in c]


def _label(settings: dict[str, Any]) -> str:
    return f"{settings.get('pipeline')} {settings.get('attention')} b{settings.get('batch_size')}"


def main(argv: list[str] | None = None) -> int:
    from sdtop.profiler.host.session import read_events

    p = argparse.ArgumentParser(description="time from a cell's start to its first step event")
    p.add_argument("--from", dest="source", default=None, metavar="DIR", help="analyse a recorded session instead")
    p.add_argument("--json", default=None)
    p.add_argument("matrix", nargs="*", help="sdtop run options after --, replacing the default matrix")
    args = p.parse_args(argv)
    report = Report("cell start: CellStarted -> first step event")
    if args.source:
        session = Path(args.source)
        report.header(session=str(session))
    else:
        matrix = args.matrix or DEFAULT_MATRIX
        session = Path(tempfile.mkdtemp(prefix="sdtop-cellstart-")) / "session"
        report.header(matrix=" ".join(matrix))
        run_checked([sys.executable, "-m", "sdtop.tui.cli", "run", *matrix, "--out", str(session), "--force"])
    cells = cell_starts(read_events(session / "events.jsonl"))
    if not args.source:
        shutil.rmtree(session.parent, ignore_errors=True)
    if not cells:
        report.note("no cell reached a step")
        return report.finish(args.json)
    nan = float("nan")
    print(
        f"{'cell':>4}  {'':28} {'launch':>7} {'build':>7} {'apply':>7} {'to step':>8} {'(step 0)':>9} {'total':>7}  s"
    )
    for c in cells:
        print(
            f"{c['cell']:>4}  {c['label']:28} {c.get('launch', nan):7.3f} {c.get('build', nan):7.3f} "
            f"{c.get('apply', nan):7.3f} {c['to_step']:8.3f} {c['step0']:9.3f} {c['total']:7.3f}"
        )
    first, rest = cells[0], cells[1:]
    report.figure("first_cell_s", first["total"], "s")
    if rest:
        worst = max(c["total"] for c in rest)
        report.figure("following_median_s", median([c["total"] for c in rest]), "s")
        report.figure("following_max_s", worst, "s", target=f"<= {TARGET_S:g} s", met=worst <= TARGET_S)
        report.figure("following_launch_median_s", median([c.get("launch", float("nan")) for c in rest]), "s")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
