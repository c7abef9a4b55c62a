"""Lanes in the dashboard and in ``sdtop run``'s display: cells running side by side, their
events interleaved (``sdtop run --lanes/--gpus/--ray``).

The header shows one line per lane and follows one cell (the one the chart and the memory
panel show), switching only when that cell is over; another lane's events never reset the
chart; ``sdtop run`` names each cell's own settings, lane and it/s. One-lane sessions (every
other fixture) look exactly as before: their snapshots are unchanged.

Driven by the ``lanes`` fixture (tests/fixtures/make_sessions.py: two H100 lanes, six cells,
stopped at 30 s) and by small synthetic streams; no clock, no sleeps.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sdtop.pipelines.settings import CellSpec, MatrixSpec
from sdtop.profiler.contract import events as ev
from sdtop.profiler.host.session import read_events
from sdtop.tui.app import SdtopApp
from sdtop.tui.models.dashboard import Dashboard
from sdtop.tui.models.header import HeaderModel, LaneLine, short_labels
from sdtop.tui.models.latency import LatencyModel
from sdtop.tui.models.memory import MemoryModel
from sdtop.tui.progress import RunProgress
from sdtop.tui.widgets.header import SessionHeader, lane_limit
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from sdtop import tui
from tests.fixtures import make_sessions
from tests.helpers_events import T0, cell_events
from tests.tui_support import SESSIONS, FakePrepare, replayed, until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
SnapCompare = Callable[..., bool]
#: Two lanes, one cell each at a time (the fixture's lanes).
TWO_LANES = [dict(lane) for lane in make_sessions.LANES]
SPEC = CellSpec("sd-txt2img", weights="random", device="cuda", dtype="fp16", steps=6, iterations=2, warmup=1)


def lanes_events() -> list[ev.Event]:
    return read_events(SESSIONS / "lanes" / "events.jsonl")


def mid_run(events: list[ev.Event]) -> int:
    """The index of the first step at 17.5 s: cell 3 (GPU 0) in its last measured call and
    cell 4 (GPU 1) in its second, both with a measured it/s; cell 3 is followed."""
    return next(i for i, e in enumerate(events) if isinstance(e, ev.StepTimed) and e.ts >= T0 + 17.5)


def last_measured_it_per_s(events: list[ev.Event], cell: int) -> float:
    """What the worker timed for the cell's last measured call: steps / loop time."""
    stage = [e for e in events if isinstance(e, ev.StageTimed) and e.cell == cell and e.call_kind == "measured"][-1]
    return stage.steps / stage.loop_s


def followed_over_time(events: list[ev.Event]) -> list[tuple[int, type[ev.Event]]]:
    """(followed cell, the kind of event that moved it) at each change, feeding one by one."""
    d = Dashboard()
    seen: list[tuple[int, type[ev.Event]]] = []
    for e in events:
        d.feed([e])
        cur = d.header.current
        if cur is not None and (not seen or seen[-1][0] != cur.index):
            seen.append((cur.index, type(e)))
        # the chart and the gauges always show the header's cell
        assert cur is None or (d.latency.cell == cur.index and d.memory.cell == cur.index)
    return seen


# --- which cell is followed -------------------------------------------------------------------


def test_the_followed_cell_changes_only_when_it_is_over() -> None:
    """Six cells on two lanes: the chart moves once per cell, each time because the cell it
    showed ended (its CellFinished; at the stop, its killed worker), to the cell still
    running in the other lane."""
    assert followed_over_time(lanes_events()) == [
        (0, ev.CellStarted),
        (1, ev.CellFinished),
        (2, ev.CellFinished),
        (3, ev.CellFinished),
        (4, ev.CellFinished),
        (5, ev.WorkerExited),
    ]


def start(cell: int, lane: int, ts: float) -> ev.CellStarted:
    return ev.CellStarted(ts=ts, cell=cell, n_cells=4, settings=SPEC.to_dict(), lane=lane)


def test_a_running_followed_cell_is_kept_whatever_other_lanes_start() -> None:
    h = HeaderModel()
    h.feed(ev.SessionStarted(ts=T0, cells=[SPEC.to_dict()] * 4, lanes=TWO_LANES))
    h.feed(start(0, 0, T0 + 1))
    h.feed(start(1, 1, T0 + 2))  # lane 1 starts later: cell 0 stays
    h.feed(ev.CellFinished(ts=T0 + 3, cell=1, status="ok"))
    h.feed(start(2, 1, T0 + 4))
    assert h.current is not None and h.current.index == 0
    h.feed(ev.CellFinished(ts=T0 + 5, cell=0, status="ok"))  # over: the running cell 2
    assert h.current.index == 2
    h.feed(ev.CellFinished(ts=T0 + 6, cell=2, status="ok"))  # nothing runs: it stays
    assert h.current.index == 2 and h.phase_label() == "cell done: ok"
    h.feed(start(3, 0, T0 + 7))  # until the next cell starts
    assert h.current.index == 3 and h.cell_line().startswith("cell 4/4 (GPU 0) · sd-txt2img")


def test_a_lost_worker_is_over_when_its_lane_starts_the_next_cell() -> None:
    h = HeaderModel()
    h.feed(ev.SessionStarted(ts=T0, cells=[SPEC.to_dict()] * 4, lanes=TWO_LANES))
    h.feed(start(0, 0, T0 + 1))
    h.feed(start(1, 1, T0 + 2))
    h.feed(start(2, 0, T0 + 5))  # lane 0 moved on without a word about cell 0
    assert h.current is not None and h.current.index == 2
    assert h.cell_durations == {0: 4.0}
    gpu0 = h.lane_lines()[0]
    assert (gpu0.cell, gpu0.followed) == ("cell 3/4", True)


def test_a_resumed_session_has_its_own_lanes() -> None:
    """Two lanes, the parent gone mid-run, then ``--resume`` without lanes: one lane again,
    and the cell the first run left running is over, not followed for ever."""
    h = HeaderModel()
    h.feed(ev.SessionStarted(ts=T0, cells=[SPEC.to_dict()] * 4, lanes=TWO_LANES))
    h.feed(start(0, 0, T0 + 1))
    h.feed(start(1, 1, T0 + 2))
    h.feed(ev.SessionStarted(ts=T0 + 60, cells=[SPEC.to_dict()] * 4, resumed=True))
    h.feed(start(1, 0, T0 + 61))
    assert h.current is not None and h.current.index == 1 and h.current.status is None
    assert h.n_lanes == 1 and h.lane_lines() == [] and h.cell_line().startswith("cell 2/4 · ")


# --- the lane lines ---------------------------------------------------------------------------


def test_each_lane_line_shows_its_own_cell_phase_step_and_rate() -> None:
    events = lanes_events()
    cut = mid_run(events)
    d = Dashboard()
    d.feed(events[: cut + 1])
    seen = events[: cut + 1]
    lines = d.header.lane_lines()
    expected = []
    for lane, cell in ((0, 2), (1, 3)):
        step = [e for e in seen if isinstance(e, ev.StepTimed) and e.cell == cell][-1]
        expected.append(
            LaneLine(
                lane,
                f"GPU {lane}",
                cell=f"cell {cell + 1}/6",
                phase="measuring",
                step=f"step {step.step + 1}/20",
                rate=f"{last_measured_it_per_s(seen, cell):.2f} it/s",
                settings=("sdpa" if cell % 2 == 0 else "classic") + " · b2",
                followed=cell == 2,
            )
        )
    assert lines == expected
    assert [ln.text() for ln in lines] == [
        "▸ GPU 0  cell 3/6  measuring  step 9/20  12.53 it/s  sdpa · b2",
        "  GPU 1  cell 4/6  measuring  step 5/20  9.67 it/s  classic · b2",
    ]
    # the three lines above them are the followed cell's, as in a one-lane session
    assert d.header.cell_line().startswith("cell 3/6 (GPU 0) · sd-txt2img · random · sdpa")
    assert dict(d.header.progress()) == {"call": "4/4", "step": "9/20"}


def test_lane_lines_at_the_end_say_how_each_cell_ended() -> None:
    d = Dashboard()
    d.feed(lanes_events())
    assert [ln.text() for ln in d.header.lane_lines()] == [
        "  GPU 0  cell 5/6  done: interrupted  6.27 it/s  sdpa · b4",
        "▸ GPU 1  cell 6/6  done: interrupted  classic · b4",  # stopped before a measured call
    ]


@pytest.mark.parametrize("name", sorted(set(make_sessions.build_sessions()) - {"lanes"}))
def test_one_lane_sessions_have_no_lane_lines(name: str) -> None:
    d = Dashboard()
    d.feed(read_events(SESSIONS / name / "events.jsonl"))
    assert d.header.n_lanes == 1 and d.header.lane_lines() == [] and d.header.lane_view(3) == ([], 0)
    assert "(" not in d.header.cell_line().split(" · ")[0]  # "cell 2/4", no lane named


def test_a_short_screen_shows_the_followed_lane_and_how_many_more() -> None:
    h = HeaderModel()
    lanes = [{"lane": i, "label": f"GPU {i}", "gpu": i, "cpus": []} for i in range(6)]
    h.feed(ev.SessionStarted(ts=T0, cells=[SPEC.to_dict()] * 6, lanes=lanes))
    for cell in range(6):
        h.feed(ev.CellStarted(ts=T0 + cell, cell=cell, n_cells=6, settings=SPEC.to_dict(), lane=cell))
    h.feed(ev.CellFinished(ts=T0 + 10, cell=0, status="ok"))  # followed: cell 5, the latest started
    shown, hidden = h.lane_view(3)
    assert [ln.lane for ln in shown] == [0, 5] and hidden == 4
    assert h.lane_view(8) == (h.lane_lines(), 0) and h.lane_view(1) == ([], 6)
    assert (lane_limit(24), lane_limit(31), lane_limit(40), lane_limit(60)) == (3, 8, 8, 8)


def test_short_labels_keep_what_tells_the_cells_apart() -> None:
    cells = [CellSpec("sd-txt2img", attention=a, batch_size=b).to_dict() for b in (1, 2) for a in ("sdpa", "classic")]
    assert short_labels(cells) == ["sdpa · b1", "classic · b1", "sdpa · b2", "classic · b2"]
    one = CellSpec("sd-txt2img").to_dict()
    assert short_labels([one]) == [CellSpec("sd-txt2img").label()]  # nothing to leave out


def test_eta_shares_the_cells_left_between_the_lanes() -> None:
    h = HeaderModel()
    h.feed(ev.SessionStarted(ts=T0, cells=[SPEC.to_dict()] * 4, lanes=TWO_LANES))
    h.feed(start(0, 0, T0))
    h.feed(start(1, 1, T0))
    h.feed(ev.CellFinished(ts=T0 + 10, cell=0, status="ok"))  # mean 10 s
    h.feed(start(2, 0, T0 + 10))
    # 3 cells left at 10 s, less what the running cells used (cell 1: 10 s, at most the
    # mean; cell 2: nothing yet), on 2 lanes
    assert h.eta_s(T0 + 10) == pytest.approx((30 - 10 - 0) / 2)
    h.feed(ev.CellFinished(ts=T0 + 12, cell=1, status="ok"))  # mean 11 s
    h.feed(start(3, 1, T0 + 12))
    assert h.eta_s(T0 + 14) == pytest.approx((22 - 4 - 2) / 2)
    h.feed(ev.CellFinished(ts=T0 + 20, cell=2, status="ok"))  # one cell left: one lane can run it
    assert h.eta_s(T0 + 20) == pytest.approx((10 + 12 + 10) / 3 - 8)


# --- the chart and the gauges follow one cell -------------------------------------------------


def test_the_chart_never_sees_another_lanes_steps() -> None:
    """Mid-run the chart is what a model fed the followed cell's events alone shows; the
    memory panel shows the followed lane's card."""
    events = lanes_events()
    cut = mid_run(events)
    d = Dashboard()
    d.feed(events[: cut + 1])
    alone = LatencyModel()
    for e in events[: cut + 1]:
        if e.cell in (-1, 2):
            alone.feed(e)
    assert d.latency.cell == 2 and d.latency.calls == alone.calls
    assert (d.latency.p50(), d.latency.p95(), d.latency.lines()) == (alone.p50(), alone.p95(), alone.lines())
    gauges = MemoryModel()
    for e in events[: cut + 1]:
        if isinstance(e, ev.GpuSample) and e.index == 0:  # GPU 0's card: cells 0 and 2
            gauges.feed(e)
    assert d.memory.gpu is not None and d.memory.gpu.index == 0 and d.memory.gpu.cell == 2
    assert list(d.memory.history()) == list(gauges.history())


def test_following_a_running_cell_shows_its_whole_history() -> None:
    """Cell 0 ends at 7.8 s while cell 1 (GPU 1) is measuring: the chart then has cell 1's
    every call so far, kept apart while it was not shown."""
    events = lanes_events()
    at = next(i for i, e in enumerate(events) if isinstance(e, ev.CellFinished) and e.cell == 0)
    d = Dashboard()
    d.feed(events[:at])
    assert d.latency.cell == 0
    changed = d.feed([events[at]])
    assert {"latency", "memory"} <= changed and d.latency.cell == 1
    alone = LatencyModel()
    for e in events[: at + 1]:
        if e.cell in (-1, 1):
            alone.feed(e)
    assert d.latency.calls == alone.calls and d.latency.lines() == alone.lines()
    assert d.memory.gpu is not None and d.memory.gpu.index == 1


def test_interleaved_steps_in_one_batch_fold_as_each_cell_alone() -> None:
    """A batch whose steps alternate between two cells (lanes write step by step): the chart
    of the followed cell and the other cell's kept charts are what each cell alone gives."""
    a = cell_events(0, SPEC, t0=T0)
    b = [e for e in cell_events(1, SPEC, t0=T0 + 0.01) if not isinstance(e, ev.CellStarted)]
    b_start = ev.CellStarted(ts=T0 + 0.01, cell=1, n_cells=2, settings=SPEC.to_dict(), lane=1)
    head: list[ev.Event] = [ev.SessionStarted(ts=T0, cells=[SPEC.to_dict()] * 2, lanes=TWO_LANES), a[0], b_start]
    steps_a = [e for e in a if isinstance(e, ev.StepTimed)]
    steps_b = [e for e in b if isinstance(e, ev.StepTimed)]
    batch = [e for pair in zip(steps_a, steps_b, strict=True) for e in pair]
    d = Dashboard()
    d.feed(head)
    changed = d.feed(batch)
    assert {"latency", "header"} <= changed and d.n_steps == len(batch)
    for cell, steps in ((0, steps_a), (1, steps_b)):
        alone = LatencyModel()
        alone.feed_steps(steps)
        charts = d.latency.charts_of(cell)
        assert charts is not None and charts.calls == alone.calls
        lane = d.header.cell_progress(cell)
        assert lane is not None and (lane.call, lane.step) == (steps[-1].call, steps[-1].step)
    assert d.latency.cell == 0
    # only the other cell's steps: the chart shown has nothing new to draw
    assert "latency" not in d.feed([ev.StepTimed(ts=T0 + 9, cell=1, call=2, call_kind="measured", step=0, ms=9.0)])


# --- sdtop run's display ----------------------------------------------------------------------


def test_progress_lines_name_each_cells_own_settings_lane_and_rate() -> None:
    events = lanes_events()
    out = io.StringIO()
    p = RunProgress(out, clock=lambda: T0)
    p.start(6, Path("/tmp/session"))
    for e in events:
        p.on_event(e)
    lines = out.getvalue().splitlines()
    labels = {e.cell: CellSpec.from_dict(e.settings).label() for e in events if isinstance(e, ev.CellStarted)}
    lanes = {e.cell: e.lane for e in events if isinstance(e, ev.CellStarted)}
    for cell, label in labels.items():
        tag = f"[{cell + 1}/6] (GPU {lanes[cell]})"
        assert f"{tag} started: {label}" in lines
        if cell < 4:
            rate = last_measured_it_per_s(events, cell)
            assert f"{tag} {label}: ok · last call {rate:.2f} it/s" in lines
        else:
            assert f"{tag} {label}: interrupted" in lines
    # interleaved: [2/6] (GPU 1) ends after [3/6] (GPU 0) has started, and says its own words
    assert lines.index("[3/6] (GPU 0) started: " + labels[2]) < next(
        i for i, ln in enumerate(lines) if ln.startswith("[2/6] (GPU 1) " + labels[1] + ": ok")
    )
    assert "Traceback" not in out.getvalue() and "warning" not in out.getvalue()


def render_progress(p: RunProgress, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(p._render())
    file = console.file
    assert isinstance(file, io.StringIO)
    return [line.rstrip() for line in file.getvalue().splitlines()]


def test_progress_on_a_terminal_shows_one_line_per_lane() -> None:
    events = lanes_events()
    cut = mid_run(events)
    p = RunProgress(io.StringIO(), clock=lambda: events[cut].ts + 0.5)
    for e in events[: cut + 1]:
        p.on_event(e)
    assert render_progress(p, 80) == [
        "cell 3/6 (GPU 0) · sd-txt2img · random · sdpa · compile=none · fp16 · b2 · 512x…",
        "measuring · call 4/4 · step 9/20 · elapsed 18.0s · ETA 7.8s · 12.62 it/s · p50 …",
        "▸ GPU 0  cell 3/6  measuring  step 9/20  12.53 it/s  sdpa · b2",
        "  GPU 1  cell 4/6  measuring  step 5/20  9.67 it/s   classic · b2",
    ]


def test_progress_of_a_one_lane_session_is_unchanged() -> None:
    events = read_events(SESSIONS / "clean" / "events.jsonl")
    out = io.StringIO()
    p = RunProgress(out, clock=lambda: T0)
    for e in events:
        p.on_event(e)
    assert len(render_progress(p, 120)) == 2 and "(" not in out.getvalue().splitlines()[0]
    assert out.getvalue().splitlines()[0].startswith("[1/4] started: sd-txt2img · random · sdpa")


# --- the keys act on the followed cell --------------------------------------------------------


def live(app: SdtopApp) -> Any:
    assert app.live is not None
    return app.live


@pytest.mark.asyncio
async def test_skip_and_rerun_pass_the_followed_cell(tmp_path: Path) -> None:
    events = lanes_events()
    cut = mid_run(events)
    prepare = FakePrepare(events[: cut + 1], tmp_path)
    app = SdtopApp(matrix=MatrixSpec(), prepare=prepare, clock=lambda: events[cut].ts)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).dashboard.n_events == cut + 1)
        await pilot.press("k", "r")
        await until(pilot, lambda: len(prepare.runners[0].cell_calls) == 2)
        await pilot.press("s")
        await until(pilot, lambda: live(app).ended == "interrupted")
    assert sorted(prepare.runners[0].cell_calls) == [("rerun_cell", 2), ("skip_cell", 2)]


# --- snapshots --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_lanes_replay_screen(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """The stopped session replayed: a line per lane, each cell's end, the followed cell's chart."""
    assert snap_compare(SdtopApp(replay=SESSIONS / "lanes"), terminal_size=size, run_before=replayed)


@pytest.mark.parametrize("size", SIZES)
def test_lanes_live_screen_mid_run(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    """Both lanes measuring: the header's lane lines, the chart of GPU 0's cell."""
    events = lanes_events()
    cut = mid_run(events)
    prepare = FakePrepare(events[: cut + 1], tmp_path)
    app = SdtopApp(matrix=MatrixSpec(), prepare=prepare, clock=lambda: events[cut].ts + 0.5)

    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.live is not None and app.live.dashboard.n_events == cut + 1)
        await until(pilot, lambda: app.live is not None and not app.live.pending)  # throttled redraws done
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    prepare.runners[0].stop()


class HeaderHarness(App[None]):
    """The header alone over six lanes (six GPUs): capped at 80x24, every lane at 120x40."""

    CSS_PATH = str(Path(tui.__file__).parent / "app.tcss")

    def __init__(self) -> None:
        super().__init__()
        self.model = HeaderModel()
        lanes = [{"lane": i, "label": f"GPU {i}", "gpu": i, "cpus": []} for i in range(6)]
        spec = dataclasses.replace(SPEC, steps=20)
        cells = [
            dataclasses.replace(spec, attention=a, batch_size=b).to_dict()
            for b in (1, 2, 4)
            for a in ("sdpa", "classic")
        ]
        self.model.feed(ev.SessionStarted(ts=T0, cells=cells, lanes=lanes))
        for cell in range(6):  # started 0.7 s apart, cut at 6.2 s: each lane somewhere else
            for e in cell_events(cell, CellSpec.from_dict(cells[cell]), n_cells=6, t0=T0 + 0.7 * cell):
                if e.ts > T0 + 6.2:
                    break
                self.model.feed(dataclasses.replace(e, lane=cell) if isinstance(e, ev.CellStarted) else e)

    def compose(self) -> ComposeResult:
        yield SessionHeader(self.model, mode="live")


@pytest.mark.parametrize("size", SIZES)
def test_lanes_header_widget(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    assert snap_compare(HeaderHarness(), terminal_size=size)
