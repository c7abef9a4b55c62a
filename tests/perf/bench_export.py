"""Benchmark 6, export: ``sdtop export`` of a large recorded session, time and peak memory.

Why: a long matrix leaves an ``events.jsonl`` of a million lines (steps dominate), and
every derived file (``finalize``), ``sdtop export`` and the dashboard's export keys read
all of it. The report layer folds the log as it streams by, so memory should grow with
the cells, not with the events; this shows whether it does.

How: a deterministic synthetic session (``--cells`` cells, ``--calls`` calls of
``--steps`` steps each, a few telemetry samples and the usual lifecycle events per cell;
the defaults give 3,000 cells and about 1.09M lines) is written to a temporary directory,
then ``sdtop export DIR --format md`` and ``--format csv`` each run ``--runs`` times in a
fresh interpreter (``python -m sdtop.tui.cli``, output to /dev/null). Figures per format:
the median wall time and CPU time (user + system) and the peak RSS of the child (``resource.getrusage(RUSAGE_CHILDREN)
.ru_maxrss``, the largest of the runs), and its growth over the same interpreter's bare
start (``sdtop export --help``), which is what the log costs. Targets (the issue's, for
the 2-core box): ≤ 5 s and ≤ 100 MB peak RSS growth at full size.

Run: ``python tests/perf/bench_export.py [--cells 3000 --calls 4 --steps 80] [--runs 1]``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf.common import ROOT, Report, child_env, median

TARGET_WALL_S = 5.0
TARGET_GROWTH_MB = 100.0
_T0 = 1_700_000_000.0


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


def _settings(cell: int, steps: int, calls: int) -> dict[str, Any]:
    """A cell's settings: pipelines, attention and compile vary so the tables have columns."""
    return {
        "pipeline": ("sd-txt2img", "sd-img2img", "sdxl-txt2img")[cell % 3],
        "weights": "random",
        "model": None,
        "attention": ("sdpa", "classic")[(cell // 3) % 2],
        "compile_mode": ("none", "default")[(cell // 6) % 2],
        "fullgraph": True,
        "compile_backend": "inductor",
        "channels_last": True,
        "dtype": "fp16",
        "batch_size": 1 + (cell // 12) % 4,
        "height": 512,
        "width": 512,
        "steps": steps,
        "iterations": calls - 1,
        "warmup": 0,
        "device": "cuda",
        "seed": cell,
        "prompt": "ghibli style, a fantasy landscape with castles",
        "resolutions": [],
        "on_recompile": "warn",
        "trace_dir": None,
        "threads": 0,
    }


def session_lines(cells: int, calls: int, steps: int, seed: int = 0) -> Iterator[str]:
    """The events.jsonl of a finished session, line by line (same arguments, same bytes)."""
    rng = random.Random(seed)
    ts = _T0
    yield _line(
        {
            "kind": "session_started",
            "v": 1,
            "ts": ts,
            "cell": -1,
            "session_id": "bench-export",
            "sdtop_version": "0.1.0",
            "argv": ["sdtop", "run"],
            "matrix": {},
            "cells": [],
            "resumed": False,
        }
    )
    env = {"sdtop": "0.1.0", "python": "3.11.7", "torch": "2.5.1+cu124", "diffusers": "0.42.1"}
    yield _line({"kind": "environment", "v": 1, "ts": ts, "cell": -1, "data": env})
    for cell in range(cells):
        ts += 1.0
        start = ts
        s = _settings(cell, steps, calls)
        yield _line({"kind": "cell_started", "v": 1, "ts": ts, "cell": cell, "n_cells": cells, "settings": s})
        yield _line(
            {
                "kind": "environment",
                "v": 1,
                "ts": ts,
                "cell": cell,
                "data": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "torch": "2.5.1+cu124"},
            }
        )
        ts += 0.3
        yield _line({"kind": "worker_started", "v": 1, "ts": ts, "cell": cell, "pid": 1000 + cell, "startup_s": 0.3})
        yield _line({"kind": "phase_started", "v": 1, "ts": ts, "cell": cell, "phase": "build", "stage": ""})
        ts += 2.0
        yield _line(
            {"kind": "phase_ended", "v": 1, "ts": ts, "cell": cell, "phase": "build", "duration_s": 2.0, "ok": True}
        )
        for call in range(calls):
            kind = "first" if call == 0 else "measured"
            call_start = ts
            yield _line({"kind": "phase_started", "v": 1, "ts": ts, "cell": cell, "phase": "call", "stage": "main"})
            loop = 0.0
            for step in range(steps):
                ms = 40.0 + rng.random() * 5.0 + (500.0 if kind == "first" and step == 0 else 0.0)
                ts += ms / 1000.0
                loop += ms / 1000.0
                yield _line(
                    {
                        "kind": "step",
                        "v": 1,
                        "ts": ts,
                        "cell": cell,
                        "call": call,
                        "call_kind": kind,
                        "stage": "main",
                        "step": step,
                        "ms": ms,
                    }
                )
            yield _line(
                {
                    "kind": "stage_timed",
                    "v": 1,
                    "ts": ts,
                    "cell": cell,
                    "call": call,
                    "call_kind": kind,
                    "stage": "main",
                    "steps": steps,
                    "loop_s": loop,
                    "encode_s": 0.01,
                    "decode_s": 0.03,
                    "wall_s": loop + 0.04,
                }
            )
            ts += 0.04
            for i in range(2):
                yield _line(
                    {
                        "kind": "gpu_sample",
                        "v": 1,
                        "ts": call_start + (i + 1) * (ts - call_start) / 3,
                        "cell": cell,
                        "status": "ok",
                        "device_used_mib": 9000.0 + rng.random() * 100,
                        "process_used_mib": 8000.0 + rng.random() * 100,
                        "util_pct": 90.0 + rng.random() * 5,
                        "power_w": 400.0 + rng.random() * 50,
                        "energy_mj": None,
                    }
                )
            yield _line({"kind": "host_sample", "v": 1, "ts": ts, "cell": cell, "rss_mib": 3000.0 + rng.random() * 10})
            yield _line(
                {
                    "kind": "torch_memory",
                    "v": 1,
                    "ts": ts,
                    "cell": cell,
                    "phase": "call",
                    "call": call,
                    "allocated_mib": 2600.0,
                    "reserved_mib": 4400.0,
                    "max_allocated_mib": 3100.0 + rng.random() * 10,
                    "max_reserved_mib": 4400.0,
                }
            )
            yield _line(
                {
                    "kind": "call_finished",
                    "v": 1,
                    "ts": ts,
                    "cell": cell,
                    "call": call,
                    "call_kind": kind,
                    "wall_s": ts - call_start,
                    "encode_s": 0.01,
                    "denoise_s": loop,
                    "decode_s": 0.03,
                }
            )
        yield _line({"kind": "worker_exited", "v": 1, "ts": ts, "cell": cell, "returncode": 0, "signal": None})
        yield _line({"kind": "cell_finished", "v": 1, "ts": ts, "cell": cell, "status": "ok", "duration_s": ts - start})
    yield _line(
        {"kind": "session_finished", "v": 1, "ts": ts, "cell": -1, "status": "complete", "duration_s": ts - _T0}
    )


def write_session(directory: Path, cells: int, calls: int, steps: int) -> tuple[int, int]:
    """Write the synthetic session; (lines, bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    n = size = 0
    with open(directory / "events.jsonl", "w", encoding="utf-8") as fh:
        for line in session_lines(cells, calls, steps):
            fh.write(line)
            n += 1
            size += len(line)
    return n, size


def run_child(argv: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds) of one child. CPU time moves less with the
    machine's load than wall time does: read both. ``ru_maxrss`` of RUSAGE_CHILDREN is the
    largest of every child waited for so far, so each run is measured in its own
    grandchild process: a small Python that runs ``argv`` and reports its own figure."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
        "w = time.perf_counter() - t\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(w, r.ru_maxrss, r.ru_utime + r.ru_stime)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        env=child_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stderr[-2000:]}")
    wall, kib, cpu = out.stdout.split()
    return float(wall), int(kib) / 1024.0, float(cpu)  # ru_maxrss is KiB on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=3000)
    p.add_argument("--calls", type=int, default=4, help="calls per cell: one first, the rest measured")
    p.add_argument("--steps", type=int, default=80, help="denoising steps per call")
    p.add_argument("--runs", type=int, default=1, help="exports per format (median wall, max RSS)")
    p.add_argument("--formats", default="md,csv")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    report = Report("export")
    report.header(cells=args.cells, calls=args.calls, steps=args.steps, runs=args.runs)
    cli = [sys.executable, "-m", "sdtop.tui.cli"]
    with tempfile.TemporaryDirectory(prefix="sdtop-bench-export-") as tmp:
        d = Path(tmp) / "session"
        t0 = time.perf_counter()
        lines, size = write_session(d, args.cells, args.calls, args.steps)
        report.note(f"wrote {lines} lines ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        report.figure("events_lines", lines)
        report.figure("events_mb", size / 1e6, "MB")
        _, base_mb, _ = run_child([*cli, "export", "--help"])
        report.figure("baseline_rss_mb", base_mb, "MB")
        full = args.cells >= 3000
        for fmt in args.formats.split(","):
            walls, peaks, cpus = [], [], []
            for _ in range(args.runs):
                wall, peak, cpu = run_child([*cli, "export", str(d), "--format", fmt])
                walls.append(wall)
                peaks.append(peak)
                cpus.append(cpu)
            w, peak = median(walls), max(peaks)
            report.figure(
                f"{fmt}_wall_s",
                w,
                "s",
                target=f"<= {TARGET_WALL_S:g} s" if full else "",
                met=(w <= TARGET_WALL_S) if full else None,
            )
            report.figure(f"{fmt}_cpu_s", median(cpus), "s")
            report.figure(f"{fmt}_peak_rss_mb", peak, "MB")
            report.figure(
                f"{fmt}_rss_growth_mb",
                peak - base_mb,
                "MB",
                target=f"<= {TARGET_GROWTH_MB:g} MB" if full else "",
                met=(peak - base_mb <= TARGET_GROWTH_MB) if full else None,
            )
    return report.finish(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
