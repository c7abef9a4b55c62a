"""The named pipelines sdtop can run: what each one is, independent of how it is built.

Stdlib only: the UI, the CLI's validation and the summaries read this registry, and none
of them may import torch or diffusers. The worker-only builders live in
:mod:`pipelines.builders.build`.
"""

from __future__ import annotations

from dataclasses import dataclass

WEIGHT_SOURCES = ("hub", "random", "tiny")


@dataclass(frozen=True)
class StageInfo:
    """One denoising stage of a pipeline.

    ``scale`` is this stage's output size relative to the cell's height/width (IF stage II
    and the x4 upscaler grow the image); ``follows_batch`` is False where the seed ran the
    stage at batch 1 only.
    """

    name: str
    pipeline_class: str
    checkpoint: str
    compiled: tuple[str, ...]
    legacy_callback: bool = False
    scale: int = 1


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    title: str
    inputs: str
    stages: tuple[StageInfo, ...]
    # (height, width) the model was trained for, per weight source; tiny runs on a CPU.
    native_size: dict[str, tuple[int, int]]
    extra_checkpoints: tuple[str, ...] = ()
    # The seed published no compiled figures for SDXL ("-"); sdtop can still compile it.
    seed_note: str = ""

    @property
    def checkpoint(self) -> str:
        return self.stages[0].checkpoint


_SD = "runwayml/stable-diffusion-v1-5"

PIPELINES: dict[str, PipelineSpec] = {
    p.name: p
    for p in (
        PipelineSpec(
            name="sd-txt2img",
            title="Stable Diffusion 1.5 text-to-image",
            inputs="prompt",
            stages=(StageInfo("main", "StableDiffusionPipeline", _SD, ("unet",)),),
            native_size={"hub": (512, 512), "random": (512, 512), "tiny": (64, 64)},
        ),
        PipelineSpec(
            name="sd-img2img",
            title="Stable Diffusion 1.5 image-to-image",
            inputs="prompt + init image (made locally)",
            stages=(StageInfo("main", "StableDiffusionImg2ImgPipeline", _SD, ("unet",)),),
            native_size={"hub": (512, 512), "random": (512, 512), "tiny": (64, 64)},
        ),
        PipelineSpec(
            name="sd-inpaint",
            title="Stable Diffusion inpainting",
            inputs="prompt + image + mask (made locally)",
            stages=(
                StageInfo("main", "StableDiffusionInpaintPipeline", "runwayml/stable-diffusion-inpainting", ("unet",)),
            ),
            native_size={"hub": (512, 512), "random": (512, 512), "tiny": (64, 64)},
        ),
        PipelineSpec(
            name="sd-controlnet",
            title="Stable Diffusion 1.5 + ControlNet (canny)",
            inputs="prompt + canny-style control image (made locally)",
            stages=(StageInfo("main", "StableDiffusionControlNetPipeline", _SD, ("unet", "controlnet")),),
            native_size={"hub": (512, 512), "random": (512, 512), "tiny": (64, 64)},
            extra_checkpoints=("lllyasviel/sd-controlnet-canny",),
        ),
        PipelineSpec(
            name="if-cascade",
            title="DeepFloyd IF stage I, stage II, x4 upscaler",
            inputs="random prompt embeddings (I, II); prompt + noise_level=100 (upscaler)",
            stages=(
                StageInfo("I", "IFPipeline", "DeepFloyd/IF-I-M-v1.0", ("unet",), legacy_callback=True),
                StageInfo(
                    "II",
                    "IFSuperResolutionPipeline",
                    "DeepFloyd/IF-II-M-v1.0",
                    ("unet",),
                    legacy_callback=True,
                    scale=4,
                ),
                StageInfo(
                    "upscaler",
                    "StableDiffusionUpscalePipeline",
                    "stabilityai/stable-diffusion-x4-upscaler",
                    ("unet",),
                    legacy_callback=True,
                    scale=16,
                ),
            ),
            native_size={"hub": (64, 64), "random": (64, 64), "tiny": (16, 16)},
            seed_note="batch size above 1 runs stage I only, as the seed did",
        ),
        PipelineSpec(
            name="sdxl-txt2img",
            title="Stable Diffusion XL base text-to-image",
            inputs="prompt",
            stages=(
                StageInfo(
                    "main",
                    "StableDiffusionXLPipeline",
                    "stabilityai/stable-diffusion-xl-base-1.0",
                    ("unet",),
                ),
            ),
            native_size={"hub": (1024, 1024), "random": (1024, 1024), "tiny": (64, 64)},
            seed_note="published without compile",
        ),
    )
}

PIPELINE_NAMES: tuple[str, ...] = tuple(PIPELINES)


def get(name: str) -> PipelineSpec:
    try:
        return PIPELINES[name]
    except KeyError:
        raise KeyError(f"unknown pipeline {name!r}; valid: {', '.join(PIPELINE_NAMES)}") from None


def stages_for(name: str, batch_size: int) -> tuple[StageInfo, ...]:
    """The stages a cell runs: if-cascade above batch 1 runs stage I only (the seed's rule)."""
    spec = get(name)
    if name == "if-cascade" and batch_size > 1:
        return spec.stages[:1]
    return spec.stages


def module_key(stage: str, attr: str) -> str:
    """The name of a pipeline's module in events (``module`` of compile events, keys of
    ``SettingsApplied``): "unet" for the main stage, "I.unet" in a cascade's stage I."""
    return attr if stage == "main" else f"{stage}.{attr}"
