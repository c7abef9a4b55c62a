"""--resolutions, --on-recompile, --trace and the compile columns, without compiling anything:
option parsing and validation, the call plan, per-size summary rows from synthetic events."""

from __future__ import annotations

import json

import pytest
from sdtop.pipelines.settings import BadInput, CellSpec, MatrixSpec, expand, parse_resolutions, validate_matrix
from sdtop.profiler.contract.events import (
    CallFinished,
    CellFinished,
    CellStarted,
    CompileFinished,
    CompileStarted,
    CudagraphSkip,
    Event,
    GraphBreak,
    PhaseStarted,
    Recompile,
    RecompileLimit,
    StageTimed,
    StepTimed,
)
from sdtop.profiler.report import summary
from sdtop.profiler.worker.cell import call_plan
from sdtop.tui import cli
from sdtop.tui.progress import compile_line

from tests.helpers_events import cell_events

# --- options ---------------------------------------------------------------------------------------


def test_resolutions_are_height_x_width_in_run_order() -> None:
    assert parse_resolutions("--resolutions", "512x512, 768X640,512x512") == ((512, 512), (768, 640))
    assert parse_resolutions("--resolutions", None) == ()
    assert parse_resolutions("--resolutions", [[64, 64], [96, 96]]) == ((64, 64), (96, 96))


@pytest.mark.parametrize(
    ("text", "shown"),
    [("512", "'512'"), ("512x", "'512x'"), ("axb", "'axb'"), ("512x500", "512x500"), ("0x64", "0x64")],
)
def test_a_bad_size_is_one_line_naming_the_form(text: str, shown: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_resolutions("--resolutions", text)
    assert str(info.value) == (
        f"--resolutions takes HEIGHTxWIDTH sizes in pixels, multiples of 8, e.g. 512x512,768x768; got {shown}"
    )


def run_args(*argv: str) -> MatrixSpec:
    args = cli.build_run_parser().parse_args(list(argv))
    matrix: MatrixSpec = cli.matrix_from_args(args)
    return matrix


def test_the_cli_options_reach_every_cell(tmp_path: object) -> None:
    m = run_args("--pipeline", "sd-txt2img,sd-img2img", "--compile", "default", "--resolutions", "64x64,96x96",
                 "--on-recompile", "fail", "--trace", "traces")  # fmt: skip
    assert m.resolutions == ((64, 64), (96, 96)) and m.on_recompile == "fail"
    assert m.trace_dir is not None and m.trace_dir.endswith("/traces") and m.trace_dir.startswith("/")
    cells = expand(m, cuda_available=False)
    assert len(cells) == 2  # sizes run inside a cell: not an axis
    for c in cells:
        assert (c.height, c.width, c.resolutions, c.sizes) == (64, 64, ((64, 64), (96, 96)), ((64, 64), (96, 96)))
        assert c.on_recompile == "fail" and c.trace_dir == m.trace_dir
        assert "64x64→96x96" in c.label()
    # what the worker gets (JSON) and what a session records come back as equal specs
    assert CellSpec.from_dict(json.loads(json.dumps(cells[0].to_dict()))) == cells[0]
    assert MatrixSpec.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_one_size_is_just_a_height_and_width() -> None:
    (cell,) = expand(run_args("--pipeline", "sd-txt2img", "--resolutions", "128x96"), cuda_available=False)
    assert (cell.height, cell.width, cell.resolutions, cell.sizes) == (128, 96, (), ((128, 96),))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--resolutions", "64x64", "--height", "64"],
            "--resolutions gives every size a cell runs; drop --height/--width",
        ),
        (["--on-recompile", "ignore"], "unknown --on-recompile value 'ignore'; valid: warn, fail"),
    ],
)
def test_conflicts_and_bad_values_are_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(BadInput) as info:
        run_args(*argv)
    assert str(info.value) == message


def test_trace_must_be_a_directory(tmp_path: object) -> None:
    from pathlib import Path

    file = Path(str(tmp_path)) / "f"
    file.write_text("")
    with pytest.raises(BadInput, match="is a file; give a directory"):
        run_args("--trace", str(file))


def test_the_setup_screen_path_validates_the_same_way() -> None:
    with pytest.raises(BadInput, match="multiples of 8"):
        validate_matrix(MatrixSpec(resolutions=((64, 60),)))
    with pytest.raises(BadInput, match="--on-recompile"):
        validate_matrix(MatrixSpec(on_recompile="maybe"))


# --- the call plan --------------------------------------------------------------------------------


def test_each_further_size_has_one_first_call_then_its_measured_calls() -> None:
    spec = CellSpec("sd-txt2img", warmup=2, iterations=2, resolutions=((64, 64), (96, 96), (128, 128)))
    assert call_plan(spec) == [
        (0, "first_call", "first", (64, 64)),
        (1, "warmup", "warmup", (64, 64)),
        (2, "measure", "measured", (64, 64)),
        (3, "measure", "measured", (64, 64)),
        (4, "first_call", "first", (96, 96)),
        (5, "measure", "measured", (96, 96)),
        (6, "measure", "measured", (96, 96)),
        (7, "first_call", "first", (128, 128)),
        (8, "measure", "measured", (128, 128)),
        (9, "measure", "measured", (128, 128)),
    ]


def test_a_single_size_plan_is_the_seeds() -> None:
    plan = call_plan(CellSpec("sd-txt2img", warmup=1, iterations=3, height=64, width=64))
    assert [(c, p, k) for c, p, k, _ in plan] == [
        (0, "first_call", "first"),
        (1, "measure", "measured"),
        (2, "measure", "measured"),
        (3, "measure", "measured"),
    ]
    assert call_plan(CellSpec("sd-txt2img", warmup=0, iterations=1))[0][:3] == (0, "first_call", "measured")


def test_set_size_makes_the_inputs_again_at_the_new_size() -> None:
    pytest.importorskip("torch")
    from sdtop.pipelines.builders.build import build, set_size

    built = build(CellSpec("sd-controlnet", steps=1))
    set_size(built, 96, 128)
    (stage,) = built.stages
    assert (stage.height, stage.width) == (96, 128)
    assert (stage.kwargs["height"], stage.kwargs["width"]) == (96, 128)
    assert stage.kwargs["image"][0].size == (128, 96)  # PIL: (width, height)


# --- summary rows per size -----------------------------------------------------------------------


def _call(cell: int, call: int, kind: str, size: tuple[int, int], step_ms: float, steps: int = 2) -> list[Event]:
    loop_s = step_ms * steps / 1000.0
    h, w = size
    out: list[Event] = [StepTimed(cell=cell, call=call, call_kind=kind, step=i, ms=step_ms) for i in range(steps)]
    out.append(StageTimed(cell=cell, call=call, call_kind=kind, steps=steps, loop_s=loop_s, height=h, width=w))
    out.append(
        CallFinished(cell=cell, call=call, call_kind=kind, wall_s=loop_s + 0.1, denoise_s=loop_s, height=h, width=w)
    )
    return out


def _compile(cell: int, call: int, cid: str, seconds: float, module: str = "unet") -> list[Event]:
    return [
        CompileStarted(cell=cell, module=module, compile_id=cid, backend="eager", call=call, trigger="dynamo"),
        CompileFinished(
            cell=cell, module=module, compile_id=cid, backend="eager", duration_s=seconds, call=call, trigger="dynamo"
        ),
    ]


def resized_cell(**spec_kw: object) -> list[Event]:
    """64x64 (compile in call 0), then 96x96 (recompile in call 2, and a stray one in
    measured call 4, which must not count as steady state)."""
    spec = CellSpec("sd-txt2img", compile_mode="default", compile_backend="eager", steps=2, iterations=2,
                    resolutions=((64, 64), (96, 96)), **spec_kw)  # type: ignore[arg-type]  # fmt: skip
    big, small = (96, 96), (64, 64)
    return [
        CellStarted(cell=0, settings=spec.to_dict()),
        PhaseStarted(cell=0, phase="first_call", height=64, width=64),
        *_compile(0, 0, "0/0", 4.0),
        *_call(0, 0, "first", small, 2050.0),
        PhaseStarted(cell=0, phase="measure", height=64, width=64),
        *_call(0, 1, "measured", small, 50.0),
        PhaseStarted(cell=0, phase="first_call", height=96, width=96),
        Recompile(cell=0, function="wrapper", reason="- 0/0: size mismatch", compile_id="0/1", module="unet", call=2),
        GraphBreak(cell=0, reason="Tensor.item", location="x.py:3", module="unet", compile_id="0/1", call=2),
        *_compile(0, 2, "0/1", 6.0),
        CudagraphSkip(cell=0, reason="n/a", count=2, call=2),
        *_call(0, 2, "first", big, 3100.0),
        PhaseStarted(cell=0, phase="measure", height=96, width=96),
        *_call(0, 3, "measured", big, 100.0),
        Recompile(cell=0, function="wrapper", reason="- 0/1: dtype", compile_id="0/2", module="unet", call=4),
        *_compile(0, 4, "0/2", 1.0),
        *_call(0, 4, "measured", big, 1100.0),
        CellFinished(cell=0, status="ok"),
    ]


def test_a_cell_run_at_two_sizes_has_a_row_per_size_with_its_own_figures() -> None:
    small, big = summary.rows(resized_cell())
    assert [(r.height, r.width) for r in (small, big)] == [(64, 64), (96, 96)]
    assert small.it_per_s == pytest.approx(20.0) and small.measured_calls == 1
    # the measured call that recompiled is left out: steady state never includes compilation
    assert big.it_per_s == pytest.approx(10.0) and big.measured_calls == 1
    assert big.step_ms_p95 == pytest.approx(100.0)
    assert (small.compile_s, small.compiles, small.recompiles, small.graph_breaks, small.cudagraph_skips) == (
        4.0, 1, 0, 0, 0,
    )  # fmt: skip
    assert (big.compile_s, big.compiles, big.recompiles, big.graph_breaks, big.cudagraph_skips) == (7.0, 2, 2, 1, 2)
    assert small.first_call_s == pytest.approx(4.2) and small.first_call_run_s == pytest.approx(0.2)
    assert big.first_call_s == pytest.approx(6.3) and big.first_call_run_s == pytest.approx(0.3)
    md = summary.to_markdown([small, big])
    assert "| sd-txt2img | 64x64: 20.00 · 96x96: 10.00 |" in md
    assert "64x64→96x96" in md


def test_a_size_the_cell_never_reached_still_has_its_row() -> None:
    evs = [e for e in resized_cell() if not (getattr(e, "call", -1) >= 2 or isinstance(e, CellFinished))]
    evs.append(CellFinished(cell=0, status="error: recompiled: 0/0: size mismatch"))
    small, big = summary.rows(evs)
    assert big.status == small.status == "error: recompiled: 0/0: size mismatch"
    assert (big.height, big.it_per_s, big.first_call_s, big.compile_s, big.recompiles) == (96, None, None, 0.0, 0)


def test_the_recompile_limit_says_the_cell_ran_eagerly() -> None:
    evs = resized_cell(fullgraph=False)
    evs.insert(-1, RecompileLimit(cell=0, function="'wrapper' (x.py:1)", limit=8, reason="r", module="unet", call=4))
    small, big = summary.rows(evs)
    assert small.eager_fallback is None
    assert big.eager_fallback == "recompile limit 8 hit for 'wrapper' (x.py:1)"
    assert "96x96: 10.00 (eager fallback)" in summary.to_markdown([small, big])


def test_compile_columns_are_empty_when_nothing_was_compiled_or_observed() -> None:
    (plain,) = summary.rows(cell_events(0, CellSpec("sd-txt2img", steps=3)))
    assert plain.compile_s is plain.compiles is plain.recompiles is plain.eager_fallback is None
    assert plain.first_call_run_s == plain.first_call_s  # no compilation: all of it is running
    # compiled, but the worker could not observe compiles (telemetry n/a): unknown, not 0
    (blind,) = summary.rows(cell_events(0, CellSpec("sd-txt2img", compile_mode="default", steps=3)))
    assert blind.compile_s is blind.compiles is blind.first_call_run_s is None
    assert blind.it_per_s is not None


def test_sessions_recorded_before_sizes_existed_read_as_before() -> None:
    evs = [e for e in cell_events(0, CellSpec("sd-txt2img", steps=3))]
    (row,) = summary.rows(evs)
    assert (row.height, row.width, row.measured_calls) == (64, 64, 3)


# --- sdtop run's lines ------------------------------------------------------------------------------


def test_sdtop_run_prints_compile_trouble_with_torchs_reason() -> None:
    rec = Recompile(
        cell=0, function="wrapper", reason="triggered by ...:\n- 0/0: size", compile_id="0/1", module="unet"
    )
    assert compile_line(rec) == "recompile unet 0/1 (function wrapper): triggered by ...: - 0/0: size"
    brk = GraphBreak(cell=0, reason="Tensor.item()", location="diffusers/x.py:9", module="unet")
    assert compile_line(brk) == "graph break unet at diffusers/x.py:9: Tensor.item()"
    lim = RecompileLimit(cell=0, function="'wrapper'", limit=8, reason="0/7: size")
    assert compile_line(lim) == "recompile limit 8 hit for 'wrapper': 0/7: size"


def test_compiles_belong_to_their_stage_and_the_first_call_split_is_call_level() -> None:
    spec = CellSpec("if-cascade", compile_mode="default", steps=3, height=16, width=16)
    evs = cell_events(0, spec)
    at = next(i for i, e in enumerate(evs) if isinstance(e, StepTimed))  # inside call 0
    evs[at:at] = [*_compile(0, 0, "0/0", 2.0, module="I.unet"), *_compile(0, 0, "0/1", 3.0, module="II.unet")]
    rows = {r.stage: r for r in summary.rows(evs)}
    assert {s: (r.compile_s, r.compiles) for s, r in rows.items()} == {
        "I": (2.0, 1),
        "II": (3.0, 1),
        "upscaler": (0.0, 0),
    }
    first_call_s = rows["I"].first_call_s
    assert first_call_s is not None
    for r in rows.values():
        assert r.first_call_s == first_call_s and r.first_call_run_s == pytest.approx(first_call_s - 5.0)


def test_the_cell_count_is_what_expand_makes_on_that_host() -> None:
    """The embedded default: every pipeline on tiny weights without CUDA, SD 1.5 on random
    weights with it; an uncompiled cell has one scope whatever --compile-scope lists."""
    from sdtop.pipelines import registry

    assert MatrixSpec().n_cells(cuda_available=False) == len(registry.PIPELINE_NAMES) == 10
    assert MatrixSpec().n_cells(cuda_available=True) == 1
    assert (
        MatrixSpec(compile_modes=("none", "default"), compile_backends=("inductor", "eager")).n_cells(
            cuda_available=True
        )
        == 3
    )
    assert (
        MatrixSpec(compile_modes=("none", "default"), compile_scopes=("whole", "regional")).n_cells(cuda_available=True)
        == 3
    )  # the backends multiply the compiled mode only


def test_a_matrix_checks_itself_once_made() -> None:
    with pytest.raises(BadInput, match="unknown --attention value 'fast'; valid: sdpa"):
        MatrixSpec(attention=("fast",))
    with pytest.raises(BadInput, match="--batch must be >= 1, got 0"):
        MatrixSpec(batch_sizes=(0,))
