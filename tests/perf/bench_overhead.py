"""Benchmark 1, overhead: the seed's bare loop (A) against ``sdtop run`` (B) on the same cell.

Why: a profiler that slows what it measures reports its own cost. On a 2-core box every
cycle sdtop spends (the worker's callbacks and event writes, the parent reading the pipe,
sampling the worker, drawing progress) is taken from the pipeline.

How: A and B are run alternately, A B A B ..., ``--rounds`` times each, every run a fresh
process, so drift in the machine's load (other users, thermal state) falls on both sides.

- A: ``tests/perf/seed_loop.py``: build + settings + calls, each call timed with
  ``perf_counter`` between two device synchronises; nothing inside the call.
- B: ``sdtop run`` with the same options (a session in a temporary directory), read back
  from its ``events.jsonl``: ``CallFinished.wall_s`` of the measured calls, which has the
  same boundaries (synchronise, perf_counter, all stages, synchronise, perf_counter).

Like with like: both sides' figure is **call it/s** = denoising steps of a call ÷ the
call's wall time, median over the measured calls of a run. The ratio B/A is computed per
round (A_i and B_i ran next to each other) and its median over rounds is the headline
(target ≥ 0.98 on CPU, ≥ 0.99 on CUDA); the pooled ratio (all of B's calls against all
of A's) is printed beside it. sdtop's own ``it_per_s`` (denoising loop only: loop entry to
last step, so text encoding and decoding are left out) is printed for information; it
is not compared with A, which has no loop marks.

Run: ``python tests/perf/bench_overhead.py`` (tiny SD on CPU, 3 rounds), or on a GPU
``python tests/perf/bench_overhead.py --device cuda`` (the seed's SD 1.5 cell: random
weights, 512×512, fp16, 50 steps, sdpa, no compile).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf.common import ROOT, Report, median, run_checked

#: The cell when nothing else is said: per device, the seed's own for CUDA.
DEFAULTS: dict[str, dict[str, str]] = {
    "cpu": {
        "pipeline": "sd-txt2img",
        "weights": "tiny",
        "steps": "20",
        "dtype": "fp32",
        "height": "",
        "width": "",
    },
    "cuda": {
        "pipeline": "sd-txt2img",
        "weights": "random",
        "steps": "50",
        "dtype": "fp16",
        "height": "512",
        "width": "512",
    },
}
TARGET = {"cpu": 0.98, "cuda": 0.99}


def cell_args(args: argparse.Namespace) -> list[str]:
    """The options both sides get (``sdtop run`` syntax; one cell)."""
    d = DEFAULTS[args.device]
    out = ["--device", args.device]
    for name in ("pipeline", "weights", "steps", "dtype", "height", "width"):
        value = getattr(args, name) or d[name]
        if value:
            out += [f"--{name}", value]
    out += ["--attention", args.attention, "--compile", args.compile, "--batch", args.batch]
    out += ["--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    if args.threads:
        out += ["--threads", args.threads]
    return out


def ab_figures(a_runs: list[dict[str, Any]], b_runs: list[dict[str, Any]]) -> tuple[list[float], float, float]:
    """(B/A per round, pooled A it/s, pooled B it/s) of alternated runs: each run's
    ``call_it_s`` are its measured calls' rates. The per-round ratio's median is the verdict
    (drift falls on both sides of a round); the pooled figures are what a reader compares."""
    per_round = [median(b["call_it_s"]) / median(a["call_it_s"]) for a, b in zip(a_runs, b_runs, strict=True)]
    pooled_a = median([x for r in a_runs for x in r["call_it_s"]])
    pooled_b = median([x for r in b_runs for x in r["call_it_s"]])
    return per_round, pooled_a, pooled_b


def report_ratios(report: Report, per_round: list[float], pooled_a: float, pooled_b: float, target: float) -> float:
    """The three ratio figures every alternated benchmark prints; returns the verdict's ratio."""
    ratio = median(per_round)
    report.figure("ratio_per_round", " ".join(f"{r:.4f}" for r in per_round))
    report.figure("ratio_pooled", pooled_b / pooled_a)
    report.figure("ratio", ratio, target=f">= {target}", met=ratio >= target)
    return ratio


def run_bare(cell: list[str], work: Path, i: int) -> dict[str, Any]:
    path = work / f"bare-{i}.json"
    t0 = time.perf_counter()
    run_checked([sys.executable, str(ROOT / "tests/perf/seed_loop.py"), "--json", str(path), *cell], log=work / "log")
    data: dict[str, Any] = json.loads(path.read_text())
    measured = [c for c in data["calls"] if c["kind"] == "measured"]
    return {
        "call_it_s": [c["steps"] / c["wall_s"] for c in measured],
        "wall_s": [c["wall_s"] for c in measured],
        "process_s": time.perf_counter() - t0,
    }


def run_sdtop(cell: list[str], work: Path, i: int, sample_ms: str | None) -> dict[str, Any]:
    from sdtop.profiler.contract.events import CallFinished, StageTimed
    from sdtop.profiler.host.session import read_events
    from sdtop.profiler.report import summary

    out = work / f"sdtop-{i}"
    extra = ["--sample-ms", sample_ms] if sample_ms else []
    t0 = time.perf_counter()
    run_checked(
        [sys.executable, "-m", "sdtop.tui.cli", "run", *cell, *extra, "--out", str(out), "--force"], log=work / "log"
    )
    events = read_events(out / "events.jsonl")
    steps: dict[int, int] = {}
    for ev in events:
        if isinstance(ev, StageTimed):
            steps[ev.call] = steps.get(ev.call, 0) + ev.steps
    measured = [e for e in events if isinstance(e, CallFinished) and e.call_kind == "measured"]
    rows = summary.rows(events)
    return {
        "call_it_s": [steps[e.call] / e.wall_s for e in measured],
        "wall_s": [e.wall_s for e in measured],
        "it_per_s": rows[0].it_per_s if rows else None,
        "status": rows[0].status if rows else "no rows",
        "process_s": time.perf_counter() - t0,
    }


def add_cell_options(p: argparse.ArgumentParser) -> None:
    """The options :func:`cell_args` reads (the cell both sides run), and the run's own:
    shared by every benchmark that alternates two ways of running one cell."""
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--rounds", type=int, default=3, help="A B pairs (default 3)")
    p.add_argument("--iterations", type=int, default=3, help="measured calls per run (default 3, as the seed)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--pipeline", default=None)
    p.add_argument("--weights", default=None)
    p.add_argument("--steps", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--height", default=None)
    p.add_argument("--width", default=None)
    p.add_argument("--batch", default="1")
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--compile", default="none")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the sessions and results in DIR")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--threads", default=None, help="torch CPU threads, both sides (default: sdtop's auto)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="sdtop run vs the seed's bare loop, alternated A B A B")
    add_cell_options(p)
    p.add_argument("--sample-ms", default=None, help="passed to sdtop run (default: sdtop's own)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.rounds < 1 or args.iterations < 1:
        p.error("--rounds and --iterations must be >= 1")
    cell = cell_args(args)
    report = Report("overhead: sdtop run vs the bare seed loop")
    report.header(
        cell=" ".join(cell),
        rounds=args.rounds,
        order="A B A B ... (A = bare loop, B = sdtop run)",
        threads=args.threads or "sdtop's auto (CPU: all cores but one)",
    )
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sdtop-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    bare: list[dict[str, Any]] = []
    sdtop: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            bare.append(run_bare(cell, work, i))
            sdtop.append(run_sdtop(cell, work, i, args.sample_ms))
            a, b = median(bare[-1]["call_it_s"]), median(sdtop[-1]["call_it_s"])
            report.note(
                f"round {i + 1}: A {a:.3f} it/s, B {b:.3f} it/s, B/A {b / a:.4f} "
                f"(B status {sdtop[-1]['status']}, sdtop loop it/s {sdtop[-1]['it_per_s'] or float('nan'):.3f})"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    per_round, pooled_a, pooled_b = ab_figures(bare, sdtop)
    report.figure("bare_call_it_per_s", pooled_a, "it/s")
    report.figure("sdtop_call_it_per_s", pooled_b, "it/s")
    report.figure("sdtop_loop_it_per_s", median([r["it_per_s"] for r in sdtop if r["it_per_s"]]), "it/s")
    report_ratios(report, per_round, pooled_a, pooled_b, TARGET[args.device])
    spread = [x for r in bare for x in r["call_it_s"]]
    if spread:
        report.figure("bare_call_spread", (max(spread) - min(spread)) / pooled_a, "(max-min)/median")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
