"""A second session and the published figures in the dashboard's summary.

The view-model (:mod:`tui.models.compare`) alone first, on synthetic sessions with pinned
step times so every ratio is exact; then the app through Textual's pilot: ``--against``
from the constructor, the ``b`` modal with a bad then a good directory, the ``p`` cycle.
No sleeps: waits are conditions polled with ``pilot.pause()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import CellSpec, MatrixSpec
from sdtop.profiler.contract import events as ev
from sdtop.profiler.report import compare, reference, summary
from sdtop.tui.app import SdtopApp
from sdtop.tui.models.compare import OTHER, CompareModel
from sdtop.tui.models.dashboard import Dashboard
from sdtop.tui.models.summary import SummaryModel
from sdtop.tui.screens.against import AgainstScreen
from sdtop.tui.screens.live import LiveScreen
from sdtop.tui.widgets.summary import SummaryPanel
from textual.widgets import DataTable, Input, Static

from tests.helpers_events import H100, session_events
from tests.tui_support import SESSIONS, FakePrepare, fixture_events, until

A100 = "NVIDIA A100-SXM4-80GB"
GPUS = ("A100", "V100", "T4", "RTX 3090", "RTX 4090")


def spec(**kw: Any) -> CellSpec:
    base: dict[str, Any] = {
        "pipeline": "sd-txt2img",
        "weights": "random",
        "device": "cuda",
        "dtype": "fp16",
        "steps": 10,
        "iterations": 3,
        "warmup": 1,
        "height": 512,
        "width": 512,
    }
    base.update(kw)
    return CellSpec(**base)


def pinned(ms: float) -> Any:
    """Every step takes ``ms``: it/s is exactly 1000 / ms."""
    return lambda kind, call, stage, step: ms


def session(specs: Sequence[CellSpec], ms: Sequence[float], **kw: Any) -> list[ev.Event]:
    """A session whose cell ``i`` takes ``ms[i]`` per step; ``overrides`` add to that."""
    extra = kw.pop("overrides", {})
    overrides = {i: {"step_ms": pinned(m), **extra.get(i, {})} for i, m in enumerate(ms)}
    return session_events(specs, overrides=overrides, **kw)


def dashboard(events: list[ev.Event]) -> Dashboard:
    d = Dashboard()
    d.feed(events)
    return d


def other(events: list[ev.Event], path: str = "runs/other") -> compare.SessionData:
    return compare.SessionData.from_events(events, "X", path)


def row(d: Dashboard, cell: int, stage: str = "main") -> summary.Row:
    return next(r for r in d.summary.rows if r.cell == cell and r.stage == stage)


# --- the view-model --------------------------------------------------------------------------


def test_ratio_is_this_over_the_other_for_the_matched_cell() -> None:
    d = dashboard(session([spec(batch_size=1), spec(batch_size=4)], [40.0, 100.0]))
    b = session([spec(batch_size=4), spec(batch_size=1)], [125.0, 50.0])  # other order: matched on settings
    d.compare.set_other(other(b))
    c = d.compare
    assert c.other is not None and c.other.label == OTHER  # relabelled whatever it was loaded as
    assert c.ratio(row(d, 0)) == pytest.approx(25.0 / 20.0)
    assert (c.other_text(row(d, 0)), c.ratio_text(row(d, 0))) == ("20.00", "1.25×")
    assert (c.other_text(row(d, 1)), c.ratio_text(row(d, 1))) == ("8.00", "1.25×")
    assert c.differences() == []
    assert c.notes(80) == [f"{OTHER} = other · differs: nothing"]


def test_unmatched_rows_and_a_failed_cell_in_the_other_session() -> None:
    d = dashboard(session([spec(attention="sdpa"), spec(attention="classic"), spec(attention="xformers")], [40] * 3))
    b = session(
        [spec(attention="sdpa"), spec(attention="classic")],
        [50.0, 50.0],
        overrides={1: {"outcome": "oom", "measured_done": 1}},
    )
    d.compare.set_other(other(b))
    c = d.compare
    # B's cell ran out of memory after one measured call: its status, and the ratio of what it measured
    assert (c.other_text(row(d, 1)), c.ratio_text(row(d, 1))) == ("OOM after 1st iteration", "1.25×")
    assert (c.other_text(row(d, 2)), c.ratio_text(row(d, 2))) == ("—", "—")  # xformers: not in B
    assert c.match(row(d, 2)) is None


def test_what_differs_is_named_both_ways() -> None:
    d = dashboard(session([spec(attention="sdpa")], [40.0]))
    b = session(
        [spec(attention="classic"), spec(attention="classic", batch_size=2)],
        [50.0, 90.0],
        device_name=A100,
        torch_version="2.4.1+cu121",
    )
    d.compare.set_other(other(b, "runs/a100"))
    c = d.compare
    assert [(x.what, x.this, x.other) for x in c.differences()] == [
        ("device", H100.removeprefix("NVIDIA "), "A100-SXM4-80GB"),
        ("torch", "2.5.1+cu124", "2.4.1+cu121"),
        ("attention", "sdpa", "classic"),
    ]
    # attention is constant in each session: matched across, so the cell has its ratio
    assert c.ratio_text(row(d, 0)) == "1.25×"
    assert c.only_in_other() == 1
    assert c.notes(80) == ["B = a100 · differs: A100-SXM4-80GB, torch 2.4.1+cu121, attention classic"]
    wide = "\n".join(c.notes(120))
    assert wide.startswith("B = runs/a100 · NVIDIA A100-SXM4-80GB · torch 2.4.1+cu121")
    assert "torch 2.5.1+cu124 → 2.4.1+cu121" in wide and "attention sdpa → classic (matched across)" in wide
    assert "1 row only in B" in wide
    assert all(len(line) <= 120 for line in c.notes(120)) and all(len(line) <= 60 for line in c.notes(60))


def test_the_comparison_follows_cells_as_they_finish() -> None:
    """Live: the panel rebuilds when a cell finishes, and the ratios come with it."""
    events = session([spec(batch_size=1), spec(batch_size=2)], [40.0, 80.0])
    first_done = next(i for i, e in enumerate(events) if isinstance(e, ev.CellFinished))
    d = Dashboard()
    d.compare.set_other(other(session([spec(batch_size=1), spec(batch_size=2)], [50.0, 100.0])))
    d.feed(events[: first_done + 1])
    assert [d.compare.ratio_text(r) for r in d.summary.rows] == ["1.25×"]
    assert "summary" in d.feed(events[first_done + 1 :])
    assert [d.compare.ratio_text(r) for r in d.summary.rows] == ["1.25×", "1.25×"]


def test_the_reference_column_cycles_through_the_gpus_then_off() -> None:
    d = dashboard(session([spec(), spec(compile_mode="default"), spec(batch_size=16), spec(batch_size=2)], [40.0] * 4))
    c = d.compare
    assert c.gpu is None and not c.active and c.columns(80) == []
    seen = [c.cycle_gpu() for _ in range(len(GPUS) + 2)]
    assert seen == [*GPUS, None, "A100"]
    assert c.reference.gpus == GPUS
    # torch 2.5.1 is closest to the nightly column; compile on/off as each row
    assert c.torch_column() == "nightly"
    assert [c.published_text(r) for r in d.summary.rows[:2]] == ["23.13", "49.74"]
    assert c.published_text(row(d, 2)) == "3.6"
    assert c.published_text(row(d, 3)) == "—"  # published: batch 1, 4 and 16 only
    assert [col.header for col in c.columns(80)] == ["A100 nt"]
    assert [col.header for col in c.columns(120)] == ["A100 torch nightly"]
    assert c.notes(80) == ["published: A100, torch nightly · p: next GPU"]
    c.gpu = "T4"  # published "2.30s" at batch 16: shown as it/s with the published text
    assert c.published_text(row(d, 2)) == "0.435 (2.30s)"
    assert c.published(row(d, 2)) == reference.load("seed").get("T4", "sd-txt2img", 16, compiled=False, torch="nightly")


def test_the_reference_column_says_when_it_is_not_like_for_like() -> None:
    d = dashboard(session([spec(weights="tiny", dtype="fp32", device="cpu", height=64, width=64)], [40.0]))
    d.compare.cycle_gpu()
    assert d.compare.notes(200)[-1] == (
        "not like for like: tiny weights are not the published models; fp32 (published: fp16); "
        "device cpu (published: CUDA GPUs)"
    )


def test_the_user_gpu_is_marked() -> None:
    d = dashboard(session([spec()], [40.0], device_name=A100))
    assert d.compare.cycle_gpu() == "A100"
    assert d.compare.notes(80) == ["published: A100 (your GPU), torch nightly · p: next GPU"]


def _keys(model: SummaryModel, width: int, extra: Sequence[Any] = ()) -> list[str]:
    return [c.key for c, _ in model.columns(width, extra)]


def test_the_extra_columns_fit_80_columns() -> None:
    d = Dashboard()
    d.feed(fixture_events("clean"))
    d.compare.set_other(compare.load_session(SESSIONS / "clean-a100", "B"))
    m = d.summary
    alone = _keys(m, 76)
    assert "stage" in alone and "speedup" in alone  # the table without a comparison is unchanged
    both = _keys(m, 76, d.compare.columns(76))
    # the speedup gives way first; the stage stays (if-cascade's rows would read alike)
    assert both == ["cell", "pipeline", "stage", "compile", "status", "it/s", "speedup", "other", "ratio"]
    d.compare.cycle_gpu()
    assert _keys(m, 76, d.compare.columns(76)) == [
        "cell",
        "pipeline",
        "stage",
        "compile",
        "status",
        "it/s",
        "ratio",
        "published",
    ]
    wide = _keys(m, 114, d.compare.columns(114))
    assert {"other", "ratio", "published", "speedup", "stage"} <= set(wide)
    assert wide.index("other") == wide.index("speedup") + 1  # beside the it/s they are read against


def test_comparing_costs_nothing_until_asked() -> None:
    """No second session, no reference: no comparison is built, no table is read."""

    def refuse() -> reference.ReferenceTable:
        raise AssertionError("the reference was read")

    c = CompareModel(load_reference=refuse)
    d = Dashboard()
    d.compare = c
    d.feed(fixture_events("oom"))
    assert c.comparison is None and c.columns(120) == [] and c.notes(120) == []


# --- the app ---------------------------------------------------------------------------------


def live(app: SdtopApp) -> LiveScreen:
    assert app.live is not None
    return app.live


def headers(screen: LiveScreen) -> list[str]:
    table = screen.query_one("#summary-table", DataTable)
    return [str(c.label) for c in table.columns.values()]


def notes(screen: LiveScreen) -> str:
    return str(screen.query_one("#summary-notes", Static).render())


@pytest.mark.asyncio
async def test_against_from_the_constructor() -> None:
    app = SdtopApp(replay=SESSIONS / "clean", against=SESSIONS / "clean-a100")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended == "replayed")
        screen = live(app)
        # the panel is laid out at its width once the replay is over and it comes forward
        await until(pilot, lambda: {"B", "A/B", "stage"} <= set(headers(screen)))
        assert notes(screen).startswith("B = clean-a100 · differs: A100-SXM4-80GB, torch 2.4.1+cu121")
        table = screen.query_one("#summary-table", DataTable)
        ratio = [str(table.get_row_at(i)[headers(screen).index("A/B")]) for i in range(table.row_count)]
        assert ratio[:3] == ["1.31×", "1.32×", "0.92×"] and ratio[-1] == "—"  # cell 4 never ran in B
        # the session is over: the footer has room for b and p at 80 columns
        shown = {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show and b.enabled}
        assert {"b", "p"} <= shown


@pytest.mark.asyncio
async def test_against_a_directory_that_is_not_a_session_exits_2() -> None:
    app = SdtopApp(replay=SESSIONS / "clean", against=SESSIONS)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: not app.is_running)
    assert app.return_code == 2 and app.exit_message == f"{SESSIONS} is not an sdtop session (no events.jsonl)"


@pytest.mark.asyncio
async def test_b_opens_the_modal_a_bad_directory_then_a_good_one() -> None:
    app = SdtopApp(replay=SESSIONS / "clean")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended == "replayed")
        screen = live(app)
        assert not screen.query_one("#summary-notes").display and "A/B" not in headers(screen)
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, AgainstScreen))
        modal = app.screen
        assert isinstance(modal, AgainstScreen)
        field = modal.query_one("#against-path", Input)
        field.value = str(SESSIONS / "nope")
        await pilot.press("enter")
        await until(pilot, lambda: modal.error != "")
        assert modal.error == f"{SESSIONS / 'nope'} does not exist"
        assert str(modal.query_one("#against-error", Static).render()) == f"✗ {modal.error}"
        assert app.screen is modal  # still open: fix the path and try again
        field.value = str(SESSIONS / "clean-a100")
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen)
        await until(pilot, lambda: "A/B" in headers(screen))
        assert notes(screen).startswith("B = clean-a100")
        assert app.against_data is not None and app.against_data.path == str(SESSIONS / "clean-a100")
        await pilot.press("b", "escape")  # cancelled: the comparison stays
        await until(pilot, lambda: app.screen is screen)
        assert "A/B" in headers(screen)


@pytest.mark.asyncio
async def test_p_toggles_the_reference_column_through_the_gpus() -> None:
    app = SdtopApp(replay=SESSIONS / "clean")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).ended == "replayed")
        screen = live(app)

        def published() -> list[str]:
            return [h for h in headers(screen) if "torch" in h]

        await pilot.press("p")
        assert published() == ["A100 torch nightly"]
        assert notes(screen).startswith("published (seed): A100, torch nightly column")
        await pilot.press("p")
        assert published() == ["V100 torch nightly"]
        screen.dashboard.compare.gpu = "RTX 4090"  # the last GPU (the model test walks them all)
        await pilot.press("p")
        assert screen.dashboard.compare.gpu is None and published() == []
        assert not screen.query_one("#summary-notes").display


@pytest.mark.asyncio
async def test_the_footer_shows_b_and_p_unless_a_run_fills_it(tmp_path: Path) -> None:
    """80 columns during a run: the footer is full, the keys still work (their twins).
    Once the session is over they are shown: test_against_from_the_constructor."""
    prepare = FakePrepare(fixture_events("clean")[:50], tmp_path)
    app = SdtopApp(matrix=MatrixSpec(), prepare=prepare, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and live(app).running)
        screen = live(app)
        shown = {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show and b.enabled}
        assert not {"b", "p"} & shown
        await pilot.press("p")
        assert screen.dashboard.compare.gpu == "A100"
        await pilot.press("q")


def test_summary_panel_without_a_compare_model_still_renders() -> None:
    """The widget alone (as the widget snapshots build it) takes no compare model."""
    panel = SummaryPanel(SummaryModel())
    assert panel.compare is None
