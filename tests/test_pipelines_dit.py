"""The four diffusion-transformer pipelines (SD3.5, FLUX.1, Qwen-Image, Wan 2.1) as sdtop builds them.

The fast tests read configs, tokenizers and call arguments only; those that build and run
tiny pipelines on the CPU are marked ``e2e`` (each call is well under a second here). The
real-size parameter counts are in test_pipelines_params.py.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("diffusers")

import numpy as np
import torch
from sdtop.pipelines import registry
from sdtop.pipelines.builders import build as B
from sdtop.pipelines.builders import tokenizers
from sdtop.pipelines.settings import CellSpec

DIT = ("sd3-txt2img", "flux-txt2img", "qwen-image", "wan-t2v")
SD35_MEDIUM = "stabilityai/stable-diffusion-3.5-medium"
FLUX_SCHNELL = "black-forest-labs/FLUX.1-schnell"
WAN_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
QWEN_TEMPLATE_DROP = 34  # QwenImagePipeline.prompt_template_encode_start_idx
# QwenImagePipeline.prompt_template_encode (diffusers 0.42)
QWEN_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: immune to oversubscription on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_spec(pipeline: str, **kw: Any) -> CellSpec:
    info = registry.get(pipeline)
    h, w = info.native_size["tiny"]
    base: dict[str, Any] = {
        "pipeline": pipeline,
        "weights": "tiny",
        "steps": 2,
        "height": h,
        "width": w,
        "frames": info.native_frames.get("tiny", 0),
    }
    base.update(kw)
    return CellSpec(**base)


def call(built: B.BuiltPipeline) -> tuple[Any, list[tuple[int, ...]]]:
    """One call as the worker makes it: seeded generator, a step callback; (output, latents shapes)."""
    st = built.stages[0]
    seen: list[tuple[int, ...]] = []

    def on_step_end(pipe: Any, step: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        seen.append(tuple(kw["latents"].shape))
        return kw

    out = st.pipe(
        **st.kwargs,
        generator=torch.Generator("cpu").manual_seed(built.spec.seed),
        callback_on_step_end=on_step_end,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    return (out.frames if hasattr(out, "frames") else out.images), seen


# --- configs, variants, tokenizers, call arguments (no model is built) ------------------------


def test_every_dit_stem_has_a_random_and_a_tiny_config_of_the_same_class() -> None:
    for pipeline in DIT:
        for stem in B._STAGE_PARTS[(pipeline, "main")]:
            random_cfg, tiny_cfg = B.load_config("random", stem), B.load_config("tiny", stem)
            assert random_cfg["_class_name"] == tiny_cfg["_class_name"], stem
            if not random_cfg["_class_name"].endswith("Scheduler"):
                assert (B.CONFIG_DIR / "tiny" / f"{stem}.json").exists(), stem


def test_the_variant_picks_the_transformer_and_scheduler_and_the_rest_is_shared() -> None:
    assert B._stage_stems("flux-txt2img", "main") == (
        "flux-dev.transformer",
        "flux.vae",
        "clip-l.text_encoder",
        "t5-xxl.text_encoder_2",
        "flux-dev.scheduler",
    )
    assert B._stage_stems("flux-txt2img", "main", FLUX_SCHNELL.upper()) == (
        "flux-schnell.transformer",
        "flux.vae",
        "clip-l.text_encoder",
        "t5-xxl.text_encoder_2",
        "flux-schnell.scheduler",
    )
    assert "sd35-medium.transformer" in B._stage_stems("sd3-txt2img", "main", SD35_MEDIUM)
    assert "sd35-large.transformer" in B._stage_stems("sd3-txt2img", "main")
    assert B._stage_stems("wan-t2v", "main", WAN_14B)[0] == "wan-14b.transformer"
    assert B._stage_stems("qwen-image", "main", "Qwen/Qwen-Image") == B._stage_stems("qwen-image", "main")
    # UNet pipelines have no variants: every stem, as before
    assert B._stage_stems("sdxl-txt2img", "main") == B._STAGE_PARTS[("sdxl-txt2img", "main")]
    with pytest.raises(ValueError, match=r"FLUX\.1-dev"):
        B._stage_stems("flux-txt2img", "main", "someone/flux-finetune")


def test_the_published_architectures_differ_where_the_variants_do() -> None:
    dev, schnell = B.load_config("random", "flux-dev.transformer"), B.load_config("random", "flux-schnell.transformer")
    assert dev["guidance_embeds"] and not schnell["guidance_embeds"]
    assert {k: v for k, v in dev.items() if k != "guidance_embeds"} == {
        k: v for k, v in schnell.items() if k != "guidance_embeds"
    }
    assert B.load_config("random", "flux-dev.scheduler")["use_dynamic_shifting"]
    assert B.load_config("random", "flux-schnell.scheduler")["shift"] == 1.0
    large, medium = (
        B.load_config("random", "sd35-large.transformer"),
        B.load_config("random", "sd35-medium.transformer"),
    )
    assert (large["num_layers"], large["num_attention_heads"], large.get("dual_attention_layers", [])) == (38, 38, [])
    assert (medium["num_layers"], medium["dual_attention_layers"]) == (24, list(range(13)))
    small, big = B.load_config("random", "wan-1.3b.transformer"), B.load_config("random", "wan-14b.transformer")
    assert (small["num_attention_heads"], small["ffn_dim"], small["num_layers"]) == (12, 8960, 30)
    assert (big["num_attention_heads"], big["ffn_dim"], big["num_layers"]) == (40, 13824, 40)
    wan_scheduler = B.load_config("random", "wan.scheduler")
    assert (wan_scheduler["_class_name"], wan_scheduler["flow_shift"]) == ("UniPCMultistepScheduler", 3.0)
    assert B.load_config("random", "sd35.vae")["latent_channels"] == 16


@pytest.mark.parametrize("weights", ["random", "tiny"])
def test_every_token_id_fits_its_encoders_embedding_table(weights: str) -> None:
    """The in-code tokenizers have the real layouts; their ids must index the tables."""
    for prefix in ("t5-xxl", "umt5-xxl", "qwen25-vl-7b", "clip-l-proj"):
        stem = next(s for p in DIT for s in B._STAGE_PARTS[(p, "main")] if B._config_prefix(s) == prefix)
        vocab_rows = B.load_config(weights, stem)["vocab_size"]
        tok = B._TOKENIZERS[prefix]()
        assert len(tok) <= vocab_rows, prefix
        ids = tok([CellSpec(pipeline="flux-txt2img").prompt, "Zebra über 東京!"]).input_ids
        assert max(max(row) for row in ids) < vocab_rows, prefix


def test_t5_tokenizers_have_the_real_layouts() -> None:
    t5, umt5 = tokenizers.t5_tokenizer(), tokenizers.umt5_tokenizer()
    assert (len(t5), len(umt5)) == (32_100, 256_300)  # the real tokenizers' sizes
    for tok in (t5, umt5):
        assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
        assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
        ids = tok(["x " * 400], padding="max_length", max_length=256, truncation=True).input_ids[0]
        assert len(ids) == 256 and ids[-1] == 1  # truncated, ends with </s>
        padded = tok(["a cat"], padding="max_length", max_length=16).input_ids[0]
        assert padded[-1] == 0 and 1 in padded
    assert tokenizers.t5_tokenizer() is t5  # built once per process: pipelines only read it


def test_qwen2_tokenizer_has_the_real_special_ids_and_makes_the_template_34_tokens() -> None:
    tok = tokenizers.qwen2_tokenizer()
    assert len(tok) == 151_665
    ids = [tok.convert_tokens_to_ids(t) for t in tokenizers.QWEN2_SPECIAL_TOKENS]
    assert ids == list(range(151_643, 151_665))
    assert (tok.pad_token_id, tok.eos_token_id) == (151_643, 151_643)
    text = QWEN_TEMPLATE  # the e2e test below checks it is the pipeline's
    prompt = CellSpec(pipeline="qwen-image").prompt
    full = tok([text.format(prompt)]).input_ids[0]
    empty = tok([text.format("")]).input_ids[0]
    prefix = tok([text.split("{}")[0]]).input_ids[0]
    assert len(prefix) == QWEN_TEMPLATE_DROP
    assert full[:QWEN_TEMPLATE_DROP] == prefix
    assert len(empty) == QWEN_TEMPLATE_DROP + 5  # <|im_end|> \n <|im_start|> assistant \n
    # the default prompt is whole words, as with the real vocabulary (8 tokens, not 47 characters)
    assert len(full) - len(empty) == 8
    for word in tokenizers._QWEN_WORDS:
        for form in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            assert len(tok([form]).input_ids[0]) == 1, form
    assert len(tok(["Zebra"]).input_ids[0]) > 1  # unknown words fall back to pieces
    merges = tokenizers._qwen2_merges()
    tokenizers._qwen2_merges.cache_clear()
    assert tokenizers._qwen2_merges() == merges  # learnt deterministically


def fake_pipe(**transformer_config: Any) -> Any:
    return SimpleNamespace(transformer=SimpleNamespace(config=SimpleNamespace(**transformer_config)))


def test_call_arguments_follow_the_model_cards() -> None:
    main = registry.get("sd3-txt2img").stages[0]
    spec = CellSpec(pipeline="sd3-txt2img", weights="random", height=1024, width=1024, batch_size=2)
    kw, chain = B._stage_inputs(spec, main, fake_pipe(dual_attention_layers=()), torch.device("cpu"), torch.float16)
    assert chain is None
    assert kw == {"num_inference_steps": 50, "prompt": [spec.prompt] * 2, "height": 1024, "width": 1024,
                  "guidance_scale": 3.5}  # fmt: skip
    kw, _ = B._stage_inputs(spec, main, fake_pipe(dual_attention_layers=(0, 1)), torch.device("cpu"), torch.float16)
    assert kw["guidance_scale"] == 4.5  # SD3.5 Medium

    flux = registry.get("flux-txt2img").stages[0]
    spec = CellSpec(pipeline="flux-txt2img", weights="random", height=512, width=768)
    kw, _ = B._stage_inputs(spec, flux, fake_pipe(guidance_embeds=True), torch.device("cpu"), torch.float16)
    assert (kw["guidance_scale"], "max_sequence_length" in kw, kw["height"], kw["width"]) == (3.5, False, 512, 768)
    kw, _ = B._stage_inputs(spec, flux, fake_pipe(guidance_embeds=False), torch.device("cpu"), torch.float16)
    assert (kw["guidance_scale"], kw["max_sequence_length"]) == (0.0, 256)  # schnell's card

    qwen = registry.get("qwen-image").stages[0]
    spec = CellSpec(pipeline="qwen-image", weights="hub", batch_size=3)
    kw, _ = B._stage_inputs(spec, qwen, fake_pipe(), torch.device("cpu"), torch.bfloat16)
    assert (kw["true_cfg_scale"], kw["negative_prompt"]) == (4.0, [" "] * 3)
    assert "guidance_scale" not in kw  # Qwen-Image has no guidance embedder

    wan = registry.get("wan-t2v").stages[0]
    spec = CellSpec(pipeline="wan-t2v", weights="random", height=480, width=832, frames=33)
    kw, _ = B._stage_inputs(spec, wan, fake_pipe(), torch.device("cpu"), torch.bfloat16)
    assert (kw["num_frames"], kw["guidance_scale"], kw["height"], kw["width"]) == (33, 5.0, 480, 832)
    assert kw["negative_prompt"] == [B.WAN_NEGATIVE_PROMPT] and "max_sequence_length" not in kw
    # a cell made without --frames (frames=0) gets the weight source's native count
    kw, _ = B._stage_inputs(
        CellSpec(pipeline="wan-t2v", weights="tiny"), wan, fake_pipe(), torch.device("cpu"), torch.float32
    )
    assert kw["num_frames"] == registry.get("wan-t2v").native_frames["tiny"]
    assert kw["max_sequence_length"] == B.TINY_MAX_SEQUENCE


# --- tiny builds and calls ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("pipeline", DIT)
def test_tiny_dit_builds_and_runs_at_its_native_size(pipeline: str) -> None:
    spec = tiny_spec(pipeline)
    t0 = time.perf_counter()
    built = B.build(spec)
    build_s = time.perf_counter() - t0
    (st,) = built.stages
    assert st.compiled == ("transformer",)
    assert isinstance(st.pipe.transformer, torch.nn.Module)
    assert st.pipe.transformer.device.type == "cpu" and st.pipe.transformer.dtype == torch.float32
    assert built.parameters == B.parameter_counts(pipeline, "tiny")
    assert set(built.parameters) >= {"transformer", "vae", "text_encoder"}
    t0 = time.perf_counter()
    output, seen = call(built)
    call_s = time.perf_counter() - t0
    assert len(seen) == st.steps == spec.steps
    assert all(shape[0] == 1 for shape in seen)
    h, w = registry.get(pipeline).native_size["tiny"]
    assert (st.height, st.width) == (h, w)
    if pipeline == "wan-t2v":
        assert isinstance(output, np.ndarray)
        assert output.shape == (1, spec.frames, h, w, 3)
    else:
        assert len(output) == 1 and output[0].size == (w, h)
        assert np.asarray(output[0]).std() > 0  # an image, if a noisy one
    assert build_s < 10.0  # ~0.1-0.6 s idle
    assert call_s < 10.0  # ~0.05 s idle


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("pipeline", "model", "differs"),
    [
        ("sd3-txt2img", SD35_MEDIUM, "dual_attention_layers"),
        ("flux-txt2img", FLUX_SCHNELL, "guidance_embeds"),
        ("wan-t2v", WAN_14B, "num_attention_heads"),
    ],
)
def test_tiny_variants_build_their_own_architecture(pipeline: str, model: str, differs: str) -> None:
    default = B.build(tiny_spec(pipeline, steps=1))
    variant = B.build(tiny_spec(pipeline, steps=1, model=model))
    a, b = default.stages[0].pipe.transformer.config, variant.stages[0].pipe.transformer.config
    assert getattr(a, differs) != getattr(b, differs)
    assert variant.parameters == B.parameter_counts(pipeline, "tiny", model)
    assert variant.parameters != default.parameters
    output, seen = call(variant)
    assert len(seen) == 1 and len(output) == 1
    if pipeline == "flux-txt2img":
        assert variant.stages[0].kwargs["guidance_scale"] == 0.0
        assert type(variant.stages[0].pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        assert not variant.stages[0].pipe.scheduler.config.use_dynamic_shifting
    if pipeline == "sd3-txt2img":
        assert variant.stages[0].kwargs["guidance_scale"] == 4.5


@pytest.mark.e2e
def test_wan_makes_the_cells_frame_count_and_keeps_it_across_sizes() -> None:
    built = B.build(tiny_spec("wan-t2v", frames=9, batch_size=2, steps=1))
    (st,) = built.stages
    assert type(st.pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    frames, seen = call(built)
    assert frames.shape == (2, 9, 32, 32, 3)
    assert seen == [(2, 16, 3, 4, 4)]  # (9 - 1) / 4 + 1 latent frames, CFG outside the latents
    B.set_size(built, 48, 64)
    assert (st.height, st.width, st.kwargs["num_frames"]) == (48, 64, 9)
    frames, _ = call(built)
    assert frames.shape == (2, 9, 48, 64, 3)


@pytest.mark.e2e
def test_qwen_image_batch_gets_a_negative_prompt_per_image() -> None:
    built = B.build(tiny_spec("qwen-image", batch_size=2, steps=2))
    (st,) = built.stages
    assert st.kwargs["negative_prompt"] == [" ", " "] and st.kwargs["true_cfg_scale"] == 4.0
    assert (st.pipe.prompt_template_encode, st.pipe.prompt_template_encode_start_idx) == (
        QWEN_TEMPLATE,
        QWEN_TEMPLATE_DROP,
    )
    images, seen = call(built)
    assert len(images) == 2 and seen == [(2, 4, 64)] * 2  # packed 2x2 latents: (32/16)^2 tokens


@pytest.mark.e2e
def test_low_precision_builds_keep_what_a_checkpoint_load_keeps_in_fp32() -> None:
    """from_pretrained keeps Wan's norms/time embedder/RoPE (bf16, fp16) and T5's ``wo`` (fp16)
    in fp32; random and tiny weights do the same, so their memory and kernels are the real ones."""
    built = B.build(tiny_spec("wan-t2v", dtype="bf16", steps=1))
    pipe = built.stages[0].pipe
    kept = {n for n, p in pipe.transformer.named_parameters() if p.dtype == torch.float32}
    assert kept and all(any(k in n.split(".") for k in pipe.transformer._keep_in_fp32_modules) for n in kept)
    assert "scale_shift_table" in kept and any(n.startswith("condition_embedder.time_embedder") for n in kept)
    assert Counter(p.dtype for p in pipe.text_encoder.parameters()) == Counter(
        {torch.bfloat16: len(list(pipe.text_encoder.parameters()))}
    )  # transformers keeps T5's wo in fp32 for fp16 only
    frames, _ = call(built)
    assert np.isfinite(frames).all()
    fp16 = B.build(tiny_spec("flux-txt2img", dtype="fp16", steps=1)).stages[0].pipe
    wo = {n: p.dtype for n, p in fp16.text_encoder_2.named_parameters() if ".wo." in n}
    assert wo and set(wo.values()) == {torch.float32}
    assert fp16.transformer.dtype == torch.float16


@pytest.mark.e2e
@pytest.mark.parametrize("pipeline", ["wan-t2v", "qwen-image"])
def test_a_saved_tiny_dit_loads_back_as_hub_weights(
    pipeline: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline round trip through the hub path, tokenizers included (T5 Unigram, Qwen2 BPE)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = B.build(tiny_spec(pipeline))
    B.save_pretrained(tiny, tmp_path)
    hub = B.build(tiny_spec(pipeline, weights="hub", model=str(tmp_path)))
    assert hub.parameters == tiny.parameters
    prompt = tiny.spec.prompt
    assert hub.stages[0].pipe.tokenizer([prompt]).input_ids == tiny.stages[0].pipe.tokenizer([prompt]).input_ids
    output, seen = call(hub)
    assert len(seen) == hub.stages[0].steps == 2 and len(output) == 1
