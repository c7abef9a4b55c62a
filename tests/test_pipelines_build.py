"""Building and running every pipeline through the StageRun contract the worker relies on.

All on tiny weights on the CPU: each call runs a few real denoising steps of the real
diffusers pipeline classes in well under a second. Nothing here downloads anything.
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch
from sdtop.pipelines import registry
from sdtop.pipelines.builders import build as B
from sdtop.pipelines.builders import inputs, tokenizers
from sdtop.pipelines.settings import CellSpec

# diffusers' EulerDiscreteScheduler calls np.array() on a tensor (numpy 2 deprecation). Hidden
# by Python's default filters outside __main__, so the worker never shows it; keep it out of
# the test report too.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# Categories Python's default filters hide outside __main__: not noise a user would see.
HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def visible_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, HIDDEN_BY_DEFAULT)]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run these tests on one intra-op thread, then restore.

    They check behaviour, not speed. On a 2-core box shared with other test processes, two
    spinning OpenMP threads per op made tiny steps 10-30x slower; one thread is immune.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_spec(pipeline: str, **kw: Any) -> CellSpec:
    h, w = registry.get(pipeline).native_size["tiny"]
    base: dict[str, Any] = {"pipeline": pipeline, "weights": "tiny", "steps": 2, "height": h, "width": w}
    base.update(kw)
    return CellSpec(**base)


def run_like_worker(
    built: B.BuiltPipeline,
) -> list[tuple[B.StageRun, Any, list[tuple[int, tuple[int, ...]]]]]:
    """The worker's loop: chain, seeded generator, a step callback of the right kind.

    Returns per stage: the stage, its ``.images``, and (step index, latents shape) per step.
    """
    results = []
    prev = None
    for st in built.stages:
        kw = dict(st.kwargs)
        if st.chain is not None and prev is not None:
            kw.update(st.chain(prev))
        kw["generator"] = torch.Generator("cpu").manual_seed(built.spec.seed)
        seen: list[tuple[int, tuple[int, ...]]] = []
        if st.legacy_callback:

            def legacy(step: int, t: Any, latents: torch.Tensor, seen: list[Any] = seen) -> None:
                seen.append((step, tuple(latents.shape)))

            kw["callback"] = legacy
            kw["callback_steps"] = 1
        else:

            def on_step_end(pipe: Any, step: int, t: Any, cb_kw: dict[str, Any], seen: list[Any] = seen) -> dict:
                seen.append((step, tuple(cb_kw["latents"].shape)))
                return cb_kw

            kw["callback_on_step_end"] = on_step_end
            kw["callback_on_step_end_tensor_inputs"] = ["latents"]
        out = st.pipe(**kw)
        prev = out.frames if hasattr(out, "frames") else out.images  # video pipelines return frames
        results.append((st, prev, seen))
    return results


def image_batch_and_size(images: Any) -> tuple[int, int, int]:
    """(batch, height, width) of a stage's ``.images``: a (B, C, H, W) tensor or PIL list,
    or a video pipeline's ``.frames``, a (B, F, H, W, 3) array."""
    if isinstance(images, np.ndarray) and images.ndim == 5:
        return images.shape[0], images.shape[2], images.shape[3]
    if isinstance(images, torch.Tensor):
        return images.shape[0], images.shape[2], images.shape[3]
    return len(images), images[0].size[1], images[0].size[0]


@pytest.mark.parametrize("pipeline", registry.PIPELINE_NAMES)
def test_tiny_pipeline_runs_end_to_end_through_the_stage_contract(pipeline: str) -> None:
    spec = tiny_spec(pipeline)
    t0 = time.perf_counter()
    built = B.build(spec)
    build_s = time.perf_counter() - t0

    assert built.spec == spec
    expected = registry.stages_for(pipeline, 1)
    assert [st.name for st in built.stages] == [s.name for s in expected]
    results = run_like_worker(built)

    for (st, images, seen), info in zip(results, expected, strict=True):
        # the stage description matches the registry and the pipeline object
        assert st.compiled == info.compiled
        for attr in st.compiled:
            assert isinstance(getattr(st.pipe, attr), torch.nn.Module)
        has_new_callback = "callback_on_step_end" in inspect.signature(st.pipe.__call__).parameters
        assert st.legacy_callback == (not has_new_callback) == info.legacy_callback
        assert st.chain is None if st is built.stages[0] else st.chain is not None
        assert not {"generator", "callback", "callback_on_step_end"} & set(st.kwargs)
        # every real step reported, with the cell's batch in the latents
        assert len(seen) == st.steps
        assert [i for i, _ in seen] == list(range(st.steps))
        assert all(shape[0] in (spec.batch_size, 2 * spec.batch_size) for _, shape in seen)
        # the output is what the stage says it is
        assert image_batch_and_size(images) == (st.batch_size, st.height, st.width)
        assert (st.height, st.width) == registry.stage_size(info, spec.height, spec.width)
        denoiser = getattr(st.pipe, st.compiled[0])
        assert denoiser.device.type == "cpu" and denoiser.dtype == torch.float32

    assert build_s < 5.0  # ~0.3 s idle; generous for a loaded CI box
    assert set(built.parameters) == set(B.parameter_counts(pipeline, "tiny"))
    assert built.parameters == B.parameter_counts(pipeline, "tiny")


def test_if_cascade_above_batch_one_runs_stage_one_only() -> None:
    built = B.build(tiny_spec("if-cascade", batch_size=2))
    assert [st.name for st in built.stages] == ["I"]
    assert set(built.parameters) == {"I.unet"}
    ((st, images, seen),) = run_like_worker(built)
    assert images.shape == (2, 3, 16, 16)
    assert st.kwargs["prompt_embeds"].shape == (2, B.IF_EMBED_TOKENS, 32)
    assert len(seen) == st.steps == 2


@pytest.mark.parametrize("pipeline", ["sd-img2img", "sd-inpaint", "sd-controlnet", "sdxl-txt2img"])
def test_latent_batch_equals_the_cell_batch(pipeline: str) -> None:
    """Batch 3: prompts and images are repeated per image; CFG doubles the UNet batch only."""
    built = B.build(tiny_spec(pipeline, batch_size=3, steps=1))
    ((_, images, seen),) = run_like_worker(built)
    assert {shape[0] for _, shape in seen} == {3}
    assert image_batch_and_size(images) == (3, 64, 64)


def test_pndm_runs_one_step_more_than_asked_and_stage_steps_says_so() -> None:
    """SD 1.5's PNDM (skip_prk_steps) loops steps+1 times; strength=1.0 keeps them all."""
    for pipeline in ("sd-txt2img", "sd-img2img", "sd-inpaint", "sd-controlnet"):
        st = B.build(tiny_spec(pipeline, steps=5)).stages[0]
        assert type(st.pipe.scheduler).__name__ == "PNDMScheduler"
        assert st.steps == 6
        assert st.kwargs.get("strength", 1.0) == 1.0
    sdxl = B.build(tiny_spec("sdxl-txt2img", steps=5)).stages[0]
    assert sdxl.steps == 5


def test_schedulers_are_the_ones_the_checkpoints_ship() -> None:
    cascade = B.build(tiny_spec("if-cascade"))
    names = {st.name: type(st.pipe.scheduler).__name__ for st in cascade.stages}
    assert names == {"I": "DDPMScheduler", "II": "DDPMScheduler", "upscaler": "DDIMScheduler"}
    upscaler = cascade.stages[2].pipe
    assert type(upscaler.low_res_scheduler).__name__ == "DDPMScheduler"
    assert upscaler.scheduler.config.steps_offset == 1
    assert upscaler.config.max_noise_level == B.X4_MAX_NOISE_LEVEL
    assert cascade.stages[2].kwargs["noise_level"] == 100
    sdxl = B.build(tiny_spec("sdxl-txt2img")).stages[0].pipe
    assert type(sdxl.scheduler).__name__ == "EulerDiscreteScheduler"
    sd = B.build(tiny_spec("sd-txt2img")).stages[0].pipe
    assert sd.scheduler.config.skip_prk_steps and sd.scheduler.config.steps_offset == 1


def test_if_stages_share_seeded_embeddings_in_the_pipeline_dtype() -> None:
    a = B.build(tiny_spec("if-cascade", seed=7))
    b = B.build(tiny_spec("if-cascade", seed=7))
    c = B.build(tiny_spec("if-cascade", seed=8))
    emb = a.stages[0].kwargs["prompt_embeds"]
    assert emb.dtype == torch.float32 and emb.shape == (1, 2, 32)
    assert torch.equal(emb, a.stages[1].kwargs["prompt_embeds"])
    assert torch.equal(emb, b.stages[0].kwargs["prompt_embeds"])
    assert not torch.equal(emb, c.stages[0].kwargs["prompt_embeds"])
    assert not torch.equal(emb, a.stages[0].kwargs["negative_prompt_embeds"])
    assert a.stages[0].kwargs["output_type"] == a.stages[1].kwargs["output_type"] == "pt"
    assert a.stages[2].kwargs["prompt"] == [a.spec.prompt]


def test_upscaler_chain_maps_stage_two_output_into_unit_range() -> None:
    st = B.build(tiny_spec("if-cascade")).stages[2]
    assert st.chain is not None
    x = torch.tensor([[-1.0, 0.0, 1.0, 3.0]])
    assert torch.equal(st.chain(x)["image"], torch.tensor([[0.0, 0.5, 1.0, 1.0]]))


@pytest.mark.parametrize("pipeline", ["sd-inpaint", "if-cascade", "sdxl-txt2img"])
def test_build_and_run_print_nothing(pipeline: str, capfd: pytest.CaptureFixture[str]) -> None:
    """No progress bars, deprecation or safety-checker messages on stdout/stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_like_worker(B.build(tiny_spec(pipeline)))
    assert visible_warnings(caught) == []
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_fp16_sdxl_upcast_decode_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """fp16 SDXL goes through diffusers' deprecated upcast_vae(): its warning is filtered."""
    built = B.build(tiny_spec("sdxl-txt2img", dtype="fp16", steps=1))
    assert built.stages[0].pipe.unet.dtype == torch.float16
    assert built.stages[0].pipe.vae.config.force_upcast
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", message=r".*`upcast_vae` is deprecated", category=FutureWarning)
        run_like_worker(built)
    assert visible_warnings(caught) == []
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("pipeline", ["sd-txt2img", "sd-controlnet", "if-cascade", "sdxl-txt2img"])
def test_a_saved_tiny_pipeline_loads_back_as_hub_weights(
    pipeline: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local directory needs no network
    tiny = B.build(tiny_spec(pipeline))
    B.save_pretrained(tiny, tmp_path)
    hub = B.build(tiny_spec(pipeline, weights="hub", model=str(tmp_path)))
    assert hub.parameters == tiny.parameters
    assert [st.name for st in hub.stages] == [st.name for st in tiny.stages]
    for (st, images, seen), ref in zip(run_like_worker(hub), tiny.stages, strict=True):
        assert len(seen) == st.steps == ref.steps
        assert image_batch_and_size(images) == (ref.batch_size, ref.height, ref.width)
        assert st.pipe.unet.dtype == torch.float32
        assert getattr(st.pipe, "safety_checker", None) is None


def test_offline_hub_id_raises_weights_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    with pytest.raises(B.WeightsUnavailable) as info, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        B.build(tiny_spec("sd-txt2img", weights="hub", model="sdtop-test/no-such-model"))
    assert visible_warnings(caught) == []
    msg = str(info.value)
    assert "\n" not in msg
    assert "'sdtop-test/no-such-model'" in msg and "--weights random" in msg
    # the registry checkpoints fail the same way (IF: after trying the fp16 variant too)
    for pipeline in ("sd-controlnet", "if-cascade", "sdxl-txt2img"):
        with (
            pytest.raises(B.WeightsUnavailable, match="--weights random"),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            B.build(tiny_spec(pipeline, weights="hub"))
        assert visible_warnings(caught) == []


def test_missing_or_non_diffusers_directory_raises_weights_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "nope"
    with pytest.raises(B.WeightsUnavailable, match=r"--weights random.*no such directory") as info:
        B.build(tiny_spec("sd-txt2img", weights="hub", model=str(missing)))
    assert "\n" not in str(info.value) and str(missing) in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(B.WeightsUnavailable, match=r"model_index\.json"):
        B.build(tiny_spec("sd-img2img", weights="hub", model=str(tmp_path / "empty")))
    assert issubclass(B.WeightsUnavailable, RuntimeError)


def test_torch_dtype_names() -> None:
    assert B.torch_dtype("fp16") is torch.float16
    assert B.torch_dtype("bf16") is torch.bfloat16
    assert B.torch_dtype("fp32") is torch.float32
    with pytest.raises(ValueError, match="fp16"):
        B.torch_dtype("int8")


def test_tiny_builds_in_the_requested_dtype_with_no_meta_tensors_left() -> None:
    built = B.build(tiny_spec("sd-controlnet", dtype="bf16"))
    pipe = built.stages[0].pipe
    for name in ("unet", "controlnet", "vae", "text_encoder"):
        module = getattr(pipe, name)
        assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in module.parameters())
        assert all(b.device.type == "cpu" for b in module.buffers())
        assert not module.training
    ids = dict(pipe.text_encoder.named_buffers())["embeddings.position_ids"]
    assert ids.dtype == torch.int64 and ids[0, -1].item() == 76  # real buffer, not garbage


# --- inputs and tokenizers ------------------------------------------------------------------


@pytest.mark.parametrize("make", [inputs.init_image, inputs.inpaint_mask, inputs.control_image])
def test_inputs_are_deterministic_per_seed(make: Any) -> None:
    a = np.asarray(make(96, 64, seed=3))
    b = np.asarray(make(96, 64, seed=3))
    c = np.asarray(make(96, 64, seed=4))
    assert a.shape[:2] == (64, 96)
    assert a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_input_images_have_the_expected_modes_and_content() -> None:
    img = inputs.init_image(512, 512)
    assert img.mode == "RGB" and img.size == (512, 512)
    assert np.asarray(img).std() > 20  # a scene, not a flat colour
    mask = np.asarray(inputs.inpaint_mask(64, 48))
    assert set(np.unique(mask)) == {0, 255} and 0.1 < (mask == 255).mean() < 0.4
    ctrl = np.asarray(inputs.control_image(512, 512))
    assert ctrl.shape == (512, 512, 3) and set(np.unique(ctrl)) == {0, 255}
    assert np.array_equal(ctrl[..., 0], ctrl[..., 2])
    assert 0.002 < (ctrl[..., 0] == 255).mean() < 0.1  # thin edges


def test_canny_finds_a_square_outline() -> None:
    img = np.zeros((32, 32))
    img[8:24, 8:24] = 1.0
    edges = inputs.canny_edges(img)
    assert edges[16, 5:11].any() and edges[16, 21:27].any()  # left and right sides
    assert not edges[14:18, 14:18].any()  # flat inside
    assert not inputs.canny_edges(np.ones((16, 16))).any()


def test_clip_tokenizer_has_the_real_vocabulary_layout() -> None:
    tok = tokenizers.clip_tokenizer()
    assert len(tok) == tokenizers.CLIP_VOCAB_SIZE == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    assert tokenizers.clip_tokenizer(pad_token="!").pad_token_id == 0
    ids = tok([registry_prompt()], padding="max_length", max_length=77, truncation=True).input_ids[0]
    assert len(ids) == 77 and ids[0] == 49406 and max(ids) == 49407
    long_ids = tok(["x " * 200], truncation=True).input_ids[0]
    assert len(long_ids) == 77 and long_ids[-1] == 49407


def registry_prompt() -> str:
    return CellSpec(pipeline="sd-txt2img").prompt


def test_config_files_are_json_the_builder_uses() -> None:
    """Every stem the builder names has a random config, and a tiny one unless a scheduler."""
    for stems in B._STAGE_PARTS.values():
        for stem in stems:
            random_cfg = B.load_config("random", stem)
            tiny_cfg = B.load_config("tiny", stem)
            assert random_cfg["_class_name"] == tiny_cfg["_class_name"]
            is_scheduler = random_cfg["_class_name"].endswith("Scheduler")
            assert (B.CONFIG_DIR / "tiny" / f"{stem}.json").exists() != is_scheduler
    used = {f"{stem}.json" for stems in B._STAGE_PARTS.values() for stem in stems}
    for weights in ("random", "tiny"):
        assert {p.name for p in (B.CONFIG_DIR / weights).glob("*.json")} <= used
    assert os.path.isdir(B.CONFIG_DIR)


def test_if_cascade_stages_run_at_their_share_of_the_cell_size() -> None:
    """One size, one meaning: the cell's size is the cascade's final image; stage I runs at
    1/16 of it and stage II at 1/4 (tiny: 256 -> 16, 64, 256), as the worker reports."""
    built = B.build(tiny_spec("if-cascade"))
    assert (built.spec.height, built.spec.width) == (256, 256)
    assert [(st.name, st.height, st.width) for st in built.stages] == [
        ("I", 16, 16),
        ("II", 64, 64),
        ("upscaler", 256, 256),
    ]
    assert built.stages[0].kwargs["height"] == 16 and built.stages[1].kwargs["height"] == 64
