"""The summaries speak the second wave's levers and the outputs' fidelity (issue 13).

Rows from synthetic events (tests/helpers_events.py, then what a DiT worker and the parent
add: the dispatcher backend read back, steps computed under a cache, video frames, the
Fidelity of each cell against its baseline): every new column, the Pareto front
(ties, missing values, the memory source), ``inf`` in the CSV and JSON, the Markdown
summary's common-settings line, labels and notes, ``sdtop compare`` matching on the levers
and showing each side's PSNR, and the dashboard's table and legend at 80 columns.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract import events as ev
from sdtop.profiler.report import compare as cmp
from sdtop.profiler.report import pareto
from sdtop.profiler.report.render import render
from sdtop.profiler.report.summary import COLUMNS, Row, rows, to_csv, to_markdown, with_session_columns
from sdtop.profiler.report.text import INFINITE_PSNR, PARETO_LEGEND, PARETO_MARK, PSNR_NOTE
from sdtop.tui.models.summary import SummaryModel

from tests.helpers_events import session_events

INF = math.inf
GPU: dict[str, Any] = {"device": "cuda", "dtype": "bf16", "weights": "random", "height": 256, "width": 256, "steps": 20}


def flux(**kw: Any) -> CellSpec:
    settings = {**GPU, "attention": "native", **kw}
    return CellSpec("flux-txt2img", **settings)


def wan(**kw: Any) -> CellSpec:
    settings = {**GPU, "attention": "native", "frames": 9, **kw}
    return CellSpec("wan-t2v", **settings)


def pinned(ms: float) -> Callable[[str, int, str, int], float]:
    return lambda kind, call, stage, step: ms


def worker_adds(
    events: Iterable[ev.Event],
    *,
    backends: dict[int, dict[str, list[str]]] | None = None,
    computed: dict[int, Sequence[int]] | None = None,
) -> list[ev.Event]:
    """What a DiT worker records beyond the helper's events: each cell's attention backends
    (default: its transformer on ``native``), per measured call the steps computed under a
    cache (``computed[cell][i]`` for the i-th measured call), a video's frames."""
    settings: dict[int, dict[str, Any]] = {}
    measured_seen: dict[int, int] = {}
    out: list[ev.Event] = []
    for e in events:
        if isinstance(e, ev.CellStarted):
            settings[e.cell] = e.settings
        s = settings.get(e.cell, {})
        if isinstance(e, ev.SettingsApplied):
            found = (backends or {}).get(e.cell, {"transformer": ["native"]})
            e = dataclasses.replace(e, attention_processors={}, attention_backends=found)
        elif isinstance(e, ev.StageTimed):
            if e.call_kind == "measured" and computed and e.cell in computed:
                i = measured_seen.get(e.cell, 0)
                measured_seen[e.cell] = i + 1
                e = dataclasses.replace(e, steps_computed=computed[e.cell][i])
            if s.get("frames"):
                e = dataclasses.replace(e, frames=int(s["frames"]))
        out.append(e)
    return out


def fidelity(cell: int, baseline: int | None, psnr: float | None = None, **kw: Any) -> ev.Fidelity:
    return ev.Fidelity(ts=2e9 + cell, cell=cell, baseline_cell=baseline, psnr_db=psnr, **kw)


def session(
    specs: Sequence[CellSpec],
    ms: Sequence[float],
    fidelities: Sequence[ev.Fidelity] = (),
    **kw: Any,
) -> list[ev.Event]:
    evs = session_events(specs, overrides={i: {"step_ms": pinned(m)} for i, m in enumerate(ms)})
    return worker_adds(evs, **kw) + list(fidelities)


def before_levers(events: Iterable[ev.Event]) -> list[ev.Event]:
    """A session as sdtop recorded it before the levers existed: no lever in the settings."""
    levers = ("compile_scope", "quant", "cache", "offload", "fuse_qkv", "frames")
    return [
        dataclasses.replace(e, settings={k: v for k, v in e.settings.items() if k not in levers})
        if isinstance(e, ev.CellStarted)
        else e
        for e in events
    ]


def by_cell(table: Sequence[Row]) -> dict[int, Row]:
    return {r.cell: r for r in table}


# --- the new columns --------------------------------------------------------------------------


def test_new_columns_are_appended_after_the_old_ones() -> None:
    assert COLUMNS[COLUMNS.index("stage_width") + 1 : COLUMNS.index("pareto") + 1] == (
        "compile_scope",
        "quant",
        "cache",
        "offload",
        "fuse_qkv",
        "attention_backend",
        "frames",
        "frames_per_s",
        "steps_computed",
        "psnr_db",
        "max_abs_diff",
        "baseline_cell",
        "fidelity_note",
        "pareto",
    )


def test_lever_settings_and_what_the_modules_held() -> None:
    specs = [
        flux(),
        flux(compile_mode="default", compile_scope="regional", quant="int8wo", offload="model", fuse_qkv=True),
        flux(compile_mode="default"),
    ]
    backends = {1: {"transformer": ["flash"], "text_encoder": ["native"], "transformer_2": ["native", "flash"]}}
    table = by_cell(rows(session(specs, [10.0, 5.0, 6.0], backends=backends), live=False))
    plain, levers, whole = table[0], table[1], table[2]
    assert (plain.compile_scope, plain.quant, plain.cache, plain.offload, plain.fuse_qkv) == (
        None,
        "none",
        "none",
        "none",
        False,
    )
    assert (levers.compile_scope, levers.quant, levers.offload, levers.fuse_qkv) == (
        "regional",
        "int8wo",
        "model",
        True,
    )
    assert whole.compile_scope == "whole"
    # every module of the main stage, distinct backends in the order read back
    assert plain.attention_backend == "native" and levers.attention_backend == "flash+native"
    # images: no frames, no frames/s; no cache: no steps computed; no Fidelity: nothing
    assert (plain.frames, plain.frames_per_s, plain.steps_computed) == (None, None, None)
    assert (plain.psnr_db, plain.max_abs_diff, plain.baseline_cell, plain.fidelity_note, plain.pareto) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_attention_backend_of_each_stage_of_a_cascade() -> None:
    spec = CellSpec("if-cascade", device="cuda", dtype="fp16", weights="random", height=256, width=256, steps=4)
    backends = {0: {"I.unet": ["a"], "II.unet": ["b"], "upscaler.unet": []}}
    table = rows(session([spec], [5.0], backends=backends), live=False)
    assert [(r.stage, r.attention_backend) for r in table] == [("I", "a"), ("II", "b"), ("upscaler", None)]


def test_video_frames_per_second_is_frames_times_batch_over_the_call() -> None:
    (row,) = rows(session([wan(batch_size=2)], [10.0]), live=False)
    assert row.frames == 9
    assert row.call_s_median is not None and row.frames_per_s == pytest.approx(9 * 2 / row.call_s_median)


def test_steps_computed_is_the_median_over_measured_calls() -> None:
    specs = [flux(cache="fbc:0.2"), flux(cache="fbc:0.2", iterations=4)]
    table = by_cell(rows(session(specs, [10.0, 10.0], computed={0: [12, 9, 14], 1: [10, 11, 12, 13]}), live=False))
    assert table[0].steps_computed == 12 and table[1].steps_computed == 11.5


def test_fidelity_columns() -> None:
    specs = [flux(), flux(quant="int8wo"), flux(cache="fbc:0.2"), flux(quant="fp8dq"), flux(compile_mode="default")]
    fids = [
        fidelity(0, 0),  # the baseline, against itself
        fidelity(1, 0, 34.25, max_abs_diff=0.5),
        fidelity(2, 0, None, reason="shapes differ: (1, 16, 32, 32) vs (1, 16, 16, 16)"),
        fidelity(3, 0, None, identical=True, max_abs_diff=0.0),  # identical: written as null
        fidelity(4, None, None, reason="no baseline"),
    ]
    table = by_cell(rows(session(specs, [10.0] * 5, fids), live=False))

    def fid(r: Row) -> tuple[Any, ...]:
        return (r.baseline_cell, r.psnr_db, r.max_abs_diff, r.fidelity_note)

    assert fid(table[0]) == (0, INF, 0.0, None)
    assert fid(table[1]) == (0, 34.25, 0.5, None)
    assert (table[2].psnr_db, table[2].fidelity_note) == (None, "shapes differ: (1, 16, 32, 32) vs (1, 16, 16, 16)")
    assert (table[3].psnr_db, table[3].max_abs_diff) == (INF, 0.0)
    assert (table[4].baseline_cell, table[4].psnr_db, table[4].fidelity_note) == (None, None, "no baseline")


def test_the_last_fidelity_of_a_cell_counts() -> None:
    fids = [fidelity(1, 0, 20.0), fidelity(1, 0, 30.0)]
    table = by_cell(rows(session([flux(), flux(quant="int8wo")], [10.0, 8.0], fids), live=False))
    assert table[1].psnr_db == 30.0


def test_a_baseline_named_only_by_others_is_its_own_baseline() -> None:
    table = by_cell(rows(session([flux(), flux(quant="int8wo")], [10.0, 8.0], [fidelity(1, 0, 30.0)]), live=False))
    assert (table[0].baseline_cell, table[0].psnr_db, table[0].max_abs_diff) == (0, INF, 0.0)
    # applying the session-wide columns again changes nothing
    assert with_session_columns(list(table.values())) == list(table.values())


def test_a_session_recorded_before_the_levers_reads_them_empty() -> None:
    (row,) = rows(before_levers(session_events([flux()])), live=False)
    assert (row.compile_scope, row.quant, row.cache, row.offload, row.fuse_qkv, row.frames) == (None,) * 6


def test_fold_keeps_no_step_event() -> None:
    from sdtop.profiler.report.fold import fold

    folded = fold(session([flux(cache="fbc:0.2")], [10.0], [fidelity(0, 0)]))
    c = folded.cells[0]
    kept = [*c.calls, *c.stage_timed, *c.compile_events]
    assert not any(isinstance(e, ev.StepTimed) for e in kept)
    assert c.attention_backends == {"transformer": ["native"]} and c.fidelity is not None


# --- Pareto -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class P:
    """The fields the front reads, for tests of the rule alone."""

    cell: int
    call_s_median: float | None
    psnr_db: float | None
    peak_alloc_mib: float | None = 100.0
    nvml_peak_process_mib: float | None = None
    host_peak_rss_mib: float | None = None
    status: str = "ok"
    baseline_cell: int | None = 0
    pipeline: str = "flux-txt2img"
    stage: str = "main"
    height: int | None = 256
    width: int | None = 256
    batch_size: int | None = 1
    dtype: str | None = "bf16"
    steps: int | None = 20
    frames: int | None = None
    pareto: bool | None = None


def marks(points: Sequence[P]) -> dict[int, bool | None]:
    return {p.cell: p.pareto for p in pareto.mark(points)}


def test_front_dominance_and_ties() -> None:
    assert pareto.front([[1, 1], [0, 0]]) == [True, False]
    assert pareto.front([[1, 0], [0, 1]]) == [True, True]
    # equal in every objective: neither beats the other
    assert pareto.front([[1, 1], [1, 1], [0, 1]]) == [True, True, False]
    assert pareto.front([[1.0, INF], [2.0, 30.0]]) == [True, True]


def test_pareto_trades_time_fidelity_and_memory() -> None:
    got = marks(
        [
            P(0, 1.0, INF, 200),  # the baseline: slow, exact
            P(1, 0.5, 40.0, 200),  # faster, a little off
            P(2, 0.6, 35.0, 200),  # slower and worse than 1 at the same memory: beaten
            P(3, 0.6, 35.0, 120),  # ...but with less memory it is a trade-off
            P(4, 0.5, 40.0, 200),  # a tie with 1 in everything: both stay
        ]
    )
    assert got == {0: True, 1: True, 2: False, 3: True, 4: True}


def test_pareto_ties_on_one_objective_decide_by_the_others() -> None:
    # same PSNR and memory: the faster wins; same time and memory: the more faithful wins
    assert marks([P(0, 1.0, INF), P(1, 0.4, 30.0), P(2, 0.5, 30.0)]) == {0: True, 1: True, 2: False}
    assert marks([P(0, 1.0, INF), P(1, 0.5, 30.0), P(2, 0.5, 31.0)]) == {0: True, 1: False, 2: True}


def test_pareto_leaves_out_what_it_cannot_judge() -> None:
    got = marks(
        [
            P(0, 1.0, INF),
            P(1, 0.5, 30.0),
            P(2, 0.1, 60.0, status="OOM after 2nd iteration"),  # not ok
            P(3, 0.1, None),  # no PSNR
            P(4, None, 60.0),  # no time
            P(5, 0.1, 60.0, baseline_cell=None),  # no baseline
            P(6, 0.1, 60.0, baseline_cell=9),  # alone with its baseline
            P(7, 0.1, 60.0, pipeline="sd3-txt2img"),  # another pipeline, same --baseline: its own group, alone
        ]
    )
    assert got == {0: True, 1: True, 2: None, 3: None, 4: None, 5: None, 6: None, 7: None}


def test_pareto_memory_is_one_source_for_the_group_or_none() -> None:
    # one row lacks the allocator peak: the NVML process figure, which every row has, decides
    rows_ = [
        P(0, 1.0, INF, peak_alloc_mib=500, nvml_peak_process_mib=900),
        P(1, 0.5, 30.0, peak_alloc_mib=None, nvml_peak_process_mib=600),
        P(2, 0.5, 30.0, peak_alloc_mib=100, nvml_peak_process_mib=700),
    ]
    assert pareto.memory_source(rows_) == "nvml_peak_process_mib"
    assert marks(rows_) == {0: True, 1: True, 2: False}
    # no source every row has: memory is ignored (2 would have won on its allocator peak)
    rows_ = [
        P(0, 1.0, INF, peak_alloc_mib=500),
        P(1, 0.5, 30.0, peak_alloc_mib=None),
        P(2, 0.5, 30.0, peak_alloc_mib=1),
    ]
    assert pareto.memory_source(rows_) is None
    assert marks(rows_) == {0: True, 1: True, 2: True}
    # the host's resident memory as the last resort
    rows_ = [P(0, 1.0, INF, None, None, 300), P(1, 0.5, 30.0, None, None, 200)]
    assert pareto.memory_source(rows_) == "host_peak_rss_mib"


def test_pareto_does_not_depend_on_row_order_and_is_idempotent() -> None:
    rows_ = [P(0, 1.0, INF, 200), P(1, 0.5, 40.0, 200), P(2, 0.6, 35.0, 200), P(3, 0.6, 35.0, 120)]
    first = marks(rows_)
    assert marks(list(reversed(rows_))) == first
    again = pareto.mark(pareto.mark(rows_))
    assert {p.cell: p.pareto for p in again} == first
    # a mark set earlier is recomputed, not kept
    assert marks([dataclasses.replace(rows_[2], pareto=True), *rows_[:2]])[2] is False


def test_rows_mark_the_front_from_events() -> None:
    specs = [flux(), flux(compile_mode="default"), flux(quant="int8wo"), flux(cache="fbc:0.2")]
    fids = [fidelity(0, 0), fidelity(1, 0, 50.0), fidelity(2, 0, 35.0), fidelity(3, 0, 30.0)]
    # int8wo is slower than compile and less faithful: beaten (no memory recorded, so ignored)
    table = by_cell(rows(session(specs, [10.0, 5.0, 6.0, 3.0], fids), live=False))
    assert {c: r.pareto for c, r in table.items()} == {0: True, 1: True, 2: False, 3: True}


# --- CSV, JSON --------------------------------------------------------------------------------


def test_csv_and_json_write_an_infinite_psnr_as_inf() -> None:
    evs = session([flux(), flux(quant="int8wo")], [10.0, 8.0], [fidelity(0, 0), fidelity(1, 0, 31.5)])
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows(evs, live=False)))))
    assert [r["psnr_db"] for r in parsed] == ["inf", "31.5000"]
    assert float(parsed[0]["psnr_db"]) == INF
    assert [r["pareto"] for r in parsed] == ["true", "true"]
    assert [r["baseline_cell"] for r in parsed] == ["0", "0"]
    doc = json.loads(render(evs, "json"))  # strict JSON: no Infinity token
    assert [r["psnr_db"] for r in doc["rows"]] == ["inf", 31.5]


# --- Markdown ---------------------------------------------------------------------------------


def test_markdown_names_constant_levers_and_leaves_off_ones_unsaid() -> None:
    specs = [
        flux(quant="int8wo", offload="model", compile_mode="default", compile_scope="regional", attention=a)
        for a in ("native", "flash")
    ]
    md = to_markdown(rows(session(specs, [10.0, 8.0]), live=False))
    common = next(line for line in md.splitlines() if line.startswith("Settings common"))
    assert "compile scope regional · quant int8wo · offload model" in common
    assert "cache" not in common and "fuse qkv" not in common and "frames" not in common
    md = to_markdown(rows(session([flux(), flux(attention="flash")], [10.0, 8.0]), live=False))
    common = next(line for line in md.splitlines() if line.startswith("Settings common"))
    assert "quant" not in common and "scope" not in common
    assert PSNR_NOTE not in md and PARETO_MARK not in md


def test_markdown_labels_varying_levers_like_attention_and_compile() -> None:
    specs = [
        flux(),
        flux(quant="fp8dq"),
        flux(compile_mode="default", compile_scope="regional"),
        flux(compile_mode="default", compile_scope="whole"),
    ]
    md = to_markdown(rows(session(specs, [10.0, 8.0, 6.0, 7.0]), live=False))
    header = next(line for line in md.splitlines() if line.startswith("| pipeline"))
    assert header == (
        "| pipeline | compile none · quant none | compile none · quant fp8dq | compile default (regional) · quant none "
        "| compile default (whole) · quant none |"
    )


def test_markdown_shows_psnr_pareto_frames_and_steps_computed_with_notes() -> None:
    specs = [wan(), wan(cache="fbc:0.2"), wan(quant="int8wo")]
    fids = [fidelity(0, 0), fidelity(1, 0, 31.25), fidelity(2, 0, None, reason="baseline output missing")]
    table = rows(session(specs, [10.0, 5.0, 6.0], fids, computed={1: [11, 11, 12]}), live=False)
    md = to_markdown(table)
    line = next(x for x in md.splitlines() if x.startswith("| wan-t2v"))
    cells = [c.strip() for c in line.strip("|").split("|")][1:]
    r0, r1 = by_cell(table)[0], by_cell(table)[1]
    assert r0.frames_per_s is not None and r1.frames_per_s is not None
    assert cells[0] == f"100.00 · {r0.frames_per_s:.2f} frames/s · PSNR {INFINITE_PSNR} {PARETO_MARK}"
    assert cells[1] == f"200.00 (11/20 computed) · {r1.frames_per_s:.2f} frames/s · PSNR 31.2 dB {PARETO_MARK}"
    assert cells[2].startswith("166.67 ·") and "PSNR" not in cells[2]
    assert "Settings common to every cell:" in md and "9 frames" in md
    notes = md.split("it/s = denoising steps per second")[1]
    assert PSNR_NOTE + "." in notes
    assert f"{INFINITE_PSNR} = identical" in notes
    assert PARETO_LEGEND + "." in notes
    assert "No PSNR for cell 2 (wan-t2v): baseline output missing." in notes
    assert "frames/s = frames × batch size ÷ median whole-call time." in notes
    assert "(n/N computed)" in notes


def test_markdown_escapes_a_fidelity_reason() -> None:
    fids = [fidelity(0, 0), fidelity(1, 0, None, reason="bad \x1b[31mred")]
    md = to_markdown(rows(session([flux(), flux(quant="int8wo")], [10.0, 8.0], fids), live=False))
    assert "\x1b" not in md and "bad \\x1b[31mred" in md


# --- compare ----------------------------------------------------------------------------------


def _side(label: str, psnr: float, ms: float = 10.0) -> cmp.SessionData:
    specs = [flux(), flux(quant="fp8dq")]
    evs = session(specs, [ms, ms * 0.7], [fidelity(0, 0), fidelity(1, 0, psnr)])
    return cmp.SessionData.from_events(evs, label, live=False)


def test_compare_matches_on_the_levers_and_shows_each_sides_psnr() -> None:
    c = cmp.compare([_side("A", 35.0), _side("B", 33.5, ms=8.0)])
    (table,) = c.tables
    assert table.columns == ("quant",)
    assert [m.settings["quant"] for m in table.matches] == ["none", "fp8dq"]
    assert [(m.psnr(0), m.psnr(1)) for m in table.matches] == [(INF, INF), (35.0, 33.5)]
    text = cmp.to_text(c)
    header = next(line for line in text.splitlines() if line.startswith("quant"))
    assert header.split()[:10] == ["quant", "A", "it/s", "B", "it/s", "B/A", "A", "PSNR", "B", "PSNR"]
    body = [line.split() for line in text.splitlines() if line.startswith(("none", "fp8dq"))]
    assert body[0][4:6] == [INFINITE_PSNR, INFINITE_PSNR] and body[1][4:6] == ["35.0", "33.5"]
    assert PSNR_NOTE in text
    # off levers go unsaid in the common line
    common = next(line for line in text.splitlines() if line.startswith("common:"))
    assert "cache" not in common and "offload" not in common and "fuse" not in common
    md = cmp.to_markdown(c)
    assert "| A PSNR | B PSNR |" in md and f"| {INFINITE_PSNR} | {INFINITE_PSNR} |" in md
    parsed = list(csv.DictReader(io.StringIO(cmp.to_csv(c))))
    assert [(r["session"], r["quant"], r["psnr_db"]) for r in parsed] == [
        ("A", "none", "inf"),
        ("B", "none", "inf"),
        ("A", "fp8dq", "35.0000"),
        ("B", "fp8dq", "33.5000"),
    ]
    assert {r["baseline_cell"] for r in parsed} == {"0"} and "max_abs_diff" in parsed[0]


def test_compare_a_lever_constant_in_each_session_is_matched_across() -> None:
    a = cmp.SessionData.from_events(session([flux(), flux(batch_size=2)], [10.0, 10.0]), "A", live=False)
    b = cmp.SessionData.from_events(
        session([flux(quant="int8wo"), flux(quant="int8wo", batch_size=2)], [8.0, 8.0]), "B", live=False
    )
    c = cmp.compare([a, b])
    (table,) = c.tables
    assert table.differing == {"quant": ("none", "int8wo")}
    assert "matched although it differs: quant A none, B int8wo" in cmp.to_text(c)
    assert "PSNR" not in cmp.to_text(c)  # no PSNR anywhere: no columns, no note


def test_compare_an_older_session_meets_a_new_one_with_levers_off() -> None:
    a = cmp.SessionData.from_events(before_levers(session_events([flux()])), "A", live=False)
    b = cmp.SessionData.from_events(session([flux()], [8.0]), "B", live=False)
    (table,) = cmp.compare([a, b]).tables
    assert not table.differing and [m.present for m in table.matches] == [(0, 1)]


# --- the dashboard ----------------------------------------------------------------------------


def test_dashboard_table_fits_80_columns_with_levers_psnr_and_the_mark() -> None:
    specs = [flux(), flux(quant="fp8dq"), flux(compile_mode="default", cache="fbc:0.2")]
    fids = [fidelity(0, 0), fidelity(1, 0, 36.5), fidelity(2, 0, 31.0)]
    table = rows(session(specs, [10.0, 7.0, 3.0], fids), live=False)
    m = SummaryModel()
    # cell by cell, as the dashboard builds them: the model adds the session-wide columns
    m.set_rows([dataclasses.replace(r, pareto=None) for r in table])
    assert [r.pareto for r in m.rows] == [True, True, True]
    cols = m.columns(76)
    keys = [c.key for c, _ in cols]
    assert {"levers", "psnr", "pareto", "it/s", "status", "compile"} <= set(keys)
    assert sum(w + 2 for _, w in cols) <= 76
    texts = {c.key: [c.text(t) for t in m.table()] for c, _ in cols}
    assert texts["psnr"] == [INFINITE_PSNR, "36.5", "31.0"]
    assert texts["levers"] == ["—", "fp8dq", "fbc:0.2"]
    assert texts["pareto"] == [PARETO_MARK] * 3
    (legend,) = m.legend(76)
    assert legend.startswith(PARETO_MARK) and len(legend) <= 76
    assert m.legend(120)[0].startswith(PARETO_LEGEND[:40])


def test_dashboard_without_levers_keeps_its_columns() -> None:
    m = SummaryModel()
    m.set_rows(rows(session_events([flux(), flux(compile_mode="default")]), live=False))
    keys = [c.key for c, _ in m.columns(200)]
    assert not {"levers", "psnr", "pareto"} & set(keys) and "speedup" in keys
    assert m.legend(120) == []
