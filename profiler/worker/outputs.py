"""Keep a cell's output (final latents, decoded images) so the parent can say how far a
faster cell is from its baseline (worker process only: torch, numpy, Pillow, safetensors).

Why a separate step after the call: the output is taken from the cell's last measured
call, and that call's figures must not change because of it. The step callback only keeps
a reference to the latents (:class:`~.timing.TimerSlot`): no copy to the host, no value
read, so no device sync inside the timed call. Everything here (the copy to the host, the
conversion to 8-bit RGB, the PNG and safetensors writes) runs after the call's
``CallFinished`` event, when its figures are already out.

What is written, under the cell's outputs folder (``<session>/outputs``, resolved by the
runner): ``cell-<k>/latents.safetensors`` (float32, tensor ``latents``, the whole batch)
and ``cell-<k>/image.png`` (the first image of the batch) or, for a video pipeline,
``frame-first.png``, ``frame-middle.png`` and ``frame-last.png`` of the first video. The
:class:`OutputSaved` event names them relative to the session directory, so a session
folder moved elsewhere still finds its files.

Images are made 8-bit deterministically, the way diffusers' own ``numpy_to_pil`` does
(``round(x * 255)`` after clamping to [0, 1]), so the PNG of a "pt" or "np" output is the
image the same call would have given as PIL. The range of a tensor output depends on the
pipeline: diffusers' image processors (SD, SDXL, ControlNet, the x4 upscaler, the DiT and
video pipelines) give [0, 1]; DeepFloyd IF's stages with ``output_type="pt"`` give the
model's raw [-1, 1] (their "pil" path does ``image / 2 + 0.5`` itself): see
:data:`SIGNED_PT_PIPELINES`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..contract.events import OutputSaved

#: ``CellSpec.outputs`` values that are not a folder: "off" keeps nothing; "session" is a
#: worker started without a runner (nobody resolved the session's folder): nothing either.
OUTPUTS_OFF, OUTPUTS_SESSION = "off", "session"

#: Pipeline classes whose ``output_type="pt"`` images are in [-1, 1] (no denormalisation:
#: DeepFloyd IF returns its model's output as is). Every other pipeline's "pt" and "np"
#: images are in [0, 1] (diffusers' VaeImageProcessor/VideoProcessor denormalise them).
SIGNED_PT_PIPELINES = frozenset(
    {
        "IFPipeline",
        "IFSuperResolutionPipeline",
        "IFImg2ImgPipeline",
        "IFImg2ImgSuperResolutionPipeline",
        "IFInpaintingPipeline",
        "IFInpaintingSuperResolutionPipeline",
    }
)

LATENTS_FILE = "latents.safetensors"
IMAGE_FILE = "image.png"
FRAME_FILES = ("frame-first.png", "frame-middle.png", "frame-last.png")


def outputs_folder(setting: str) -> Path | None:
    """The folder a cell's output goes under, or None where nothing is kept."""
    if setting in (OUTPUTS_OFF, OUTPUTS_SESSION, ""):
        return None
    return Path(setting)


def signed_range(pipe: Any, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``pipe`` called with ``kwargs`` returns images in [-1, 1] (else [0, 1])."""
    return kwargs.get("output_type") == "pt" and type(pipe).__name__ in SIGNED_PT_PIPELINES


def to_rgb8(image: Any, *, signed: bool = False) -> np.ndarray:
    """One image as an (H, W, 3) uint8 array.

    A PIL image is converted to RGB; a torch tensor is (C, H, W); a numpy array is
    (H, W, C) or (H, W). Floats are in [0, 1], or [-1, 1] where ``signed``; NaN becomes 0
    and values outside the range are clamped, so a broken output still gives a PNG (that
    differs from the baseline, which is the point). One channel is repeated, alpha dropped.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        t = image.detach().to("cpu")  # to the host first: no float32 copy on the device
        arr = t.float().numpy()
        if arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)
    else:
        arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"an image has 2 or 3 dimensions, got shape {list(arr.shape)}")
    if arr.dtype != np.uint8:
        x = arr.astype(np.float32)
        if signed:
            x = x / 2.0 + 0.5
        x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        arr = (x * 255.0).round().astype(np.uint8)
    channels = arr.shape[2]
    if channels == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 4:
        arr = arr[:, :, :3]
    elif channels != 3:
        raise ValueError(f"an image has 1, 3 or 4 channels, got shape {list(arr.shape)}")
    return np.ascontiguousarray(arr)


def _first(batch: Any) -> Any:
    """The first item of a batch (a list, or an array/tensor's first row)."""
    if isinstance(batch, list | tuple):
        if not batch:
            raise ValueError("the pipeline returned no images")
        return batch[0]
    return batch[0]


def decoded_images(output: Any, *, video: bool, signed: bool = False) -> list[tuple[str, np.ndarray]]:
    """(file name, RGB8 array) of what is kept of a call's decoded output.

    ``output`` is ``out.images`` (a list of PIL images, an (B, H, W, C) array or a
    (B, C, H, W) tensor), or ``out.frames`` where ``video`` (a list of lists of PIL
    images, a (B, F, H, W, C) array or a (B, F, C, H, W) tensor): the first image of the
    batch, or the first, middle (index F // 2) and last frame of the first video.
    """
    if not video:
        if isinstance(output, np.ndarray | torch.Tensor) and output.ndim == 3:
            return [(IMAGE_FILE, to_rgb8(output, signed=signed))]  # one image, not a batch
        return [(IMAGE_FILE, to_rgb8(_first(output), signed=signed))]
    frames = _first(output)
    n = len(frames)
    if n == 0:
        raise ValueError("the pipeline returned a video without frames")
    picks = (0, n // 2, n - 1)
    return [(name, to_rgb8(frames[i], signed=signed)) for name, i in zip(FRAME_FILES, picks, strict=True)]


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file, so a worker killed mid-write never leaves a half
    file under a name the parent may already have been told about (a rerun cell)."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_png(image: Image.Image, path: Path) -> None:
    # compress_level 1: lossless like the default (6), ~40% faster on a 1024x1024 image, ~10% larger.
    image.save(path, format="PNG", compress_level=1)


def save_output(
    folder: Path,
    *,
    cell: int,
    call: int,
    stage: str,
    latents: torch.Tensor | None,
    output: Any,
    video: bool,
    signed: bool = False,
) -> OutputSaved:
    """Write one call's output under ``folder/cell-<cell>`` and say so.

    Raises whatever the conversion or the disk raises: the caller turns that into a
    warning (a lost output is never a failed cell)."""
    from safetensors.numpy import save_file

    here = folder / f"cell-{cell}"
    here.mkdir(parents=True, exist_ok=True)
    rel = PurePosixPath(folder.name, f"cell-{cell}")  # relative to the session (folder's parent)
    latents_rel, shape, dtype = "", [], ""
    if latents is not None:
        shape, dtype = list(latents.shape), str(latents.dtype).removeprefix("torch.")
        array = latents.detach().to("cpu").float().contiguous().numpy()
        _replace_atomically(here / LATENTS_FILE, lambda p: save_file({"latents": array}, str(p)))
        latents_rel = str(rel / LATENTS_FILE)
    images: list[str] = []
    for name, rgb in decoded_images(output, video=video, signed=signed):
        _replace_atomically(here / name, functools.partial(_write_png, Image.fromarray(rgb)))
        images.append(str(rel / name))
    return OutputSaved(cell=cell, call=call, stage=stage, latents=latents_rel, images=images, shape=shape, dtype=dtype)
