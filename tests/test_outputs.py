"""The worker's half of the fidelity check: which call's output is kept, how it becomes
8-bit RGB, what lands on disk, and that keeping the latents costs the timed call nothing.

Worker modules import torch; everything here is tensors and arrays made in the test,
except the one ``e2e`` test, which runs a tiny pipeline in this process."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract.events import Log, OutputSaved, decode, encode
from sdtop.profiler.worker import cell as cell_mod
from sdtop.profiler.worker import outputs, timing
from sdtop.profiler.worker.cell import call_plan, output_call


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "RGB"
        return np.asarray(img)


# --- which call ---------------------------------------------------------------------------


def test_the_last_measured_call_is_kept() -> None:
    spec = CellSpec(pipeline="sd-txt2img", warmup=1, iterations=3)
    plan = call_plan(spec)
    assert output_call(plan) == 3 and plan[3][2] == "measured"


def test_with_resolutions_the_last_measured_call_overall_is_kept() -> None:
    spec = CellSpec(pipeline="sd-txt2img", warmup=2, iterations=2, resolutions=((64, 64), (128, 128)))
    plan = call_plan(spec)
    kept = output_call(plan)
    assert kept == len(plan) - 1
    assert plan[kept][2] == "measured" and plan[kept][3] == (128, 128)


def test_no_measured_call_keeps_nothing() -> None:
    assert output_call([(0, "first_call", "first", (64, 64))]) == -1


def test_the_outputs_setting() -> None:
    assert outputs.outputs_folder("off") is None
    assert outputs.outputs_folder("session") is None  # unresolved: no session to write into
    assert outputs.outputs_folder("/tmp/s/outputs") == Path("/tmp/s/outputs")


# --- images to 8-bit RGB --------------------------------------------------------------------


def test_unit_range_floats_round_as_diffusers_numpy_to_pil() -> None:
    x = np.array([[[0.0, 0.5, 1.0], [0.25, 0.002, 0.998]]], dtype=np.float32)  # (1, 2, 3) HWC
    got = outputs.to_rgb8(x)
    assert got.dtype == np.uint8 and got.shape == (1, 2, 3)
    assert got.tolist() == [[[0, 128, 255], [64, 1, 254]]]


def test_signed_tensors_are_mapped_from_minus_one_to_one() -> None:
    t = torch.tensor([[[-1.0, 0.0, 1.0]], [[-1.0, -1.0, -1.0]], [[2.0, float("nan"), -3.0]]])  # (C=3, H=1, W=3)
    got = outputs.to_rgb8(t, signed=True)
    assert got.shape == (1, 3, 3)
    assert got[0, :, 0].tolist() == [0, 128, 255]  # channel R across the row
    assert got[0, :, 2].tolist() == [255, 0, 0]  # 2 and -3 clamped; NaN read as 0


def test_unsigned_tensors_and_half_precision() -> None:
    t = torch.full((3, 2, 2), 0.5, dtype=torch.bfloat16)
    assert (outputs.to_rgb8(t) == 128).all()


def test_pil_grayscale_and_alpha_become_rgb() -> None:
    gray = Image.fromarray(np.full((4, 5), 7, dtype=np.uint8), mode="L")
    assert outputs.to_rgb8(gray).shape == (4, 5, 3)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert outputs.to_rgb8(rgba).shape == (2, 2, 3)
    assert outputs.to_rgb8(np.ones((2, 2, 1), dtype=np.float32)).tolist() == [[[255] * 3] * 2] * 2


def test_a_shape_that_is_no_image_is_refused() -> None:
    with pytest.raises(ValueError, match="channels"):
        outputs.to_rgb8(np.zeros((2, 2, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="dimensions"):
        outputs.to_rgb8(np.zeros((2, 2, 2, 3), dtype=np.uint8))


def test_which_pipelines_give_signed_tensors() -> None:
    class IFPipeline:
        pass

    class StableDiffusionUpscalePipeline:
        pass

    assert outputs.signed_range(IFPipeline(), {"output_type": "pt"})
    assert not outputs.signed_range(IFPipeline(), {})  # its "pil"/"np" paths denormalise
    assert not outputs.signed_range(StableDiffusionUpscalePipeline(), {"output_type": "pt"})


def test_the_first_image_of_a_batch() -> None:
    batch = np.stack([np.zeros((4, 4, 3)), np.ones((4, 4, 3))]).astype(np.float32)
    [(name, rgb)] = outputs.decoded_images(batch, video=False)
    assert name == "image.png" and (rgb == 0).all()
    tensors = torch.stack([torch.ones(3, 4, 4), torch.zeros(3, 4, 4)])
    [(_, rgb)] = outputs.decoded_images(tensors, video=False)
    assert (rgb == 255).all()
    pils = [Image.new("RGB", (4, 4), (1, 2, 3)), Image.new("RGB", (4, 4))]
    [(_, rgb)] = outputs.decoded_images(pils, video=False)
    assert rgb[0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("layout", ["pil", "np", "pt"])
def test_video_keeps_the_first_middle_and_last_frame_of_the_first_video(layout: str) -> None:
    n = 5
    levels = [i / (n - 1) for i in range(n)]  # frame i is uniformly levels[i]
    frames: Any
    if layout == "pil":
        frames = [[Image.new("RGB", (4, 2), (round(v * 255),) * 3) for v in levels], []]
    elif layout == "np":  # (B, F, H, W, C)
        frames = np.stack([np.stack([np.full((2, 4, 3), v, dtype=np.float32) for v in levels])] * 2)
    else:  # (B, F, C, H, W)
        frames = torch.stack([torch.stack([torch.full((3, 2, 4), v) for v in levels])] * 2)
    got = outputs.decoded_images(frames, video=True)
    assert [name for name, _ in got] == ["frame-first.png", "frame-middle.png", "frame-last.png"]
    assert [int(rgb[0, 0, 0]) for _, rgb in got] == [0, 128, 255]
    assert all(rgb.shape == (2, 4, 3) for _, rgb in got)


# --- on disk --------------------------------------------------------------------------------


def test_save_output_writes_float32_latents_and_a_png_relative_to_the_session(tmp_path: Path) -> None:
    folder = tmp_path / "session" / "outputs"
    latents = torch.arange(2 * 4 * 3 * 3, dtype=torch.float16).reshape(2, 4, 3, 3) / 7
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ev = outputs.save_output(
        folder, cell=3, call=4, stage="main", latents=latents, output=image, video=False, signed=False
    )
    assert ev == OutputSaved(
        ts=ev.ts,
        cell=3,
        call=4,
        stage="main",
        latents="outputs/cell-3/latents.safetensors",
        images=["outputs/cell-3/image.png"],
        shape=[2, 4, 3, 3],
        dtype="float16",
    )
    assert decode(encode(ev)) == ev
    root = tmp_path / "session"
    stored = load_file(str(root / ev.latents))["latents"]
    assert stored.dtype == np.float32 and stored.shape == (2, 4, 3, 3)  # the whole batch
    assert np.array_equal(stored, latents.float().numpy())
    assert np.array_equal(_png(root / ev.images[0]), outputs.to_rgb8(image[0]))
    assert sorted(p.name for p in (folder / "cell-3").iterdir()) == ["image.png", "latents.safetensors"]  # no .tmp


def test_save_output_video_and_no_latents(tmp_path: Path) -> None:
    frames = [[Image.new("RGB", (4, 4), (i, i, i)) for i in range(3)]]
    ev = outputs.save_output(
        tmp_path / "outputs", cell=0, call=1, stage="main", latents=None, output=frames, video=True
    )
    assert ev.latents == "" and ev.shape == [] and ev.dtype == ""
    assert ev.images == [f"outputs/cell-0/{n}" for n in ("frame-first.png", "frame-middle.png", "frame-last.png")]
    assert [int(_png(tmp_path / p)[0, 0, 0]) for p in ev.images] == [0, 1, 2]


def test_saving_writes_the_same_bytes_twice(tmp_path: Path) -> None:
    """Deterministic files: the same output saved twice is the same PNG, byte for byte."""
    image = [Image.new("RGB", (8, 8), (10, 20, 30))]
    a = outputs.save_output(tmp_path / "a", cell=0, call=0, stage="main", latents=None, output=image, video=False)
    b = outputs.save_output(tmp_path / "b", cell=0, call=0, stage="main", latents=None, output=image, video=False)
    png = Path("cell-0", "image.png")
    assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()
    assert a.images == ["a/cell-0/image.png"] and b.images == ["b/cell-0/image.png"]


class _Stage:
    """What _save_output reads of a StageRun."""

    def __init__(self) -> None:
        self.name = "main"
        self.pipe = object()
        self.kwargs: dict[str, Any] = {}


def test_a_failure_to_save_is_a_warning_not_a_failed_cell(tmp_path: Path) -> None:
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the folder should be")
    emitted: list[Any] = []
    run = cell_mod.CellRun(0, CellSpec(pipeline="sd-txt2img", outputs=str(blocker)), emitted.append)
    run._save_output(1, _Stage(), torch.zeros(1, 4, 2, 2), [Image.new("RGB", (2, 2))], False)  # type: ignore[arg-type]
    assert len(emitted) == 1 and isinstance(emitted[0], Log)
    assert emitted[0].level == "warning" and emitted[0].message.startswith("output not saved: ")


def test_outputs_off_writes_nothing(tmp_path: Path) -> None:
    emitted: list[Any] = []
    run = cell_mod.CellRun(0, CellSpec(pipeline="sd-txt2img", outputs="off"), emitted.append)
    run._save_output(1, _Stage(), torch.zeros(1, 4, 2, 2), [Image.new("RGB", (2, 2))], False)  # type: ignore[arg-type]
    assert emitted == []


# --- no sync inside the timed call ------------------------------------------------------------


class Untouchable:
    """A stand-in for the latents that fails on any use: reading a value (``.item()``),
    copying to the host (``.cpu()``), even asking its shape. Only keeping it is allowed."""

    def __getattribute__(self, name: str) -> Any:
        raise AssertionError(f"the step callback used the latents ({name})")


@pytest.mark.parametrize("legacy", [False, True])
def test_the_step_callbacks_only_keep_a_reference(legacy: bool) -> None:
    slot = timing.TimerSlot()
    kwargs = timing.step_callback_kwargs(legacy, slot)
    latents = Untouchable()
    for capture in (False, True):
        slot.capture = capture
        if legacy:
            kwargs["callback"](0, 1, latents)  # type: ignore[operator]
        else:
            assert kwargs["callback_on_step_end"](None, 0, 1, {"latents": latents}) == {}  # type: ignore[operator]
        assert (slot.latents is latents) is capture


def test_a_callback_without_latents_keeps_what_it_had() -> None:
    slot = timing.TimerSlot()
    slot.capture = True
    on_step_end = timing.step_callback_kwargs(False, slot)["callback_on_step_end"]
    on_step_end(None, 0, 1, {})  # type: ignore[operator]
    assert slot.latents is None


_SYNCS = re.compile(r"\.(cpu|item|numpy|tolist|synchronize|to)\(|torch\.cuda|\bfloat\(|\bbool\(")


def test_the_capture_path_calls_nothing_that_syncs() -> None:
    """Structural: the step callbacks (inside the timed call) and the capture set-up in the
    cell's call loop name no host copy, value read or synchronize; the host copy happens in
    outputs.save_output, after CallFinished."""
    callbacks = inspect.getsource(timing.step_callback_kwargs)
    assert "slot.latents = " in callbacks
    assert not _SYNCS.search(callbacks), _SYNCS.search(callbacks)
    one_call = inspect.getsource(cell_mod.CellRun._one_call)
    timed = one_call[one_call.index("t_call = time.perf_counter()") : one_call.index("CallFinished(")]
    capture_lines = [ln for ln in timed.splitlines() if "capture" in ln or "latents" in ln]
    assert capture_lines and not any(_SYNCS.search(ln) for ln in capture_lines), capture_lines
    after = one_call[one_call.index("CallFinished(") :]
    assert "self._save_output(" in after  # saving (the host copy) comes after the call's event
    assert ".cpu()" not in one_call and ".item()" not in one_call


# --- a real pipeline --------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_kept_latents_are_the_pipelines_final_latents(tmp_path: Path) -> None:
    """A tiny SD 1.5 cell run in this process keeps exactly the latents the same call
    returns with ``output_type="latent"``, and the image it decodes."""
    from sdtop.pipelines.builders.build import build
    from sdtop.profiler.worker.apply import apply_settings

    spec = CellSpec(pipeline="sd-txt2img", steps=2, warmup=1, iterations=2, outputs=str(tmp_path / "outputs"))
    emitted: list[Any] = []
    threads = torch.get_num_threads()
    try:  # the worker sets this process's thread count (the same for the check); restored after
        assert cell_mod.CellRun(0, spec, emitted.append).run(launcher="test", startup_s=0.0) == "ok"
        [saved] = [e for e in emitted if isinstance(e, OutputSaved)]
        built = build(spec)
        apply_settings(built, spec)  # the same layout and attention: the same rounding
        stage = built.stages[0]
        generator = torch.Generator("cpu").manual_seed(spec.seed + saved.call)
        with torch.inference_mode():
            want = stage.pipe(**stage.kwargs, generator=generator, output_type="latent").images
    finally:
        torch.set_num_threads(threads)
    kinds = [e.KIND for e in emitted]
    assert kinds.index("output_saved") > max(i for i, k in enumerate(kinds) if k == "call_finished")
    assert saved.call == output_call(call_plan(spec)) == 2
    got = load_file(str(tmp_path / saved.latents))["latents"]
    assert saved.shape == list(want.shape) and saved.dtype == "float32"
    np.testing.assert_array_equal(got, want.float().numpy())
    assert _png(tmp_path / saved.images[0]).shape == (spec.height, spec.width, 3)
