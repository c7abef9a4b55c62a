"""The setup screen and its form: every axis of ``sdtop run`` on five tabs, round trips of a
matrix through the form and through the widgets, the CLI's messages, the keys; where the
cells run (one lane, lanes, GPUs, Ray) as the CLI's placement, carried to the run.

The form (:mod:`tui.models.setup`) is plain data, tested without a terminal; the screen is
driven through Textual's pilot in a harness app that records what it would start. No sleeps:
every wait is ``pilot.pause()`` or a polled condition.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines import registry, settings
from sdtop.pipelines.settings import MatrixSpec, Placement
from sdtop.tui import cli
from sdtop.tui.app import SdtopApp
from sdtop.tui.messages import StartRequested
from sdtop.tui.models.setup import (
    GPUS,
    LANES,
    NO_CUDA,
    ONE,
    OPTION_FIELDS,
    RAY,
    WAYS,
    SetupForm,
    WhereForm,
    count_cells,
    default_matrix,
    field_of,
    keep_order,
    where_choices,
    where_in_brief,
)
from sdtop.tui.screens.setup import TABS, SetupScreen
from sdtop.tui.widgets.choices import MARK_OFF, MARK_ON, ChoiceList
from textual import on
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Input, TabbedContent

from sdtop import tui
from tests.tui_support import FakePrepare, fixture_events, until

CSS = str(Path(tui.__file__).parent / "app.tcss")

#: A matrix that sets every field the form shows away from its default, in an order that is
#: not the lists' own, plus fields it does not show (they must survive untouched).
EVERY_AXIS = MatrixSpec(
    pipelines=("flux-txt2img", "sd-txt2img", "wan-t2v"),
    weights=("hub", "tiny"),
    model="owner/some-model",
    device="cpu",
    dtypes=("bf16", "fp16"),
    attention=("native", "classic", "xformers"),
    compile_modes=("default", "none"),
    compile_backends=("eager", "inductor"),
    compile_scopes=("regional", "whole"),
    fullgraph=False,
    quants=("int8wo", "none"),
    caches=("fbc:0.2", "none", "taylorseer"),
    offloads=("model", "none"),
    fuse_qkv=(True, False),
    channels_last=False,
    batch_sizes=(2, 1),
    steps=(4,),
    frames=9,
    seed=7,
    prompt="a red fox, at dusk",
    iterations=2,
    warmup=0,
    baseline=1,
    outputs="off",
    # not on the form: kept from the base matrix
    resolutions=((64, 64), (96, 96)),
    threads=2,
    on_recompile="fail",
    compile_cache="off",
)


# --- the form, as data ---------------------------------------------------------------------


def test_every_field_the_form_shows_is_away_from_its_default() -> None:
    """The round-trip matrix really exercises each field (a default would pass vacuously)."""
    default = MatrixSpec()
    shown = set(OPTION_FIELDS.values()) | {"fullgraph", "channels_last", "prompt"}
    for f in dataclasses.fields(SetupForm):
        assert f.name in shown, f"{f.name} is on the form but no option names it"
    spec_names = {
        "pipelines", "weights", "model", "device", "dtypes", "attention", "compile_modes", "compile_backends",
        "compile_scopes", "fullgraph", "quants", "caches", "offloads", "fuse_qkv", "channels_last", "batch_sizes",
        "steps", "frames", "seed", "prompt", "iterations", "warmup", "baseline", "outputs",
    }  # fmt: skip
    for name in spec_names:
        assert getattr(EVERY_AXIS, name) != getattr(default, name), name


def test_the_form_round_trips_a_matrix_with_every_axis() -> None:
    form = SetupForm.from_matrix(EVERY_AXIS)
    assert form.caches == "fbc:0.2,none,taylorseer" and form.fuse_qkv == ["on", "off"]
    assert form.device == "cpu" and form.frames == "9" and form.baseline == "1" and form.height == ""
    assert form.to_matrix(EVERY_AXIS) == EVERY_AXIS


def test_the_form_round_trips_blanks_as_auto() -> None:
    m = MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), device="cuda", frames=5, baseline=0, model=None)
    form = SetupForm.from_matrix(m)
    form.device, form.frames, form.baseline = "", "", ""
    got = form.to_matrix(m)
    assert (got.device, got.frames, got.baseline) == (None, None, None)
    assert SetupForm.from_matrix(got).to_matrix(got) == got


def test_the_form_gives_what_the_cli_would_run() -> None:
    """The same texts typed after ``sdtop run``'s options make the same matrix."""
    form = SetupForm.from_matrix(EVERY_AXIS)
    argv = [a for option, text in form.option_texts().items() for a in (option, text)]
    argv += ["--no-fullgraph", "--no-channels-last", "--prompt", form.prompt, "--no-outputs"]
    argv += ["--resolutions", "64x64,96x96", "--threads", "2", "--on-recompile", "fail", "--compile-cache", "off"]
    args = cli.build_run_parser().parse_args(argv)
    assert cli.matrix_from_args(args) == EVERY_AXIS


FBC = "fbc takes a threshold, e.g. fbc:0.2; valid: " + settings.CACHES_FORM
FRACTION = "a fraction between 0 and 1, e.g. fbc:0.2"
SCOPES = "whole, regional"
MODEL_NEEDS = "--model applies to --weights hub (any checkpoint) and random (a published variant); "


@pytest.mark.parametrize(
    ("field", "value", "argv", "message"),
    [
        ("caches", "fbc", ["--cache", "fbc"], f"--cache 'fbc': {FBC}"),
        ("caches", "fbc:2", ["--cache", "fbc:2"], f"--cache 'fbc:2': the fbc threshold is {FRACTION}"),
        ("quants", [], ["--quant", " "], "--quant needs at least one value; valid: " + ", ".join(settings.QUANTS)),
        ("fuse_qkv", [], ["--fuse-qkv", " "], "--fuse-qkv needs at least one value; valid: off, on"),
        ("compile_scopes", [], ["--compile-scope", " "], "--compile-scope needs at least one value; valid: " + SCOPES),
        ("offloads", [], ["--offload", " "], "--offload needs at least one value; valid: none, model, group"),
        ("frames", "0", ["--frames", "0"], "--frames must be >= 1, got 0"),
        ("seed", "-1", ["--seed", "-1"], "--seed must be >= 0, got -1"),
        ("baseline", "first", ["--baseline", "first"], "--baseline takes whole numbers >= 0, got 'first'"),
        ("model", "/no/such", ["--model", "/no/such"], "--model path '/no/such' does not exist or is not a directory"),
        ("model", "owner/name", ["--model", "owner/name"], MODEL_NEEDS + "add hub to --weights or drop --model"),
    ],
)  # fmt: skip
def test_bad_values_get_the_cli_message(
    field: str, value: object, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    form = SetupForm.from_matrix(MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",)))
    setattr(form, field, value)
    matrix, said = form.describe()
    assert matrix is None and said == message
    assert field_of(said) == field
    assert cli.main(["run", "--pipeline", "sd-txt2img", "--weights", "tiny", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"sdtop: error: {message}"


def test_a_message_names_its_field() -> None:
    assert field_of("--batch must be >= 1, got 0") == "batch"
    assert field_of("unknown --compile-backend value 'x'; valid: inductor") == "compile_backends"
    assert field_of("unknown --compile value 'x'; valid: none") == "compile_modes"
    assert field_of("--resolutions gives every size a cell runs; drop --height/--width") is None
    assert field_of("no option here") is None
    texts = SetupForm.from_matrix(MatrixSpec()).option_texts()
    assert set(texts) | {"--outputs"} == set(OPTION_FIELDS)


def test_keep_order_keeps_the_matrix_order_and_appends_new_picks() -> None:
    assert keep_order(["classic", "sdpa"], ["sdpa", "classic"]) == ["classic", "sdpa"]
    assert keep_order(["classic", "sdpa"], ["sdpa", "flex", "classic"]) == ["classic", "sdpa", "flex"]
    assert keep_order(["classic", "sdpa"], ["sdpa"]) == ["sdpa"]
    assert keep_order([], ["b", "a", "b"]) == ["b", "a"]


def test_a_matrix_that_does_not_expand_says_why() -> None:
    m = MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), baseline=5)
    assert count_cells(m, cuda_available=False) == ("", "--baseline 5: the matrix has cells 0 to 0")
    ok = MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), quants=("none", "int8wo"))
    assert count_cells(ok, cuda_available=False) == ("2 cells × 4 calls", "")


# --- where the cells run, as data ----------------------------------------------------------


def test_the_where_form_starts_at_one_lane_with_working_values_for_the_other_ways() -> None:
    where = WhereForm.from_placement(None)
    assert where == WhereForm(way=ONE, lanes="1", gpus="all", ray="auto", accelerators="", retries="1")
    assert where.to_placement() == Placement() and WhereForm.from_placement(Placement()) == where
    assert where.option_texts() == dict.fromkeys(("lanes", "gpus", "ray", "accelerator", "retries"))


@pytest.mark.parametrize(
    ("way", "texts", "placement"),
    [
        (ONE, {"lanes": "8", "gpus": "x", "ray": "", "retries": "-1"}, Placement()),  # other ways' texts unsent
        (LANES, {"lanes": "2"}, Placement(lanes=2)),
        (LANES, {"lanes": " 1 "}, Placement()),
        (LANES, {"lanes": "3", "accelerators": "A100"}, Placement(lanes=3)),
        (GPUS, {"gpus": "all"}, Placement(all_gpus=True)),
        (GPUS, {"gpus": "0, 2", "lanes": "4"}, Placement(gpus=(0, 2))),
        (RAY, {"ray": "auto"}, Placement(ray="auto")),
        (RAY, {"ray": "local", "lanes": "", "retries": ""}, Placement(ray="local")),
        (
            RAY,
            {"ray": "10.0.0.5:6379", "lanes": "4", "accelerators": "A100,H100", "retries": "2"},
            Placement(lanes=4, ray="10.0.0.5:6379", accelerators=("A100", "H100"), retries=2),
        ),
    ],
)  # fmt: skip
def test_each_way_makes_its_placement(way: str, texts: dict[str, str], placement: Placement) -> None:
    where = dataclasses.replace(WhereForm.from_placement(None), way=way, **texts)
    assert where.describe() == (placement, "")
    assert WhereForm.from_placement(placement).to_placement() == placement  # and back


def test_a_placement_round_trips_through_the_where_form() -> None:
    for p in (
        Placement(lanes=3),
        Placement(gpus=(1, 3)),
        Placement(all_gpus=True),
        Placement(ray="auto", lanes=2, accelerators=("L4",), retries=0),
    ):
        assert WhereForm.from_placement(p).to_placement() == p
    assert WhereForm.from_placement(Placement(gpus=(1, 3))).way == GPUS


GPU_IDS = "--gpus takes 'all' or card indices like 0,1,3 (as nvidia-smi counts), got "
RAY_NEEDS = "--ray takes a cluster address (host:port) or one of: auto, local"
RAY_ADDRESS = "--ray 'my host' is not a cluster address; valid: host:port, auto, local"
GPUS_CPU = "--gpus runs cells on CUDA cards; drop --device cpu, or use --lanes N for CPU workers"
ACCEL_CPU = "--accelerator picks GPU node types; it cannot go with --device cpu"


@pytest.mark.parametrize(
    ("way", "field", "value", "device", "argv", "message"),
    [
        (LANES, "lanes", "0", "", ["--lanes", "0"], "--lanes must be >= 1, got 0"),
        (LANES, "lanes", "two", "", ["--lanes", "two"], "--lanes takes whole numbers >= 1, got 'two'"),
        (LANES, "lanes", " ", "", None, "--lanes needs a whole number >= 1 (CPU workers side by side), e.g. 2"),
        (GPUS, "gpus", "0;1", "", ["--gpus", "0;1"], GPU_IDS + "'0;1'"),
        (GPUS, "gpus", "all", "cpu", ["--gpus", "all", "--device", "cpu"], GPUS_CPU),
        (RAY, "ray", " ", "", ["--ray", " "], RAY_NEEDS),
        (RAY, "ray", "my host", "", ["--ray", "my host"], RAY_ADDRESS),
        (RAY, "lanes", "0", "", ["--ray", "auto", "--lanes", "0"], "--lanes must be >= 1, got 0"),
        (RAY, "accelerators", "A 100", "", ["--ray", "auto", "--accelerator", "A 100"],
         "--accelerator 'A 100' is not a Ray accelerator type like A100, H100, L4"),
        (RAY, "accelerators", "A100", "cpu", ["--ray", "auto", "--accelerator", "A100", "--device", "cpu"], ACCEL_CPU),
        (RAY, "retries", "-1", "", ["--ray", "auto", "--retries", "-1"], "--retries must be >= 0, got -1"),
    ],
)  # fmt: skip
def test_a_bad_placement_gets_one_line_naming_its_field(
    way: str,
    field: str,
    value: str,
    device: str,
    argv: list[str] | None,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI's own line where ``sdtop run`` has the same texts (a blank lane count is the
    form's only own line: the CLI cannot be given one), and the field it is about."""
    where = dataclasses.replace(WhereForm.from_placement(None), way=way, **{field: value})
    assert where.describe(device) == (None, message)
    assert "\n" not in message and field_of(message) == field
    if argv is not None:
        assert cli.main(["run", "--pipeline", "sd-txt2img", "--weights", "tiny", *argv]) == 2
        assert capsys.readouterr().err.strip() == f"sdtop: error: {message}"


def test_an_unknown_way_names_the_valid_ones() -> None:
    where = dataclasses.replace(WhereForm.from_placement(None), way="cloud")
    assert where.describe() == (None, "unknown way to run the cells 'cloud'; valid: one, lanes, gpus, ray")


def test_the_count_line_says_where_in_brief_and_one_lane_not_at_all() -> None:
    assert where_in_brief(Placement()) == ""
    assert where_in_brief(Placement(lanes=3)) == "on 3 lanes"
    assert where_in_brief(Placement(all_gpus=True)) == "on every GPU"
    assert where_in_brief(Placement(gpus=(0, 2))) == "on GPUs 0,2"
    assert where_in_brief(Placement(ray="head:6379", lanes=8, accelerators=("H100",))) == "on Ray head:6379"


def test_the_gpu_way_is_unavailable_without_cuda_and_says_why() -> None:
    assert [way for _, way, _ in where_choices(False)] == list(WAYS)
    assert {way: why for _, way, why in where_choices(False) if why} == {GPUS: NO_CUDA}
    assert not any(why for _, _, why in where_choices(True))


# --- the screen ----------------------------------------------------------------------------


class Harness(App[None]):
    """The setup screen alone over a given matrix; records what it asks to start."""

    CSS_PATH = CSS
    ENABLE_COMMAND_PALETTE = False  # as SdtopApp: ctrl+p is the previous tab

    def __init__(self, matrix: MatrixSpec, **kw: Any) -> None:
        super().__init__()
        self.matrix = matrix
        self.kw = kw
        self.started: list[MatrixSpec] = []
        self.placements: list[Placement] = []

    def on_mount(self) -> None:
        self.push_screen(SetupScreen(self.matrix, **self.kw))

    @on(StartRequested)
    def _start(self, message: StartRequested) -> None:
        self.started.append(message.matrix)
        self.placements.append(message.placement)


async def _setup(pilot: Pilot[Any]) -> SetupScreen:
    pilot.app.animation_level = "none"  # a tab switch's underline would take 0.3 s each
    await until(pilot, lambda: isinstance(pilot.app.screen, SetupScreen))
    screen = pilot.app.screen
    assert isinstance(screen, SetupScreen)
    await pilot.pause()
    return screen


def _active(screen: SetupScreen) -> str:
    return screen.query_one("#setup-tabs", TabbedContent).active


async_test = pytest.mark.asyncio


@async_test
async def test_the_screen_round_trips_a_matrix_with_every_axis() -> None:
    """Shown on the widgets and read back: the same matrix, list order included, and
    ctrl+r starts exactly it."""
    app = Harness(EVERY_AXIS)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        assert screen.error == ""
        assert screen.query_one("#device", ChoiceList).selected == ["cpu"]
        assert screen.query_one("#switches", ChoiceList).selected == []
        assert "xformers" in screen.query_one("#attention-transformer", ChoiceList).selected
        assert screen.query_one("#caches", Input).value == "fbc:0.2,none,taylorseer"
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.started)
    assert app.started == [EVERY_AXIS]


@async_test
async def test_ctrl_n_and_ctrl_p_walk_the_tabs_and_focus_their_first_field() -> None:
    app = Harness(default_matrix(False))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        ids = [pane_id for pane_id, _ in TABS]
        assert _active(screen) == ids[0] and app.focused is screen.query_one("#pipelines")
        firsts = ["#attention-unet", "#compile_modes", "#batch", "#iterations", "#pipelines"]
        for i, first in enumerate(firsts, start=1):
            await pilot.press("ctrl+n")
            assert _active(screen) == ids[i % len(ids)] and app.focused is screen.query_one(first)
        await pilot.press("ctrl+p")
        assert _active(screen) == ids[-1]
        # tab moves through the tab's fields, in reading order
        await pilot.press("tab")
        assert app.focused is screen.query_one("#warmup")


@async_test
async def test_a_bad_value_on_another_tab_starts_nothing_and_is_shown() -> None:
    app = Harness(default_matrix(False))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        await pilot.press("ctrl+n", "ctrl+n")  # Levers
        screen.query_one("#caches", Input).value = "fbc"
        await pilot.pause()
        with pytest.raises(settings.BadInput) as cli_error:
            settings.parse_caches("--cache", "fbc")
        assert screen.error == str(cli_error.value)
        assert str(screen.query_one("#setup-error").render()) == f"✗ {cli_error.value}"
        assert not screen.query_one("#setup-count").display
        await pilot.press("ctrl+n", "ctrl+r")  # from Shape
        await pilot.pause()
        assert app.started == []
        assert _active(screen) == "tab-levers" and app.focused is screen.query_one("#caches")
        screen.query_one("#caches", Input).value = "none,fbc:0.2"
        await pilot.pause()
        assert screen.error == "" and screen.query_one("#setup-count").display
        n = len(registry.PIPELINE_NAMES)
        assert str(screen.query_one("#setup-count").render()).startswith(f"{2 * n} cells × 4 calls")
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.started)
    assert app.started[0].caches == ("none", "fbc:0.2")


@async_test
async def test_choices_toggle_and_one_of_lists_keep_exactly_one() -> None:
    app = Harness(default_matrix(False))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        device = screen.query_one("#device", ChoiceList)
        device.focus()
        await pilot.press("down", "space")  # cuda
        await pilot.pause()
        assert device.selected == ["cuda"] and screen.form.device == "cuda"
        await pilot.press("space")  # the only choice stays chosen
        await pilot.pause()
        assert device.selected == ["cuda"]
        await pilot.press("up", "space")  # auto
        await pilot.pause()
        assert device.selected == ["auto"] and screen.form.device == ""

        dtypes = screen.query_one("#dtypes", ChoiceList)
        dtypes.focus()
        await pilot.press("down", "space", "up", "space")  # bf16 then fp16: chosen order kept
        await pilot.pause()
        assert screen.form.dtypes == ["bf16", "fp16"]
        assert screen.form.to_matrix(screen.base).dtypes == ("bf16", "fp16")


@async_test
async def test_xformers_is_one_choice_in_both_attention_lists() -> None:
    app = Harness(default_matrix(False))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        await pilot.press("ctrl+n")
        unet = screen.query_one("#attention-unet", ChoiceList)
        transformer = screen.query_one("#attention-transformer", ChoiceList)
        unet.toggle("xformers")
        await until(pilot, lambda: "xformers" in transformer.selected)
        assert screen.form.attention == ["sdpa", "xformers"]
        transformer.toggle("xformers")
        await until(pilot, lambda: "xformers" not in unet.selected)
        transformer.toggle("flex")
        await pilot.pause()
        assert screen.form.attention == ["sdpa", "flex"]


@async_test
async def test_chosen_and_unchosen_options_look_different() -> None:
    """Filled marker and the 'on' style (bold, accent) against a hollow marker and the 'off'
    style (muted, not bold), on every line of every list but the focused cursor row."""
    app = Harness(default_matrix(False))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        weights = screen.query_one("#weights", ChoiceList)  # hub, random, tiny; tiny chosen
        lines = [weights.render_line(y) for y in range(3)]
        assert [line.text[:2] for line in lines] == [MARK_OFF, MARK_OFF, MARK_ON]
        on_style = list(lines[2])[1].style
        off_style = list(lines[0])[1].style
        assert on_style is not None and off_style is not None
        assert on_style.bold and not off_style.bold and on_style.color != off_style.color
        assert lines[2].text.strip().endswith("tiny")


@async_test
async def test_read_only_shows_every_tab_but_changes_nothing() -> None:
    app = Harness(EVERY_AXIS, read_only=True, can_go_back=True)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        assert not screen.check_action("start", ())
        await pilot.press("ctrl+n", "ctrl+n")
        assert _active(screen) == "tab-levers"
        assert not screen.query_one("#quants", ChoiceList).focusable  # disabled with its tab
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.started == [] and screen.form.to_matrix(EVERY_AXIS) == EVERY_AXIS


@async_test
async def test_a_placement_given_is_shown_and_started_as_it_is() -> None:
    """The CLI's placement (here a Ray one) pre-fills the Run tab and ctrl+r carries it
    next to the matrix, unchanged."""
    given = Placement(lanes=4, ray="10.0.0.5:6379", accelerators=("A100", "H100"), retries=2)
    app = Harness(default_matrix(True), placement=given, cuda_available=True)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        assert screen.query_one("#where", ChoiceList).selected == [RAY]
        values = {
            key: screen.query_one(f"#{key}", Input) for key in ("lanes", "gpus", "ray", "accelerators", "retries")
        }
        assert {k: w.value for k, w in values.items()} == {
            "lanes": "4", "gpus": "all", "ray": "10.0.0.5:6379", "accelerators": "A100,H100", "retries": "2",
        }  # fmt: skip
        assert [k for k, w in values.items() if w.disabled] == ["gpus"]  # Ray's fields only
        says = "→ Ray cluster 10.0.0.5:6379, A100/H100 nodes, 4 cells in flight"
        assert str(screen.query_one("#where-says").render()) == says
        assert " on Ray 10.0.0.5:6379  ·  ctrl+r" in str(screen.query_one("#setup-count").render())
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.placements)
    assert app.placements == [given]


@async_test
async def test_the_gpu_way_is_greyed_and_skipped_without_cuda() -> None:
    app = Harness(default_matrix(False), cuda_available=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        where = screen.query_one("#where", ChoiceList)
        assert [where.get_option_at_index(i).disabled for i in range(4)] == [False, False, True, False]
        assert str(where.get_option_at_index(2).prompt) == "GPUs: no CUDA"
        assert "no CUDA on this host" in str(screen.query_one("#gpus").parent.query_one(".setup-hint").render())
        where.focus()
        await pilot.press("down", "down")  # from one lane past lanes: GPUs is skipped, Ray is next
        await pilot.press("space")
        await pilot.pause()
        assert where.selected == [RAY] and screen.where.way == RAY
        assert screen.query_one("#gpus", Input).disabled  # whichever way is chosen
        # the line under the fields says what the choice makes
        assert str(screen.query_one("#where-says").render()) == "→ Ray cluster auto"


@async_test
async def test_the_gpu_way_on_a_cuda_host_starts_the_cards_typed() -> None:
    app = Harness(default_matrix(True), cuda_available=True)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        where = screen.query_one("#where", ChoiceList)
        where.focus()
        await pilot.press("down", "down", "space")
        await pilot.pause()
        gpus = screen.query_one("#gpus", Input)
        assert where.selected == [GPUS] and not gpus.disabled and screen.query_one("#lanes", Input).disabled
        gpus.value = "0,1"
        await pilot.pause()
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.placements)
    assert app.placements == [Placement(gpus=(0, 1))]


@async_test
async def test_a_bad_placement_starts_nothing_and_ctrl_r_shows_its_field() -> None:
    app = Harness(default_matrix(False), placement=Placement(ray="auto"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        screen.query_one("#retries", Input).value = "many"
        await pilot.pause()
        assert screen.error == "--retries takes whole numbers >= 0, got 'many'"
        assert str(screen.query_one("#setup-error").render()) == f"✗ {screen.error}"
        assert _active(screen) == "tab-what"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.started == [] and _active(screen) == "tab-run"
        assert app.focused is screen.query_one("#retries")


@async_test
async def test_lanes_2_picked_on_the_form_reach_prepare_and_s_runs_them_again(tmp_path: Path) -> None:
    """The app end to end with a fake prepare: lanes 2 chosen on the Run tab is the
    placement the run is prepared with, and ``s`` after it prepares the next one the same."""
    prepare = FakePrepare(fixture_events("unsupported"), tmp_path, block=False)
    app = SdtopApp(prepare=prepare, has_gpu=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _setup(pilot)
        await pilot.press("ctrl+p")  # Run
        where = screen.query_one("#where", ChoiceList)
        where.focus()
        await pilot.press("down", "space")  # lanes
        await pilot.press("tab")
        assert app.focused is screen.query_one("#lanes")  # the one field the way uses
        await pilot.press("backspace", "2")
        await pilot.pause()
        assert screen.error == "" and " × 4 calls on 2 lanes  ·  " in str(screen.query_one("#setup-count").render())
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.live is not None and app.live.ended == "complete")
        first = app.live
        await pilot.press("s")
        await until(pilot, lambda: app.live is not first and app.live is not None and app.live.ended == "complete")
    assert prepare.placements == [Placement(lanes=2), Placement(lanes=2)]
    assert app.placement == Placement(lanes=2)


@async_test
async def test_a_start_the_host_refuses_returns_to_the_form_with_its_placement(tmp_path: Path) -> None:
    """The runner checks what only the host knows (its cores); back on the form, the
    placement is the one asked for, to be fixed, not chosen again."""
    refused = settings.BadInput("--lanes 64: this machine gives sdtop 2 core(s), one lane needs one; valid: 1..2")
    prepare = FakePrepare([], tmp_path, error=refused)
    app = SdtopApp(prepare=prepare, has_gpu=False, placement=Placement(lanes=64))
    async with app.run_test(size=(80, 24)) as pilot:
        first = await _setup(pilot)
        assert first.where.way == LANES and first.query_one("#lanes", Input).value == "64"
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, SetupScreen) and app.screen is not first)
        again = app.screen
        assert isinstance(again, SetupScreen)
        await until(pilot, lambda: str(again.query_one("#setup-error").render()) == f"✗ {refused}")
        assert again.where.way == LANES and again.query_one("#lanes", Input).value == "64"
    assert prepare.placements == [Placement(lanes=64)]


@async_test
async def test_the_form_over_a_replay_shows_where_its_cells_ran() -> None:
    """``n`` over a recorded session: its SessionStarted placement (two cards), read-only."""
    app = SdtopApp(replay=Path(__file__).parent / "fixtures" / "sessions" / "lanes")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.live is not None and app.live.ended is not None)
        await pilot.press("n")
        screen = await _setup(pilot)
        assert screen.read_only and screen.where.way == GPUS and screen.placement == Placement(gpus=(0, 1))
        assert str(screen.query_one("#where-says").render()) == "→ GPUs 0,1, one lane each"


# --- the choice list alone -----------------------------------------------------------------


class ChoicesHarness(App[None]):
    """Three lists as the setup screen has them: focused (cursor row on a chosen option), not
    focused, and a one-of list with labels that differ from their values."""

    CSS_PATH = CSS
    ENABLE_COMMAND_PALETTE = False

    def compose(self) -> ComposeResult:
        yield ChoiceList("compile", settings.COMPILE_MODES, ["none", "max-autotune"], id="focused")
        yield ChoiceList("quant", settings.QUANTS, ["int8wo"], id="blurred")
        yield ChoiceList("outputs", (("session folder", "session"), ("off: no psnr_db", "off")), ["off"], single=True)

    def on_mount(self) -> None:
        self.query_one("#focused").focus()


@pytest.mark.parametrize("size", [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")])
def test_choice_list_widget(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(ChoicesHarness(), terminal_size=size)
