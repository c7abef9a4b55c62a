"""Summaries: statuses, figures on known numbers, CSV, the seed's Markdown layout, JSON."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable

import pytest
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract.events import (
    CallFinished,
    CellFinished,
    CellStarted,
    CompileFinished,
    CompileStarted,
    Environment,
    Error,
    Event,
    SessionFinished,
    StageTimed,
    WorkerExited,
)
from sdtop.profiler.report import summary
from sdtop.profiler.report.info import session_info
from sdtop.profiler.report.render import render
from sdtop.profiler.report.summary import COLUMNS, Row, cell_status, percentile, rows, to_csv, to_markdown

from tests.helpers_events import H100, T0, cell_events, session_events

# The columns the brief requires, in their required relative order.
REQUIRED_COLUMNS = (
    "cell",
    "pipeline",
    "stage",
    "weights",
    "model",
    "attention",
    "compile_mode",
    "fullgraph",
    "compile_backend",
    "channels_last",
    "dtype",
    "batch_size",
    "height",
    "width",
    "steps",
    "iterations",
    "status",
    "it_per_s",
    "step_ms_p50",
    "step_ms_p95",
    "call_s_median",
    "first_call_s",
    "encode_s_median",
    "denoise_s_median",
    "decode_s_median",
    "startup_s",
    "build_s",
    "device",
    "device_name",
    "torch_version",
    "diffusers_version",
)


def fixed_ms(ms: float) -> Callable[[str, int, str, int], float]:
    """Every step of every call takes ``ms``: it/s is then exactly 1000 / ms."""
    return lambda kind, call, stage, step: ms


def _spec(pipeline: str = "sd-txt2img", **kw: object) -> CellSpec:
    base: dict[str, object] = {"steps": 4, "device": "cuda", "dtype": "fp16"}
    base.update(kw)
    return CellSpec(pipeline, **base)  # type: ignore[arg-type]


def _status_by_cell(events: list[Event]) -> dict[int, str]:
    return {r.cell: r.status for r in rows(events)}


# --- columns --------------------------------------------------------------------------------


#: summary.csv's header as users' scripts read it, written out by hand: a column renamed,
#: dropped or moved in Row must show up here as a deliberate change.
HEADER = (
    "cell,pipeline,stage,weights,model,attention,compile_mode,fullgraph,compile_backend,channels_last,"
    "dtype,batch_size,height,width,steps,iterations,status,measured_calls,it_per_s,step_ms_p50,step_ms_p95,"
    "call_s_median,first_call_s,encode_s_median,denoise_s_median,decode_s_median,startup_s,build_s,"
    "compile_s,compile_cache_hits,compile_cache_misses,compiles,recompiles,graph_breaks,cudagraph_skips,"
    "first_call_run_s,eager_fallback,sdpa_kernel,device,"
    "device_name,torch_version,diffusers_version,peak_alloc_mib,peak_reserved_mib,nvml_peak_process_mib,"
    "nvml_process_match,nvml_peak_device_mib,gpu_util_mean_pct,power_mean_w,energy_j_per_image,host_peak_rss_mib,"
    "stage_height,stage_width,"
    "compile_scope,quant,cache,offload,fuse_qkv,attention_backend,frames,frames_per_s,steps_computed,"
    "psnr_db,max_abs_diff,baseline_cell,fidelity_note,pareto,"
    "attn_pct,gemm_pct,conv_pct,norm_pct,elementwise_pct,copy_pct,other_pct,idle_pct,gflop_per_step,tflops,"
    "mfu_pct,mfu_note,"
    "lane,hostname,attempt"
)


def test_columns_keep_the_documented_order_and_match_row() -> None:
    assert ",".join(COLUMNS) == HEADER
    assert [f.name for f in dataclasses.fields(Row)] == HEADER.split(",")
    positions = [COLUMNS.index(c) for c in REQUIRED_COLUMNS]
    assert positions == sorted(positions)


# --- statuses -------------------------------------------------------------------------------


def test_rows_for_every_kind_of_outcome() -> None:
    specs = [_spec(attention=a) for a in ("sdpa", "classic", "xformers", "sdpa-math", "sdpa-flash", "sdpa-cudnn")]
    events = session_events(
        specs,
        started=5,  # cell 5 never starts
        finished=None,
        overrides={
            1: {"outcome": "oom", "measured_done": 2},
            2: {"outcome": "unsupported"},
            3: {"outcome": "crashed", "signal": 9},
            4: {"outcome": "running"},
        },
    )
    by_cell = {r.cell: r for r in rows(events)}
    assert list(by_cell) == [0, 1, 2, 3, 4]
    assert {c: r.status for c, r in by_cell.items()} == {
        0: "ok",
        1: "OOM after 2nd iteration",
        2: "not supported: xformers is not installed",
        3: "crashed: signal 9 (SIGKILL)",
        4: "running",
    }
    assert by_cell[0].measured_calls == 3 and by_cell[0].it_per_s is not None
    # the OOM cell keeps the figures of its two finished measured calls
    assert by_cell[1].measured_calls == 2 and by_cell[1].it_per_s is not None
    # failed before timing anything: a row with its status and empty figures
    failed = by_cell[2]
    assert failed.it_per_s is failed.step_ms_p50 is failed.call_s_median is failed.first_call_s is None
    assert failed.build_s == pytest.approx(0.4) and failed.startup_s == pytest.approx(0.35)
    # crashed / running mid-call: the call cut short feeds nothing
    for cell in (3, 4):
        assert by_cell[cell].it_per_s is None and by_cell[cell].step_ms_p50 is None
        assert by_cell[cell].first_call_s is not None


def _with_compiles(events: list[Event], finished: list[CompileFinished]) -> list[Event]:
    """The cell's events with these compiles during its first call (call 0), right after
    its CellStarted."""
    compiles: list[Event] = []
    for i, f in enumerate(finished):
        compiles += [CompileStarted(ts=T0, cell=0, module="unet", compile_id=f"0/{i}", call=0), f]
    return [events[0], *compiles, *events[1:]]


def test_compile_cache_hits_and_misses_sit_beside_compile_s() -> None:
    """A warm compile (hits) is told apart from a cold one (misses); a compile whose lookups
    were not counted adds nothing, and a cell where none was counted has empty columns."""
    base = cell_events(0, _spec(compile_mode="default"))
    cold = CompileFinished(ts=T0, cell=0, module="unet", compile_id="0/0", call=0, duration_s=50.0, cache_misses=2)
    warm = CompileFinished(
        ts=T0, cell=0, module="unet", compile_id="0/1", call=0, duration_s=5.0, cache_hits=2, cache_misses=0
    )
    unknown = CompileFinished(ts=T0, cell=0, module="unet", compile_id="0/2", call=0, duration_s=1.0)
    (row,) = rows(_with_compiles(base, [cold, warm, unknown]))
    assert (row.compile_s, row.compile_cache_hits, row.compile_cache_misses) == (56.0, 2, 2)
    (eager,) = rows(_with_compiles(base, [unknown]))
    assert (eager.compile_s, eager.compile_cache_hits, eager.compile_cache_misses) == (1.0, None, None)
    (plain,) = rows(cell_events(0, _spec()))
    assert (plain.compile_cache_hits, plain.compile_cache_misses) == (None, None)


def test_nvml_process_match_comes_from_the_samplers_environment() -> None:
    base = cell_events(0, _spec())
    (row,) = rows(base)
    assert row.nvml_process_match is None
    said = Environment(ts=T0, cell=0, data={"nvml_process_match": "only process on the device"})
    (row,) = rows([*base[:-1], said, base[-1]])
    assert row.nvml_process_match == "only process on the device"
    assert "only process on the device" in to_csv([row])


def test_oom_during_load_has_no_figures_at_all() -> None:
    events = cell_events(0, _spec(), outcome="oom", fail_phase="build")
    (row,) = rows(events)
    assert row.status == "OOM during load"
    assert row.build_s is None and row.measured_calls == 0
    figures = [
        "step_ms_p50",
        "step_ms_p95",
        "call_s_median",
        "first_call_s",
        "encode_s_median",
        "denoise_s_median",
        "decode_s_median",
        "build_s",
        "compile_s",
        "first_call_run_s",
    ]
    assert [getattr(row, c) for c in figures] == [None] * len(figures)
    assert row.startup_s == pytest.approx(0.35)  # the worker did start


def test_running_cell_becomes_interrupted_once_the_session_finished() -> None:
    specs = [_spec(), _spec(attention="classic")]
    events = session_events(specs, started=2, finished="interrupted", overrides={1: {"outcome": "running"}})
    assert _status_by_cell(events) == {0: "ok", 1: "interrupted"}
    still = session_events(specs, finished=None, overrides={1: {"outcome": "running"}})
    assert _status_by_cell(still) == {0: "ok", 1: "running"}
    said = session_events(specs, finished=None, overrides={1: {"outcome": "interrupted"}})
    assert _status_by_cell(said) == {0: "ok", 1: "interrupted"}


def test_cell_status_precedence() -> None:
    start = CellStarted(ts=T0, cell=0, settings=_spec(compile_mode="default").to_dict())
    measured = CallFinished(ts=T0 + 1, cell=0, call_kind="measured")
    oom = Error(ts=T0 + 2, cell=0, error_kind="oom", phase="measure")
    killed = WorkerExited(ts=T0 + 3, cell=0, returncode=-9, signal=9)
    assert cell_status([start]) == "running"
    assert cell_status([start, killed]) == "crashed: signal 9 (SIGKILL)"
    assert cell_status([start, WorkerExited(ts=T0, cell=0, returncode=3)]) == "crashed: exit code 3"
    # the error says more than the exit that followed it
    assert cell_status([start, measured, oom, killed]) == "OOM after 1st iteration"
    assert cell_status([start, Error(cell=0, error_kind="oom", phase="first_call")]) == "OOM during compile"
    assert cell_status([start, Error(cell=0, error_kind="unsupported", message="no\nway")]) == "not supported: no way"
    assert cell_status([start, Error(cell=0, error_kind="bad-input", message="bad")]) == "error: bad"
    assert cell_status([start, Error(cell=0, error_kind="crash"), killed]) == "crashed: signal 9 (SIGKILL)"
    # the parent's verdict wins over everything
    assert cell_status([start, oom, killed, CellFinished(cell=0, status="ok")]) == "ok"


def test_a_rerun_cell_counts_its_last_attempt_only() -> None:
    spec = _spec()
    first = cell_events(0, spec, outcome="oom", measured_done=1, step_ms=fixed_ms(50.0))
    second = cell_events(0, spec, t0=first[-1].ts + 10, step_ms=fixed_ms(20.0))
    (row,) = rows(first + second)
    assert row.status == "ok" and row.measured_calls == 3
    assert row.it_per_s == pytest.approx(50.0)


def test_cells_never_started_are_absent() -> None:
    specs = [_spec(), _spec(attention="classic"), _spec(batch_size=4)]
    assert [r.cell for r in rows(session_events(specs, started=1, finished=None))] == [0]
    assert rows([]) == []


# --- figures on known numbers ---------------------------------------------------------------


def test_percentile_is_numpys_linear_method() -> None:
    data = [10.0, 20.0, 20.0, 30.0, 30.0, 40.0, 40.0, 60.0, 60.0, 80.0, 90.0, 120.0]
    assert percentile(data, 50) == pytest.approx(40.0)
    assert percentile(data, 95) == pytest.approx(103.5)  # numpy.percentile(data, 95)
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_figures_on_known_numbers() -> None:
    # calls: 0 first, 1 warmup, 2..4 measured. Steps take base[step] * k ms in measured call
    # k = 1, 2, 3; the first and warmup calls are slow on purpose: they must not leak into
    # any measured figure.
    base = [10.0, 20.0, 30.0, 40.0]

    def step_ms(kind: str, call: int, stage: str, step: int) -> float:
        return base[step] * (call - 1) if kind == "measured" else 1000.0

    events = cell_events(0, _spec(warmup=2, iterations=3), step_ms=step_ms)
    assert [e.call_kind for e in events if isinstance(e, CallFinished)] == [
        "first",
        "warmup",
        "measured",
        "measured",
        "measured",
    ]
    (row,) = rows(events)
    # loop_s = 0.1, 0.2, 0.3 -> 40, 20, 13.3 it/s -> median 20
    assert row.it_per_s == pytest.approx(20.0)
    # 12 steps: 10 20 30 40 / 20 40 60 80 / 30 60 90 120
    assert row.step_ms_p50 == pytest.approx(40.0)
    assert row.step_ms_p95 == pytest.approx(103.5)
    # wall = encode 0.015 + loop + decode 0.030 + other 0.005 (see helpers_events)
    assert row.call_s_median == pytest.approx(0.25)
    assert row.first_call_s == pytest.approx(4.05)
    assert row.encode_s_median == pytest.approx(0.015)
    assert row.denoise_s_median == pytest.approx(0.2)
    assert row.decode_s_median == pytest.approx(0.03)
    assert row.startup_s == pytest.approx(0.35)
    assert row.build_s == pytest.approx(0.4)
    assert row.measured_calls == 3
    assert (row.device, row.device_name, row.torch_version, row.diffusers_version) == (
        "cuda",
        H100,
        "2.5.1+cu124",
        "0.42.1",
    )
    settings = (row.pipeline, row.stage, row.attention, row.batch_size, row.steps)
    assert settings == ("sd-txt2img", "main", "sdpa", 1, 4)


def test_it_per_s_skips_a_zero_loop() -> None:
    events: list[Event] = [CellStarted(ts=T0, cell=0, settings=_spec().to_dict())]
    events += [StageTimed(cell=0, call=c, steps=4, loop_s=s) for c, s in ((1, 0.0), (2, 0.2), (3, 0.1))]
    (row,) = rows(events)
    assert row.it_per_s == pytest.approx(30.0)  # median of 20 and 40; the 0 s loop is dropped
    assert row.measured_calls == 2


def test_if_cascade_rows_per_stage_in_registry_order() -> None:
    per_stage = {"I": 10.0, "II": 40.0, "upscaler": 20.0}
    specs = [_spec("if-cascade", batch_size=b, height=64, width=64, steps=5) for b in (1, 4)]
    events = session_events(
        specs, overrides={i: {"step_ms": lambda k, c, stage, s: per_stage[stage]} for i in range(2)}
    )
    got = [(r.cell, r.stage, round(r.it_per_s or 0, 6)) for r in rows(events)]
    assert got == [(0, "I", 100.0), (0, "II", 25.0), (0, "upscaler", 50.0), (1, "I", 100.0)]
    r = rows(events)
    assert r[0].build_s == pytest.approx(3 * 0.4)  # one build per stage, summed
    assert r[0].height == 64  # the cell's setting, not stage II's upscaled size


def test_unknown_pipeline_takes_its_stages_from_the_events() -> None:
    events: list[Event] = [CellStarted(ts=T0, cell=0, settings={"pipeline": "from-the-future"})]
    events += [StageTimed(cell=0, call=1, stage=s, steps=2, loop_s=0.1) for s in ("a", "b")]
    assert [(r.stage, r.it_per_s) for r in rows(events)] == [("a", 20.0), ("b", 20.0)]
    assert [r.stage for r in rows(events[:1])] == ["main"]


def test_environment_falls_back_to_the_session_level() -> None:
    events = session_events([_spec()], overrides={0: {"cell_environment": False}})
    (row,) = rows(events)
    assert row.torch_version == "2.5.1+cu124"  # from the session-level Environment
    assert row.device_name is None  # only a worker knows it
    assert row.device == "cuda"  # from the settings


# --- CSV ------------------------------------------------------------------------------------


def test_csv_round_trip() -> None:
    specs = [_spec(), _spec(attention="classic"), _spec(attention="xformers")]
    tricky = 'bad "value", really'
    events = session_events(
        specs,
        overrides={0: {"step_ms": fixed_ms(50.0)}, 1: {"outcome": "error", "message": tricky}},
    )
    text = to_csv(rows(events))
    assert text.splitlines()[0] == HEADER
    assert text.endswith("\r\n")  # RFC 4180
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [list(p) for p in parsed] == [HEADER.split(",")] * 3
    ok, err, _ = parsed
    assert ok["status"] == "ok" and ok["it_per_s"] == "20.0000" and float(ok["step_ms_p50"]) == 50.0
    assert ok["fullgraph"] == "true" and ok["channels_last"] == "true"
    assert ok["model"] == "" and ok["batch_size"] == "1" and ok["device_name"] == H100
    assert err["status"] == f"error: {tricky}"
    assert err["it_per_s"] == "" and err["first_call_s"] == ""


def test_csv_of_no_rows_is_the_header() -> None:
    assert to_csv([]) == HEADER + "\r\n"


# --- Markdown -------------------------------------------------------------------------------


def _grid_events() -> list[Event]:
    # pipelines deliberately out of registry order; cell i steps take 10 * (i + 1) ms
    specs = [
        _spec(p, attention=a, batch_size=b)
        for p in ("sd-img2img", "sd-txt2img")
        for b in (1, 4)
        for a in ("sdpa", "classic")
    ]
    overrides: dict[int, dict[str, object]] = {i: {"step_ms": fixed_ms(10.0 * (i + 1))} for i in range(8)}
    overrides[7]["outcome"] = "oom"
    return session_events(specs, overrides=overrides)


def test_markdown_tables_per_batch_size_with_varying_attention() -> None:
    events = _grid_events()
    md = to_markdown(rows(events), env=session_info(events)["environment"])
    assert md == "\n".join(
        [
            "# sdtop summary",
            "",
            "sdtop 0.1.0 · torch 2.5.1+cu124 · diffusers 0.42.1 · transformers 5.23.0 · CUDA 12.4 · "
            "driver 550.54.15 · python 3.11.7",
            "",
            "Settings common to every cell: tiny weights · fp16 · channels_last · 64x64 · 4 steps · 3 iterations",
            "",
            f"### {H100} · batch size 1",
            "",
            "| pipeline | sdpa | classic |",
            "| --- | --- | --- |",
            "| sd-txt2img | 20.00 | 16.67 |",
            "| sd-img2img | 100.00 | 50.00 |",
            "",
            "it/s = denoising steps per second, median of measured calls.",
            "",
            f"### {H100} · batch size 4",
            "",
            "| pipeline | sdpa | classic |",
            "| --- | --- | --- |",
            "| sd-txt2img | 14.29 | OOM after warmup |",
            "| sd-img2img | 33.33 | 25.00 |",
            "",
            "it/s = denoising steps per second, median of measured calls.",
            "",
        ]
    )


def _header(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("| pipeline"))


def test_markdown_columns_combine_what_varies() -> None:
    specs = [_spec(attention=a, compile_mode=c) for a in ("sdpa", "classic") for c in ("none", "default")]
    md = to_markdown(rows(session_events(specs)))
    assert _header(md) == (
        "| pipeline | sdpa · compile none | sdpa · compile default | classic · compile none | "
        "classic · compile default |"
    )
    # backends split only the compiled columns
    specs = [
        _spec(compile_mode="none"),
        _spec(compile_mode="default", compile_backend="inductor"),
        _spec(compile_mode="default", compile_backend="eager"),
    ]
    md = to_markdown(rows(session_events(specs)))
    assert _header(md) == "| pipeline | compile none | compile default (inductor) | compile default (eager) |"


def test_markdown_with_nothing_varying_has_one_labelled_column() -> None:
    md = to_markdown(rows(session_events([_spec(), _spec("sd-inpaint")])))
    assert _header(md) == "| pipeline | sdpa · compile none · fp16 |"
    assert "| sd-txt2img | " in md and "| sd-inpaint | " in md


def test_markdown_shows_dash_for_combinations_never_run() -> None:
    specs = [_spec(compile_mode="none"), _spec(compile_mode="default"), _spec("sdxl-txt2img")]
    md = to_markdown(rows(session_events(specs, overrides={2: {"step_ms": fixed_ms(125.0)}})))
    assert "| sdxl-txt2img | 8.00 | - |" in md.splitlines()


def test_markdown_if_cascade_shows_a_b_c_and_stage_i_above_batch_1() -> None:
    per_stage = {"I": 10.0, "II": 40.0, "upscaler": 20.0}
    specs = [
        _spec("if-cascade", compile_mode=c, batch_size=b, height=64, width=64)
        for b in (1, 4)
        for c in ("none", "default")
    ]
    events = session_events(
        specs,
        overrides={
            0: {"step_ms": lambda k, c, stage, s: per_stage[stage]},
            1: {"outcome": "unsupported", "fail_phase": "first_call", "message": "IF with torch.compile"},
            2: {"step_ms": fixed_ms(25.0)},
            3: {"outcome": "oom", "measured_done": 2},
        },
    )
    lines = to_markdown(rows(events)).splitlines()
    assert "| if-cascade | 100.00 / 25.00 / 50.00 | not supported: IF with torch.compile |" in lines
    assert "| if-cascade | 40.00 | OOM after 2nd iteration |" in lines
    assert "if-cascade: stage I / stage II / upscaler." in lines
    assert "if-cascade: batch size above 1 runs stage I only, as the seed did." in lines


def test_markdown_unit_line_under_every_table() -> None:
    md = to_markdown(rows(_grid_events()))
    assert md.count("### ") == 2
    assert md.count(summary.UNIT_LINE) == 2
    for block in md.split("### ")[1:]:
        table_end = block.rindex("|")
        assert summary.UNIT_LINE in block[table_end:]


def test_markdown_escapes_pipes_and_handles_no_rows() -> None:
    events = session_events([_spec()], overrides={0: {"outcome": "error", "message": "a | b"}})
    assert "| sd-txt2img | error: a \\| b |" in to_markdown(rows(events)).splitlines()
    assert "No cell has started yet." in to_markdown([])


def test_markdown_slow_cells_do_not_read_zero() -> None:
    md = to_markdown(rows(session_events([_spec()], overrides={0: {"step_ms": fixed_ms(25_000.0)}})))
    assert "| sd-txt2img | 0.04 |" in md  # 0.04 it/s, i.e. 25 s/it
    md = to_markdown(rows(session_events([_spec()], overrides={0: {"step_ms": fixed_ms(80_000.0)}})))
    assert "| sd-txt2img | 0.0125 |" in md


def test_markdown_running_and_device_tables() -> None:
    specs = [_spec(), _spec(attention="classic")]
    events = session_events(
        specs,
        finished=None,
        overrides={0: {"device_name": "NVIDIA A100-SXM4-80GB"}, 1: {"outcome": "running"}},
    )
    md = to_markdown(rows(events))
    # one table per device; attention differs only between devices, so it makes no
    # columns, and the single column's label leaves it out rather than lie for one table
    a100, h100 = md.split("### ")[1:]
    assert a100.startswith("NVIDIA A100-SXM4-80GB · batch size 1")
    assert h100.startswith(f"{H100} · batch size 1")
    assert _header(a100) == "| pipeline | compile none · fp16 |"
    assert "| sd-txt2img | running |" in h100.splitlines()


# --- JSON -----------------------------------------------------------------------------------


def test_json_has_session_and_rows() -> None:
    events = _grid_events()
    doc = json.loads(render(events, "json"))
    assert doc["session"]["status"] == "complete"
    assert doc["session"]["n_cells"] == 8
    assert [r["cell"] for r in doc["rows"]] == list(range(8))
    assert list(doc["rows"][0]) == HEADER.split(",")
    assert doc["rows"][0]["it_per_s"] == pytest.approx(100.0)
    assert doc["rows"][7]["status"] == "OOM after warmup"


def test_summaries_ignore_session_level_noise() -> None:
    events = _grid_events()
    noisy = [*events[:5], SessionFinished(ts=T0, status="interrupted"), *events[5:]]
    # a SessionFinished before any cell started does not interrupt later cells
    assert {r.status for r in rows(noisy)} == {"ok", "OOM after warmup"}


# --- the helper itself (other suites build fixtures with it) ---------------------------------


def test_helper_is_deterministic_and_follows_the_worker_call_order() -> None:
    spec = _spec(warmup=2, iterations=2, steps=3)
    assert cell_events(0, spec) == cell_events(0, spec)
    assert cell_events(0, spec, seed=1) != cell_events(0, spec)
    kinds = [(e.call, e.call_kind) for e in cell_events(0, spec) if isinstance(e, CallFinished)]
    assert kinds == [(0, "first"), (1, "warmup"), (2, "measured"), (3, "measured")]
    ts = [e.ts for e in session_events([spec, spec])]
    assert ts == sorted(ts)


def test_helper_failure_points() -> None:
    spec = _spec(warmup=2)
    (row,) = rows(cell_events(0, spec, outcome="oom", fail_phase="warmup"))
    assert row.status == "OOM during warmup"
    crashed = cell_events(0, spec, outcome="crashed", runner_verdict=True)
    assert isinstance(crashed[-1], CellFinished) and crashed[-1].status == "crashed: signal 9 (SIGKILL)"
    with pytest.raises(ValueError, match="never reached"):
        cell_events(0, _spec(warmup=1), outcome="oom", fail_phase="warmup")
    with pytest.raises(ValueError, match="no measured call"):
        cell_events(0, _spec(iterations=2), outcome="oom", measured_done=2)
    with pytest.raises(ValueError, match="unknown outcome"):
        cell_events(0, spec, outcome="meh")
