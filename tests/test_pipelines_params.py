"""The random-weight architectures are the published ones: parameter counts, and real builds.

Counts come from modules created on the meta device (no memory), so checking SDXL's
2.6 B-parameter UNet costs about a second. Sources of the expected numbers:

- exact, published: SD 1.5 UNet 859,520,964; SD VAE 83,653,863 (SDXL's VAE has the same
  architecture); CLIP ViT-L/14 text model 123,060,480; SDXL UNet 2,567,463,684 and its
  text_encoder_2 (OpenCLIP bigG, with projection) 694,659,840; the SD inpainting UNet
  859,535,364 (= SD 1.5 + the 5 extra input channels of conv_in); the SD 2 / x4-upscaler
  OpenCLIP-H text model (23 layers) 340,387,840.
- from the published configs, checked against the rounded published sizes: ControlNet canny
  (lllyasviel/sd-controlnet-canny config.json, "361.3 M"), the x4 upscaler UNet
  (stabilityai/stable-diffusion-x4-upscaler unet/config.json, "473 M").
- reconstructed: DeepFloyd's IF-I-M and IF-II-M configs were not at hand. They follow the
  published IF-I-XL / IF-II-L configs with the base width scaled: 192 for IF-I-M (the only
  multiple of 64 near the model card's "400M"; 128 gives 0.17 B, 256 gives 0.62 B) and 96 for
  IF-II-M ("500M"; the same layout at IF-II-L's width 160 gives 1.24 B, its card says 1.2 B).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("diffusers")

import torch
from sdtop.pipelines import registry
from sdtop.pipelines.builders import build as B
from sdtop.pipelines.builders.tokenizers import clip_tokenizer
from sdtop.pipelines.settings import CellSpec

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SD15_UNET = 859_520_964
SD_VAE = 83_653_863
CLIP_L = 123_060_480
SDXL_UNET = 2_567_463_684
SDXL_TEXT_ENCODER_2 = 694_659_840
INPAINT_UNET = 859_535_364
OPENCLIP_H = 340_387_840

# Computed from the published configs; the second number is the rounded published size.
CONTROLNET_CANNY = 361_279_120, 361.3e6
X4_UNET = 473_398_020, 473e6
X4_VAE = 55_325_927
# Reconstructed (see the module docstring); model-card sizes for a loose cross-check.
IF_I_M = 371_605_830, 400e6
IF_II_M = 482_483_334, 500e6


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: immune to oversubscription on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def within(value: int, target: float, rel: float) -> bool:
    return abs(value - target) <= rel * target


def test_stable_diffusion_counts_are_the_published_ones() -> None:
    expected = {"unet": SD15_UNET, "vae": SD_VAE, "text_encoder": CLIP_L}
    assert B.parameter_counts("sd-txt2img") == expected
    assert B.parameter_counts("sd-img2img") == expected
    assert B.parameter_counts("sd-inpaint") == {**expected, "unet": INPAINT_UNET}


def test_controlnet_counts() -> None:
    counts = B.parameter_counts("sd-controlnet")
    exact, published = CONTROLNET_CANNY
    assert counts == {"unet": SD15_UNET, "controlnet": exact, "vae": SD_VAE, "text_encoder": CLIP_L}
    assert within(counts["controlnet"], published, 0.005)


def test_sdxl_counts_are_the_published_ones() -> None:
    assert B.parameter_counts("sdxl-txt2img") == {
        "unet": SDXL_UNET,
        "vae": SD_VAE,
        "text_encoder": CLIP_L,
        "text_encoder_2": SDXL_TEXT_ENCODER_2,
    }


def test_if_cascade_counts() -> None:
    counts = B.parameter_counts("if-cascade")
    assert counts == {
        "I.unet": IF_I_M[0],
        "II.unet": IF_II_M[0],
        "upscaler.unet": X4_UNET[0],
        "upscaler.vae": X4_VAE,
        "upscaler.text_encoder": OPENCLIP_H,
    }
    assert within(counts["upscaler.unet"], X4_UNET[1], 0.005)
    assert within(counts["I.unet"], IF_I_M[1], 0.10)
    assert within(counts["II.unet"], IF_II_M[1], 0.10)


def test_hub_counts_are_the_registry_architectures_and_tiny_is_tiny() -> None:
    for name in registry.PIPELINE_NAMES:
        assert B.parameter_counts(name, "hub") == B.parameter_counts(name, "random")
        tiny = B.parameter_counts(name, "tiny")
        assert tiny.keys() == B.parameter_counts(name).keys()
        assert all(0 < n < 3_000_000 for n in tiny.values())
    with pytest.raises(ValueError, match="random"):
        B.parameter_counts("sd-txt2img", "pretrained")
    with pytest.raises(KeyError):
        B.parameter_counts("no-such-pipeline")


def test_counting_is_quick_and_allocates_nothing() -> None:
    t0 = time.perf_counter()
    B.parameter_counts("sdxl-txt2img")
    assert time.perf_counter() - t0 < 15.0  # ~1 s idle
    unet = B._empty_model(B.load_config("random", "sdxl.unet"))
    assert {p.device.type for p in unet.parameters()} == {"meta"}


def test_random_weights_really_build_clip_l_on_cpu_with_finite_outputs() -> None:
    model: Any = B._empty_model(B.load_config("random", "clip-l.text_encoder"))
    t0 = time.perf_counter()
    B._materialise(model, torch.device("cpu"), torch.float32, seed=0)
    materialise_s = time.perf_counter() - t0
    assert sum(p.numel() for p in model.parameters()) == CLIP_L
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    emb = model.get_input_embeddings().weight
    assert tuple(emb.shape) == (49408, 768)
    std = emb.std().item()
    assert 0.5 / 768**0.5 < std < 2.0 / 768**0.5  # normal, std 1/sqrt(fan_in)
    ids = clip_tokenizer()(
        [CellSpec(pipeline="sd-txt2img").prompt], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden = model(ids).last_hidden_state
    assert hidden.shape == (1, 77, 768)
    assert torch.isfinite(hidden).all()
    assert materialise_s < 20.0  # ~1.5 s idle


def test_random_weights_really_build_the_sd_vae_on_cpu_with_finite_outputs() -> None:
    vae: Any = B._empty_model(B.load_config("random", "sd15.vae"))
    B._materialise(vae, torch.device("cpu"), torch.float32, seed=1)
    assert sum(p.numel() for p in vae.parameters()) == SD_VAE
    assert vae.config.scaling_factor == 0.18215
    with torch.no_grad():
        image = vae.decode(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))).sample
    assert image.shape == (1, 3, 64, 64)
    assert torch.isfinite(image).all() and image.abs().max() < 1e4


def test_materialised_weights_are_reproducible() -> None:
    a = B._empty_model(B.load_config("tiny", "sd15.unet"))
    b = B._empty_model(B.load_config("tiny", "sd15.unet"))
    B._materialise(a, torch.device("cpu"), torch.float32, seed=5)
    B._materialise(b, torch.device("cpu"), torch.float32, seed=5)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if name.endswith("bias"):
            assert not pa.any()


@pytest.mark.slow
def test_random_sd15_builds_whole_and_runs_a_step_on_cpu() -> None:
    """The real-size SD 1.5 pipeline (~1.07 B parameters, ~4.3 GB in fp32) on the CPU."""
    spec = CellSpec(pipeline="sd-txt2img", weights="random", steps=1, height=64, width=64)
    t0 = time.perf_counter()
    built = B.build(spec)
    build_s = time.perf_counter() - t0
    assert built.parameters == {"unet": SD15_UNET, "vae": SD_VAE, "text_encoder": CLIP_L}
    st = built.stages[0]
    latents: list[torch.Tensor] = []

    def on_step_end(pipe: object, i: int, t: object, kw: dict) -> dict:
        latents.append(kw["latents"])
        return kw

    out = st.pipe(**st.kwargs, output_type="pt", callback_on_step_end=on_step_end)
    assert len(latents) == st.steps == 1  # PNDM adds its extra step from 2 steps on
    assert torch.isfinite(latents[-1]).all() and torch.isfinite(out.images).all()
    assert build_s < 120.0
