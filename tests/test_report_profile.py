"""Issue 14, the report half: "why it is fast" from a profiled call's ``ProfileSummary``.

The breakdown columns of a row (family shares, idle, GFLOP/step, TFLOP/s, MFU and why not),
the peak table they are read against (its rows, its sources, matching a device name), the
"Where the time goes" table of summary.md and the shares side by side in ``sdtop
compare``. Sessions are synthesised by tests/helpers_events.py (pinned step times, so every
figure is known exactly) with the worker's profile phase added here; the recorded
``profiled`` fixture is read too.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract import events as ev
from sdtop.profiler.contract.events import OP_FAMILIES
from sdtop.profiler.host.session import read_events
from sdtop.profiler.report import breakdown, peaks
from sdtop.profiler.report import compare as cmp
from sdtop.profiler.report.fold import fold
from sdtop.profiler.report.rows import BREAKDOWN_COLUMNS, COLUMNS, FAMILY_COLUMNS, Row, has_breakdown, rows
from sdtop.profiler.report.summary import to_csv, to_markdown
from sdtop.profiler.report.text import (
    FAMILY_LABELS,
    GFLOP_NOTE,
    IDLE_NOTE,
    MFU_NOTE,
    PROFILE_NOTE,
    SHARES_NOTE,
    TFLOPS_NOTE,
)

from tests.helpers_events import H100, cell_events, session_events

FIXTURE = Path(__file__).parent / "fixtures" / "sessions" / "profiled"
STEPS = 10
STEP_MS = 40.0  # every measured step: it/s is exactly 25
#: A profiled call's busy seconds per family: 1.0 s in all, so seconds read as fractions.
FAMILIES = {
    "attention": 0.20,
    "gemm": 0.30,
    "conv": 0.25,
    "norm": 0.05,
    "elementwise": 0.10,
    "copy": 0.06,
    "other": 0.04,
}


def pinned(ms: float) -> Any:
    return lambda kind, call, stage, step: ms


def spec(pipeline: str = "sd-txt2img", **kw: Any) -> CellSpec:
    base: dict[str, Any] = {"device": "cuda", "dtype": "fp16", "weights": "random", "steps": STEPS}
    if pipeline == "if-cascade":
        base.update(height=64, width=64)
    base.update(kw)
    return CellSpec(pipeline, **base)


def profile(
    cell: int = 0,
    *,
    families: Mapping[str, float] = FAMILIES,
    span_s: float = 1.25,
    idle_s: float | None = 0.25,
    flops: Mapping[str, float] | None = None,
    source: str = "cuda",
    call: int = 4,
    top: Sequence[dict[str, Any]] = (),
) -> ev.ProfileSummary:
    return ev.ProfileSummary(
        ts=2e9,
        cell=cell,
        call=call,
        source=source,
        family_s=dict(families),
        busy_s=sum(families.values()),
        span_s=span_s,
        idle_s=idle_s,
        top=list(top),
        steps=STEPS,
        flops_per_step=dict({"unet": 800e9} if flops is None else flops),
    )


def profiled_call(cell: int, call: int, stages: Sequence[str], ms: float = 400.0) -> list[ev.Event]:
    """What the profile phase records besides its summary: a slow call of kind "profiled"."""
    out: list[ev.Event] = [ev.PhaseStarted(ts=1.9e9, cell=cell, phase="profile")]
    for stage in stages:
        out += [
            ev.StepTimed(ts=1.9e9 + i, cell=cell, call=call, call_kind="profiled", stage=stage, step=i, ms=ms)
            for i in range(STEPS)
        ]
        out.append(
            ev.StageTimed(
                ts=1.9e9 + 20, cell=cell, call=call, call_kind="profiled", stage=stage, steps=STEPS, loop_s=4.0
            )
        )
    out.append(ev.CallFinished(ts=1.9e9 + 21, cell=cell, call=call, call_kind="profiled", wall_s=9.0, denoise_s=4.0))
    return out


def with_profile(events: list[ev.Event], summaries: Sequence[ev.ProfileSummary], slow: bool = True) -> list[ev.Event]:
    """The cells' events with their profile phase inserted before each CellFinished."""
    by_cell = {p.cell: p for p in summaries}
    stages: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ev.StageTimed) and e.stage not in stages.setdefault(e.cell, []):
            stages[e.cell].append(e.stage)
    out: list[ev.Event] = []
    for e in events:
        p = by_cell.get(e.cell)
        if isinstance(e, ev.CellFinished) and p is not None:
            if slow:
                out += profiled_call(e.cell, p.call, stages.get(e.cell, ["main"]))
            out.append(p)
        out.append(e)
    return out


def one_row(cell_spec: CellSpec, summary: ev.ProfileSummary | None = None, **kw: Any) -> Row:
    events = cell_events(0, cell_spec, step_ms=pinned(STEP_MS), **kw)
    if summary is not None:
        events = with_profile(events, [summary])
    (row,) = rows(events, live=False)
    return row


# --- the columns ------------------------------------------------------------------------------


def test_breakdown_columns_are_appended_after_the_last_ones_in_order() -> None:
    assert COLUMNS[COLUMNS.index("pareto") + 1 : COLUMNS.index("mfu_note") + 1] == (
        "attn_pct",
        "gemm_pct",
        "conv_pct",
        "norm_pct",
        "elementwise_pct",
        "copy_pct",
        "other_pct",
        "idle_pct",
        "gflop_per_step",
        "tflops",
        "mfu_pct",
        "mfu_note",
    )
    end = COLUMNS.index("mfu_note") + 1
    assert COLUMNS[end - len(BREAKDOWN_COLUMNS) : end] == BREAKDOWN_COLUMNS
    assert COLUMNS[end:] == ("lane", "hostname", "attempt")  # issue 15's, after them
    assert tuple(FAMILY_COLUMNS) == OP_FAMILIES and tuple(FAMILY_LABELS) == OP_FAMILIES


def test_shares_idle_flops_tflops_and_mfu_of_a_profiled_row() -> None:
    row = one_row(spec(), profile())
    shares = {f: getattr(row, c) for f, c in FAMILY_COLUMNS.items()}
    assert shares == pytest.approx({f: 100.0 * s for f, s in FAMILIES.items()})
    assert math.fsum(shares.values()) == pytest.approx(100.0, abs=1.0)
    assert row.idle_pct == pytest.approx(20.0)  # 0.25 s of a 1.25 s span
    assert row.gflop_per_step == pytest.approx(800.0)
    assert row.it_per_s == pytest.approx(25.0)
    assert row.tflops == pytest.approx(800.0 * 25.0 / 1000.0)  # 20 TFLOP/s
    assert row.mfu_pct == pytest.approx(100.0 * 20.0 / 989.5)  # H100 SXM, fp16, dense
    assert row.mfu_note is None and has_breakdown(row)


def test_the_profiled_call_never_feeds_the_measured_figures() -> None:
    """A 10x slower profiled call (its steps, StageTimed and CallFinished) changes nothing
    that reads measured calls: it/s, percentiles, medians, the measured count."""
    plain = one_row(spec())
    profiled = one_row(spec(), profile())
    for column in ("it_per_s", "step_ms_p50", "step_ms_p95", "call_s_median", "denoise_s_median", "measured_calls"):
        assert getattr(profiled, column) == getattr(plain, column), column
    assert profiled.first_call_s == plain.first_call_s
    assert all(getattr(plain, c) is None for c in BREAKDOWN_COLUMNS)  # no profile: nothing judged


def test_tflops_are_steady_state_not_the_profiled_calls_own_time() -> None:
    """The profiled call took 400 ms a step; TFLOP/s uses the measured 40 ms steps."""
    row = one_row(spec(), profile())
    assert row.tflops == pytest.approx(20.0)
    assert row.tflops != pytest.approx(800.0 * (1000.0 / 400.0) / 1000.0)


def test_shares_add_up_with_unknown_and_bad_families() -> None:
    """A family this version does not know counts as other; a negative time as none."""
    families = {**FAMILIES, "collective": 0.10, "norm": -1.0}
    row = one_row(spec(), profile(families=families))
    total = sum(v for f, v in families.items() if f != "norm" and v > 0)
    assert row.norm_pct == 0.0
    assert row.other_pct == pytest.approx(100.0 * (0.04 + 0.10) / total)
    assert math.fsum(getattr(row, c) for c in FAMILY_COLUMNS.values()) == pytest.approx(100.0)


def test_a_profile_that_timed_nothing_has_no_shares() -> None:
    row = one_row(spec(), profile(families={}))
    assert row.attn_pct is None and not has_breakdown(row)
    assert row.tflops == pytest.approx(20.0)  # the FLOPs were still counted


@pytest.mark.parametrize(
    ("idle_s", "span_s", "expected"),
    [(0.25, 1.25, 20.0), (None, 1.25, None), (0.5, 0.0, None), (2.0, 1.0, 100.0), (-0.1, 1.0, 0.0)],
)
def test_idle_share(idle_s: float | None, span_s: float, expected: float | None) -> None:
    assert breakdown.idle_pct(profile(idle_s=idle_s, span_s=span_s)) == (
        None if expected is None else pytest.approx(expected)
    )


def test_gflop_per_step_sums_the_stages_denoisers() -> None:
    """if-cascade: each stage's row reads its own denoisers ("I.unet" -> I); sd-controlnet's
    main stage sums the UNet and the ControlNet."""
    flops = {"I.unet": 100e9, "II.unet": 300e9, "upscaler.unet": 200e9}
    rs = rows(
        with_profile(cell_events(0, spec("if-cascade"), step_ms=pinned(STEP_MS)), [profile(flops=flops)]), live=False
    )
    assert {r.stage: r.gflop_per_step for r in rs} == pytest.approx({"I": 100.0, "II": 300.0, "upscaler": 200.0})
    assert {r.stage: r.tflops for r in rs} == pytest.approx({"I": 2.5, "II": 7.5, "upscaler": 5.0})
    assert len({r.attn_pct for r in rs}) == 1  # the shares are the whole call's: every stage row
    row = one_row(spec("sd-controlnet"), profile(flops={"unet": 600e9, "controlnet": 200e9}))
    assert row.gflop_per_step == pytest.approx(800.0)


@pytest.mark.parametrize(
    ("device", "device_name", "dtype", "summary", "note"),
    [
        pytest.param("cpu", "CPU", "fp32", profile(idle_s=None, source="cpu"), "cpu", id="cpu"),
        pytest.param("cuda", H100, "fp16", profile(flops={}), "no FLOP count", id="no-flops"),
        pytest.param("cuda", "NVIDIA H100 NVL", "fp16", profile(), "unknown card NVIDIA H100 NVL", id="unknown-card"),
        pytest.param("cuda", "Tesla T4", "bf16", profile(), "no bf16 peak for T4", id="no-dtype-peak"),
    ],
)
def test_every_reason_mfu_is_not_a_figure(
    device: str, device_name: str, dtype: str, summary: ev.ProfileSummary, note: str
) -> None:
    row = one_row(spec(device=device, dtype=dtype), summary, device_name=device_name)
    assert row.mfu_pct is None and row.mfu_note == note
    if device == "cpu":
        assert row.idle_pct is None  # a CPU's ops overlap nothing to be idle against
        assert row.tflops == pytest.approx(20.0)  # the achieved rate is still a figure


def test_no_measured_it_s_is_a_reason_too() -> None:
    """A cell that ran out of memory before any measured call, yet was profiled."""
    events = cell_events(0, spec(), step_ms=pinned(STEP_MS), outcome="oom", measured_done=0)
    events.insert(-2, profile())
    (row,) = rows(events, live=False)
    assert row.it_per_s is None and row.tflops is None and row.mfu_note == "no measured it/s"


def test_mfu_reads_each_dtype_against_its_own_peak() -> None:
    for device_name, dtype, peak in (
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),  # FP32 non-tensor, not TF32
        ("NVIDIA H200", "fp16", 989.5),
        ("NVIDIA GeForce RTX 4090", "fp16", 165.2),  # FP32 accumulate
    ):
        row = one_row(spec(dtype=dtype), profile(), device_name=device_name)
        assert row.mfu_pct == pytest.approx(100.0 * 20.0 / peak), (device_name, dtype)


def test_a_resumed_cell_keeps_its_last_attempts_profile() -> None:
    first = with_profile(cell_events(0, spec(), step_ms=pinned(STEP_MS)), [profile(families={"attention": 1.0})])
    again = with_profile(cell_events(0, spec(), t0=3e9, step_ms=pinned(STEP_MS)), [profile()])
    assert len(fold(first + again).cells[0].profiles) == 1
    (row,) = rows(first + again, live=False)
    assert row.attn_pct == pytest.approx(20.0)


def test_csv_carries_the_breakdown() -> None:
    row = one_row(spec(), profile())
    parsed = next(csv.DictReader(io.StringIO(to_csv([row]))))
    assert parsed["attn_pct"] == "20.0000" and parsed["tflops"] == "20.0000" and parsed["mfu_note"] == ""
    assert parsed["mfu_pct"] == f"{100 * 20 / 989.5:.4f}"


def test_top_ops_sorted_with_shares_and_read_defensively() -> None:
    top = [
        {"name": "b", "family": "gemm", "count": 3, "total_ms": 100.0},
        {"name": "a", "family": "attention", "count": 2, "total_ms": 200.0},
        {"name": "c", "family": "warp-magic", "count": "x", "total_ms": None},
        "not a dict",
    ]
    ops = breakdown.top_ops(profile(top=top))
    assert [o.name for o in ops] == ["a", "b", "c"]
    assert ops[0].share_pct == pytest.approx(20.0)  # 200 ms of 1 s busy
    assert ops[2].family == "other" and ops[2].count == 0 and ops[2].total_ms == 0.0
    assert len(breakdown.top_ops(profile(top=top), 1)) == 1


# --- the peak table ---------------------------------------------------------------------------

#: Device names as torch reports them, and the row each is.
DEVICE_NAMES = {
    "NVIDIA H100 80GB HBM3": "H100 SXM",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H200": "H200",
    "NVIDIA A100-SXM4-80GB": "A100 SXM",
    "NVIDIA A100-SXM4-40GB": "A100 SXM",
    "NVIDIA A100-PCIE-40GB": "A100 PCIe",
    "NVIDIA A100 80GB PCIe": "A100 PCIe",
    "NVIDIA L4": "L4",
    "NVIDIA L40S": "L40S",
    "NVIDIA A10G": "A10G",
    "NVIDIA GeForce RTX 3090": "RTX 3090",
    "NVIDIA GeForce RTX 4090": "RTX 4090",
    "Tesla T4": "T4",
    "Tesla V100-SXM2-16GB": "V100 SXM2",
    "Tesla V100-SXM2-32GB": "V100 SXM2",
    "Tesla V100-PCIE-16GB": "V100 PCIe",
    "nvidia h100 80gb hbm3": "H100 SXM",  # case and punctuation do not matter
}
#: Names no row is: close relatives with other peaks must not borrow one.
UNKNOWN = (
    "NVIDIA H100 NVL",
    "NVIDIA H200 NVL",
    "NVIDIA L40",
    "NVIDIA A10",
    "NVIDIA GeForce RTX 3090 Ti",
    "NVIDIA GeForce RTX 4090 D",
    "Tesla V100S-PCIE-32GB",
    "NVIDIA GH200 480GB",
    "CPU",
    "",
)


@pytest.mark.parametrize(("name", "gpu"), DEVICE_NAMES.items())
def test_device_names_match_their_row(name: str, gpu: str) -> None:
    card = peaks.card_for(name)
    assert card is not None and card.gpu == gpu
    assert sum(p.matches(peaks.words_of(name)) for p in peaks.load()) == 1  # never ambiguous


@pytest.mark.parametrize("name", UNKNOWN)
def test_unknown_cards_match_no_row(name: str) -> None:
    assert peaks.card_for(name) is None


def test_every_row_has_a_source_a_note_and_dense_figures() -> None:
    table = peaks.load()
    assert {p.gpu for p in table} >= {
        "A100 SXM",
        "H100 SXM",
        "H100 PCIe",
        "H200",
        "L4",
        "L40S",
        "A10G",
        "RTX 3090",
        "RTX 4090",
        "T4",
        "V100 SXM2",
    }
    for p in table:
        assert p.source.startswith("https://") and p.note, p.gpu
        assert {"fp16", "fp32"} <= set(p.tflops), p.gpu  # every card has these
        assert p.tflops["fp16"] > p.tflops["fp32"], p.gpu  # tensor cores beat CUDA cores
    by_gpu = {p.gpu: p.tflops for p in table}
    assert by_gpu["H100 SXM"]["fp16"] == 1979 / 2 and by_gpu["H100 SXM"]["fp8"] == 3958 / 2  # sparse halved
    assert by_gpu["A100 SXM"] == {"fp16": 312, "bf16": 312, "tf32": 156, "fp32": 19.5}  # no FP8 on Ampere
    assert "bf16" not in by_gpu["T4"] and "bf16" not in by_gpu["V100 SXM2"]


def test_a_broken_peak_table_says_which_line() -> None:
    header = ",".join(peaks.CSV_COLUMNS)
    with pytest.raises(peaks.PeakTableError, match="header"):
        peaks.parse("gpu,fp16\nX,1\n")
    with pytest.raises(peaks.PeakTableError, match="line 2: fp16 'fast'"):
        peaks.parse(header + "\nX,X,,fast,,,1,,https://x,n\n")
    with pytest.raises(peaks.PeakTableError, match="no rows"):
        peaks.parse(header + "\n")
    (row,) = peaks.parse(header + "\nMy Card,MYCARD,,100,,,10,,https://x,mine\n")
    value, note = peaks.mfu(25.0, device_name="ACME MyCard", dtype="fp16", peaks=[row])
    assert value == pytest.approx(25.0) and note is None


# --- summary.md -------------------------------------------------------------------------------


def attention_pair() -> list[ev.Event]:
    """sdpa and classic: classic spends twice the share in attention."""
    specs = [spec(attention="sdpa"), spec(attention="classic")]
    classic = {**FAMILIES, "attention": 0.60, "gemm": 0.10}
    events = session_events(specs, overrides={0: {"step_ms": pinned(40.0)}, 1: {"step_ms": pinned(50.0)}})
    return with_profile(events, [profile(0), profile(1, families=classic)])


def test_markdown_where_the_time_goes() -> None:
    text = to_markdown(rows(attention_pair(), live=False))
    lines = text.splitlines()
    at = lines.index("### Where the time goes")
    assert lines[at + 2] == (
        "| cell | pipeline | settings | attn % | gemm % | conv % | norm % | elem % | copy % | other % | idle % "
        "| GFLOP/step | TFLOP/s | MFU % |"
    )
    assert lines[at + 4].startswith("| 0 | sd-txt2img | sdpa | 20.0 | 30.0 | 25.0 |")
    assert lines[at + 5].startswith("| 1 | sd-txt2img | classic | 50.0 |")  # 0.6 of 1.2 s
    assert lines[at + 4].endswith("| 800.0 | 20.0 | 2.0 |")
    for note in (SHARES_NOTE, IDLE_NOTE, GFLOP_NOTE, TFLOPS_NOTE, MFU_NOTE, PROFILE_NOTE):
        assert note + "." in lines[at:]
    assert lines.index("| sd-txt2img | 25.00 | 20.00 |") < at  # under the main tables


def test_markdown_says_why_an_mfu_is_missing_and_nothing_without_a_profile() -> None:
    row = one_row(spec(), profile(), device_name="NVIDIA H100 NVL")
    assert "| n/a (unknown card NVIDIA H100 NVL) |" in to_markdown([row])
    assert "Where the time goes" not in to_markdown([one_row(spec())])


def test_markdown_of_the_recorded_fixture() -> None:
    """The fixture's story: classic's attention share well above sdpa's, at a lower TFLOP/s."""
    table = rows(read_events(FIXTURE / "events.jsonl"), live=False)
    sdpa, classic = table
    assert (sdpa.attention, classic.attention) == ("sdpa", "classic")
    assert classic.attn_pct is not None and sdpa.attn_pct is not None and classic.attn_pct > 2 * sdpa.attn_pct
    assert classic.tflops is not None and sdpa.tflops is not None and classic.tflops < sdpa.tflops
    assert all(r.measured_calls == 3 and r.mfu_note is None for r in table)
    assert "### Where the time goes" in to_markdown(table)


# --- compare ----------------------------------------------------------------------------------


def test_compare_shows_the_attention_share_side_by_side() -> None:
    """Session A ran sdpa, B classic: the matched cell's attention share per session in the
    text and Markdown tables, every breakdown column in the CSV."""
    classic = {**FAMILIES, "attention": 0.60, "gemm": 0.10}
    a_events = with_profile(session_events([spec(attention="sdpa")]), [profile(0)])
    b_events = with_profile(session_events([spec(attention="classic")]), [profile(0, families=classic)])
    c = cmp.compare([cmp.SessionData.from_events(a_events, "A"), cmp.SessionData.from_events(b_events, "B")])
    text = cmp.to_text(c)
    header = next(line for line in text.splitlines() if "A it/s" in line)
    assert "A attn %" in header and "B attn %" in header
    body = text.splitlines()[text.splitlines().index(header) + 1]
    assert "20.0" in body and "50.0" in body
    assert SHARES_NOTE in text
    assert "| A attn % | B attn % |" in cmp.to_markdown(c)
    parsed = list(csv.DictReader(io.StringIO(cmp.to_csv(c))))
    assert all(column in parsed[0] for column in BREAKDOWN_COLUMNS)
    assert [r["attn_pct"] for r in parsed] == ["20.0000", "50.0000"]
    assert [r["mfu_note"] for r in parsed] == ["", ""]


def test_compare_without_profiles_has_no_breakdown_columns() -> None:
    a = cmp.SessionData.from_events(session_events([spec()]), "A")
    b = cmp.SessionData.from_events(session_events([spec(attention="classic")]), "B")
    c = cmp.compare([a, b])
    assert "attn %" not in cmp.to_text(c)
    assert not set(BREAKDOWN_COLUMNS) & set(cmp.csv_columns(c))


def test_compare_of_the_recorded_fixture_with_itself() -> None:
    events = read_events(FIXTURE / "events.jsonl")
    a = cmp.SessionData.from_events(events, "A", live=False)
    b = dataclasses.replace(a, label="B")
    text = cmp.to_text(cmp.compare([a, b]))
    assert "A attn %" in text and "B attn %" in text


def test_small_figures_keep_three_significant_digits_where_a_decimal_would_read_zero() -> None:
    from sdtop.profiler.report.text import fmt_figure

    assert [fmt_figure(v) for v in (0.0013, 0.04, 0.9996, 12.34, 0.0, None)] == [
        "0.0013", "0.04", "1.0", "12.3", "0.0", fmt_figure(None),
    ]  # fmt: skip
