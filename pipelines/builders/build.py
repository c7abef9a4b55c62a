"""Build the diffusers pipelines of a cell: hub checkpoints, random real-size weights, or tiny.

Worker only: this module imports torch, diffusers and transformers at import time, and
only the worker process may import it (the UI and the CLI read :mod:`pipelines.registry`).

Three weight sources, one result (:class:`BuiltPipeline`):

- ``hub``: ``from_pretrained`` of the registry checkpoint (or ``--model``). Any failure to
  obtain weights becomes :class:`WeightsUnavailable`, whose one-line message points at
  ``--weights random``: a benchmark of the same architecture needs no download.
- ``random``: the published architectures (``configs/random/*.json``) with random weights.
  Modules are created on the meta device and each parameter is then allocated directly on
  the target device in the target dtype and filled with cheap, scaled noise, so even the
  SDXL UNet is ready in seconds on a GPU and never exists twice in memory. Shapes, FLOPs and
  memory match the real models; the images are noise, which a benchmark does not look at.
- ``tiny``: small configs of the same classes (``configs/tiny``), for tests and CPU runs.

The worker applies attention processors, ``torch.compile`` and channels_last itself (to the
modules named in :attr:`StageRun.compiled`); nothing here does.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from accelerate import init_empty_weights

from .. import hub, registry
from ..settings import CellSpec
from . import inputs
from .tokenizers import EOS_TOKEN, OPENCLIP_PAD_TOKEN, clip_tokenizer, qwen2_tokenizer, t5_tokenizer, umt5_tokenizer

# SDXL and the x4 upscaler upcast their VAE to fp32 for the decode in fp16 (force_upcast),
# through a method diffusers 0.42 has deprecated: each call warns although nobody can act on
# it. The decode still upcasts, as with the real checkpoints; only the message is dropped.
warnings.filterwarnings("ignore", message=r".*`upcast_vae` is deprecated", category=FutureWarning)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# The components of each stage, as config stems "<model>.<component>": the component name is
# the pipeline's __init__ argument. Schedulers have no size: tiny uses the real ones.
#
# Where configs/random comes from (the diffusers/transformers config.json of the checkpoint):
#   sd15.*, clip-l.*          runwayml/stable-diffusion-v1-5 (unet, vae, text_encoder, scheduler),
#                             now stable-diffusion-v1-5/stable-diffusion-v1-5 (the same files)
#   sd15-inpaint.unet         runwayml/stable-diffusion-inpainting (SD 1.5 with in_channels 9),
#                             now stable-diffusion-v1-5/stable-diffusion-inpainting
#   sd15-canny.controlnet     lllyasviel/sd-controlnet-canny
#   sdxl.*, clip-bigg.*       stabilityai/stable-diffusion-xl-base-1.0 (text_encoder is CLIP-L)
#   x4-upscaler.*, openclip-h stabilityai/stable-diffusion-x4-upscaler
#   if-i-m.*, if-ii-m.*       DeepFloyd/IF-I-M-v1.0, IF-II-M-v1.0: RECONSTRUCTED. Their configs
#       were not at hand; they are the published IF-I-XL / IF-II-L configs with the base width
#       scaled to 192 and 96: of the widths the layout allows (64-wide heads, 32 groups), the
#       ones nearest the model cards' 400M / 500M parameters (371.6 M and 482.5 M).
#       Schedulers follow diffusers' scripts/convert_if.py.
#   sd35-large.*, sd35.vae    stabilityai/stable-diffusion-3.5-large (transformer, vae, scheduler; the
#                             release commit 4c4df3f, read from a byte-identical mirror)
#   sd35-medium.*             stabilityai/stable-diffusion-3.5-medium (transformer with dual attention
#                             in layers 0-12, scheduler); its vae is the same as Large's
#   clip-l-proj.text_encoder  SD3.5's text_encoder: CLIP-L as CLIPTextModelWithProjection
#   clip-bigg.text_encoder_2  SD3.5's text_encoder_2 is the same CLIP-G config as SDXL's
#   t5-xxl.text_encoder_3/_2  SD3.5's text_encoder_3 = FLUX.1's text_encoder_2 (google/t5-v1_1-xxl
#                             encoder, T5EncoderModel); one config under each component name
#   flux-dev.*, flux.vae      black-forest-labs/FLUX.1-dev (transformer with guidance_embeds, vae,
#                             scheduler with dynamic shifting); text_encoder is clip-l (CLIPTextModel)
#   flux-schnell.*            black-forest-labs/FLUX.1-schnell (no guidance embedder; scheduler
#                             shift 1.0 without dynamic shifting); the same vae and text encoders
#   qwen-image.*              Qwen/Qwen-Image (transformer, AutoencoderKLQwenImage, scheduler)
#   qwen25-vl-7b.text_encoder Qwen-Image's text_encoder = Qwen/Qwen2.5-VL-7B-Instruct's config.json
#                             (Qwen2_5_VLForConditionalGeneration, vision tower included)
#   wan-1.3b.*, wan-14b.*     Wan-AI/Wan2.1-T2V-1.3B-Diffusers / -14B-Diffusers transformers, as
#                             diffusers' scripts/convert_wan_to_diffusers.py writes them
#   wan.vae, umt5-xxl.*       the same two repos' AutoencoderKLWan and UMT5EncoderModel (google/umt5-xxl)
#   wan.scheduler             the repos' UniPCMultistepScheduler (flow_prediction, flow sigmas,
#                             flow_shift 3.0), as their model_index.json names it since the update
# Variants: a stage lists every published variant's stems; the prefix of the cell's variant
# (registry.variant_prefix; the registry checkpoint's by default) picks among the stems whose
# prefix is a variant prefix, and the other stems are shared (:func:`_stage_stems`).
# The parameter counts are asserted in tests/test_pipelines_params.py.
_STAGE_PARTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sd-txt2img", "main"): ("sd15.unet", "sd15.vae", "clip-l.text_encoder", "sd15.scheduler"),
    ("sd-img2img", "main"): ("sd15.unet", "sd15.vae", "clip-l.text_encoder", "sd15.scheduler"),
    ("sd-inpaint", "main"): ("sd15-inpaint.unet", "sd15.vae", "clip-l.text_encoder", "sd15.scheduler"),
    ("sd-controlnet", "main"): (
        "sd15.unet",
        "sd15-canny.controlnet",
        "sd15.vae",
        "clip-l.text_encoder",
        "sd15.scheduler",
    ),
    ("if-cascade", "I"): ("if-i-m.unet", "if-i-m.scheduler"),
    ("if-cascade", "II"): ("if-ii-m.unet", "if-ii-m.scheduler", "if-ii-m.image_noising_scheduler"),
    ("if-cascade", "upscaler"): (
        "x4-upscaler.unet",
        "x4-upscaler.vae",
        "openclip-h.text_encoder",
        "x4-upscaler.scheduler",
        "x4-upscaler.low_res_scheduler",
    ),
    ("sdxl-txt2img", "main"): (
        "sdxl.unet",
        "sdxl.vae",
        "clip-l.text_encoder",
        "clip-bigg.text_encoder_2",
        "sdxl.scheduler",
    ),
    ("sd3-txt2img", "main"): (
        "sd35-large.transformer",
        "sd35-medium.transformer",
        "sd35.vae",
        "clip-l-proj.text_encoder",
        "clip-bigg.text_encoder_2",
        "t5-xxl.text_encoder_3",
        "sd35-large.scheduler",
        "sd35-medium.scheduler",
    ),
    ("flux-txt2img", "main"): (
        "flux-dev.transformer",
        "flux-schnell.transformer",
        "flux.vae",
        "clip-l.text_encoder",
        "t5-xxl.text_encoder_2",
        "flux-dev.scheduler",
        "flux-schnell.scheduler",
    ),
    ("qwen-image", "main"): (
        "qwen-image.transformer",
        "qwen-image.vae",
        "qwen25-vl-7b.text_encoder",
        "qwen-image.scheduler",
    ),
    ("wan-t2v", "main"): (
        "wan-1.3b.transformer",
        "wan-14b.transformer",
        "wan.vae",
        "umt5-xxl.text_encoder",
        "wan.scheduler",
    ),
}

# The tokenizer of each text encoder (by config prefix), built in memory: the CLIP ones differ
# only in their real tokenizer's pad token; the T5 and Qwen2 layouts are in .tokenizers.
_TOKENIZERS: dict[str, Callable[[], Any]] = {
    "clip-l": lambda: clip_tokenizer(pad_token=EOS_TOKEN),
    "clip-l-proj": lambda: clip_tokenizer(pad_token=EOS_TOKEN),
    "clip-bigg": lambda: clip_tokenizer(pad_token=OPENCLIP_PAD_TOKEN),
    "openclip-h": lambda: clip_tokenizer(pad_token=OPENCLIP_PAD_TOKEN),
    "t5-xxl": t5_tokenizer,
    "umt5-xxl": umt5_tokenizer,
    "qwen25-vl-7b": qwen2_tokenizer,
}

# transformers model classes the configs name -> their config classes.
_TRANSFORMERS_CONFIGS: dict[str, type[transformers.PretrainedConfig]] = {
    "CLIPTextModel": transformers.CLIPTextConfig,
    "CLIPTextModelWithProjection": transformers.CLIPTextConfig,
    "T5EncoderModel": transformers.T5Config,
    "UMT5EncoderModel": transformers.UMT5Config,
    "Qwen2_5_VLForConditionalGeneration": transformers.Qwen2_5_VLConfig,
}
# Pipeline attributes whose parameters are counted (and reported), in this order.
_MODEL_ATTRS = ("unet", "transformer", "controlnet", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")

# IF: the seed fed stages I and II random T5 embeddings of 2 tokens instead of a prompt.
IF_EMBED_TOKENS = 2
IF_UPSCALER_NOISE_LEVEL = 100
X4_MAX_NOISE_LEVEL = 350

# The DiTs' call settings, as their model cards run them. SD3.5: Large 3.5, Medium 4.5 (told
# apart by Medium's dual-attention layers). FLUX.1-dev: distilled guidance 3.5, 512 T5 tokens;
# schnell (no guidance embedder): guidance 0 and the 256 T5 tokens it was trained with.
# Qwen-Image: true CFG 4.0 with the card's blank negative prompt. Wan 2.1: guidance 5.0 and a
# negative prompt (its text is padded to 512 tokens, so the words do not change the work).
SD35_LARGE_GUIDANCE = 3.5
SD35_MEDIUM_GUIDANCE = 4.5
FLUX_DEV_GUIDANCE = 3.5
FLUX_SCHNELL_GUIDANCE = 0.0
FLUX_SCHNELL_MAX_SEQUENCE = 256
QWEN_TRUE_CFG = 4.0
QWEN_NEGATIVE_PROMPT = " "
WAN_GUIDANCE = 5.0
WAN_NEGATIVE_PROMPT = "blurry, low quality, static, distorted, deformed, ugly"
# Tiny weights: T5 prompts of 16 tokens instead of 256-512, so a CPU call stays well under
# a second; the pipelines pad or truncate to this length.
TINY_MAX_SEQUENCE = 16


class WeightsUnavailable(RuntimeError):
    """The hub (or a local directory) could not provide the weights of a cell.

    ``str(exc)`` is one line that names the checkpoint, says why, and suggests
    ``--weights random``, which measures the same architecture without any download.
    """


def torch_dtype(name: str) -> torch.dtype:
    """``"fp16" | "bf16" | "fp32"`` -> the torch dtype."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(_DTYPES)}") from None


@dataclass
class StageRun:
    """One denoising stage, ready to call: ``pipe(**kwargs, **chain(prev_images))``.

    ``kwargs`` holds neither the generator nor callbacks: the worker adds its own per call.
    ``steps`` is how many loop iterations the stage really runs, i.e. how many step
    callbacks fire; PNDM (the SD 1.5 scheduler) runs one more than ``num_inference_steps``.
    ``height``/``width``/``batch_size`` describe this stage's output images.
    """

    name: str
    pipe: Any
    kwargs: dict[str, Any]
    chain: Callable[[Any], dict[str, Any]] | None
    compiled: tuple[str, ...]
    legacy_callback: bool
    steps: int
    batch_size: int
    height: int
    width: int


@dataclass
class BuiltPipeline:
    """Everything the worker runs for one cell, plus the parameter count of each model."""

    spec: CellSpec
    stages: list[StageRun]
    parameters: dict[str, int]


# --- configs and modules ------------------------------------------------------------------


@cache
def _config_text(weights: str, stem: str) -> str:
    path = CONFIG_DIR / weights / f"{stem}.json"
    if not path.exists() and stem.rsplit(".", 1)[1].endswith("scheduler"):
        path = CONFIG_DIR / "random" / f"{stem}.json"
    return path.read_text()


def load_config(weights: str, stem: str) -> dict[str, Any]:
    """The config dict of one component (a fresh copy: callers may change it)."""
    source = "random" if weights == "hub" else weights
    result: dict[str, Any] = json.loads(_config_text(source, stem))
    return result


def _component_name(stem: str) -> str:
    return stem.rsplit(".", 1)[1]


def _config_prefix(stem: str) -> str:
    return stem.rsplit(".", 1)[0]


def _variant(pipeline: str, model: str | None) -> str | None:
    """The configs prefix of the variant a cell builds: ``model``'s, else the checkpoint's
    (None for a pipeline without variants). An unknown ``model`` is a ValueError: random and
    tiny weights can only build a published architecture."""
    info = registry.get(pipeline)
    if not info.variants:
        return None
    if not model:
        return info.variants.get(info.checkpoint)
    prefix = registry.variant_prefix(pipeline, model)
    if prefix is None:
        raise ValueError(f"{model!r} is not a variant of {pipeline}; valid: {', '.join(info.variants)}")
    return prefix


def _stage_stems(pipeline: str, stage: str, model: str | None = None) -> tuple[str, ...]:
    """The stems one stage builds: the variant's own (transformer, scheduler) and the shared ones."""
    chosen = _variant(pipeline, model)
    others = set(registry.get(pipeline).variants.values()) - {chosen}
    return tuple(stem for stem in _STAGE_PARTS[(pipeline, stage)] if _config_prefix(stem) not in others)


def _is_model(cfg: dict[str, Any]) -> bool:
    return not str(cfg["_class_name"]).endswith("Scheduler")


def _empty_model(cfg: dict[str, Any]) -> torch.nn.Module:
    """The module on the meta device: no memory, no init cost, real shapes.

    ``include_buffers=False`` keeps buffers (e.g. CLIP's ``position_ids``) real, so only
    parameters need materialising.
    """
    cls_name = cfg["_class_name"]
    with init_empty_weights(include_buffers=False):
        if cls_name in _TRANSFORMERS_CONFIGS:
            config = _TRANSFORMERS_CONFIGS[cls_name](**{k: v for k, v in cfg.items() if not k.startswith("_")})
            model: torch.nn.Module = getattr(transformers, cls_name)(config)
        else:
            model = getattr(diffusers, cls_name).from_config(cfg)
    if isinstance(model, transformers.PreTrainedModel):
        # init_empty_weights re-registers every parameter it sees, which unties the weights
        # transformers tied in __init__ (T5's encoder.embed_tokens and shared): tie them again.
        model.tie_weights()
    return model


def _fp32_names(model: torch.nn.Module, dtype: torch.dtype) -> frozenset[str]:
    """The module names a checkpoint load in ``dtype`` keeps in fp32, as from_pretrained does.

    diffusers keeps ``_keep_in_fp32_modules`` in fp32 whenever the dtype is not fp32 (Wan's
    norms, time embedder and RoPE tables); transformers does so for fp16 only (T5's ``wo``),
    and for ``_keep_in_fp32_modules_strict`` in fp16 and bf16. Random weights follow suit so
    their dtypes, memory and kernels are the real ones.
    """
    if dtype == torch.float32:
        return frozenset()
    if isinstance(model, transformers.PreTrainedModel):
        names = set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
        if dtype == torch.float16:
            names |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
        return frozenset(names)
    return frozenset(getattr(model, "_keep_in_fp32_modules", None) or ())


def _fill(t: torch.Tensor, name: str, generator: torch.Generator) -> None:
    """Cheap random init that keeps activations finite and of order one.

    Matrices and convolutions: normal with std 1/sqrt(fan_in); 1-D weights (norm scales):
    ones; biases: zeros. Nothing is left uninitialised: NaN/denormal garbage in fresh memory
    would make CPU kernels crawl and fp16 overflow.
    """
    if t.dim() >= 2:
        fan_in = t[0].numel()
        t.normal_(0.0, fan_in**-0.5, generator=generator)
    elif name.endswith("bias"):
        t.zero_()
    else:
        t.fill_(1.0)


def _materialise(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Allocate every meta parameter on ``device`` in ``dtype`` and fill it (in place).

    Modules a real load keeps in fp32 (:func:`_fp32_names`) get fp32 parameters and buffers.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    keep = _fp32_names(model, dtype)
    done: dict[int, torch.nn.Parameter] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        path = module_name.split(".") if module_name else []

        def own(name: str, path: list[str] = path) -> torch.dtype:
            # from_pretrained's rule: a kept name anywhere in the dotted parameter name
            return torch.float32 if any(part in keep for part in (*path, name)) else dtype

        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in done:
                t = torch.empty(param.shape, device=device, dtype=own(name))
                _fill(t, name, generator)
                done[id(param)] = torch.nn.Parameter(t, requires_grad=param.requires_grad)
            module._parameters[name] = done[id(param)]
        # Buffers too: real ones (init_empty_weights left them on the CPU), moved and cast
        # like the parameters; integer buffers (position ids) keep their dtype.
        for name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[name] = buf.to(device=device, dtype=own(name) if buf.is_floating_point() else None)
    model.eval()


def _random_components(
    pipeline: str, stage: str, weights: str, device: torch.device, dtype: torch.dtype, model: str | None = None
) -> dict[str, Any]:
    """Models (materialised), schedulers and tokenizers for one stage, from the configs."""
    parts: dict[str, Any] = {}
    for stem in _stage_stems(pipeline, stage, model):
        cfg = load_config(weights, stem)
        name = _component_name(stem)
        if not _is_model(cfg):
            parts[name] = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
            continue
        module = _empty_model(cfg)
        _materialise(module, device, dtype, seed=zlib.crc32(f"{weights}/{stem}".encode()))
        parts[name] = module
        if name.startswith("text_encoder"):
            parts[name.replace("text_encoder", "tokenizer")] = _TOKENIZERS[_config_prefix(stem)]()
    return parts


def _extras(cls: type) -> dict[str, Any]:
    """The keyword arguments that switch off what a benchmark must not load or run.

    Safety checkers, feature extractors, watermarkers and image encoders cost memory and
    time that the source benchmark's figures do not include; IF gets neither tokenizer
    nor T5 text encoder because it is fed prompt embeddings.
    """
    params = inspect.signature(cls).parameters
    extras: dict[str, Any] = {}
    for name in ("safety_checker", "feature_extractor", "watermarker", "image_encoder"):
        if name in params:
            extras[name] = None
    if "requires_safety_checker" in params:
        extras["requires_safety_checker"] = False
    if "add_watermarker" in params:
        extras["add_watermarker"] = False
    if cls.__name__.startswith("IF"):
        extras["tokenizer"] = None
        extras["text_encoder"] = None
    if "max_noise_level" in params:
        extras["max_noise_level"] = X4_MAX_NOISE_LEVEL
    return extras


# --- hub ------------------------------------------------------------------------------------


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now; huggingface_hub reads it only once, at import."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _unavailable(source: str, reason: str) -> WeightsUnavailable:
    reason = " ".join(reason.split())
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return WeightsUnavailable(
        f"cannot load {source!r} from the hub or disk; "
        f"use --weights random for the same architecture without a download ({reason})"
    )


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Loading pipeline components"/"Loading weights"/"Writing shards" bars meanwhile.

    They would interleave with the worker's own output; the switches are process-wide, so
    the previous state is restored afterwards.
    """
    d_log, t_log = diffusers.utils.logging, transformers.utils.logging
    d_on, t_on = d_log.is_progress_bar_enabled(), t_log.is_progress_bar_enabled()
    d_log.disable_progress_bar()
    t_log.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            d_log.enable_progress_bar()
        if t_on:
            t_log.enable_progress_bar()


def _from_pretrained(loader: Any, source: str, dtype: torch.dtype, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with every way of not getting weights made one error.

    ``dtype=``, not ``torch_dtype=``: diffusers 0.42 warns that the latter is deprecated.
    """
    if hub.looks_like_path(source) and not os.path.isdir(os.path.expanduser(source)):
        raise _unavailable(source, "no such directory")
    try:
        with _quiet_progress(), warnings.catch_warnings():
            # diffusers 0.42 passes an argument huggingface_hub has deprecated when it
            # fetches a model config: a UserWarning per load that nobody can act on.
            warnings.filterwarnings("ignore", message=r".*`local_dir_use_symlinks` argument is deprecated")
            return loader.from_pretrained(
                os.path.expanduser(source),
                dtype=dtype,
                use_safetensors=True,
                local_files_only=_offline(),
                **kwargs,
            )
    except (MemoryError, torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # offline, missing, gated, not a diffusers directory, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _unavailable(source, f"{type(exc).__name__}: {first}" if first else type(exc).__name__) from exc


def _hub_pipe(spec: CellSpec, info: registry.PipelineSpec, stage: registry.StageInfo, dtype: torch.dtype) -> Any:
    cls = getattr(diffusers, stage.pipeline_class)
    # The parent's preflight (pipelines.hub) looked in the same place before any worker started.
    source = hub.stage_source(spec.model, info, stage)
    kwargs = _extras(cls)
    local = os.path.isdir(os.path.expanduser(source))
    source = os.path.expanduser(source) if local else source
    if info.extra_checkpoints and not (local and os.path.isdir(os.path.join(source, "controlnet"))):
        kwargs["controlnet"] = _from_pretrained(diffusers.ControlNetModel, info.extra_checkpoints[0], dtype)
    if cls.__name__.startswith("IF") and not local:
        # The seed loaded IF's fp16 variant; a repo without one still loads its main files.
        try:
            return _from_pretrained(cls, source, dtype, variant="fp16", **kwargs)
        except WeightsUnavailable:
            pass
    return _from_pretrained(cls, source, dtype, **kwargs)


# --- inputs ---------------------------------------------------------------------------------


def _loop_steps(pipe: Any, steps: int) -> int:
    """How many denoising iterations ``num_inference_steps=steps`` really runs.

    Asked of a copy of the pipeline's own scheduler, so it stays right for any scheduler:
    PNDM with ``skip_prk_steps`` (SD 1.5) runs steps + 1; strength=1.0 keeps them all.
    """
    scheduler = copy.deepcopy(pipe.scheduler)
    if getattr(scheduler.config, "use_dynamic_shifting", False):
        # The shift depends on the image size (the pipeline passes mu); the count does not.
        scheduler.set_timesteps(steps, mu=1.0)
    else:
        scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def _if_embeddings(pipe: Any, spec: CellSpec, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Random T5-sized prompt embeddings (the seed's ``(1, 2, 4096)``, one row per image)."""
    config = pipe.unet.config
    dim = config.encoder_hid_dim or config.cross_attention_dim
    g = torch.Generator("cpu").manual_seed(spec.seed)
    shape = (spec.batch_size, IF_EMBED_TOKENS, dim)
    return {
        "prompt_embeds": torch.randn(shape, generator=g).to(device=device, dtype=dtype),
        "negative_prompt_embeds": torch.randn(shape, generator=g).to(device=device, dtype=dtype),
    }


def _to_unit_range(images: Any) -> dict[str, Any]:
    """IF stage II's ``pt`` output is in [-1, 1]; the x4 upscaler wants tensors in [0, 1]."""
    return {"image": (images / 2 + 0.5).clamp(0, 1)}


def _pass_images(images: Any) -> dict[str, Any]:
    return {"image": images}


def _sd3_inputs(spec: CellSpec, pipe: Any) -> dict[str, Any]:
    medium = bool(pipe.transformer.config.dual_attention_layers)
    return {"guidance_scale": SD35_MEDIUM_GUIDANCE if medium else SD35_LARGE_GUIDANCE}


def _flux_inputs(spec: CellSpec, pipe: Any) -> dict[str, Any]:
    if pipe.transformer.config.guidance_embeds:  # dev: guidance-distilled
        return {"guidance_scale": FLUX_DEV_GUIDANCE}
    return {"guidance_scale": FLUX_SCHNELL_GUIDANCE, "max_sequence_length": FLUX_SCHNELL_MAX_SEQUENCE}


def _qwen_inputs(spec: CellSpec, pipe: Any) -> dict[str, Any]:
    return {"negative_prompt": [QWEN_NEGATIVE_PROMPT] * spec.batch_size, "true_cfg_scale": QWEN_TRUE_CFG}


def _wan_inputs(spec: CellSpec, pipe: Any) -> dict[str, Any]:
    frames = spec.frames or registry.get(spec.pipeline).native_frames[spec.weights]
    return {
        "negative_prompt": [WAN_NEGATIVE_PROMPT] * spec.batch_size,
        "guidance_scale": WAN_GUIDANCE,
        "num_frames": frames,
    }


# The diffusion transformers' own call arguments, besides prompt, size and steps; decided by
# the built model where variants differ, so a hub directory of a variant gets its settings.
_DIT_INPUTS: dict[str, Callable[[CellSpec, Any], dict[str, Any]]] = {
    "StableDiffusion3Pipeline": _sd3_inputs,
    "FluxPipeline": _flux_inputs,
    "QwenImagePipeline": _qwen_inputs,
    "WanPipeline": _wan_inputs,
}


def _stage_inputs(
    spec: CellSpec, stage: registry.StageInfo, pipe: Any, device: torch.device, dtype: torch.dtype
) -> tuple[dict[str, Any], Callable[[Any], dict[str, Any]] | None]:
    """The call's kwargs (without generator/callbacks) and how to chain the previous stage.

    ``spec.height``/``width`` is the image the cell produces; each stage is called at its
    own share of it (:func:`registry.stage_size`: IF stage I at 1/16, stage II at 1/4).
    """
    b = spec.batch_size
    h, w = registry.stage_size(stage, spec.height, spec.width)
    cls = stage.pipeline_class
    prompt = [spec.prompt] * b
    kw: dict[str, Any] = {"num_inference_steps": spec.steps}
    if cls in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        kw.update(prompt=prompt, height=h, width=w)
    elif cls == "StableDiffusionImg2ImgPipeline":
        kw.update(prompt=prompt, image=[inputs.init_image(w, h, spec.seed)] * b, strength=1.0)
    elif cls == "StableDiffusionInpaintPipeline":
        kw.update(
            prompt=prompt,
            image=[inputs.init_image(w, h, spec.seed)] * b,
            mask_image=[inputs.inpaint_mask(w, h, spec.seed)] * b,
            height=h,
            width=w,
            strength=1.0,
        )
    elif cls == "StableDiffusionControlNetPipeline":
        kw.update(prompt=prompt, image=[inputs.control_image(w, h, spec.seed)] * b, height=h, width=w)
    elif cls == "IFPipeline":
        kw.update(_if_embeddings(pipe, spec, device, dtype), height=h, width=w, output_type="pt")
    elif cls == "IFSuperResolutionPipeline":
        kw.update(
            _if_embeddings(pipe, spec, device, dtype),
            height=h,
            width=w,
            output_type="pt",
        )
        return kw, _pass_images
    elif cls == "StableDiffusionUpscalePipeline":
        kw.update(prompt=prompt, noise_level=IF_UPSCALER_NOISE_LEVEL)
        return kw, _to_unit_range
    elif cls in _DIT_INPUTS:
        kw.update(prompt=prompt, height=h, width=w, **_DIT_INPUTS[cls](spec, pipe))
        if spec.weights == "tiny":
            kw["max_sequence_length"] = TINY_MAX_SEQUENCE
    else:  # pragma: no cover - the registry and this table change together
        raise ValueError(f"no inputs defined for {cls}")
    return kw, None


# --- public API -----------------------------------------------------------------------------


def _models(pipe: Any) -> Iterator[tuple[str, torch.nn.Module]]:
    for attr in _MODEL_ATTRS:
        module = getattr(pipe, attr, None)
        if isinstance(module, torch.nn.Module):
            yield attr, module


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(spec: CellSpec) -> BuiltPipeline:
    """Build every stage of ``spec`` on ``spec.device`` in ``torch_dtype(spec.dtype)``.

    Raises :class:`WeightsUnavailable` (weights ``hub`` only) when weights can't be had.
    """
    info = registry.get(spec.pipeline)
    if spec.weights not in registry.WEIGHT_SOURCES:
        raise ValueError(f"unknown weights {spec.weights!r}; valid: {', '.join(registry.WEIGHT_SOURCES)}")
    device = torch.device(spec.device)
    dtype = torch_dtype(spec.dtype)
    runs: list[StageRun] = []
    parameters: dict[str, int] = {}
    for stage in registry.stages_for(spec.pipeline, spec.batch_size):
        if spec.weights == "hub":
            pipe = _hub_pipe(spec, info, stage, dtype).to(device)
        else:
            cls = getattr(diffusers, stage.pipeline_class)
            parts = _random_components(spec.pipeline, stage.name, spec.weights, device, dtype, spec.model)
            pipe = cls(**{**_extras(cls), **parts})
        pipe.set_progress_bar_config(disable=True)
        kwargs, chain = _stage_inputs(spec, stage, pipe, device, dtype)
        stage_h, stage_w = registry.stage_size(stage, spec.height, spec.width)
        runs.append(
            StageRun(
                name=stage.name,
                pipe=pipe,
                kwargs=kwargs,
                chain=chain,
                compiled=stage.compiled,
                legacy_callback=stage.legacy_callback,
                steps=_loop_steps(pipe, spec.steps),
                batch_size=spec.batch_size,
                height=stage_h,
                width=stage_w,
            )
        )
        for attr, module in _models(pipe):
            parameters[registry.module_key(stage.name, attr)] = _count(module)
    return BuiltPipeline(spec=spec, stages=runs, parameters=parameters)


def set_size(built: BuiltPipeline, height: int, width: int) -> None:
    """Make the cell produce ``height`` x ``width`` images (each stage runs at its share of
    it, :func:`registry.stage_size`), in place.

    ``--resolutions`` runs one cell at several sizes in the same worker, on the same
    (compiled) modules, as a user changing sizes would: only the call's inputs change, so
    the input images are made again at the new size, and nothing is rebuilt or recompiled
    here; torch decides at the next call whether its guards still hold.
    """
    spec = replace(built.spec, height=height, width=width)
    stages = registry.stages_for(spec.pipeline, spec.batch_size)
    device, dtype = torch.device(spec.device), torch_dtype(spec.dtype)
    for info, run in zip(stages, built.stages, strict=True):
        run.kwargs, run.chain = _stage_inputs(spec, info, run.pipe, device, dtype)
        run.height, run.width = registry.stage_size(info, height, width)


def parameter_counts(pipeline: str, weights: str = "random", model: str | None = None) -> dict[str, int]:
    """Parameters per model of every stage, counted on the meta device (no memory, seconds).

    ``hub`` counts the registry checkpoints' architectures, which are the ``random``
    configs; a custom ``--model`` may differ, and :func:`build` reports what it loaded.
    ``model`` names a published variant (FLUX.1-schnell, SD3.5 Medium, Wan 14B).
    """
    info = registry.get(pipeline)
    if weights not in registry.WEIGHT_SOURCES:
        raise ValueError(f"unknown weights {weights!r}; valid: {', '.join(registry.WEIGHT_SOURCES)}")
    counts: dict[str, int] = {}
    for stage in info.stages:
        stems = _stage_stems(pipeline, stage.name, model)
        for attr in _MODEL_ATTRS:  # the same key order as build()
            for stem in stems:
                if _component_name(stem) == attr:
                    counts[registry.module_key(stage.name, attr)] = _stem_count(
                        "random" if weights == "hub" else weights, stem
                    )
    return counts


@cache
def _stem_count(weights: str, stem: str) -> int:
    """Cached: the configs are files shipped with the package.

    Built under the meta device as the default one, so even the buffers computed at
    construction cost nothing: SD3.5 Medium's 226 M-value position table took ~10 s of CPU.
    """
    with torch.device("meta"):
        return _count(_empty_model(load_config(weights, stem)))


def save_pretrained(built: BuiltPipeline, directory: str | os.PathLike[str]) -> None:
    """Save a built pipeline so ``--weights hub --model DIRECTORY`` loads it back offline.

    One stage: the pipeline's own ``save_pretrained`` layout. Several (IF): one
    sub-directory per stage name, which :func:`build` looks for.
    """
    root = Path(directory)
    with _quiet_progress():
        if len(registry.get(built.spec.pipeline).stages) == 1:
            built.stages[0].pipe.save_pretrained(root)
            return
        for st in built.stages:
            st.pipe.save_pretrained(root / st.name)
