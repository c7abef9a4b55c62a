"""The named pipelines sdtop can run: what each one is, independent of how it is built.

Stdlib only: the UI, the CLI's validation and the summaries read this registry, and none
of them may import torch or diffusers. The worker-only builders live in
:mod:`pipelines.builders.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WEIGHT_SOURCES = ("hub", "random", "tiny")

# The smallest side (pixels) of a latent SD-family stage's output: the real UNets halve the
# 1/8-size latent three times (64 px -> 8 -> 1); the tiny ones once (16 px -> 2 -> 1).
_SD_MIN_SIDE: dict[str, int] = {"hub": 64, "random": 64, "tiny": 16}


@dataclass(frozen=True)
class StageInfo:
    """One denoising stage of a pipeline.

    A cell's height/width is the size of the image the cell produces, for every pipeline
    (one size, one meaning: ``--height 1024`` is a 1024 px picture whether SD or IF makes
    it). ``divisor`` says what this stage makes of it: its output is the cell's size
    divided by ``divisor`` (IF stage I at 1/16, stage II at 1/4, the x4 upscaler at 1).
    ``min_side`` is the smallest output side, per weight source, that the stage's model
    allows (IF stage I: its 64 px sample size), which :func:`size_problem` enforces.
    """

    name: str
    pipeline_class: str
    checkpoint: str
    compiled: tuple[str, ...]
    legacy_callback: bool = False
    divisor: int = 1
    min_side: dict[str, int] = field(default_factory=lambda: dict(_SD_MIN_SIDE))
    # This stage's size relative to the first stage's (IF: 1, 4, 16): what a cell's size
    # was multiplied by before sizes meant the produced image (sessions recorded then have
    # stage I's size as an if-cascade cell's height/width). Kept for readers of those;
    # new code uses :func:`stage_size`.
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


_SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"
_SD_INPAINT = "stable-diffusion-v1-5/stable-diffusion-inpainting"

#: The seed's checkpoints that were removed from the hub -> their maintained copies (same
#: files). ``--model`` accepts the seed's ids and loads the copies (:func:`canonical_model`).
MODEL_ALIASES: dict[str, str] = {
    "runwayml/stable-diffusion-v1-5": _SD,
    "runwayml/stable-diffusion-inpainting": _SD_INPAINT,
}

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
            stages=(StageInfo("main", "StableDiffusionInpaintPipeline", _SD_INPAINT, ("unet",)),),
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
                # Stage I is a pixel-space UNet trained at 64x64 (its sample size); the tiny
                # one's sample size is 16. Stage II (x4) and the upscaler (x4) follow.
                StageInfo(
                    "I",
                    "IFPipeline",
                    "DeepFloyd/IF-I-M-v1.0",
                    ("unet",),
                    legacy_callback=True,
                    divisor=16,
                    min_side={"hub": 64, "random": 64, "tiny": 16},
                ),
                StageInfo(
                    "II",
                    "IFSuperResolutionPipeline",
                    "DeepFloyd/IF-II-M-v1.0",
                    ("unet",),
                    legacy_callback=True,
                    divisor=4,
                    min_side={"hub": 256, "random": 256, "tiny": 64},
                    scale=4,
                ),
                StageInfo(
                    "upscaler",
                    "StableDiffusionUpscalePipeline",
                    "stabilityai/stable-diffusion-x4-upscaler",
                    ("unet",),
                    legacy_callback=True,
                    min_side={"hub": 1024, "random": 1024, "tiny": 256},
                    scale=16,
                ),
            ),
            # The image the cascade produces: stage I at 64 (16 tiny) x 4 x 4.
            native_size={"hub": (1024, 1024), "random": (1024, 1024), "tiny": (256, 256)},
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


def canonical_model(model: str) -> str:
    """The hub id to load for ``model``: a removed seed id becomes its maintained copy.

    Hub ids are matched without regard to case, as the hub resolves them; anything else
    (another id, a local directory) is returned unchanged.
    """
    lowered = {k.lower(): v for k, v in MODEL_ALIASES.items()}
    return lowered.get(model.lower(), model)


def stage_size(stage: StageInfo, height: int, width: int) -> tuple[int, int]:
    """(height, width) of ``stage``'s output in a cell that produces ``height`` x ``width``."""
    return height // stage.divisor, width // stage.divisor


def size_problem(pipeline: str, weights: str, option: str, height: int, width: int) -> str | None:
    """Why a cell of ``pipeline`` on ``weights`` cannot produce ``height`` x ``width``, as the
    one line the CLI shows (``option`` names what the user typed), or None when it can.

    Refused before anything runs, rather than left to the model: a stage too small for
    its UNet fails deep in a worker (or, worse, runs on garbage-sized inputs and is timed).
    Each stage's side must be a whole multiple of 8 pixels and at least its model's minimum.
    """
    spec = get(pipeline)
    step = 8 * max(s.divisor for s in spec.stages)
    smallest = max(s.min_side.get(weights, 8) * s.divisor for s in spec.stages)
    smallest = -(-smallest // step) * step
    for side in (height, width):
        if side % step:
            return (
                f"{option} {side} for {pipeline}: the size is the image it produces and every stage's "
                f"size must be a multiple of 8, so use a multiple of {step} (smallest valid: {smallest})"
            )
        for stage in spec.stages:
            own = side // stage.divisor
            low = stage.min_side.get(weights, 8)
            if own < low:
                where = "" if stage.name == "main" else f" stage {stage.name} at {own} px,"
                return (
                    f"{option} {side} is too small for {pipeline} ({weights} weights):{where} "
                    f"below the {low} px its model allows; the smallest valid {option} for {pipeline} is {smallest}"
                )
    return None
