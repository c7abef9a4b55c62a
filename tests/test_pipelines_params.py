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
- the diffusion transformers and their encoders (SD3.5, FLUX.1, Qwen-Image, Wan 2.1): each
  count from the published config is checked within 1% against the model card's figure, or,
  where the card's rounded figure is further off than that, against the exact count the
  checkpoint's own files state (safetensors index ``total_size`` / bytes per parameter, or a
  single file's size); each constant below names its source and the deviation.
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

# --- diffusion transformers: (exact count from the published config, the source's figure) ----
# SD3.5 Large transformer. Card and Stability's release: "8.1 billion parameters" (-0.54%).
# Exact: transformer/diffusion_pytorch_model.safetensors.index.json total_size 16,292,561,536 B
# in bf16 = 8,146,280,768 values = these parameters + the 192x192x2432 sin-cos position table
# (89,653,248 values), a persistent buffer, not a parameter.
SD35_LARGE = 8_056_627_520, 8.1e9
SD35_LARGE_POS_TABLE = 192 * 192 * 2432
SD35_LARGE_INDEX_BYTES = 16_292_561_536
# SD3.5 Medium transformer. Card: "2.5 billion parameters", 10% off the parameters (1.2% off even
# with the 384x384x1536 position table), so the file: transformer/diffusion_pytorch_model.safetensors
# is 4.94 GB in fp16 = 2.47 G values, of which 226,492,416 are the position table (+0.015%).
SD35_MEDIUM = 2_243_171_520, 4.94e9 / 2 - 384 * 384 * 1536
# CLIP ViT-L/14 text model with its 768x768 projection (SD3.5's text_encoder): 123,060,480 +
# 589,824, exact; the checkpoint's text_encoder/model.safetensors is 247 MB in fp16 (+0.1%).
CLIP_L_PROJ = 123_650_304
# T5 v1.1 XXL encoder (SD3.5 text_encoder_3, FLUX.1 text_encoder_2). Its card's "11B" is the
# encoder-decoder; exact: text_encoder_3/model.safetensors.index.json total_size 9,524,621,312 B
# in bf16 = 4,762,310,656 (the embedding table counted once: encoder.embed_tokens is shared).
T5_XXL_ENCODER = 4_762_310_656
# The SD3 / FLUX.1 VAE (16 latent channels, no quant convs): vae/diffusion_pytorch_model.safetensors
# is 168 MB in fp16 = 84.0 M values (+0.2%).
SD3_VAE = 83_819_683, 168e6 / 2
# FLUX.1-dev transformer. Card: "12 billion parameter rectified flow transformer" (-0.82%);
# exact: its index total_size 23,802,816,640 B in bf16 = 11,901,408,320.
FLUX_DEV = 11_901_408_320, 12e9
FLUX_DEV_INDEX_BYTES = 23_802_816_640
# FLUX.1-schnell: the same without the guidance embedder (10,229,760 fewer). Card: "12 billion"
# (-0.91%).
FLUX_SCHNELL = 11_891_178_560, 12e9
# Qwen-Image transformer. Card: "20B MMDiT", 2.1% off; exact: transformer index total_size
# 40,860,802,176 B in bf16 = 20,430,401,088.
QWEN_IMAGE = 20_430_401_088, 40_860_802_176 / 2
# Qwen2.5-VL-7B-Instruct (Qwen-Image's text_encoder, vision tower included). Its name's "7B" is
# 18% off; exact: text_encoder/model.safetensors.index.json total_size 16,584,333,312 B in bf16
# = 8,292,166,656 (the hub page's "8.29B params").
QWEN25_VL_7B = 8_292_166_656, 16_584_333_312 / 2
# Qwen-Image's and Wan 2.1's VAE (one architecture): the Wan paper's "127M" Wan-VAE; its
# Wan2.1_VAE / diffusers safetensors file is 508 MB in fp32 = 127.0 M (+0.1%).
WAN_VAE = 126_892_531, 127e6
# Wan 2.1 T2V 1.3B transformer. Its name's "1.3B" is 8% off; exact enough: the repo's
# transformer/ (Wan-AI/Wan2.1-T2V-1.3B-Diffusers) holds 5.68 GB in fp32 = 1.42 G (+0.08%).
WAN_1_3B = 1_418_996_800, 5.68e9 / 4
# Wan 2.1 T2V 14B transformer. "14B" is 2.1% off; exact: the same architecture's fp32 index
# (Wan-AI/Wan2.2-T2V-A14B-Diffusers transformer, config identical) total_size 57,153,966,336 B
# / 4 = 14,288,491,584; Comfy-Org's wan2.1_t2v_14B_bf16.safetensors is 28.6 GB (+0.08%).
WAN_14B = 14_288_491_584, 57_153_966_336 / 4
# UMT5-XXL encoder (Wan's text_encoder). Exact: its index total_size (Wan2.2-T2V-A14B-Diffusers,
# the same google/umt5-xxl encoder) 11,361,820,672 B in bf16 = 5,680,910,336; Wan2.1-T2V-*-Diffusers'
# text_encoder/ is 22.7 GB in fp32 (-0.05%).
UMT5_XXL_ENCODER = 5_680_910_336, 11_361_820_672 / 2


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


def test_sd35_counts_large_by_default_and_medium_as_a_variant() -> None:
    large = B.parameter_counts("sd3-txt2img")
    assert large == {
        "transformer": SD35_LARGE[0],
        "vae": SD3_VAE[0],
        "text_encoder": CLIP_L_PROJ,
        "text_encoder_2": SDXL_TEXT_ENCODER_2,  # SD3.5's CLIP-G is SDXL's text_encoder_2
        "text_encoder_3": T5_XXL_ENCODER,
    }
    assert within(large["transformer"], SD35_LARGE[1], 0.01)
    assert (large["transformer"] + SD35_LARGE_POS_TABLE) * 2 == SD35_LARGE_INDEX_BYTES
    assert within(large["vae"], SD3_VAE[1], 0.01)
    medium = B.parameter_counts("sd3-txt2img", "random", "stabilityai/stable-diffusion-3.5-medium")
    assert medium == {**large, "transformer": SD35_MEDIUM[0]}
    assert within(medium["transformer"], SD35_MEDIUM[1], 0.01)
    assert B.parameter_counts("sd3-txt2img", "hub", "stabilityai/stable-diffusion-3.5-medium") == medium


def test_flux_counts_dev_by_default_and_schnell_as_a_variant() -> None:
    dev = B.parameter_counts("flux-txt2img")
    assert dev == {
        "transformer": FLUX_DEV[0],
        "vae": SD3_VAE[0],
        "text_encoder": CLIP_L,
        "text_encoder_2": T5_XXL_ENCODER,
    }
    assert within(dev["transformer"], FLUX_DEV[1], 0.01)
    assert dev["transformer"] * 2 == FLUX_DEV_INDEX_BYTES
    schnell = B.parameter_counts("flux-txt2img", "random", "black-forest-labs/FLUX.1-schnell")
    assert schnell == {**dev, "transformer": FLUX_SCHNELL[0]}
    assert within(schnell["transformer"], FLUX_SCHNELL[1], 0.01)


def test_qwen_image_counts() -> None:
    counts = B.parameter_counts("qwen-image")
    assert counts == {"transformer": QWEN_IMAGE[0], "vae": WAN_VAE[0], "text_encoder": QWEN25_VL_7B[0]}
    assert counts["transformer"] == QWEN_IMAGE[1]
    assert counts["text_encoder"] == QWEN25_VL_7B[1]
    assert within(counts["vae"], WAN_VAE[1], 0.01)


def test_wan_counts_1_3b_by_default_and_14b_as_a_variant() -> None:
    small = B.parameter_counts("wan-t2v")
    assert small == {"transformer": WAN_1_3B[0], "vae": WAN_VAE[0], "text_encoder": UMT5_XXL_ENCODER[0]}
    assert within(small["transformer"], WAN_1_3B[1], 0.01)
    assert small["text_encoder"] == UMT5_XXL_ENCODER[1]
    big = B.parameter_counts("wan-t2v", "random", "Wan-AI/Wan2.1-T2V-14B-Diffusers")
    assert big == {**small, "transformer": WAN_14B[0]}
    assert big["transformer"] == WAN_14B[1]


def test_dit_counting_is_quick_and_knows_the_variants() -> None:
    t0 = time.perf_counter()
    for name in ("sd3-txt2img", "flux-txt2img", "qwen-image", "wan-t2v"):
        for model in registry.get(name).variants:
            B.parameter_counts(name, "random", model)
    # ~2.5 s idle from cold: built with meta as the default device, so even SD3.5 Medium's
    # 226 M-value position table is never computed (it took ~10 s of CPU when it was).
    assert time.perf_counter() - t0 < 30.0
    for name, variants in (("sd3-txt2img", 2), ("flux-txt2img", 2), ("qwen-image", 1), ("wan-t2v", 2)):
        tiny = {model: B.parameter_counts(name, "tiny", model) for model in registry.get(name).variants}
        assert len({tuple(sorted(c.items())) for c in tiny.values()}) == variants
    with pytest.raises(ValueError, match=r"FLUX\.1-schnell"):
        B.parameter_counts("flux-txt2img", "random", "black-forest-labs/FLUX.2-dev")


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
