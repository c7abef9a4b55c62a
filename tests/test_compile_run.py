"""``sdtop run`` with torch.compile, end to end: real worker processes, tiny weights, CPU.

The default-run test is the user story of the issue: a compiled pipeline called at a new
size recompiles, and the user sees it, with torch's reason, in ``sdtop run``'s output, in
events.jsonl, in summary.csv and in the dashboard's event panel. Backend ``eager`` keeps it
to seconds; the one inductor test is ``slow`` (~1 min of compilation on a cold cache).
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from sdtop.profiler.contract.events import CompileFinished, CompileStarted, CudagraphSkip, Log, Recompile, StepTimed
from sdtop.profiler.host.session import Session

ROOT = Path(__file__).resolve().parent.parent
REASON = "tensor 'args[0]' size mismatch at index 2. expected 8, actual 12"
Resized = tuple[subprocess.CompletedProcess[str], Path, Path]  # sdtop's output, the session, the trace


def sdtop_run(*argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sdtop.tui.cli", "run", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def summary_rows(session: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((session / "summary.csv").read_text())))


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> Resized:
    base = tmp_path_factory.mktemp("compile")
    out, trace = base / "session", base / "trace"
    proc = sdtop_run(
        "--pipeline", "sd-txt2img", "--weights", "tiny", "--compile", "default", "--compile-backend", "eager",
        "--resolutions", "64x64,96x96", "--steps", "2", "--iterations", "2", "--trace", str(trace),
        "--out", str(out),
    )  # fmt: skip
    return proc, out, trace


def test_the_recompile_is_in_the_output_with_its_reason(
    resized: Resized,
) -> None:
    proc, _, _ = resized
    lines = [ln for ln in proc.stderr.splitlines() if "recompile" in ln]
    assert lines == [
        f"[1/1] recompile unet 0/1 (function wrapper): triggered by the following guard failure(s): - 0/0: {REASON}"
    ]
    # both sizes' it/s in the printed summary
    assert "| sd-txt2img | 64x64: " in proc.stdout and " · 96x96: " in proc.stdout


def test_events_jsonl_has_the_compiles_and_the_recompile(
    resized: Resized,
) -> None:
    _, out, _ = resized
    events = Session.open(out).events()
    compiles = [e for e in events if isinstance(e, CompileStarted | CompileFinished | Recompile)]
    assert [(type(e).__name__, e.compile_id, e.call) for e in compiles] == [
        ("CompileStarted", "0/0", 0),
        ("CompileFinished", "0/0", 0),
        ("Recompile", "0/1", 3),  # call 3: the first call at 96x96
        ("CompileStarted", "0/1", 3),
        ("CompileFinished", "0/1", 3),
    ]
    (recompile,) = [e for e in events if isinstance(e, Recompile)]
    assert recompile.reason.endswith(f"- 0/0: {REASON}") and recompile.module == "unet"
    # the steps of every measured call ran at their own size, none of them compiling
    sizes = {(e.call, e.height, e.width) for e in events if e.KIND == "call_finished"}
    assert sizes == {(0, 64, 64), (1, 64, 64), (2, 64, 64), (3, 96, 96), (4, 96, 96), (5, 96, 96)}
    assert {e.call for e in events if isinstance(e, StepTimed)} == set(range(6))


def test_summary_csv_has_one_row_per_size_with_the_compile_columns(
    resized: Resized,
) -> None:
    _, out, _ = resized
    rows = summary_rows(out)
    assert [(r["height"], r["width"], r["status"]) for r in rows] == [("64", "64", "ok"), ("96", "96", "ok")]
    first, second = rows
    assert (first["compiles"], first["recompiles"], second["compiles"], second["recompiles"]) == ("1", "0", "1", "1")
    for r in rows:
        assert float(r["compile_s"]) > 0 and float(r["it_per_s"]) > 0 and r["measured_calls"] == "2"
        assert r["graph_breaks"] == "0" and r["cudagraph_skips"] == "0" and r["eager_fallback"] == ""
        # the first call split into compilation and running
        run, total, comp = float(r["first_call_run_s"]), float(r["first_call_s"]), float(r["compile_s"])
        assert 0 < run < total and run + comp == pytest.approx(total, abs=1e-3)


def test_the_dashboard_event_panel_shows_the_same_recompile(
    resized: Resized,
) -> None:
    from sdtop.tui.models.eventlog import EventLogModel

    _, out, _ = resized
    model = EventLogModel()
    for event in Session.open(out).events():
        model.feed(event)
    texts = [e.text for e in model.entries if e.category == "compile"]
    assert any("recompile" in t and REASON in t for t in texts), texts


def test_trace_writes_what_tlparse_reads_and_says_how_to_open_it(
    resized: Resized,
) -> None:
    proc, _, trace = resized
    (log,) = (trace / "cell-0").glob("dedicated_log_torch_trace_*.log")
    notes = [e.message for e in Session.open(resized[1]).events() if isinstance(e, Log) and "torch trace" in e.message]
    assert notes == [f"torch trace: {log} (open with: tlparse {log.parent} --latest -o {log.parent}/tlparse)"]
    text = log.read_text()
    assert text.count('"dynamo_start"') == 2  # the compile and the recompile
    assert '"frame_id": 0, "frame_compile_id": 1' in text
    hints = [ln for ln in proc.stderr.splitlines() if "tlparse" in ln]
    assert hints == [
        f"sdtop: torch compile trace of 1 cell(s) in {trace}/cell-<k>/; open one with: "
        f"tlparse {trace}/cell-0 --latest -o {trace}/cell-0/tlparse (pip install tlparse)"
    ]


@pytest.mark.slow
def test_inductor_compiles_once_and_steady_steps_are_faster(tmp_path: Path) -> None:
    """One inductor compile of the tiny UNet (reduce-overhead: on CPU inductor must skip
    CUDA graphs, which is reported too)."""
    out = tmp_path / "s"
    sdtop_run(
        "--pipeline", "sd-txt2img", "--weights", "tiny", "--compile", "reduce-overhead", "--steps", "3",
        "--iterations", "2", "--out", str(out),
    )  # fmt: skip
    (row,) = summary_rows(out)
    assert row["status"] == "ok" and row["compile_backend"] == "inductor"
    assert float(row["compile_s"]) > 0 and row["compiles"] == "1" and row["recompiles"] == "0"
    assert int(row["cudagraph_skips"]) >= 1
    events = Session.open(out).events()
    (finished,) = [e for e in events if isinstance(e, CompileFinished)]
    assert finished.inductor_s is not None and 0 < finished.inductor_s <= finished.duration_s
    assert [e.reason for e in events if isinstance(e, CudagraphSkip)]
    first_step0 = next(e.ms for e in events if isinstance(e, StepTimed) and e.call_kind == "first" and e.step == 0)
    assert float(row["step_ms_p50"]) < first_step0
