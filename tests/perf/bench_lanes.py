"""Benchmark: what ``--lanes N`` buys a matrix, and that it changes no result.

Why: lanes run cells side by side, one worker per lane on its share of the cores (or one
per card with ``--gpus``). The promise is a shorter wall time for the same cells with the
same statuses; this measures both, on the whole command as a user waits for it.

How: the same matrix through ``sdtop run`` in order (A) and with ``--lanes N`` (B),
alternated A B, B A, ... (every run a fresh process: the second run of a pair is a little
faster on the shared box whichever side it is), ``--rounds`` times each. Figures:

- ``sequential_wall_s`` / ``lanes_wall_s``: the command's wall time (start to exit: the
  worker hosts' torch imports, every cell, the summaries), median over each side's runs;
- ``ratio``: the median over rounds of B/A (A_i and B_i ran side by side); target ≤ 0.7;
- ``sequential_session_s`` / ``lanes_session_s``: the session's own duration
  (``SessionFinished.duration_s``: the cells and their workers, without the start-up);
- ``sequential_cell_it_per_s`` / ``lanes_cell_it_per_s``: each cell's it/s (the summary's),
  median over cells: a lane's worker has fewer cores, so a cell alone may be slower;
- the statuses of both sides' cells must be equal, cell by cell, or the benchmark fails.

Run: ``python tests/perf/bench_lanes.py`` (6 tiny SD cells on CPU: sdpa, classic × batch
1, 2, 3; 2 lanes; 2 rounds), or on a GPU box ``--gpus all`` instead of lanes (the cells
then ask for ``--device cuda``).
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf.bench_profile import cpu_name
from tests.perf.common import Report, median, run_checked

TARGET = 0.7


def matrix_args(args: argparse.Namespace) -> list[str]:
    cell = [
        "--pipeline", args.pipeline, "--weights", args.weights, "--attention", args.attention,
        "--batch", args.batch, "--steps", str(args.steps), "--iterations", str(args.iterations),
        "--warmup", str(args.warmup), "--sample-ms", str(args.sample_ms),
    ]  # fmt: skip
    if args.device:
        cell += ["--device", args.device]
    if args.dtype:
        cell += ["--dtype", args.dtype]
    return cell


def run_side(cell: list[str], work: Path, name: str, placement: list[str]) -> dict[str, Any]:
    """One ``sdtop run`` of the matrix; its wall time, session time, statuses and it/s."""
    from sdtop.profiler.contract.events import CellStarted, SessionFinished
    from sdtop.profiler.host.session import read_events

    out = work / name
    t0 = time.perf_counter()
    run_checked([sys.executable, "-m", "sdtop.tui.cli", "run", *cell, *placement, "--out", str(out), "--force"],
                log=work / "log")  # fmt: skip
    wall = time.perf_counter() - t0
    events = read_events(out / "events.jsonl")
    finished = [e for e in events if isinstance(e, SessionFinished)]
    rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    its = [float(r["it_per_s"]) for r in rows if r.get("it_per_s")]
    lanes: dict[int, int] = {}
    for e in events:
        if isinstance(e, CellStarted):
            lanes[e.lane] = lanes.get(e.lane, 0) + 1
    return {
        "wall_s": wall,
        "session_s": finished[-1].duration_s if finished else float("nan"),
        "statuses": [(r["cell"], r["status"]) for r in rows],
        "it_s": its,
        "cells_per_lane": lanes,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="sdtop run in order and with --lanes N, alternated A B, B A, ...")
    p.add_argument("--lanes", type=int, default=2, help="lanes for side B (default 2)")
    p.add_argument("--gpus", default=None, help="side B with --gpus X instead of --lanes (a GPU box)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pipeline", default="sd-txt2img")
    p.add_argument("--weights", default="tiny")
    p.add_argument("--attention", default="sdpa,classic")
    p.add_argument("--batch", default="1,2,3")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--sample-ms", type=int, default=100)
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the sessions here")
    p.add_argument("--json", default=None, metavar="FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.rounds < 1 or args.lanes < 1:
        p.error("--rounds and --lanes must be >= 1")
    cell = matrix_args(args)
    placement = ["--gpus", args.gpus] if args.gpus else ["--lanes", str(args.lanes)]
    report = Report("lanes: sdtop run in order and side by side")
    report.header(
        matrix=" ".join(cell),
        side_b=" ".join(placement),
        rounds=args.rounds,
        order="A B, B A, A B, ... (A = in order, B = " + " ".join(placement) + ")",
        machine=f"{cpu_name()}",
    )
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sdtop-lanes-"))
    work.mkdir(parents=True, exist_ok=True)
    seq: list[dict[str, Any]] = []
    par: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            for lanes in (False, True) if i % 2 == 0 else (True, False):
                side = par if lanes else seq
                side.append(run_side(cell, work, f"{'lanes' if lanes else 'seq'}-{i}", placement if lanes else []))
            a, b = seq[-1], par[-1]
            if a["statuses"] != b["statuses"]:
                raise RuntimeError(f"round {i + 1}: the cells' statuses differ: {a['statuses']} vs {b['statuses']}")
            report.note(
                f"round {i + 1}: A {a['wall_s']:.2f} s, B {b['wall_s']:.2f} s, B/A {b['wall_s'] / a['wall_s']:.3f}; "
                f"cells per lane {dict(sorted(b['cells_per_lane'].items()))}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ratios = [b["wall_s"] / a["wall_s"] for a, b in zip(seq, par, strict=True)]
    report.figure("cells", len(seq[0]["statuses"]))
    report.figure("sequential_wall_s", median([r["wall_s"] for r in seq]), "s")
    report.figure("lanes_wall_s", median([r["wall_s"] for r in par]), "s")
    ratio = median(ratios)
    report.figure("ratio", ratio, "x (lanes wall / sequential wall)", target=f"<= {TARGET}", met=ratio <= TARGET)
    report.figure("sequential_session_s", median([r["session_s"] for r in seq]), "s")
    report.figure("lanes_session_s", median([r["session_s"] for r in par]), "s")
    report.figure("sequential_cell_it_per_s", median([x for r in seq for x in r["it_s"]]), "it/s")
    report.figure("lanes_cell_it_per_s", median([x for r in par for x in r["it_s"]]), "it/s")
    report.figure("statuses_equal", "yes")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
