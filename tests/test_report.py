"""The report layer as a whole: streaming the log, the words for unfinished cells, the
published figures of attentions the guide never measured, and untrusted text kept off
the terminal (``sdtop export`` / ``sdtop compare`` through the real CLI entry point)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract.events import CellFinished, Environment, Event, StepTimed, decode, encode
from sdtop.profiler.host.session import SessionError, iter_events, read_events
from sdtop.profiler.report import compare as cmp
from sdtop.profiler.report import reference
from sdtop.profiler.report.render import finalize, render
from sdtop.profiler.report.rows import rows
from sdtop.profiler.report.text import escape_controls, escape_json, fmt_rate, md_cell
from sdtop.tui.cli import main

from tests.helpers_events import session_events
from tests.perf.common import child_env

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "sessions"
RAW = ("\x1b", "\x07", "\x9b")
EVIL = "boom \x1b]0;pwned\x07 then \x9b2J"


def _spec(attention: str = "sdpa", **kw: object) -> CellSpec:
    base: dict[str, object] = {"steps": 4, "device": "cuda", "dtype": "fp16", "attention": attention}
    base.update(kw)
    return CellSpec("sd-txt2img", **base)


def _write(directory: Path, events: list[Event]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "events.jsonl").write_text("".join(encode(e) + "\n" for e in events))
    return directory


# --- text -----------------------------------------------------------------------------------


def test_escape_controls_writes_out_controls_and_keeps_structure() -> None:
    assert escape_controls("plain text · ü") == "plain text · ü"
    assert escape_controls("a\x1b[2Jb\x07c\x9bd\x7f") == "a\\x1b[2Jb\\x07c\\x9bd\\x7f"
    assert escape_controls("line 1\nline 2\tx\r") == "line 1\nline 2\tx\\x0d"
    assert escape_controls("a\nb", keep_newlines=False) == "a\\x0ab"
    assert escape_controls("abc\u202edef") == "abc\\u202edef"  # right-to-left override


def test_md_cell_escapes_controls_then_the_table_syntax() -> None:
    assert md_cell("a|b\\c") == "a\\|b\\\\c"
    assert md_cell("x\x1by\nz") == "x\\\\x1by\\\\x0az"


def test_escape_json_keeps_the_same_json() -> None:
    text = json.dumps({"s": "a\x9bb\x7f"}, ensure_ascii=False)
    assert "\x9b" in text  # what json.dumps leaves raw
    safe = escape_json(text)
    assert safe == '{"s": "a\\u009bb\\u007f"}'
    assert json.loads(safe) == {"s": "a\x9bb\x7f"}


def test_fmt_rate_is_the_seeds_two_decimals() -> None:
    assert [fmt_rate(v) for v in (None, 12.345, 0.1, 0.0123)] == ["n/a", "12.35", "0.10", "0.0123"]


# --- streaming --------------------------------------------------------------------------------


def test_iter_events_is_lazy_and_matches_read_events(tmp_path: Path) -> None:
    path = FIXTURES / "clean" / "events.jsonl"
    it = iter_events(path)
    assert not isinstance(it, list)
    first = next(it)
    assert first == read_events(path)[0]
    assert [first, *it] == read_events(path)


def test_the_step_fast_path_gives_what_decode_gives(tmp_path: Path) -> None:
    lines = [
        '{"kind":"step","v":1,"ts":1700000004.4554818,"cell":3,"call":2,"call_kind":"measured","stage":"II","step":7,"ms":5.25}',
        # not canonical: each takes the full decoder, and must read the same
        '{"kind":"step","v":1,"ts":1700000004,"cell":0,"call":0,"call_kind":"first","stage":"main","step":0,"ms":40}',
        '{"kind":"step","v":1,"ts":1.5,"cell":0,"call":0,"call_kind":"first","stage":"m\\u00e4in","step":0,"ms":1e-05}',
        '{"ms":2.5,"kind":"step","v":1,"ts":1.5,"cell":0,"call":0,"call_kind":"first","stage":"main","step":0}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    got = list(iter_events(path))
    want = [decode(line) for line in lines]
    assert got == want
    assert all(type(g) is StepTimed for g in got)
    assert {k: type(v) for k, v in vars(got[0]).items()} == {k: type(v) for k, v in vars(want[0]).items()}
    assert got[0].ms == 5.25 and got[0].stage == "II" and got[2].stage == "mäin"


def test_iter_events_keeps_the_torn_and_corrupt_line_rules(tmp_path: Path) -> None:
    good = (FIXTURES / "clean" / "events.jsonl").read_text().splitlines()[:5]
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(good) + '\n{"kind":"step","v":1,"ts":1.0,"ce')
    warnings: list[str] = []
    assert len(list(iter_events(torn, on_warning=warnings.append))) == 5
    assert warnings == ["torn.jsonl line 6 is incomplete (torn write); skipped"]
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text(good[0] + "\nnot json\n" + "\n".join(good[1:]) + "\n")
    with pytest.raises(SessionError, match=r"corrupt\.jsonl line 2 is corrupt"):
        list(iter_events(corrupt))


def test_finalize_writes_nothing_when_the_log_is_corrupt(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    good = (FIXTURES / "clean" / "events.jsonl").read_text().splitlines()
    (d / "events.jsonl").write_text("\n".join([*good[:10], "garbage", *good[10:]]) + "\n")
    with pytest.raises(SessionError):
        finalize(d)
    assert sorted(p.name for p in d.iterdir()) == ["events.jsonl"]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_rendering_a_stream_equals_rendering_a_list(name: str) -> None:
    path = FIXTURES / name / "events.jsonl"
    for fmt in ("csv", "md", "json"):
        assert render(iter_events(path), fmt) == render(read_events(path), fmt)


# --- unfinished cells -------------------------------------------------------------------------


def test_a_log_without_its_end_exports_the_open_cell_as_interrupted(tmp_path: Path) -> None:
    events = session_events([_spec(), _spec("classic")], finished=None, overrides={1: {"outcome": "running"}})
    assert [r.status for r in rows(events)] == ["ok", "running"]  # the dashboard of a live run
    assert [r.status for r in rows(events, live=False)] == ["ok", "interrupted"]
    assert "interrupted" in render(events, "csv") and "running" not in render(events, "csv")
    assert ",running," in render(events, "csv", live=True)
    d = _write(tmp_path / "died", events)
    finalize(d)
    assert ",interrupted," in (d / "summary.csv").read_text()
    assert "| interrupted |" in (d / "summary.md").read_text()
    info = json.loads((d / "session.json").read_text())
    assert (info["status"], info["cells_finished"]) == ("incomplete", 2)


def test_sdtop_export_of_a_died_session_says_interrupted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = session_events([_spec()], finished=None, overrides={0: {"outcome": "running"}})
    d = _write(tmp_path / "died", events)
    assert main(["export", str(d), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "| sd-txt2img | interrupted |" in out


# --- the published figures are SDPA only -----------------------------------------------------


def test_classic_cells_get_no_published_figures_and_a_note(tmp_path: Path) -> None:
    specs = [_spec("sdpa"), _spec("classic")]
    d = _write(tmp_path / "s", session_events(specs))
    data = cmp.load_session(d, "A")
    table = reference.load("seed")
    sdpa_row, classic_row = data.rows
    assert any(v is not None for v in table.for_row(sdpa_row).values())
    assert set(table.for_row(classic_row).values()) == {None}
    result = cmp.compare([data])
    text = cmp.to_text(result, cmp.reference_view(result, table))
    lines = text.splitlines()
    sdpa_line = next(x for x in lines if x.startswith("sdpa"))
    classic_line = next(x for x in lines if x.startswith("classic"))
    # the guide's A100 and V100 figures for sd-txt2img, batch 1, torch 2.0, no compile
    assert "23.13" in sdpa_line and "19.14" in sdpa_line
    assert "23.13" not in classic_line and "19.14" not in classic_line
    assert "published figures are SDPA only; classic-attention cells have none" in lines
    csv_text = cmp.to_csv(result, cmp.reference_view(result, table))
    classic_csv = next(x for x in csv_text.splitlines() if ",classic," in x)
    assert classic_csv.endswith("," * 2 * len(table.gpus))  # every published pair empty


def test_a_session_of_sdpa_cells_has_no_attention_note() -> None:
    assert reference.attention_note(["sdpa", "sdpa-flash", None]) is None
    assert reference.attention_note(["classic", "xformers", "sdpa"]) == (
        "published figures are SDPA only; classic, xformers-attention cells have none"
    )


# --- untrusted text ---------------------------------------------------------------------------


def _evil_session(directory: Path) -> Path:
    """A session whose recorded strings carry terminal escapes: a cell's status and the
    device name (sessions are shared and merged; anyone may have written them)."""
    events = session_events([_spec(), _spec("classic")])
    out: list[Event] = []
    for e in events:
        if isinstance(e, CellFinished) and e.cell == 1:
            e = CellFinished(ts=e.ts, cell=e.cell, status=f"error: {EVIL}", duration_s=e.duration_s)
        if isinstance(e, Environment) and "device_name" in e.data:
            e = Environment(ts=e.ts, cell=e.cell, data={**e.data, "device_name": "GPU\x1b[31m red"})
        out.append(e)
    return _write(directory, out)


def _assert_clean(text: str) -> None:
    leaked = [c for c in RAW if c in text]
    assert not leaked, f"raw control characters reached the output: {leaked!r}"


@pytest.mark.parametrize("fmt", ["md", "csv", "json"])
def test_sdtop_export_escapes_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    d = _evil_session(tmp_path / "evil")
    assert main(["export", str(d), "--format", fmt]) == 0
    out = capsys.readouterr().out
    _assert_clean(out)
    if fmt == "json":
        statuses = [r["status"] for r in json.loads(out)["rows"]]
        assert statuses[1] == f"error: {EVIL}"  # the same text, escaped only on the wire
    else:
        assert "\\x1b]0;pwned\\x07" in out.replace("\\\\", "\\")


@pytest.mark.parametrize("fmt", ["text", "md", "csv"])
def test_sdtop_compare_escapes_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    a = _evil_session(tmp_path / "a")
    b = _evil_session(tmp_path / "b\x1b]0;dir\x07")
    code = main(["compare", str(a), str(b), "--format", fmt, "--reference", "seed", "--fail-below", "0.5"])
    captured = capsys.readouterr()
    assert code in (0, 1)
    _assert_clean(captured.out)
    _assert_clean(captured.err)
    assert re.search(r"\\+x1b", captured.out)


def test_finalize_keeps_session_files_free_of_raw_controls(tmp_path: Path) -> None:
    d = _evil_session(tmp_path / "evil")
    finalize(d)
    for name in ("session.json", "summary.csv", "summary.md"):
        _assert_clean((d / name).read_text())


# --- the benchmark ----------------------------------------------------------------------------


@pytest.mark.perf
def test_bench_export_smoke(tmp_path: Path) -> None:
    """bench_export.py runs a tiny session through ``sdtop export`` and prints its figures
    (no timing asserted: the figures depend on the machine)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "perf" / "bench_export.py"), "--cells", "4", "--steps", "3"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    figures = dict(re.findall(r"^FIGURE (\S+) (\S+)", out.stdout, flags=re.M))
    # 3 session lines; per cell 7 lifecycle lines and 4 calls of 3 steps + 7 lines each
    assert figures["events_lines"] == str(3 + 4 * (7 + 4 * (3 + 7)))
    for fmt in ("md", "csv"):
        assert {f"{fmt}_wall_s", f"{fmt}_cpu_s", f"{fmt}_peak_rss_mb", f"{fmt}_rss_growth_mb"} <= figures.keys()
    assert "# done" in out.stdout


@pytest.mark.parametrize("name", ["clean", "oom", "recompile", "crashed"])
def test_folding_steps_as_runs_is_folding_them_one_by_one(name: str) -> None:
    """The dashboard's hot path (``add_steps``) against ``add``, rows compared with running
    cells included, cut in the middle of calls."""
    from itertools import groupby

    from sdtop.profiler.report.fold import SessionFold
    from sdtop.profiler.report.rows import rows_of

    events = read_events(FIXTURES / name / "events.jsonl")
    cut = len(events) * 2 // 3
    one, runs = SessionFold(), SessionFold()
    for e in events[:cut]:
        one.add(e)
    for is_step, group in groupby(events[:cut], key=lambda e: isinstance(e, StepTimed)):
        batch = list(group)
        if is_step:
            runs.add_steps(batch)  # type: ignore[arg-type]
        else:
            for e in batch:
                runs.add(e)
    assert rows_of(runs, live=True) == rows_of(one, live=True)
    assert rows_of(runs, live=False) == rows_of(one, live=False)


def test_the_export_benchmark_writes_steps_as_the_worker_does() -> None:
    """bench_export's synthetic steps must be the worker's exact lines (``encode``), or the
    benchmark would time the full decoder where a real session takes the step fast path."""
    from tests.perf.bench_export import session_lines

    steps = [ln for ln in session_lines(cells=1, calls=1, steps=3) if '"kind":"step"' in ln]
    assert len(steps) == 3
    for line in steps:
        assert encode(decode(line)) == line.strip()
