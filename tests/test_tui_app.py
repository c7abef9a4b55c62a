"""The app driven through Textual's pilot: replay, export, quitting, the setup screen.

No sleeps: every wait is a condition polled with ``pilot.pause()``. A fake runner stands in
for :class:`profiler.host.runner.Runner` (same methods, records what it is asked to do), so
these tests need no worker process and no torch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sdtop.pipelines import settings
from sdtop.pipelines.settings import BadInput, MatrixSpec
from sdtop.profiler.contract import events as ev
from sdtop.profiler.host.session import SessionError
from sdtop.profiler.report import summary
from sdtop.profiler.report.info import session_info
from sdtop.tui.app import SdtopApp
from sdtop.tui.screens.help import HelpScreen
from sdtop.tui.screens.live import LiveScreen
from sdtop.tui.screens.setup import SetupScreen
from sdtop.tui.widgets.header import SessionHeader
from textual.widgets import DataTable, Input

from tests.tui_support import SESSIONS, FakePrepare, fixture_events, until

pytestmark = pytest.mark.asyncio


def live(app: SdtopApp) -> LiveScreen:
    assert app.live is not None
    return app.live


# --- replay --------------------------------------------------------------------------------


async def test_replay_jumps_to_the_end_and_shows_every_row() -> None:
    app = SdtopApp(replay=SESSIONS / "clean")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended == "replayed")
        table = live(app).query_one("#summary-table", DataTable)
        expected = summary.rows(fixture_events("clean"))
        assert table.row_count == len(expected) == 8
        assert live(app).bottom == "summary"  # the session is over: the table comes forward
        assert live(app).dashboard.header.session_status == "complete"
        assert not live(app).check_action("stop", ()) and not live(app).check_action("skip", ())


async def test_replay_at_recorded_speed_can_jump_to_the_end() -> None:
    app = SdtopApp(replay=SESSIONS / "unsupported", replay_speed="recorded")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).dashboard.n_events > 0)
        assert live(app).ended is None and live(app).check_action("jump_end", ())
        await pilot.press("e")
        await until(pilot, lambda: live(app).ended == "replayed")
        assert live(app).dashboard.n_events == len(fixture_events("unsupported"))


@pytest.mark.parametrize(("key", "name"), [("c", "summary.csv"), ("m", "summary.md")])
async def test_export_writes_what_export_would(tmp_path: Path, key: str, name: str) -> None:
    shutil.copytree(SESSIONS / "oom", tmp_path / "s")
    app = SdtopApp(replay=tmp_path / "s")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended is not None)
        await pilot.press(key)
        await until(pilot, lambda: (tmp_path / "s" / name).exists())
        notes = [n.message for n in app._notifications]
    events = fixture_events("oom")
    rows = summary.rows(events)
    if name.endswith(".csv"):
        expected = summary.to_csv(rows)
    else:
        expected = summary.to_markdown(rows, session_info(events).get("environment"))
    assert (tmp_path / "s" / name).read_bytes() == expected.encode()
    assert f"wrote {tmp_path / 's' / name}" in notes


# --- live runs -----------------------------------------------------------------------------


async def test_q_stops_the_runner_and_exits(tmp_path: Path) -> None:
    events = fixture_events("clean")[:400]
    prepare = FakePrepare(events, tmp_path)
    matrix = MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",))
    app = SdtopApp(matrix=matrix, out=tmp_path, prepare=prepare, argv=["sdtop", "-p", "sd-txt2img"], clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).dashboard.n_events == 400)
        assert live(app).running and live(app).check_action("stop", ())
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    runner = prepare.runners[0]
    assert runner.calls == ["run", "stop"]
    assert app.controller is not None and app.controller.join(5) and app.controller.result == "interrupted"
    assert prepare.calls == [{"matrix": matrix, "out": tmp_path, "force": False, "argv": ["sdtop", "-p", "sd-txt2img"]}]


@pytest.mark.parametrize("how", ["ctrl+c", "hangup"])
async def test_ctrl_c_and_hangup_stop_the_runner(tmp_path: Path, how: str) -> None:
    prepare = FakePrepare(fixture_events("clean")[:50], tmp_path)
    app = SdtopApp(matrix=MatrixSpec(), prepare=prepare, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(prepare.runners) and app.live is not None and live(app).running)
        if how == "hangup":
            app.hangup()  # what run_app's SIGHUP/SIGTERM handler calls
        else:
            await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running)
    assert "stop" in prepare.runners[0].calls


async def test_skip_rerun_and_stop_keys_reach_the_runner(tmp_path: Path) -> None:
    prepare = FakePrepare(fixture_events("clean")[:30], tmp_path)
    app = SdtopApp(matrix=MatrixSpec(), prepare=prepare, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(prepare.runners) and app.live is not None and live(app).running)
        await pilot.press("k", "r")
        # skip runs on a worker thread (killing a worker may take a moment): order may vary
        await until(pilot, lambda: {"skip_cell", "rerun_cell"} <= set(prepare.runners[0].calls))
        await pilot.press("s")
        await until(pilot, lambda: live(app).ended == "interrupted")
        assert not live(app).check_action("stop", ())
    assert prepare.runners[0].calls.count("stop") == 1


async def test_live_elapsed_uses_the_injected_clock(tmp_path: Path) -> None:
    events = fixture_events("clean")
    start = events[0].ts
    first_cell_done = next(e for e in events if isinstance(e, ev.CellFinished))
    prepare = FakePrepare(events[: events.index(first_cell_done) + 1], tmp_path)
    app = SdtopApp(matrix=MatrixSpec(), prepare=prepare, clock=lambda: start + 125.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and first_cell_done in live(app).dashboard.sparse)
        header = live(app).query_one(SessionHeader)
        await until(pilot, lambda: header.now == start + 125.0)
        assert dict(live(app).dashboard.header.timing(header.now))["elapsed"] == "2m05s"
        assert live(app).dashboard.header.cell_line().startswith("cell 1/4 · sd-txt2img")
        await pilot.press("q")


async def test_a_run_that_cannot_start_exits_2_with_its_message(tmp_path: Path) -> None:
    error = SessionError(f"--out {tmp_path} already holds a session; use --resume {tmp_path} to continue it")
    app = SdtopApp(matrix=MatrixSpec(), out=tmp_path, prepare=FakePrepare([], tmp_path, error=error))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: not app.is_running)
    assert app.return_code == 2 and app.exit_message == str(error)


# --- setup ---------------------------------------------------------------------------------


async def test_setup_counts_cells_rejects_bad_values_then_starts(tmp_path: Path) -> None:
    prepare = FakePrepare(fixture_events("unsupported"), tmp_path, block=False)
    app = SdtopApp(prepare=prepare, has_gpu=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SetupScreen))
        setup = app.screen
        assert isinstance(setup, SetupScreen)
        count = setup.query_one("#setup-count")
        n = len(settings.embedded_default(cuda_available=False)[0])  # every pipeline, tiny weights
        assert str(count.render()).startswith(f"{n} cells × 4 calls")

        batch = setup.query_one("#batch", Input)
        batch.value = "1,0"
        await pilot.pause()
        with pytest.raises(BadInput) as cli:
            settings.parse_ints("--batch", "1,0")
        assert setup.error == str(cli.value) == "--batch must be >= 1, got 0"
        assert str(setup.query_one("#setup-error").render()) == f"✗ {cli.value}"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.screen is setup and prepare.calls == []  # nothing started

        batch.value = "1,4"
        await pilot.pause()
        assert setup.error == "" and str(count.render()).startswith(f"{2 * n} cells × 4 calls")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, LiveScreen) and live(app).ended == "complete")
    assert prepare.calls[0]["matrix"].batch_sizes == (1, 4)
    assert prepare.calls[0]["matrix"].pipelines == settings.embedded_default(cuda_available=False)[0]


async def test_setup_shows_why_a_run_could_not_start(tmp_path: Path) -> None:
    error = BadInput("--device cuda: no CUDA device is available to the worker's torch; use --device cpu")
    app = SdtopApp(prepare=FakePrepare([], tmp_path, error=error), has_gpu=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SetupScreen))
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.controller is not None and app.controller.state == "failed")
        await until(pilot, lambda: isinstance(app.screen, SetupScreen) and app.screen is not None)
        screen = app.screen
        await until(pilot, lambda: str(screen.query_one("#setup-error").render()) == f"✗ {error}")
        assert app.is_running  # the user can change the form and try again


async def test_setup_over_a_replay_is_read_only() -> None:
    app = SdtopApp(replay=SESSIONS / "oom")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended is not None)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, SetupScreen))
        setup = app.screen
        assert isinstance(setup, SetupScreen) and setup.read_only
        assert setup.form.batch == "1,4,16" and setup.form.pipelines == ["sdxl-txt2img"]
        assert not setup.check_action("start", ())
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.live)


async def test_help_panels_and_filters() -> None:
    app = SdtopApp(replay=SESSIONS / "recompile")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended is not None)
        screen = live(app)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)
        await pilot.press("3")
        assert screen.bottom == "events" and screen.query_one("#events").display
        assert not screen.query_one("#summary").display
        await pilot.press("f", "f")
        assert screen.dashboard.log.filter == "compile"
        await pilot.press("z")
        assert screen.zoomed and not screen.query_one("#top").display
        await pilot.press("tab")
        assert screen.selected == "summary" and screen.query_one("#summary").display
        await pilot.press("escape", "o")
        assert not screen.zoomed and screen.dashboard.summary.sort == "it/s"


async def test_s_starts_the_same_matrix_again_once_a_run_is_over(tmp_path: Path) -> None:
    prepare = FakePrepare(fixture_events("unsupported"), tmp_path, block=False)
    matrix = MatrixSpec(pipelines=("sd-txt2img",), attention=("sdpa", "xformers"))
    app = SdtopApp(matrix=matrix, prepare=prepare, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended == "complete")
        first = live(app)
        assert first.check_action("start", ()) and not first.check_action("stop", ())
        await pilot.press("s")
        await until(pilot, lambda: app.live is not first and live(app).ended == "complete")
        assert isinstance(app.screen, LiveScreen) and app.screen is app.live
    assert [c["matrix"] for c in prepare.calls] == [matrix, matrix]


async def test_a_second_run_never_reuses_the_out_directory(tmp_path: Path) -> None:
    prepare = FakePrepare(fixture_events("unsupported"), tmp_path, block=False)
    app = SdtopApp(matrix=MatrixSpec(), out=tmp_path / "mine", force=True, prepare=prepare, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended == "complete")
        first = live(app)
        prepare.error = SessionError("cannot write to session directory runs/x: disk full")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SetupScreen) and app.live is not first)
        screen = app.screen
        await until(pilot, lambda: "disk full" in str(screen.query_one("#setup-error").render()))
        assert app.is_running  # a failed second run does not end the app
    assert [(c["out"], c["force"]) for c in prepare.calls] == [(tmp_path / "mine", True), (None, False)]
