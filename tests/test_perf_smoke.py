"""Each benchmark of tests/perf starts, runs a tiny configuration and prints its figures.

The benchmarks themselves are scripts, not tests (their figures depend on the machine);
these only keep them runnable as the code under them changes. Marked ``perf`` so they
can be deselected (``-m 'not perf'``); together about 40 s on a quiet 2-core box, most of
it importing torch + diffusers in the three processes the overhead and fidelity
benchmarks start (cell start reads the overhead run's session instead of making one).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.perf.common import child_env

ROOT = Path(__file__).resolve().parent.parent
PERF = ROOT / "tests" / "perf"

pytestmark = pytest.mark.perf


def run_bench(script: str, *args: str, timeout: float = 240) -> str:
    """Run ``tests/perf/<script>``; its stdout, after checking it finished."""
    out = subprocess.run(
        [sys.executable, str(PERF / script), *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "# done" in out.stdout
    return out.stdout


def figures(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^FIGURE (\S+) (\S+)", stdout, flags=re.M))


def test_overhead_alternates_bare_and_sdtop_and_cell_start_reads_its_session(tmp_path: Path) -> None:
    """One ``sdtop run`` serves two benchmarks: overhead's side B is the session cell start reads."""
    path = tmp_path / "o.json"
    keep = tmp_path / "keep"
    stdout = run_bench(
        "bench_overhead.py",
        *shlex.split("--rounds 1 --steps 2 --iterations 1 --warmup 0 --attention sdpa"),
        *("--json", str(path), "--keep", str(keep)),
    )
    f = figures(stdout)
    assert {"bare_call_it_per_s", "sdtop_call_it_per_s", "ratio"} <= f.keys()
    assert float(f["ratio"]) > 0
    data = json.loads(path.read_text())
    assert data["ratio"]["target"] == ">= 0.98" and "load_before" in data["context"]
    assert (keep / "bare-0.json").exists() and (keep / "sdtop-0" / "events.jsonl").exists()
    cell = figures(run_bench("bench_cell_start.py", "--from", str(keep / "sdtop-0")))
    assert float(cell["first_cell_s"]) > 0


def test_fidelity_compares_sdtop_with_its_observer() -> None:
    stdout = run_bench(
        "bench_fidelity.py", "--pipeline", "sd-txt2img", "--steps", "2", "--iterations", "1", "--warmup", "1"
    )
    f = figures(stdout)
    # two timings of the same warm loop agree however loaded the machine is (loosely: a
    # 3-step loop is short, and the targets are the full benchmark's business)
    assert float(f["it_per_s_max_deviation_pct"]) < 5.0
    assert "parts_over_wall_min" in f


def test_cell_start_reads_a_recorded_session() -> None:
    stdout = run_bench("bench_cell_start.py", "--from", str(ROOT / "tests/fixtures/sessions/clean"))
    f = figures(stdout)
    assert {"first_cell_s", "following_max_s"} <= f.keys()


def test_ui_throughput_loses_nothing() -> None:
    stdout = run_bench("bench_ui.py", "--duration", "0.5", "--rate", "2000")
    f = figures(stdout)
    assert f["steps_lost"] == "0" and int(f["steps_sent"]) > 0
    assert {"lag_end_ms", "cpu_pct"} <= f.keys()


def test_startup_measures_help_and_first_frames() -> None:
    stdout = run_bench("bench_startup.py", "--runs", "1")
    f = figures(stdout)
    assert {"help_s", "first_frame_setup_s", "first_frame_replay_s"} <= f.keys()
    assert f["first_frame_setup_s"] != "nan" and f["first_frame_replay_s"] != "nan"


def test_the_gpu_script_runs_benchmark_1_on_cuda() -> None:
    script = (ROOT / "tests" / "gpu" / "run.sh").read_text()
    line = next(ln for ln in script.splitlines() if "tests/perf/bench_overhead.py" in ln)
    argv = shlex.split(line.split(">", 1)[0])
    if argv[0] == "timeout":  # each step of the script runs under its own time limit
        argv = argv[2:]
    assert argv[:2] == ["python3", "tests/perf/bench_overhead.py"] and "--device" in argv
    assert argv[argv.index("--device") + 1] == "cuda"
    # the options parse, and the cell both sides get is the seed's
    from tests.perf import bench_overhead

    parsed = bench_overhead.build_parser().parse_args(argv[2:])
    cell = " ".join(bench_overhead.cell_args(parsed))
    assert "--weights random" in cell and "--height 512" in cell and "--dtype fp16" in cell and "--steps 50" in cell


def test_profile_benchmark_alternates_runs_with_and_without_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    stdout = run_bench(
        "bench_profile.py", *shlex.split("--rounds 1 --steps 2 --iterations 1 --warmup 0"), "--json", str(path)
    )
    f = figures(stdout)
    assert {"plain_call_it_per_s", "profile_call_it_per_s", "ratio", "profiled_call_slowdown"} <= f.keys()
    assert float(f["ratio"]) > 0 and float(f["profiled_call_slowdown"]) > 0 and float(f["trace_mib"]) > 0
    data = json.loads(path.read_text())
    assert data["ratio"]["target"] == ">= 0.98" and "machine" in data["context"]


def test_lanes_benchmark_runs_both_sides_and_compares_their_statuses(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    stdout = run_bench(
        "bench_lanes.py",
        *shlex.split("--rounds 1 --steps 2 --iterations 1 --warmup 0 --batch 1,2 --attention sdpa"),
        "--json",
        str(path),
    )
    f = figures(stdout)
    assert f["cells"] == "2" and f["statuses_equal"] == "yes"
    assert float(f["sequential_wall_s"]) > 0 and float(f["lanes_wall_s"]) > 0 and float(f["ratio"]) > 0
    data = json.loads(path.read_text())
    assert data["ratio"]["target"] == "<= 0.7" and "side_b" in data["context"]
