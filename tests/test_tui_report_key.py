"""R on the dashboard: the report page of the live or replayed session, written on a worker
thread, then one notification saying where it went, or one line saying why not.

``sdtop.profiler.report.page`` is stood in for (sys.modules) by a fake ``write_report``
that records its calls: what is tested here is the key (which directory, where a read-only
session's page goes, the UI staying live while it writes), not the page (that is
tests/test_report_browser.py's, in a real browser). No sleeps: conditions polled with
``pilot.pause()``, and the slow writer waits on an Event the test sets.
"""

from __future__ import annotations

import shutil
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import MatrixSpec
from sdtop.tui.app import SdtopApp
from sdtop.tui.screens import live as live_screen
from sdtop.tui.screens.live import LiveScreen, report_path
from textual.containers import VerticalScroll
from textual.notifications import Notification
from textual.pilot import Pilot

from tests.tui_support import SESSIONS, FakePrepare, fixture_events, replayed, until

PAGE = "sdtop.profiler.report.page"
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


class FakeWriter:
    """``write_report``'s signature; writes a stub page, or raises ``error``; with ``hold``
    it waits for the test to let it finish (the dashboard must go on meanwhile)."""

    def __init__(self, error: BaseException | None = None, hold: bool = False) -> None:
        self.error = error
        self.calls: list[tuple[Path, Path | None]] = []
        self.live: list[bool] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.started = threading.Event()

    def __call__(self, directory: Path | str, out: Path | str | None = None, **kw: Any) -> Path:
        self.started.set()
        self.calls.append((Path(directory), None if out is None else Path(out)))
        self.live.append(bool(kw.get("live", False)))
        assert self.release.wait(10), "the test never let the writer finish"
        if self.error is not None:
            raise self.error
        path = Path(out) if out is not None else Path(directory) / "report.html"
        path.write_text("<!doctype html><title>report</title>")
        return path


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[FakeWriter], FakeWriter]]:
    """Put a fake report page module where the R key imports it from."""

    def install(writer: FakeWriter) -> FakeWriter:
        module = types.ModuleType(PAGE)
        module.write_report = writer  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, PAGE, module)
        return writer

    yield install


def live(app: SdtopApp) -> LiveScreen:
    assert app.live is not None
    return app.live


def notes(app: SdtopApp) -> list[Notification]:
    return list(app._notifications)


def said(app: SdtopApp, prefix: str = "report: ") -> list[str]:
    """What the R key has said so far, but its "writing…" (the lines a user acts on)."""
    return [n.message for n in notes(app) if n.message.startswith(prefix) and n.message != "report: writing…"]


@pytest.mark.asyncio
async def test_r_writes_the_replayed_sessions_report_and_says_where(
    tmp_path: Path, page: Callable[[FakeWriter], FakeWriter]
) -> None:
    writer = page(FakeWriter())
    session = tmp_path / "s"
    shutil.copytree(SESSIONS / "clean", session)
    app = SdtopApp(replay=session)
    async with app.run_test(size=(80, 24)) as pilot:
        await replayed(pilot)
        await pilot.press("R")
        await until(pilot, lambda: bool(said(app)))
        lines = said(app)
        assert lines == [f"report: {session / 'report.html'}"]
        assert next(n for n in notes(app) if n.message == lines[0]).severity == "information"
        assert not live(app).reporting
    assert writer.calls == [(session, None)]  # the page's own default: <session>/report.html
    assert writer.live == [False]  # a replay is read as the log ends
    assert (session / "report.html").is_file()


@pytest.mark.asyncio
async def test_r_during_a_live_run_writes_what_is_there_so_far(
    tmp_path: Path, page: Callable[[FakeWriter], FakeWriter]
) -> None:
    writer = page(FakeWriter())
    prepare = FakePrepare(fixture_events("clean")[:200], tmp_path)
    app = SdtopApp(matrix=MatrixSpec(), prepare=prepare, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(prepare.runners) and app.live is not None and live(app).running)
        await pilot.press("R")
        await until(pilot, lambda: bool(said(app)))
        assert said(app) == [f"report: {tmp_path / 'report.html'}"]
        assert live(app).running  # the run goes on
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert writer.calls == [(tmp_path, None)]
    assert writer.live == [True]  # its running cell reads "running", not "interrupted"
    assert "rerun_cell" not in prepare.runners[0].calls  # R is not r


@pytest.mark.asyncio
async def test_r_says_in_one_line_why_it_could_not(tmp_path: Path, page: Callable[[FakeWriter], FakeWriter]) -> None:
    page(FakeWriter(error=ValueError("no cell finished in [run 1]: nothing to report\n  (details below)")))
    session = tmp_path / "s"
    shutil.copytree(SESSIONS / "crashed", session)
    app = SdtopApp(replay=session)
    async with app.run_test(size=(80, 24)) as pilot:
        await replayed(pilot)
        await pilot.press("R")
        await until(pilot, lambda: bool(said(app)))
        assert said(app) == ["report: no cell finished in [run 1]: nothing to report"]  # not markup
        assert next(n for n in notes(app) if n.message == said(app)[0]).severity == "error"
        assert not live(app).reporting  # R works again after a failure


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            PermissionError(13, "Permission denied", "/ro/report.html"),
            "report: cannot write /ro/report.html: Permission denied",
        ),
        (
            ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"),
            "report: matplotlib is not installed (pip install 'sdtop[report]')",
        ),
    ],
)
async def test_r_names_what_is_missing_or_unwritable(
    tmp_path: Path, page: Callable[[FakeWriter], FakeWriter], error: BaseException, line: str
) -> None:
    page(FakeWriter(error=error))
    session = tmp_path / "s"
    shutil.copytree(SESSIONS / "clean", session)
    app = SdtopApp(replay=session)
    async with app.run_test(size=(80, 24)) as pilot:
        await replayed(pilot)
        await pilot.press("R")
        await until(pilot, lambda: bool(said(app)))
        assert said(app) == [line]


@pytest.mark.asyncio
async def test_a_read_only_session_reports_into_the_current_directory(
    tmp_path: Path, page: Callable[[FakeWriter], FakeWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = page(FakeWriter())
    session = tmp_path / "recorded"
    shutil.copytree(SESSIONS / "clean", session)
    cwd = tmp_path / "here"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(live_screen, "writable", lambda folder: Path(folder) != session)  # root writes anywhere
    app = SdtopApp(replay=session)
    async with app.run_test(size=(80, 24)) as pilot:
        await replayed(pilot)
        await pilot.press("R")
        await until(pilot, lambda: bool(said(app)))
        assert said(app) == [f"report: {cwd / 'report-recorded.html'}"]
    assert writer.calls == [(session, cwd / "report-recorded.html")]
    assert not (session / "report.html").exists()


def test_report_path_is_the_pages_default_where_the_session_is_writable(tmp_path: Path) -> None:
    assert report_path(tmp_path, Path("/elsewhere")) is None


@pytest.mark.asyncio
async def test_the_dashboard_goes_on_while_the_report_is_written(
    tmp_path: Path, page: Callable[[FakeWriter], FakeWriter]
) -> None:
    """The writer holds until released: keys still work meanwhile (the UI thread is free),
    and a second R is told the first is still going, not started twice on one file."""
    writer = page(FakeWriter(hold=True))
    session = tmp_path / "s"
    shutil.copytree(SESSIONS / "clean", session)
    app = SdtopApp(replay=session)
    async with app.run_test(size=(80, 24)) as pilot:
        await replayed(pilot)
        await pilot.press("R")
        await until(pilot, writer.started.is_set)
        assert live(app).reporting
        await pilot.press("2")  # a panel key, handled while the page is being written
        assert live(app).selected == "memory"
        await pilot.press("R")
        await until(pilot, lambda: "report: still writing the last one" in said(app))
        writer.release.set()
        await until(pilot, lambda: f"report: {session / 'report.html'}" in said(app))
    assert len(writer.calls) == 1


@pytest.mark.asyncio
async def test_r_before_the_session_exists_says_so(tmp_path: Path, page: Callable[[FakeWriter], FakeWriter]) -> None:
    """A live run whose runner is still being prepared has no session directory yet."""
    writer = page(FakeWriter())
    gate = threading.Event()
    inner = FakePrepare(fixture_events("clean")[:20], tmp_path)

    def slow_prepare(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(10)
        return inner(*args, **kwargs)

    app = SdtopApp(matrix=MatrixSpec(), prepare=slow_prepare, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and app.controller is not None and app.controller.running)
        await pilot.press("R")
        await until(pilot, lambda: bool(said(app)))
        assert said(app) == ["report: no session directory yet"]
        gate.set()
        await until(pilot, lambda: bool(inner.runners))
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert writer.calls == []


# --- the help screen says so -------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_help_screen_lists_r(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    """At 120x40 every key is in sight; at 80x24 the box scrolls (scrolled to its end here,
    the top is tests/test_tui_snapshots.py's help snapshot)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await replayed(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        if size == (80, 24):
            await pilot.press("end")
            await pilot.pause()

    assert snap_compare(SdtopApp(replay=SESSIONS / "clean"), terminal_size=size, run_before=run_before)


@pytest.mark.asyncio
async def test_help_box_scrolls_to_its_last_key() -> None:
    app = SdtopApp(replay=SESSIONS / "clean")
    async with app.run_test(size=(80, 24)) as pilot:
        await replayed(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        box = app.screen.query_one("#help-box", VerticalScroll)
        assert box.max_scroll_y > 0 and box.scroll_y == 0  # taller than the screen
        await pilot.press("end")
        await until(pilot, lambda: box.scroll_y == box.max_scroll_y)
