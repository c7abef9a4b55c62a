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
    # Every side of this stage's output must be a multiple of this (the VAE's factor times
    # the transformer's patch size: 16 for the DiTs; 8 for the UNets).
    multiple: int = 8


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
    # "unet" (attention processors, the seed's levers) or "transformer" (a DiT: diffusers'
    # attention dispatcher, regional compile, step caches).
    family: str = "unet"
    # Video pipelines: frames per output video by weight source (empty: an image pipeline)
    # and the rule on their count (Wan: 4k+1 frames).
    native_frames: dict[str, int] = field(default_factory=dict)
    frame_step: int = 1
    # Other published checkpoints of the same pipeline class (``--model`` values) -> the
    # prefix of their configs in ``configs/random``, so ``--weights random --model ID``
    # builds that variant's architecture (FLUX.1-schnell, SD3.5 Medium, Wan 14B).
    variants: dict[str, str] = field(default_factory=dict)

    @property
    def checkpoint(self) -> str:
        return self.stages[0].checkpoint

    @property
    def video(self) -> bool:
        return bool(self.native_frames)


_SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# DiT sides: the VAE's 8x times the transformer's 2x2 patches.
_DIT_MIN_SIDE: dict[str, int] = {"hub": 256, "random": 256, "tiny": 16}
_SD35_LARGE = "stabilityai/stable-diffusion-3.5-large"
_SD35_MEDIUM = "stabilityai/stable-diffusion-3.5-medium"
_FLUX_DEV = "black-forest-labs/FLUX.1-dev"
_FLUX_SCHNELL = "black-forest-labs/FLUX.1-schnell"
_QWEN_IMAGE = "Qwen/Qwen-Image"
_WAN_1_3B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
_WAN_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
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
        PipelineSpec(
            name="sd3-txt2img",
            title="Stable Diffusion 3.5 (Large; Medium via --model) text-to-image",
            inputs="prompt",
            stages=(
                StageInfo(
                    "main",
                    "StableDiffusion3Pipeline",
                    _SD35_LARGE,
                    ("transformer",),
                    multiple=16,
                    min_side=dict(_DIT_MIN_SIDE),
                ),
            ),
            native_size={"hub": (1024, 1024), "random": (1024, 1024), "tiny": (32, 32)},
            family="transformer",
            variants={_SD35_LARGE: "sd35-large", _SD35_MEDIUM: "sd35-medium"},
        ),
        PipelineSpec(
            name="flux-txt2img",
            title="FLUX.1 (dev; schnell via --model) text-to-image",
            inputs="prompt",
            stages=(
                StageInfo(
                    "main",
                    "FluxPipeline",
                    _FLUX_DEV,
                    ("transformer",),
                    multiple=16,
                    min_side=dict(_DIT_MIN_SIDE),
                ),
            ),
            native_size={"hub": (1024, 1024), "random": (1024, 1024), "tiny": (32, 32)},
            family="transformer",
            variants={_FLUX_DEV: "flux-dev", _FLUX_SCHNELL: "flux-schnell"},
        ),
        PipelineSpec(
            name="qwen-image",
            title="Qwen-Image text-to-image",
            inputs="prompt",
            stages=(
                StageInfo(
                    "main",
                    "QwenImagePipeline",
                    _QWEN_IMAGE,
                    ("transformer",),
                    multiple=16,
                    min_side=dict(_DIT_MIN_SIDE),
                ),
            ),
            native_size={"hub": (1024, 1024), "random": (1024, 1024), "tiny": (32, 32)},
            family="transformer",
            variants={_QWEN_IMAGE: "qwen-image"},
        ),
        PipelineSpec(
            name="wan-t2v",
            title="Wan 2.1 text-to-video (1.3B; 14B via --model)",
            inputs="prompt",
            stages=(
                StageInfo(
                    "main",
                    "WanPipeline",
                    _WAN_1_3B,
                    ("transformer",),
                    multiple=16,
                    min_side=dict(_DIT_MIN_SIDE),
                ),
            ),
            native_size={"hub": (480, 832), "random": (480, 832), "tiny": (32, 32)},
            family="transformer",
            native_frames={"hub": 81, "random": 81, "tiny": 5},
            frame_step=4,
            variants={_WAN_1_3B: "wan-1.3b", _WAN_14B: "wan-14b"},
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
    step = max(s.multiple * s.divisor for s in spec.stages)
    smallest = max(s.min_side.get(weights, 8) * s.divisor for s in spec.stages)
    smallest = -(-smallest // step) * step
    for side in (height, width):
        if side % step:
            return (
                f"{option} {side} for {pipeline}: the size is the image it produces and every stage's "
                f"size must be a multiple of {spec.stages[0].multiple}, so use a multiple of {step} "
                f"(smallest valid: {smallest})"
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


def frames_problem(pipeline: str, option: str, frames: int) -> str | None:
    """Why ``pipeline`` cannot make videos of ``frames`` frames (one line), or None."""
    spec = get(pipeline)
    if not spec.video:
        return None
    step = spec.frame_step
    if frames < 1 or (frames - 1) % step:
        return (
            f"{option} {frames} for {pipeline}: it makes {step}k+1 frames "
            f"(e.g. {', '.join(str(step * k + 1) for k in (1, 4, 20))})"
        )
    return None


def variant_prefix(pipeline: str, model: str) -> str | None:
    """The ``configs/random`` prefix of a published ``model`` of ``pipeline`` (its id matched
    without regard to case), or None for a model the registry does not know."""
    lowered = {k.lower(): v for k, v in get(pipeline).variants.items()}
    return lowered.get(model.lower())
