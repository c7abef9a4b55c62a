"""Benchmark: what ``--profile`` costs, and that it costs the measured calls nothing.

Why: ``--profile`` adds one call per cell under torch.profiler after the measured calls,
and promises that the measured calls run exactly as without it (nothing is installed
before the profiled call). This measures that promise, and the price of the extra call.

How: the same cell through ``sdtop run`` without (A) and with ``--profile`` (B),
alternated, ``--rounds`` times each, every run a fresh process, so drift in the machine's
load falls on both sides. The pairs alternate their order too (A B, B A, A B, ...): on the
shared 2-core box the second run of a pair was 5-15% faster whichever side it was (an
A B A B run read as "--profile makes the measured calls 13% faster", three rounds of
three). Figures:

- ``plain_call_it_per_s`` / ``profile_call_it_per_s``: call it/s (denoising steps of a call
  ÷ its ``CallFinished.wall_s``) of the measured calls, median over each side's calls;
- ``ratio``: the median over rounds of B/A (A_i and B_i ran side by side): target ≥ 0.98 on
  CPU, ≥ 0.99 on CUDA, as benchmark 1's (the measured calls must not notice ``--profile``);
- ``profiled_call_slowdown``: the profiled call's wall time ÷ the median measured call's
  of the same run: what torch.profiler (record_shapes, with_flops) costs that one call;
- ``profile_phase_s``: the whole profile phase (the call, reading the profile, writing the
  gzipped chrome trace), median over B runs; ``trace_mib``: the trace file's size.

Run: ``python tests/perf/bench_profile.py`` (tiny SD on CPU, 3 rounds), or on a GPU
``python tests/perf/bench_profile.py --device cuda`` (the seed's SD 1.5 cell). The cell
options are benchmark 1's (:func:`tests.perf.bench_overhead.cell_args`).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf.bench_overhead import TARGET, ab_figures, add_cell_options, cell_args, report_ratios
from tests.perf.common import Report, median, run_checked


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_cell(cell: list[str], work: Path, name: str, *, profile: bool) -> dict[str, Any]:
    """One ``sdtop run`` of the cell; its measured calls' it/s and, with ``--profile``, the
    profiled call's figures, read back from the session's events."""
    from sdtop.profiler.contract.events import CallFinished, PhaseEnded, ProfileSummary, StageTimed
    from sdtop.profiler.host.session import read_events

    out = work / name
    argv = [sys.executable, "-m", "sdtop.tui.cli", "run", *cell, "--out", str(out), "--force"]
    t0 = time.perf_counter()
    run_checked([*argv, "--profile"] if profile else argv, log=work / "log")
    events = read_events(out / "events.jsonl")
    steps: dict[int, int] = {}
    for ev in events:
        if isinstance(ev, StageTimed):
            steps[ev.call] = steps.get(ev.call, 0) + ev.steps
    calls = [e for e in events if isinstance(e, CallFinished)]
    measured = [e for e in calls if e.call_kind == "measured"]
    profiled = [e for e in calls if e.call_kind == "profiled"]
    summaries = [e for e in events if isinstance(e, ProfileSummary)]
    phase = [e.duration_s for e in events if isinstance(e, PhaseEnded) and e.phase == "profile"]
    if profile and not (profiled and summaries):
        raise RuntimeError(f"{out}: --profile made no profiled call or no summary (see its events.jsonl)")
    result: dict[str, Any] = {
        "call_it_s": [steps[e.call] / e.wall_s for e in measured],
        "wall_s": [e.wall_s for e in measured],
        "process_s": time.perf_counter() - t0,
    }
    if profile:
        result["profiled_wall_s"] = profiled[0].wall_s
        result["phase_s"] = phase[0] if phase else float("nan")
        trace = out / summaries[0].trace if summaries[0].trace else None
        result["trace_mib"] = trace.stat().st_size / 2**20 if trace is not None and trace.exists() else float("nan")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="sdtop run with and without --profile, alternated A B, B A, ...")
    add_cell_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.rounds < 1 or args.iterations < 1:
        p.error("--rounds and --iterations must be >= 1")
    cell = cell_args(args)
    report = Report("profile: sdtop run with and without --profile")
    report.header(
        cell=" ".join(cell),
        rounds=args.rounds,
        order="A B, B A, A B, ... (A = sdtop run, B = sdtop run --profile)",
        machine=f"{cpu_name()} ({platform.machine()}, {platform.system()})",
    )
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sdtop-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    plain: list[dict[str, Any]] = []
    profiled: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            for profile in (False, True) if i % 2 == 0 else (True, False):
                side = profiled if profile else plain
                side.append(run_cell(cell, work, f"{'profile' if profile else 'plain'}-{i}", profile=profile))
            a, b = median(plain[-1]["call_it_s"]), median(profiled[-1]["call_it_s"])
            report.note(
                f"round {i + 1}: A {a:.3f} it/s, B {b:.3f} it/s, B/A {b / a:.4f}; profiled call "
                f"{profiled[-1]['profiled_wall_s']:.3f} s, profile phase {profiled[-1]['phase_s']:.2f} s"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    per_round, pooled_a, pooled_b = ab_figures(plain, profiled)
    report.figure("plain_call_it_per_s", pooled_a, "it/s")
    report.figure("profile_call_it_per_s", pooled_b, "it/s")
    report_ratios(report, per_round, pooled_a, pooled_b, TARGET[args.device])
    slowdown = median([r["profiled_wall_s"] / median(r["wall_s"]) for r in profiled])
    report.figure("profiled_call_slowdown", slowdown, "x (profiled call wall / measured call wall)")
    report.figure("profile_phase_s", median([r["phase_s"] for r in profiled]), "s")
    report.figure("trace_mib", median([r["trace_mib"] for r in profiled]), "MiB")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
