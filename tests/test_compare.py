"""Sessions side by side: matching by settings, missing cells, mixed devices and versions,
regressions and the ``--fail-below`` exit code, the reference column, and ``sdtop compare``
as a user runs it. Sessions are synthesised by tests/helpers_events.py (deterministic) and
written as real session directories; the recorded fixture sessions are compared too."""

from __future__ import annotations

import csv
import dataclasses
import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract.events import Event
from sdtop.profiler.host.session import Session
from sdtop.profiler.report import compare as cmp
from sdtop.profiler.report import reference
from sdtop.profiler.report.render import finalize
from sdtop.profiler.report.summary import Row
from sdtop.tui import cli

from tests.helpers_events import session_events

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "sessions"
GPU = {"device": "cuda", "dtype": "fp16", "weights": "random", "height": 512, "width": 512, "steps": 10}


def spec(pipeline: str = "sd-txt2img", **kw: Any) -> CellSpec:
    settings = dict(GPU)
    if pipeline == "if-cascade":
        settings.update(height=64, width=64)
    settings.update(kw)
    return CellSpec(pipeline, **settings)


def pinned(ms: float) -> Any:
    """Every step exactly ``ms``: it/s = 1000 / ms, no jitter."""
    return lambda kind, call, stage, step: ms


def data(specs: Sequence[CellSpec], label: str, **kw: Any) -> cmp.SessionData:
    return cmp.SessionData.from_events(session_events(specs, **kw), label)


def write(tmp: Path, name: str, events: list[Event]) -> Path:
    s = Session.create(tmp / name)
    s.append(events)
    s.close()
    finalize(s.dir)
    return s.dir


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# --- matching -------------------------------------------------------------------------------


def test_a_setting_constant_in_each_session_is_matched_across_and_named() -> None:
    a = data([spec(attention="sdpa", batch_size=b) for b in (1, 4)], "A")
    b = data([spec(attention="classic", batch_size=b) for b in (1, 4)], "B")
    c = cmp.compare([a, b])
    (table,) = c.tables
    assert table.differing == {"attention": ("sdpa", "classic")}
    assert table.columns == ("batch_size",)
    assert [m.present for m in table.matches] == [(0, 1), (0, 1)]
    assert [(m.rows[0].attention, m.rows[1].attention) for m in table.matches] == [("sdpa", "classic")] * 2  # type: ignore[union-attr]
    text = cmp.to_text(c)
    assert "matched although it differs: attention A sdpa, B classic" in text


def test_a_setting_that_varies_within_a_session_stays_in_the_key() -> None:
    a = data([spec(attention="sdpa"), spec(attention="classic")], "A")
    b = data([spec(attention="classic")], "B")
    (table,) = cmp.compare([a, b]).tables
    assert table.differing == {}
    by_attention = {m.settings["attention"]: m.present for m in table.matches}
    assert by_attention == {"sdpa": (0,), "classic": (0, 1)}
    assert [m.settings["attention"] for m in table.only_in(0)] == ["sdpa"]


def test_the_rule_is_per_pipeline() -> None:
    """Native sizes differ between pipelines of one session; per pipeline they are
    constant, so tiny vs random weights (and their sizes) still match."""
    a = data([spec(weights="tiny", height=64, width=64), spec("if-cascade", weights="tiny", height=16, width=16)], "A")
    b = data([spec(), spec("if-cascade")], "B")
    c = cmp.compare([a, b])
    assert [t.pipeline for t in c.tables] == ["sd-txt2img", "if-cascade"]
    for t in c.tables:
        assert set(t.differing) == {"weights", "size"}
        assert all(m.present == (0, 1) for m in t.matches)
    assert [m.stage for m in c.tables[1].matches] == ["I", "II", "upscaler"]


def test_missing_cells_and_missing_pipelines_are_listed() -> None:
    a = data([spec(batch_size=1), spec(batch_size=4), spec("if-cascade")], "A")
    b = data([spec(batch_size=1), spec(batch_size=16), spec("sdxl-txt2img", height=1024, width=1024)], "B")
    c = cmp.compare([a, b])
    assert [t.pipeline for t in c.tables] == ["sd-txt2img", "if-cascade", "sdxl-txt2img"]
    sd = c.tables[0]
    assert [m.settings["batch_size"] for m in sd.only_in(0)] == [4]
    assert [m.settings["batch_size"] for m in sd.only_in(1)] == [16]
    text = cmp.to_text(c)
    assert "only in A: batch 4" in text and "only in B: batch 16" in text
    assert "only in A: every cell (B ran no if-cascade)" in text
    assert "only in B: every cell (A ran no sdxl-txt2img)" in text


def test_same_key_twice_in_a_session_matches_in_order() -> None:
    a = data([spec(iterations=2), spec(iterations=3)], "A")
    b = data([spec(iterations=3)], "B")
    (table,) = cmp.compare([a, b]).tables
    assert [m.present for m in table.matches] == [(0, 1), (0,)]
    assert table.matches[0].rows[0].iterations == 2  # type: ignore[union-attr]


def test_compile_backend_only_counts_when_compiled() -> None:
    a = data([spec(compile_backend="inductor"), spec(compile_mode="default")], "A")
    b = data([spec(compile_backend="eager"), spec(compile_mode="default")], "B")
    (table,) = cmp.compare([a, b]).tables
    assert [m.settings["compile"] for m in table.matches] == ["none", "default (inductor, fullgraph)"]
    assert all(m.present == (0, 1) for m in table.matches)


def test_ratios_and_deltas() -> None:
    a = data([spec()], "A", overrides={0: {"step_ms": pinned(40.0)}})
    b = data([spec()], "B", overrides={0: {"step_ms": pinned(50.0)}})
    c = cmp.compare([a, b])
    (m,) = c.tables[0].matches
    assert m.it_per_s(0) == pytest.approx(25.0) and m.it_per_s(1) == pytest.approx(20.0)
    assert m.ratio(1) == pytest.approx(0.8)
    assert m.ratio(0) == pytest.approx(1.0)
    assert m.delta("first_call_s", 1) == pytest.approx(10 * 0.010)
    assert m.value("peak_alloc_mib", 0) is None  # a column this Row may not have yet
    assert c.delta_columns == ("first_call_s",)


def test_memory_and_compile_columns_join_when_rows_have_them() -> None:
    """Other engineers add telemetry columns to Row; compare finds them by name."""
    ext = dataclasses.make_dataclass(
        "ExtRow",
        [
            ("compile_s", float | None, None),
            ("peak_alloc_mib", float | None, None),
            ("host_rss_mib", float | None, None),
        ],
        bases=(Row,),
        frozen=True,
    )
    a_row = ext(
        cell=0, pipeline="sd-txt2img", stage="main", status="ok", it_per_s=10.0, compile_s=30.0, peak_alloc_mib=2000.0
    )
    b_row = ext(
        cell=0, pipeline="sd-txt2img", stage="main", status="ok", it_per_s=11.0, compile_s=25.0, peak_alloc_mib=2300.0
    )
    a = cmp.SessionData("A", (a_row,), {})
    b = cmp.SessionData("B", (b_row,), {})
    c = cmp.compare([a, b])
    assert c.delta_columns == ("compile_s", "peak_alloc_mib")  # host_rss_mib: nobody filled it
    (m,) = c.tables[0].matches
    assert m.delta("compile_s", 1) == pytest.approx(-5.0)
    assert m.delta("peak_alloc_mib", 1) == pytest.approx(300.0)
    text = cmp.to_text(c)
    assert "Δ alloc MiB B" in text and "Δ compile s B" in text and "+300" in text and "-5.00" in text


def test_mixed_devices_and_versions_are_compared_but_said() -> None:
    a = data([spec()], "A")
    b = data([spec()], "B", device_name="NVIDIA A100-SXM4-80GB", torch_version="2.6.0", diffusers_version="0.43.0")
    c = cmp.compare([a, b])
    assert c.tables[0].matches[0].present == (0, 1)
    assert c.notes == (
        "different devices: A NVIDIA H100 80GB HBM3; B NVIDIA A100-SXM4-80GB (compared anyway)",
        "different torch versions: A 2.5.1+cu124; B 2.6.0 (compared anyway)",
        "different diffusers versions: A 0.42.1; B 0.43.0 (compared anyway)",
    )
    text = cmp.to_text(c)
    assert all(n in text for n in c.notes)
    assert cmp.compare([a, data([spec()], "B")]).notes == ()


def test_regressions_below_the_threshold_and_failed_cells() -> None:
    a = data([spec(batch_size=b) for b in (1, 4, 16)], "A", overrides={i: {"step_ms": pinned(40.0)} for i in range(3)})
    b = data(
        [spec(batch_size=b) for b in (1, 4, 16)],
        "B",
        overrides={0: {"step_ms": pinned(41.0)}, 1: {"step_ms": pinned(50.0)}, 2: {"outcome": "oom"}},
    )
    c = cmp.compare([a, b])
    lines = [r.line() for r in c.regressions(0.95)]
    assert lines == [
        "sd-txt2img · batch 4: B 20.00 it/s is 0.80× A's 25.00 it/s (below 0.95)",
        "sd-txt2img · batch 16: B OOM after warmup (ok in A)",
    ]
    assert [r.line() for r in c.regressions(0.5)] == ["sd-txt2img · batch 16: B OOM after warmup (ok in A)"]
    # every later session is checked against the first
    c3 = cmp.compare([a, a, b])
    assert {r.session for r in c3.regressions(0.95)} == {2}


def test_a_cell_failing_in_the_baseline_is_no_regression() -> None:
    a = data([spec()], "A", overrides={0: {"outcome": "oom"}})
    b = data([spec()], "B", overrides={0: {"outcome": "oom"}})
    assert cmp.compare([a, b]).regressions(0.95) == []


# --- the reference --------------------------------------------------------------------------


def test_reference_column_shows_the_seed_for_a_matching_cell() -> None:
    seed = reference.load("seed")
    a = data([spec(batch_size=1), spec(batch_size=1, compile_mode="default"), spec(batch_size=16)], "A")
    c = cmp.compare([a])
    view = cmp.reference_view(c, seed)  # torch 2.5.1 -> nightly
    values = [view.values(m) for m in c.tables[0].matches]
    assert values[0][("A100", "nightly")].text == "23.13"  # type: ignore[union-attr]
    assert values[1][("A100", "nightly")].text == "49.74"  # type: ignore[union-attr]
    assert values[2][("T4", "nightly")].text == "2.30s"  # type: ignore[union-attr]
    text = cmp.to_text(c, view)
    assert "torch nightly column (closest to A's torch 2.5.1+cu124)" in text
    assert "0.435 it/s (2.30s)" in text and "seconds per iteration" in text
    both = cmp.reference_view(c, seed, "both")
    assert both.columns[:2] == (("A100", "2.0"), ("A100", "nightly"))
    assert "A100 torch 2.0" in cmp.to_text(c, both) and "21.66" in cmp.to_text(c, both)


def test_reference_marks_the_users_own_gpu_and_if_stages() -> None:
    seed = reference.load("seed")
    a = data([spec("if-cascade")], "A", device_name="NVIDIA A100-SXM4-40GB", torch_version="2.0.1")
    c = cmp.compare([a])
    view = cmp.reference_view(c, seed)
    assert view.own_gpu == "A100" and view.header("A100", "2.0") == "A100 (yours)"
    assert [view.values(m)[("A100", "2.0")].text for m in c.tables[0].matches] == ["20.21", "13.84", "24.00"]  # type: ignore[union-attr]


def test_reference_caveats_for_tiny_cpu_cells() -> None:
    a = data([spec(weights="tiny", device="cpu", dtype="fp32", height=64, width=64)], "A")
    c = cmp.compare([a])
    text = cmp.to_text(c, cmp.reference_view(c, reference.load("seed")))
    assert "not like for like: tiny weights are not the published models; fp32 (published: fp16)" in text


# --- formats --------------------------------------------------------------------------------


def test_csv_is_long_format_with_missing_rows() -> None:
    a = data([spec(attention="sdpa", batch_size=b) for b in (1, 4)], "A")
    b = data([spec(attention="classic", batch_size=1)], "B")
    c = cmp.compare([a, b])
    text = cmp.to_csv(c, cmp.reference_view(c, reference.load("seed"), "2.0"))
    lines = list(csv.DictReader(io.StringIO(text)))
    assert [(r["match"], r["session"], r["attention"], r["batch_size"], r["status"]) for r in lines] == [
        ("0", "A", "sdpa", "1", "ok"),
        ("0", "B", "classic", "1", "ok"),
        ("1", "A", "sdpa", "4", "ok"),
        ("1", "B", "classic", "4", "missing"),
    ]
    assert lines[0]["ratio"] == "1.0000" and float(lines[1]["ratio"]) > 0 and lines[3]["ratio"] == ""
    assert lines[0]["published_a100_torch_20"] == "21.66"
    assert lines[0]["published_a100_torch_20_it_per_s"] == "21.6600"


def test_markdown_tables() -> None:
    a = data([spec(attention="sdpa")], "A")
    b = data([spec(attention="classic")], "B")
    md = cmp.to_markdown(cmp.compare([a, b]))
    assert md.startswith("# sdtop compare\n")
    assert "## sd-txt2img" in md
    assert "| pipeline | A it/s | B it/s | B/A | Δ first call s B |" in md


# --- the command ----------------------------------------------------------------------------


@pytest.fixture()
def two_sessions(tmp_path: Path) -> tuple[Path, Path]:
    specs_a = [spec(attention="sdpa", batch_size=b) for b in (1, 4)]
    specs_b = [spec(attention="classic", batch_size=b) for b in (1, 4)]
    a = write(tmp_path, "a", session_events(specs_a, overrides={i: {"step_ms": pinned(40.0)} for i in range(2)}))
    b = write(
        tmp_path,
        "b",
        session_events(specs_b, overrides={0: {"step_ms": pinned(40.0)}, 1: {"step_ms": pinned(48.0)}}),
    )
    return a, b


def test_cli_prints_the_ratio_table(two_sessions: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_sessions
    code, out, err = run_cli(["compare", str(a), str(b)], capsys)
    assert code == 0 and err == ""
    assert f"A = {a}" in out and f"B = {b}" in out
    assert "matched although it differs: attention A sdpa, B classic" in out
    assert "batch  A it/s  B it/s    B/A" in out
    assert "0.83×" in out


def test_fail_below_trips_on_an_injected_slowdown(
    two_sessions: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_sessions
    code, out, err = run_cli(["compare", str(a), str(b), "--fail-below", "0.95"], capsys)
    assert code == 1
    assert err.splitlines() == [
        "sdtop: regression: sd-txt2img · batch 4: B 20.83 it/s is 0.83× A's 25.00 it/s (below 0.95)"
    ]
    assert "B/A" in out  # the table is still printed
    code, _, err = run_cli(["compare", str(a), str(b), "--fail-below", "0.8"], capsys)
    assert code == 0 and err == ""


def test_cli_formats_and_output_file(
    two_sessions: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_sessions
    code, out, _ = run_cli(["compare", str(a), str(b), "--format", "csv"], capsys)
    assert code == 0 and out.startswith("match,pipeline,stage,attention,")
    code, out, _ = run_cli(["compare", str(a), str(b), "-f", "md"], capsys)
    assert code == 0 and "| batch | A it/s | B it/s | B/A |" in out
    target = tmp_path / "cmp.md"
    code, out, err = run_cli(["compare", str(a), str(b), "-f", "md", "-o", str(target)], capsys)
    assert code == 0 and out == "" and err == f"wrote {target}\n"
    assert target.read_text().startswith("# sdtop compare")


def test_cli_reference_for_one_session(two_sessions: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = two_sessions
    code, out, _ = run_cli(["compare", str(a), "--reference", "seed"], capsys)
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("batch"))
    assert header.split()[:3] == ["batch", "A", "it/s"] and "first call s" in header
    assert header.endswith("A100   V100    T4  RTX 3090  RTX 4090")
    row = next(line for line in out.splitlines() if line.startswith("1 "))
    assert row.split() == ["1", "25.00", "0.45", "23.13", "19.14", "6.95", "22.84", "41.89"]
    code, out, _ = run_cli(["compare", str(a), "--reference", "seed", "--reference-torch", "2.0"], capsys)
    assert code == 0 and "21.66" in out and "torch 2.0 column" in out


def test_compare_the_recorded_fixture_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    """The checked-in sessions (GPU, telemetry, compile events, OOMs) compare cleanly."""
    clean, oom = str(FIXTURES / "clean"), str(FIXTURES / "oom")
    code, out, err = run_cli(["compare", clean, clean, "--fail-below", "0.999"], capsys)
    assert code == 0 and err == ""
    assert out.count("1.00×") == 8  # sd-txt2img 2 cells + if-cascade 2 cells x 3 stages
    code, out, _ = run_cli(["compare", clean, oom, "--reference", "seed", "--reference-torch", "both"], capsys)
    assert code == 0
    assert "only in B: every cell (A ran no sdxl-txt2img)" in out
    assert "OOM after 2nd iteration" in out and "not supported" in out


BAD = [
    (["compare"], "the following arguments are required: DIR"),
    (["compare", "/no/such/session", "/no/such/other"], "/no/such/session does not exist"),
    (["compare", "/", "/"], "is not an sdtop session"),
    (["compare", "{a}"], "compare needs two or more session directories, or one with --reference seed"),
    (["compare", "{a}", "{a}", "--fail-below", "abc"], "--fail-below takes a positive number"),
    (["compare", "{a}", "{a}", "--fail-below", "0"], "got '0'"),
    (["compare", "{a}", "{a}", "--fail-below", "-1"], "got '-1'"),
    (["compare", "{a}", "{a}", "--fail-below", "nan"], "got 'nan'"),
    (["compare", "{a}", "{a}", "--fail-below", "inf"], "got 'inf'"),
    (["compare", "{a}", "--reference", "nope"], "unknown reference 'nope'; valid: seed or a CSV file"),
    (["compare", "{a}", "{a}", "--format", "xls"], "argument --format/-f: invalid choice: 'xls'"),
    (["compare", "{a}", "--reference", "seed", "--reference-torch", "3"], "invalid choice: '3'"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], expected: str, two_sessions: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = two_sessions
    code, out, err = run_cli([x.format(a=a) for x in argv], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdtop: error: ") and expected in lines[0], err


def test_a_bad_reference_file_is_one_line(
    tmp_path: Path, two_sessions: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = two_sessions
    bad = tmp_path / "ref.csv"
    bad.write_text("x,y\n")
    code, _, err = run_cli(["compare", str(a), "--reference", str(bad)], capsys)
    assert code == 2 and err.count("\n") == 1 and "the header must be" in err


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_two_tiny_real_sessions_compare(tmp_path: Path) -> None:
    """Two real ``sdtop run`` sessions (tiny weights, sdpa vs classic), compared as a user
    would: the ratio table, --fail-below tripping on a demand no run can meet, the seed's
    figures beside a matching cell."""
    # Both runs at once: each spends most of its time importing torch and diffusers once.
    dirs = [str(tmp_path / attention) for attention in ("sdpa", "classic")]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sdtop.tui.cli",
                "run",
                "--pipeline",
                "sd-txt2img",
                "--attention",
                attention,
                "--weights",
                "tiny",
                "--steps",
                "2",
                "--iterations",
                "1",
                "--out",
                out,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for attention, out in zip(("sdpa", "classic"), dirs, strict=True)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]

    def sdtop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sdtop.tui.cli", "compare", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    proc = sdtop(*dirs)
    assert proc.returncode == 0, proc.stderr
    assert "matched although it differs: attention A sdpa, B classic" in proc.stdout
    assert "B/A" in proc.stdout and "×" in proc.stdout
    proc = sdtop(*dirs, "--fail-below", "1000")
    assert proc.returncode == 1
    assert proc.stderr.startswith("sdtop: regression: sd-txt2img: B ") and "(below 1000)" in proc.stderr
    proc = sdtop(dirs[0], "--reference", "seed", "--reference-torch", "2.0")
    assert proc.returncode == 0, proc.stderr
    assert "21.66" in proc.stdout and "tiny weights are not the published models" in proc.stdout


def test_label_columns_with_words_align_left_and_numbers_right() -> None:
    """if-cascade's table leads with stage and compile (words: left), sd-txt2img's with compile
    and batch (a number: right), in the Markdown and in the terminal's text alike."""
    sessions = [cmp.load_session(FIXTURES / "clean", "A"), cmp.load_session(FIXTURES / "clean-a100", "B")]
    comparison = cmp.compare(sessions)
    md = cmp.to_markdown(comparison).splitlines()
    rules = {md[i - 1].split("|")[1].strip(): md[i] for i, line in enumerate(md) if line.startswith("| --- |")}
    assert rules["stage"].startswith("| --- | --- | ---: |")  # stage, compile, A it/s
    assert rules["compile"].startswith("| --- | ---: | ---: |")  # compile, batch, A it/s
    text = cmp.to_text(comparison).splitlines()
    row = next(line for line in text if line.startswith("I ") and "none" in line)
    assert row.split()[:2] == ["I", "none"] and row.index("none") < 20  # not pushed right under "compile"
