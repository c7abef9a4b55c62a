"""Snapshots of every widget and of both screens at 80×24 and 120×40.

Driven by the recorded sessions in tests/fixtures/sessions (pinned timestamps, seeded
values): nothing rendered depends on the wall clock, so a replay renders the same bytes
every time. Update after an intended change with ``pytest --snapshot-update`` and look at
snapshot_report.html / the SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import MatrixSpec, Placement
from sdtop.profiler.contract import events as ev
from sdtop.profiler.host.session import read_events
from sdtop.tui.app import SdtopApp
from sdtop.tui.models.dashboard import Dashboard
from sdtop.tui.screens.against import AgainstScreen
from sdtop.tui.widgets.breakdown import BreakdownPanel
from sdtop.tui.widgets.eventlog import EventsPanel
from sdtop.tui.widgets.header import SessionHeader
from sdtop.tui.widgets.latency import LatencyPanel
from sdtop.tui.widgets.memory import MemoryPanel
from sdtop.tui.widgets.summary import SummaryPanel
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Input

from sdtop import tui
from tests.tui_support import FakePrepare, replayed, until

SESSIONS = Path(__file__).parent / "fixtures" / "sessions"
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
SnapCompare = Callable[..., bool]


def events_of(name: str) -> list[ev.Event]:
    return read_events(SESSIONS / name / "events.jsonl")


class WidgetHarness(App[None]):
    """One widget alone, over view-models fed synchronously (no threads, no reader)."""

    CSS_PATH = str(Path(tui.__file__).parent / "app.tcss")

    def __init__(self, make: Callable[[Dashboard], Widget], events: list[ev.Event]) -> None:
        super().__init__()
        self.make = make
        self.dashboard = Dashboard()
        self.dashboard.feed(events)

    def compose(self) -> ComposeResult:
        widget = self.make(self.dashboard)
        if not isinstance(widget, SessionHeader):
            widget.add_class("panel")
            widget.styles.height = "1fr"
        yield widget


WIDGETS: dict[str, tuple[Callable[[Dashboard], Widget], str]] = {
    "header": (lambda d: SessionHeader(d.header, mode="replay"), "clean"),
    "latency": (lambda d: LatencyPanel(d.latency), "recompile"),
    "memory": (lambda d: MemoryPanel(d.memory), "clean"),
    "memory_no_nvml": (lambda d: MemoryPanel(d.memory), "crashed"),
    "events": (lambda d: EventsPanel(d.log), "recompile"),
    "summary": (lambda d: SummaryPanel(d.summary), "clean"),
    # levers, PSNR and the Pareto mark with their legend line (the speedup gives way at 80)
    "summary_levers": (lambda d: SummaryPanel(d.summary), "levers"),
    # --profile: a bar per cell (classic's attention share above sdpa's), the selected
    # (newest) cell's TFLOP/s, MFU and top kernels; alone, the panel has room for the full form
    "breakdown": (lambda d: BreakdownPanel(d.breakdown), "profiled"),
    # a session without --profile: the one line saying how to get a breakdown
    "breakdown_no_profile": (lambda d: BreakdownPanel(d.breakdown), "clean"),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("widget", list(WIDGETS))
def test_widget(snap_compare: SnapCompare, widget: str, size: tuple[int, int]) -> None:
    make, session = WIDGETS[widget]
    assert snap_compare(WidgetHarness(make, events_of(session)), terminal_size=size)


def test_latency_mid_call(snap_compare: SnapCompare) -> None:
    """A measured call half done: the current call drawn over the earlier ones."""
    events = events_of("clean")
    cut = next(
        i for i, e in enumerate(events) if isinstance(e, ev.StepTimed) and e.cell == 1 and e.call == 3 and e.step == 9
    )
    harness = WidgetHarness(lambda d: LatencyPanel(d.latency), events[: cut + 1])
    assert snap_compare(harness, terminal_size=(80, 24))


# --- screens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_live_screen(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    assert snap_compare(SdtopApp(replay=SESSIONS / "clean"), terminal_size=size, run_before=replayed)


@pytest.mark.parametrize(
    ("session", "keys"),
    [
        pytest.param("oom", (), id="oom"),
        pytest.param("unsupported", ("3",), id="unsupported-events"),  # why the cell is not supported
        pytest.param("recompile", ("3", "f", "f"), id="recompile-compile-filter"),  # the recompile's reason
        pytest.param("crashed", (), id="crashed"),
    ],
)
def test_live_screen_sessions(snap_compare: SnapCompare, session: str, keys: tuple[str, ...]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await replayed(pilot)
        await pilot.press(*keys)
        await pilot.pause()

    assert snap_compare(SdtopApp(replay=SESSIONS / session), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize(
    ("keys", "size"),
    [
        # compact: the breakdown takes its turn below the top row (5), one line per cell
        pytest.param(("5",), (80, 24), id="80x24"),
        # full: beside the events, the selected cell's figures and top kernels spelled out
        pytest.param((), (120, 40), id="120x40"),
        # the summary's cursor moved to cell 1 picks the cell whose kernels the breakdown lists
        pytest.param(("4", "down", "up"), (120, 40), id="summary-cursor-120x40"),
    ],
)
def test_live_screen_profiled(snap_compare: SnapCompare, keys: tuple[str, ...], size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await replayed(pilot)
        await pilot.press(*keys)
        await pilot.pause()

    assert snap_compare(SdtopApp(replay=SESSIONS / "profiled"), terminal_size=size, run_before=run_before)


def test_live_screen_zoomed_chart(snap_compare: SnapCompare) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await replayed(pilot)
        await pilot.press("1", "z")
        await pilot.pause()

    assert snap_compare(SdtopApp(replay=SESSIONS / "recompile"), terminal_size=(80, 24), run_before=run_before)


def test_live_screen_while_running(snap_compare: SnapCompare, tmp_path: Path) -> None:
    """Mid-run with a fake runner: phase, call/step, elapsed from the injected clock, ETA."""
    events = events_of("clean")
    cut = next(
        i for i, e in enumerate(events) if isinstance(e, ev.StepTimed) and e.cell == 1 and e.call == 2 and e.step == 11
    )
    prepare = FakePrepare(events[: cut + 1], tmp_path)
    app = SdtopApp(matrix=MatrixSpec(), prepare=prepare, clock=lambda: events[cut].ts + 0.5)

    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.live is not None and app.live.dashboard.n_events == cut + 1)
        await until(pilot, lambda: app.live is not None and not app.live.pending)  # throttled redraws done
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
    prepare.runners[0].stop()


SETUP_TABS = ("what", "attention", "levers", "shape", "run")


async def _steady_cursors(pilot: Pilot[Any]) -> None:
    """A focused input's cursor blinks on a timer: drawn or not depends on when the
    snapshot is taken (a loaded machine saw both). Held visible, the picture is one."""
    from textual.widgets import Input

    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tab", SETUP_TABS)
def test_setup_screen(snap_compare: SnapCompare, tab: str, size: tuple[int, int]) -> None:
    """Each tab as ctrl+n brings it forward (its first field focused): every field in sight
    at 80×24, chosen options filled and bold, the others hollow and muted."""

    async def run_before(pilot: Pilot[Any]) -> None:
        pilot.app.animation_level = "none"  # the tab underline lands at once, not in 0.3 s
        await pilot.press(*["ctrl+n"] * SETUP_TABS.index(tab))
        await pilot.pause()
        await _steady_cursors(pilot)

    assert snap_compare(SdtopApp(has_gpu=False), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_setup_screen_where_on_ray(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    """The Run tab on a CUDA host over the CLI's ``--ray auto --lanes 2 --accelerator H100``:
    the GPU way available, Ray chosen with its four fields enabled (gpus greyed), the line
    under them and the count saying where the cells go."""
    placement = Placement(ray="auto", lanes=2, accelerators=("H100",))

    async def run_before(pilot: Pilot[Any]) -> None:
        pilot.app.animation_level = "none"
        await pilot.press("ctrl+p")  # Run, the last tab
        await pilot.pause()
        await _steady_cursors(pilot)

    app = SdtopApp(has_gpu=True, placement=placement)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_setup_screen_rejects_a_value(snap_compare: SnapCompare) -> None:
    """A bad value on another tab: ctrl+r starts nothing, shows the CLI's line, and brings
    the field's tab forward with the field focused."""

    async def run_before(pilot: Pilot[Any]) -> None:
        pilot.app.animation_level = "none"
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n", "tab")  # Shape: batch, then steps
        await pilot.press("end", "backspace", "backspace", "0", "ctrl+p", "ctrl+r")
        await pilot.pause()
        await _steady_cursors(pilot)

    assert snap_compare(SdtopApp(has_gpu=True), terminal_size=(80, 24), run_before=run_before)


def test_help_screen(snap_compare: SnapCompare) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await replayed(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(SdtopApp(replay=SESSIONS / "clean"), terminal_size=(80, 24), run_before=run_before)


# --- comparing: a second session, the published figures -------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("keys", "size"),
    [
        pytest.param((), (80, 24), id="against-80x24"),
        pytest.param(("p",), (80, 24), id="against-published-80x24"),  # B's it/s gives way
        pytest.param(("p",), (120, 40), id="against-published-120x40"),  # everything, both sides spelled out
    ],
)
def test_live_screen_against(
    snap_compare: SnapCompare, monkeypatch: pytest.MonkeyPatch, keys: tuple[str, ...], size: tuple[int, int]
) -> None:
    """``sdtop replay clean --against clean-a100``: B's it/s and A/B beside each row, what
    differs above the table; ``p`` adds the A100's published figures. The path is relative
    (from the repository root) because the wide layout prints it."""
    monkeypatch.chdir(ROOT)

    async def run_before(pilot: Pilot[Any]) -> None:
        await replayed(pilot)
        await pilot.press(*keys)
        await pilot.pause()

    app = SdtopApp(replay=SESSIONS / "clean", against=Path("tests/fixtures/sessions/clean-a100"))
    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_against_modal_rejects_a_directory(snap_compare: SnapCompare) -> None:
    """``b``, a path that is not a session: the one-line reason in the modal, which stays."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await replayed(pilot)
        await pilot.press("b")
        app = pilot.app
        await until(pilot, lambda: isinstance(app.screen, AgainstScreen))
        app.screen.query_one(Input).value = "runs/no-such-session"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, AgainstScreen) and app.screen.error != "")
        await pilot.pause()

    assert snap_compare(SdtopApp(replay=SESSIONS / "clean"), terminal_size=(80, 24), run_before=run_before)


def test_live_screen_profiled_against(snap_compare: SnapCompare, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--against`` a profiled session: each cell's bar has B's under it (here the same
    session, so the bars agree), as the summary has B's it/s beside each row."""
    monkeypatch.chdir(ROOT)

    async def run_before(pilot: Pilot[Any]) -> None:
        await replayed(pilot)
        await pilot.press("5")
        await pilot.pause()

    app = SdtopApp(replay=SESSIONS / "profiled", against=Path("tests/fixtures/sessions/profiled"))
    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
