"""The dashboard's view-models alone: pure Python, no terminal, no textual.

What a user reads off the screen (phase, call/step, ETA, p50/p95, gauges, log lines,
speedups, sort orders, the setup form's messages) is decided here; the widgets only lay
it out. tests/test_tui_imports.py checks that these modules do not import textual.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sdtop.pipelines import registry
from sdtop.pipelines.settings import CellSpec, MatrixSpec
from sdtop.profiler.contract import events as ev
from sdtop.profiler.host.session import read_events
from sdtop.profiler.report import summary
from sdtop.tui import cli
from sdtop.tui.models import fmt
from sdtop.tui.models.dashboard import Dashboard
from sdtop.tui.models.eventlog import FILTERS, EventLogModel
from sdtop.tui.models.header import HeaderModel
from sdtop.tui.models.latency import LatencyModel
from sdtop.tui.models.memory import MemoryModel
from sdtop.tui.models.setup import SetupForm, cells_text, default_matrix
from sdtop.tui.models.summary import SORTS, SummaryModel

from tests.fixtures import make_sessions
from tests.helpers_events import H100, T0, cell_events, session_events

SESSIONS = Path(__file__).parent / "fixtures" / "sessions"
GPU_SPEC = CellSpec("sd-txt2img", weights="random", device="cuda", dtype="fp16", steps=10, iterations=3, warmup=1)
#: Every pipeline, in the order every list of them has (the seed's six, then the transformers).
ALL_PIPELINES = ", ".join(registry.PIPELINE_NAMES)


def fixture(name: str) -> list[ev.Event]:
    return read_events(SESSIONS / name / "events.jsonl")


def feed(model: object, events: list[ev.Event]) -> None:
    for e in events:
        model.feed(e)  # type: ignore[attr-defined]


# --- the fixtures ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(make_sessions.build_sessions()))
def test_checked_in_fixture_is_what_the_generator_makes(name: str) -> None:
    """Deterministic fixtures: regenerate with `python tests/fixtures/make_sessions.py`."""
    expected = make_sessions.render(make_sessions.build_sessions()[name]).splitlines()
    actual = (SESSIONS / name / "events.jsonl").read_text().splitlines()
    if actual != expected:  # a short message: a full diff of 200 KiB takes pytest a minute
        pairs = enumerate(zip(actual, expected, strict=False))
        n = next((i for i, (a, b) in pairs if a != b), min(len(actual), len(expected)))
        pytest.fail(f"{name}: line {n + 1} differs; run python tests/fixtures/make_sessions.py and review")


# --- header -----------------------------------------------------------------------------------


def test_header_follows_phase_call_and_step() -> None:
    h = HeaderModel()
    spec = dataclasses.replace(GPU_SPEC, compile_mode="default")
    events = session_events([spec, spec], finished=None)
    first_call_step = next(e for e in events if isinstance(e, ev.StepTimed))
    for e in events[: events.index(first_call_step) + 1]:
        h.feed(e)
    assert h.cell_line().startswith("cell 1/2 · sd-txt2img · random · sdpa · compile=default")
    assert h.phase_label() == "compiling"  # the first call of a compiled cell
    assert dict(h.progress()) == {"call": "1/4 (first)", "step": "1/10"}
    measured = next(e for e in events if isinstance(e, ev.StepTimed) and e.call_kind == "measured" and e.step == 4)
    for e in events[events.index(first_call_step) + 1 : events.index(measured) + 1]:
        h.feed(e)
    assert h.phase_label() == "measuring"
    assert dict(h.progress()) == {"call": f"{measured.call + 1}/4", "step": "5/10"}


def test_header_device_and_versions_tolerate_missing_keys() -> None:
    h = HeaderModel()
    assert h.device_name() == "device not reported yet" and h.versions() == []
    h.feed(ev.Environment(ts=T0, data={"torch": "2.5.1", "cuda": "12.4"}))
    assert h.versions() == [("torch", "2.5.1"), ("CUDA", "12.4")]
    h.feed(ev.CellStarted(ts=T0 + 1, cell=0, n_cells=1, settings=GPU_SPEC.to_dict()))
    h.feed(ev.Environment(ts=T0 + 2, cell=0, data={"device_name": H100, "driver": "550.54.15"}))
    assert h.device_name() == H100
    assert ("driver", "550.54.15") in h.versions()


def test_elapsed_and_eta_come_from_event_time() -> None:
    h = HeaderModel()
    events = session_events([GPU_SPEC] * 3, finished=None)
    second = next(e for e in events if isinstance(e, ev.CellStarted) and e.cell == 1)
    for e in events[: events.index(second) + 1]:
        h.feed(e)
    first_duration = h.cell_durations[0]
    assert h.elapsed_s(None) == pytest.approx(second.ts - T0)
    # at the start of cell 2: two cells left at the mean of the one that finished
    assert h.eta_s(None) == pytest.approx(2 * first_duration)
    assert h.eta_s(second.ts + first_duration / 2) == pytest.approx(1.5 * first_duration)
    assert h.eta_s(second.ts + 10 * first_duration) == pytest.approx(first_duration)  # never below what is left
    h.feed(ev.SessionFinished(ts=second.ts + 5, status="interrupted"))
    assert h.eta_s(None) == 0.0 and dict(h.timing(None))["ETA"] == "done"
    assert h.elapsed_s(T0 + 10_000) == pytest.approx(second.ts + 5 - T0)  # a finished session stops the clock


def test_eta_of_a_last_cell_that_runs_long_is_unknown() -> None:
    h = HeaderModel()
    events = session_events([GPU_SPEC] * 2, finished=None)
    last = next(e for e in events if isinstance(e, ev.CellStarted) and e.cell == 1)
    feed(h, events[: events.index(last) + 1])
    mean = h.cell_durations[0]
    assert h.eta_s(last.ts) == pytest.approx(mean)
    assert h.eta_s(last.ts + 2 * mean) is None and dict(h.timing(last.ts + 2 * mean))["ETA"] == "—"


def test_header_says_how_a_crashed_cell_ended() -> None:
    h = HeaderModel()
    feed(h, cell_events(0, GPU_SPEC, outcome="crashed", signal=9))
    assert h.phase_label() == "cell done: crashed: signal 9 (SIGKILL)"


# --- latency ----------------------------------------------------------------------------------


def test_latency_percentiles_match_the_summary() -> None:
    events = fixture("clean")
    cell0 = [e for e in events if e.cell in (-1, 0)]
    m = LatencyModel()
    feed(m, cell0)
    row = summary.rows(cell0)[0]
    assert m.p50() == pytest.approx(row.step_ms_p50)
    assert m.p95() == pytest.approx(row.step_ms_p95)
    last = [e for e in cell0 if isinstance(e, ev.StageTimed)][-1]
    assert m.it_per_s() == pytest.approx(last.steps / last.loop_s)


def test_latency_sets_the_first_call_apart() -> None:
    m = LatencyModel()
    spec = dataclasses.replace(GPU_SPEC, compile_mode="default", warmup=2)
    feed(m, cell_events(0, spec, first_call_extra_s=20.0))
    lines = m.lines()
    assert [line.role for line in lines] == ["first", "warmup", "previous", "previous", "current"]
    assert lines[0].xs[0] == 1  # step numbers as the header counts them
    # a 20 s step beside 20 ms ones: the axis follows the measured steps, the first call
    # leaves through the top
    rng = m.y_range()
    measured = m.measured_ms()
    assert rng is not None and rng[0] <= min(measured) and max(measured) <= rng[1] < 100
    assert [(line.label, round(top)) for line, top in m.clipped()] == [("1st call", round(max(lines[0].ys)))]
    assert m.first_call_s() == pytest.approx(sum(lines[0].ys) / 1000.0, rel=0.01)
    assert m.x_ticks() == [1, 3, 7, 10]


def test_latency_keeps_a_recompile_in_a_measured_call_off_the_scale() -> None:
    m = LatencyModel()
    feed(m, fixture("recompile"))
    rng = m.y_range()
    assert rng is not None and rng[1] < 20  # the 9 s recompile step is an outlier
    assert {line.label for line, _ in m.clipped()} == {"1st call", "call 2"}


def test_latency_while_a_call_is_running_and_for_a_new_cell() -> None:
    m = LatencyModel()
    for step, ms in enumerate((10.0, 30.0)):
        m.feed(ev.StepTimed(cell=0, call=2, call_kind="measured", step=step, ms=ms))
    assert m.it_per_s() == pytest.approx(50.0)  # 1000 / mean so far
    assert m.y_range() is None  # nothing far off: plotext picks the axis
    m.feed(ev.CellStarted(cell=1, settings={}))
    assert m.lines() == [] and m.it_per_s() is None and m.p50() is None


def test_latency_follows_the_current_stage_of_a_cascade() -> None:
    m = LatencyModel()
    feed(m, cell_events(0, dataclasses.replace(GPU_SPEC, pipeline="if-cascade")))
    assert m.stage == "upscaler"
    assert {line.label for line in m.lines()} >= {"1st call", "call 4"}
    rows = {r.stage: r for r in summary.rows(cell_events(0, dataclasses.replace(GPU_SPEC, pipeline="if-cascade")))}
    assert m.p50() == pytest.approx(rows["upscaler"].step_ms_p50)


# --- memory -----------------------------------------------------------------------------------


def test_memory_with_nvml() -> None:
    m = MemoryModel()
    feed(m, fixture("clean"))
    assert m.has_gpu
    device, worker = m.gpu_gauges()
    assert device.total == make_sessions.GPU_TOTAL_MIB and worker.value is not None
    assert device.text().endswith("/79.6G")
    assert [label for label, _ in m.device_facts()] == ["util", "power", "temp", "sm"]
    assert [g.label for g in m.torch_gauges()] == ["alloc", "reserved", "peak"]
    assert m.history() and m.history_label() == "GPU memory (worker) history".removesuffix(" history")


def test_memory_without_nvml_says_why_and_shows_host_figures() -> None:
    m = MemoryModel()
    feed(m, fixture("crashed"))
    assert not m.has_gpu
    assert m.gpu_unavailable_reason() == "NVML Shared Library Not Found"
    assert m.torch_gauges() == []  # CPU: TorchMemory carries no figures
    assert [g.label for g in m.host_gauges()] == ["rss", "system", "cpu"]
    assert m.history_label() == "worker RSS"
    assert MemoryModel().gpu_unavailable_reason() == "no GPU telemetry recorded"


def test_memory_peak_resets_per_cell() -> None:
    m = MemoryModel()
    m.feed(ev.TorchMemory(cell=0, allocated_mib=10.0, max_allocated_mib=50.0))
    m.feed(ev.TorchMemory(cell=0, allocated_mib=12.0, max_allocated_mib=40.0))
    assert m.torch_peak == 50.0
    m.feed(ev.CellStarted(cell=1))
    assert m.torch_peak is None and m.torch_gauges() == []


# --- event log --------------------------------------------------------------------------------


def test_event_log_lines_for_compiles_and_problems() -> None:
    log = EventLogModel()
    feed(log, fixture("recompile"))
    texts = [e.text for e in log.entries]
    assert any(t.startswith("cell 1: recompile wrapper 0/1: triggered by the following guard failure") for t in texts)
    assert any(t.startswith("cell 1: compiled unet 0/1 in 9.0s, 2 graph breaks") for t in texts)
    assert any(t.startswith("cell 1: graph break at diffusers/") for t in texts)
    assert any(t.startswith("cell 1: CUDA graphs skipped") for t in texts)
    first = log.entries[0]
    assert first.stamp() == "+00:00.0" and first.text == "session fixture-recompile started, 1 cell"


def test_event_log_filters_cycle_and_select() -> None:
    log = EventLogModel()
    feed(log, fixture("oom"))
    seen = []
    for _ in FILTERS:
        seen.append(log.filter)
        visible = log.visible()
        if log.filter == "problems":
            assert visible and all(e.category == "problem" for e in visible)
            assert any("OOM in measure call" in e.text for e in visible)
        if log.filter == "results":
            assert any(e.text.endswith("OOM after 2nd iteration in " + e.text.split(" in ")[-1]) for e in visible)
        log.cycle_filter()
    assert seen == list(FILTERS) and log.filter == "all"


def test_event_log_crash_is_a_problem() -> None:
    log = EventLogModel()
    feed(log, fixture("crashed"))
    problems = [e for e in log.entries if e.category == "problem"]
    assert [e.text for e in problems] == ["cell 2: worker 10001 crashed: signal 9 (SIGKILL)"]
    assert problems[0].severity == "error"


# --- summary table ----------------------------------------------------------------------------


def test_summary_speedup_and_best() -> None:
    m = SummaryModel()
    rows = summary.rows(fixture("clean"))
    m.set_rows(rows)
    by_cell = {(t.row.cell, t.row.stage): t for t in m.table()}
    base, compiled = by_cell[(0, "main")], by_cell[(1, "main")]
    assert base.speedup == pytest.approx(1.0)
    assert compiled.speedup == pytest.approx(compiled.row.it_per_s / base.row.it_per_s)
    assert compiled.best and not base.best
    # cascade stages are compared stage by stage
    assert by_cell[(3, "II")].speedup == pytest.approx(
        by_cell[(3, "II")].row.it_per_s / by_cell[(2, "II")].row.it_per_s
    )


def test_summary_keeps_finished_rows_and_sorts() -> None:
    m = SummaryModel()
    events = fixture("oom")
    cut = next(i for i, e in enumerate(events) if isinstance(e, ev.CellStarted) and e.cell == 2)
    m.set_rows(summary.rows(events[: cut + 5]))
    assert [t.row.cell for t in m.table()] == [0, 1]  # cell 2 is running: no row yet
    m.set_rows(summary.rows(events))
    assert [t.row.cell for t in m.table()] == [0, 1, 2]
    orders = {}
    for _ in SORTS:
        orders[m.sort] = [t.row.cell for t in m.table()]
        m.cycle_sort()
    assert orders["it/s"] == [0, 1, 2]  # fastest first, no figure last
    assert m.sort == "cell"
    crashed = SummaryModel()
    crashed.set_rows(summary.rows(fixture("crashed")))
    crashed.sort = "status"
    assert [t.row.cell for t in crashed.table()] == [0, 2, 1]  # ok first


def test_summary_columns_fit_the_width() -> None:
    m = SummaryModel()
    m.set_rows(summary.rows(fixture("clean")))
    narrow = [c.key for c, _ in m.columns(78)]
    wide = [c.key for c, _ in m.columns(200)]
    assert {"cell", "pipeline", "compile", "status", "it/s", "speedup"} <= set(narrow)
    assert "stage" in narrow  # if-cascade has stages
    assert len(wide) > len(narrow) and sum(w + 2 for _, w in m.columns(78)) <= 78


# --- setup form -------------------------------------------------------------------------------


def test_default_matrix_is_the_embedded_default() -> None:
    cpu = default_matrix(False)
    assert cpu.pipelines == registry.PIPELINE_NAMES and cpu.weights == ("tiny",)
    gpu = default_matrix(True)
    assert gpu.pipelines == ("sd-txt2img",) and gpu.weights == ("random",)
    assert cells_text(cpu, cuda_available=False) == f"{len(registry.PIPELINE_NAMES)} cells × 4 calls"


@pytest.mark.parametrize(
    ("field", "value", "argv", "message"),
    [
        ("batch", "0", ["--batch", "0"], "--batch must be >= 1, got 0"),
        ("steps", "ten", ["--steps", "ten"], "--steps takes whole numbers >= 1, got 'ten'"),
        ("height", "100", ["--height", "100"], "--height must be a multiple of 8, got 100"),
        ("iterations", "", ["--iterations", ""], "--iterations needs at least one whole number >= 1"),
        ("pipelines", [], ["--pipeline", " "], f"--pipeline needs at least one value; valid: {ALL_PIPELINES}"),
    ],
)
def test_setup_form_gives_the_cli_message(
    field: str, value: object, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    form = SetupForm.from_matrix(default_matrix(False))
    setattr(form, field, value)
    matrix, said = form.describe()
    assert matrix is None and said == message
    assert cli.main(["run", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"sdtop: error: {message}"


def test_setup_form_round_trips_a_matrix() -> None:
    m = MatrixSpec(
        pipelines=("sd-txt2img", "sdxl-txt2img"),
        weights=("tiny",),
        attention=("sdpa", "classic"),
        compile_modes=("none", "default"),
        dtypes=("bf16",),
        batch_sizes=(1, 4),
        steps=(20,),
        height=256,
        width=128,
        iterations=2,
        warmup=0,
        fullgraph=False,
    )
    got = SetupForm.from_matrix(m).to_matrix(m)
    assert got == m and got.n_cells(cuda_available=False) == 16


# --- dashboard --------------------------------------------------------------------------------


def test_dashboard_reports_what_changed() -> None:
    d = Dashboard()
    events = fixture("unsupported")
    changed = d.feed(events[:3])
    assert "summary" not in changed and "header" in changed
    changed = d.feed(events[3:])
    assert {"latency", "memory", "events", "summary", "header"} <= changed
    assert len(d.summary.rows) == 2 and d.rows() == summary.rows(events)
    assert d.feed([ev.HostSample(cell=1, rss_mib=1.0)]) == {"memory"}


def test_formatters() -> None:
    assert fmt.duration(None) == "—" and fmt.duration(59.94) == "59.9s" and fmt.duration(125) == "2m05s"
    assert fmt.duration(3 * 3600 + 120) == "3h02m"
    assert fmt.clock_offset(83.44) == "+01:23.4" and fmt.clock_offset(3723) == "+1:02:03"
    assert fmt.mib(512) == "512M" and fmt.mib(2048) == "2.00G" and fmt.mib(81_559) == "79.6G" and fmt.mib(None) == "n/a"
    assert fmt.ms(0.5) == "0.50" and fmt.ms(42.25) == "42.2" and fmt.ms(250) == "250" and fmt.ms(20_500) == "20.5s"
    assert fmt.rate(25.104) == "25.10" and fmt.rate(166.83) == "166.83" and fmt.truncate("abcdef", 4) == "abc…"


# --- breakdown (--profile) --------------------------------------------------------------------


def profiled_dashboard(against: bool = False) -> Dashboard:
    from sdtop.profiler.report.compare import load_session

    d = Dashboard()
    if against:
        d.compare.set_other(load_session(SESSIONS / "profiled", "B"))
    d.feed(fixture("profiled"))
    return d


def test_breakdown_bars_follow_the_rows_in_family_order() -> None:
    from sdtop.profiler.contract.events import OP_FAMILIES
    from sdtop.tui.models.breakdown import shares_of

    d = profiled_dashboard()
    bars = d.breakdown.bars()
    assert [(b.cell, b.label) for b in bars] == [(0, "#1 sdpa"), (1, "#2 classic")]
    for bar, row in zip(bars, d.summary.rows, strict=True):
        assert [f for f, _ in bar.shares] == list(OP_FAMILIES) and bar.shares == shares_of(row)
        assert abs(sum(s for _, s in bar.shares) - 100.0) < 1e-6
        assert bar.tflops_text() == f"{row.tflops:.1f}" and bar.mfu_text() == f"{row.mfu_pct:.1f}%"
    assert bars[1].share("attention") > 2 * bars[0].share("attention")  # classic's attention
    assert bars[0].peak_text() == "H100 SXM fp16 peak 989.5"
    assert [label for _, label in d.breakdown.legend()] == ["attn", "gemm", "conv", "norm", "elem", "copy", "other"]
    assert not d.breakdown.comparing


def test_breakdown_selection_follows_the_newest_until_picked() -> None:
    from sdtop.tui.models.breakdown import BreakdownModel

    events = fixture("profiled")
    cut = next(i for i, e in enumerate(events) if isinstance(e, ev.CellStarted) and e.cell == 1)
    d = Dashboard()
    changed = d.feed(events[:cut])
    assert "breakdown" in changed and d.breakdown.selected == 0  # the first profiled cell
    d.feed(events[cut:])
    assert d.breakdown.selected == 1  # follows the newest
    assert d.breakdown.move(1) and d.breakdown.selected == 0  # wraps
    assert d.breakdown.select(1) and not d.breakdown.select(1) and not d.breakdown.select(7)
    top = d.breakdown.top()
    assert top and top == sorted(top, key=lambda t: -t.total_ms) and len(top) <= 15
    assert top[0].name.endswith("(baddbmm)") and top[0].family == "attention"
    assert d.breakdown.top(2) == top[:2]
    assert not BreakdownModel().move(1) and BreakdownModel().selected_bar() is None


def test_breakdown_says_how_to_get_one() -> None:
    from sdtop.profiler.report.text import PROFILE_HINT
    from sdtop.tui.models.breakdown import WAITING

    d = Dashboard()
    d.feed(fixture("clean"))
    assert d.breakdown.bars() == [] and d.breakdown.hint() == PROFILE_HINT
    assert "run with --profile" in PROFILE_HINT
    events = fixture("profiled")
    first_profile = next(i for i, e in enumerate(events) if isinstance(e, ev.ProfileSummary))
    d = Dashboard()
    d.feed(events[:first_profile])  # asked for, not there yet
    assert d.breakdown.bars() == [] and d.breakdown.hint() == WAITING


def test_breakdown_against_a_second_session() -> None:
    d = profiled_dashboard(against=True)
    assert d.breakdown.comparing
    for bar in d.breakdown.bars():
        assert bar.other == bar.shares  # the same session: the same shares


def test_a_profiled_call_is_not_a_measured_one_on_screen() -> None:
    """The profiled call (slower, under the profiler) is the header's "(profiled)" call, but
    the latency panel's figures stay the measured ones: p50/p95 are the summary's, and the
    chart's current call (its it/s) is the last measured call, not the profiled one."""
    d = profiled_dashboard()
    row = d.summary.rows[-1]
    assert d.header.progress()[0] == ("call", "5/5 (profiled)")
    assert d.latency.p50() == pytest.approx(row.step_ms_p50) and d.latency.p95() == pytest.approx(row.step_ms_p95)
    current = d.latency.current_series()
    assert current is not None and current.kind == "measured" and current.call == 3
    assert all(s.kind != "profiled" for s in d.latency.calls.values())
    # a latency model fed the profiled steps directly (sdtop run's progress) does not crash
    latency = LatencyModel()
    feed(latency, fixture("profiled"))
    assert latency.p50() == pytest.approx(row.step_ms_p50)


def test_a_batch_of_only_profiled_steps_is_folded() -> None:
    """A replay cut inside the profile phase: the header moves, the chart has nothing to add."""
    steps = [e for e in fixture("profiled") if isinstance(e, ev.StepTimed) and e.call_kind == "profiled"]
    d = Dashboard()
    changed = d.feed(steps[:5])
    assert "latency" not in changed and d.n_steps == 5 and d.log.start_ts == steps[0].ts
