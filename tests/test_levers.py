"""The second wave's levers in the worker (profiler/worker/apply.py, levers.py, levers_cache.py),
on CPU, on tiny transformers built directly from diffusers' classes.

Each lever is applied and read back from the modules; every "not supported" reason is
checked where it is decided (before the build for what the settings and the machine say,
at apply time for what the model says); CUDA-only decisions run with a monkeypatched GPU
generation. The pipelines are stand-ins with FluxPipeline's loop shape (a ``cache_context``
per denoiser call, ``current_timestep``, the scheduler's step, the stateful caches reset at
the end of a call), so step caches and their counters run as they do in diffusers.

Compiles use backend eager (dynamo without code generation): what the cache x compile
matrix is about is dynamo tracing diffusers' cache hooks, which eager shows in seconds.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from sdtop.pipelines.builders.build import BuiltPipeline, StageRun  # noqa: E402
from sdtop.pipelines.settings import CellSpec  # noqa: E402
from sdtop.profiler.contract.events import CompileStarted, Event  # noqa: E402
from sdtop.profiler.worker import apply, levers  # noqa: E402
from sdtop.profiler.worker.apply import (  # noqa: E402
    Applied,
    ComputedSteps,
    Unsupported,
    apply_attention,
    apply_settings,
    install_hooks,
    is_kernel_unavailable,
    preflight,
)
from sdtop.profiler.worker.compile_watch import CompileWatch  # noqa: E402
from sdtop.profiler.worker.levers_cache import deep_probe, deepest_block  # noqa: E402

STEPS = 8


# --- tiny models and a stand-in pipeline ------------------------------------------------------


def tiny_flux() -> Any:
    torch.manual_seed(0)
    return diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),
    ).eval()


def tiny_sd3() -> Any:
    torch.manual_seed(0)
    return diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        out_channels=4,
    ).eval()


def tiny_qwen() -> Any:
    torch.manual_seed(0)
    return diffusers.QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def flux_inputs() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 16, 4, generator=g),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=g),
        "pooled_projections": torch.randn(1, 32, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_ids": torch.zeros(16, 3),
        "txt_ids": torch.zeros(8, 3),
        "return_dict": False,
    }


class Scheduler:
    def step(self, x: Any) -> Any:
        return x


class Vae(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)


class FluxLikePipe:
    """FluxPipeline's loop: per step ``cache_context("cond")`` around the transformer,
    ``current_timestep`` on 0..1000, the scheduler's step; then the stateful caches reset."""

    def __init__(self, transformer: Any) -> None:
        self.transformer = transformer
        self.scheduler = Scheduler()
        self.vae = Vae()
        self._current_timestep: Any = None

    @property
    def current_timestep(self) -> Any:
        return self._current_timestep

    @property
    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "vae": self.vae, "scheduler": self.scheduler}

    def __call__(self, steps: int = STEPS) -> Any:
        inputs = flux_inputs()
        x = inputs.pop("hidden_states")
        for i in range(steps):
            t = torch.tensor([1000.0 * (1 - i / steps)])
            self._current_timestep = t
            with self.transformer.cache_context("cond"):
                out = self.transformer(hidden_states=x, **{**inputs, "timestep": t / 1000})[0]
            x = self.scheduler.step(x - 0.1 * out)
        self._current_timestep = None
        getattr(self.transformer, "_orig_mod", self.transformer)._reset_stateful_cache()  # maybe_free_model_hooks
        return x


def built_of(spec: CellSpec, pipe: Any, attr: str = "transformer", steps: int = STEPS) -> BuiltPipeline:
    stage = StageRun(
        name="main",
        pipe=pipe,
        kwargs={},
        chain=None,
        compiled=(attr,),
        legacy_callback=False,
        steps=steps,
        batch_size=1,
        height=32,
        width=32,
    )
    return BuiltPipeline(spec=spec, stages=[stage], parameters={})


def flux_spec(**kw: Any) -> CellSpec:
    return CellSpec("flux-txt2img", weights="tiny", steps=STEPS, **kw)


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    """``set_attention_backend`` also sets diffusers' process-wide default backend; dynamo
    keeps compiled code between tests. Both are put back."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    torch._dynamo.reset()
    yield
    _AttentionBackendRegistry.set_active_backend(active)
    torch._dynamo.reset()


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One torch thread: a tiny model's matmuls are microseconds, and on a small shared box
    threads that wait for each other make a 2 ms forward take 400 ms."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pretend a CUDA GPU of a given compute capability; every package present."""

    def set_capability(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(levers, "cuda_capability", lambda device: capability if device.startswith("cuda") else None)

    monkeypatch.setattr(levers, "has_module", lambda name: True)
    return set_capability


def refused(spec: CellSpec) -> str:
    with pytest.raises(Unsupported) as info:
        preflight(spec)
    return str(info.value)


# --- --attention --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (flux_spec(attention="classic"), "classic: attention processors are the UNets' choice"),
        (CellSpec("sd-txt2img", attention="flex"), "valid for UNet pipelines: sdpa, classic, xformers"),
        (CellSpec("sd-txt2img", attention="_flash_3"), "which sd-txt2img's UNets do not use"),
        (CellSpec("sd-txt2img", attention="sage"), "valid for UNet pipelines"),
        (flux_spec(attention="_native_efficient"), "_native_efficient: its kernels run on a CUDA GPU only"),
        (flux_spec(attention="_native_cudnn"), "this cell runs on cpu"),
    ],
)
def test_attention_that_cannot_be_a_choice_here_is_refused_before_the_build(spec: CellSpec, expected: str) -> None:
    assert expected in refused(spec)


def test_the_transformer_refusal_names_the_valid_backends() -> None:
    text = refused(flux_spec(attention="classic"))
    assert "native, _native_flash, _native_efficient, _native_cudnn, _native_math, flex, flash, _flash_3" in text


@pytest.mark.parametrize(
    ("attention", "module", "expected"),
    [
        ("flash", "flash_attn", "flash: flash-attn (FlashAttention 2) is not installed"),
        ("_flash_3", "flash_attn_interface", "_flash_3: FlashAttention 3"),
        ("sage", "sageattention", "sage: sageattention is not installed"),
        ("xformers", "xformers", "xformers: xformers is not installed"),
        ("flex", "torch.nn.attention.flex_attention", "flex: torch"),
    ],
)
def test_a_backend_whose_package_is_missing(
    attention: str, module: str, expected: str, monkeypatch: pytest.MonkeyPatch, gpu: Any
) -> None:
    gpu((9, 0))
    monkeypatch.setattr(levers, "has_module", lambda name: name != module)
    assert refused(flux_spec(attention=attention, device="cuda", dtype="bf16")).startswith(expected)


@pytest.mark.parametrize(
    ("attention", "capability", "dtype", "expected"),
    [
        ("flash", None, "fp32", "flash: its kernels run on a CUDA GPU only; this cell runs on cpu"),
        ("sage", None, "fp32", "sage: its kernels run on a CUDA GPU only"),
        ("xformers", None, "fp32", "xformers: its kernels run on a CUDA GPU only"),
        (
            "flash",
            (7, 5),
            "fp16",
            "flash: needs a GPU of compute capability 8.0 or newer; this one is compute capability 7.5",
        ),
        ("_native_flash", (7, 5), "fp16", "_native_flash: needs a GPU of compute capability 8.0"),
        ("_flash_3", (8, 9), "bf16", "_flash_3: needs a GPU of compute capability 9.0 or newer"),
        ("_flash_3", (10, 0), "bf16", "_flash_3: its kernels are written for compute capability 9.0 (Hopper) only"),
        ("sage", (9, 0), "fp32", "sage: its CUDA kernels take fp16 or bf16 only; this cell is fp32"),
        ("_native_cudnn", (9, 0), "fp32", "_native_cudnn: its CUDA kernels take fp16 or bf16 only"),
        ("flash", (8, 0), "fp16", None),
        ("_flash_3", (9, 0), "bf16", None),
        ("sage", (8, 9), "bf16", None),
        ("xformers", (7, 5), "fp32", None),
        ("_native_efficient", (7, 5), "fp32", None),
        ("flex", None, "fp32", None),  # flex runs on CPU (eagerly)
        ("_native_flash", None, "fp32", None),  # torch's CPU flash takes fp32
    ],
)
def test_gpu_generation_and_dtype(
    attention: str, capability: tuple[int, int] | None, dtype: str, expected: str | None, gpu: Any
) -> None:
    gpu(capability)
    spec = flux_spec(attention=attention, dtype=dtype, device="cuda" if capability else "cpu")
    if expected is None:
        preflight(spec)
    else:
        assert refused(spec).startswith(expected)


def run_flux(pipe: Any) -> Any:
    with torch.inference_mode():
        return pipe(2)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(
    ("attention", "held"), [("native", "native"), ("sdpa", "native"), ("sdpa-math", "_native_math"), ("flex", "flex")]
)
def test_a_transformer_backend_is_set_and_read_back(attention: str, held: str) -> None:
    pipe = FluxLikePipe(tiny_flux())
    spec = flux_spec(attention=attention)
    preflight(spec)
    applied = apply_settings(built_of(spec, pipe), spec)
    assert applied.attention_backends == {"transformer": [held]}
    assert applied.attention_processors == {"transformer": ["FluxAttnProcessor"]}
    assert applied.sdpa_backend == "" and applied.forced is None  # the dispatcher forces its own kernel
    assert run_flux(pipe).shape == (1, 16, 4)


def test_processors_outside_the_dispatcher_get_the_kernel_forced_or_refuse() -> None:
    """SD3's JointAttnProcessor2_0 calls SDPA itself (diffusers 0.42.1): native is what it
    does anyway, a _native_* kernel is forced around the denoiser, anything else cannot
    reach it."""
    spec = CellSpec("sd3-txt2img", weights="tiny", attention="native")
    applied = apply_attention(built_of(spec, FluxLikePipe(tiny_sd3())), spec)
    assert applied.attention_backends == {"transformer": ["native"]}
    assert applied.attention_processors == {"transformer": ["JointAttnProcessor2_0"]}

    spec = CellSpec("sd3-txt2img", weights="tiny", attention="sdpa-math")
    built = built_of(spec, FluxLikePipe(tiny_sd3()))
    applied = apply_attention(built, spec)
    assert applied.attention_backends == {"transformer": ["_native_math"]} and applied.sdpa_backend == "MATH"
    install_hooks(built, spec, applied)
    assert applied.forced is not None

    spec = CellSpec("sd3-txt2img", weights="tiny", attention="flex")
    with pytest.raises(
        Unsupported, match="call torch's SDPA directly, outside diffusers' attention dispatcher"
    ) as info:
        apply_attention(built_of(spec, FluxLikePipe(tiny_sd3())), spec)
    assert "valid here: native, _native_flash, _native_efficient, _native_cudnn, _native_math" in str(info.value)


def test_a_unet_takes_a_dispatcher_spelling_as_its_sdpa_choice() -> None:
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        layers_per_block=1,
        sample_size=8,
    )
    unet.set_default_attn_processor()
    pipe = types.SimpleNamespace(unet=unet)
    spec = CellSpec("sd-txt2img", attention="native")
    applied = apply_attention(built_of(spec, pipe, attr="unet"), spec)
    assert applied.attention_processors == {"unet": ["AttnProcessor2_0"]} and applied.attention_backends == {}
    with pytest.raises(Unsupported, match="valid for UNet pipelines"):
        apply_attention(
            built_of(CellSpec("sd-txt2img", attention="flex"), pipe, attr="unet"),
            CellSpec("sd-txt2img", attention="flex"),
        )


def test_the_kernel_sample_covers_the_native_backends_on_cuda() -> None:
    for attention, sampled in (("native", True), ("_native_flash", True), ("sdpa-cudnn", True), ("flex", False)):
        spec = flux_spec(attention=attention, device="cuda")
        applied = Applied()
        install_hooks(built_of(spec, FluxLikePipe(tiny_flux())), spec, applied)
        assert (applied.probe is not None) is sampled, attention
        assert applied.forced is None


def test_a_mask_the_backend_cannot_take_reads_as_no_kernel() -> None:
    assert is_kernel_unavailable(ValueError("`attn_mask` is not supported for native flash attention"))
    assert is_kernel_unavailable(ValueError("`attn_mask` is not yet supported for Sage attention."))
    assert not is_kernel_unavailable(ValueError("something else"))


# --- --fuse-qkv -----------------------------------------------------------------------------------


def test_fused_qkv_is_read_back_and_computes_the_same() -> None:
    pipe = FluxLikePipe(tiny_flux())
    ref = run_flux(pipe)
    spec = flux_spec(fuse_qkv=True)
    applied = apply_settings(built_of(spec, pipe), spec)
    assert applied.levers == {"fuse_qkv": "fused QKV in 2 of 2 attention layers of transformer"}
    assert all(m.fused_projections for m in pipe.transformer.modules() if hasattr(m, "fused_projections"))
    torch.testing.assert_close(run_flux(pipe), ref, atol=1e-5, rtol=1e-5)


def test_fused_qkv_where_diffusers_fuses_nothing_is_refused() -> None:
    spec = CellSpec("qwen-image", weights="tiny", fuse_qkv=True)
    with pytest.raises(Unsupported, match=r"QwenImageTransformer2DModel has no fused-QKV path .* fused none of its 2"):
        apply_settings(built_of(spec, FluxLikePipe(tiny_qwen())), spec)


def test_fused_qkv_refusals_on_unets() -> None:
    assert "fuse_qkv runs with sdpa attention only" in refused(
        CellSpec("sd-txt2img", attention="classic", fuse_qkv=True)
    )

    # imported by name: diffusers' lazy modules expose a submodule as an attribute only
    # once something imported it, which depended on the order tests ran in
    from diffusers.models.attention_processor import Attention

    class AddedKV(torch.nn.Module):  # what IF's UNets say (their processors have added KV projections)
        def __init__(self) -> None:
            super().__init__()
            self.attn = Attention(8, heads=1, dim_head=8)

        def fuse_qkv_projections(self) -> None:
            raise ValueError("`fuse_qkv_projections()` is not supported for models having added KV projections.")

    with pytest.raises(Unsupported, match=r"fuse_qkv: AddedKV: `fuse_qkv_projections\(\)` is not supported"):
        levers.fuse_qkv([("I.unet", None, "unet", AddedKV())])


# --- --quant ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("quant", ["int8wo", "int8dq"])
def test_int8_quantises_every_linear_of_a_tiny_fp32_transformer_on_cpu(quant: str) -> None:
    pytest.importorskip("torchao")
    pipe = FluxLikePipe(tiny_flux())
    linears = sum(isinstance(m, torch.nn.Linear) for m in pipe.transformer.modules())
    ref = run_flux(pipe)
    spec = flux_spec(quant=quant)
    preflight(spec)
    applied = apply_settings(built_of(spec, pipe), spec)
    assert applied.levers == {"quant": f"{quant} on {linears} Linear layers of transformer"}
    out = run_flux(pipe)
    assert torch.isfinite(out).all() and (out - ref).abs().max() < 0.1  # close, not equal: int8


@pytest.mark.parametrize(
    ("quant", "capability", "expected"),
    [
        ("fp8dq", None, "fp8dq: torchao's float8 kernels need a CUDA GPU of compute capability 8.9 or newer"),
        ("fp8wo", (8, 6), "fp8wo: torchao's float8 kernels need compute capability 8.9 or newer; this GPU is"),
        ("fp8dq", (8, 9), None),
        ("fp8wo", (9, 0), None),
        ("int8wo", None, None),
    ],
)
def test_float8_needs_ada_or_newer(
    quant: str, capability: tuple[int, int] | None, expected: str | None, gpu: Any
) -> None:
    pytest.importorskip("torchao")
    gpu(capability)
    spec = flux_spec(quant=quant, device="cuda" if capability else "cpu", dtype="bf16" if capability else "fp32")
    if expected is None:
        preflight(spec)
    else:
        assert refused(spec).startswith(expected)


def test_torchao_missing_mismatched_or_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = flux_spec(quant="int8wo")
    monkeypatch.setattr(levers, "has_module", lambda name: name != "torchao")
    assert refused(spec) == "torchao is not installed: pip install 'sdtop[quant]'"
    monkeypatch.setattr(levers, "has_module", lambda name: True)

    mismatched = types.ModuleType("torchao")
    mismatched._skip_reason = (  # type: ignore[attr-defined]
        "Skipping import of cpp extensions due to incompatible torch version. Please upgrade to torch >= 2.11.0"
    )
    monkeypatch.setitem(sys.modules, "torchao", mismatched)
    assert "does not match torch" in refused(spec) and "incompatible torch version" in refused(spec)

    real = importlib.import_module

    def broken(name: str, package: str | None = None) -> Any:
        if name == "torchao":
            raise OSError("undefined symbol: _ZN3c10...")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", broken)
    assert "cannot be imported beside torch" in refused(spec) and "undefined symbol" in refused(spec)


# --- --compile-scope regional --------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


def test_regional_compile_compiles_the_repeated_blocks_in_place() -> None:
    pipe = FluxLikePipe(tiny_flux())
    spec = flux_spec(compile_mode="default", compile_backend="eager", compile_scope="regional")
    applied = apply_settings(built_of(spec, pipe), spec)
    assert applied.compiled == ["transformer"]
    assert applied.levers == {"compile_scope": "regional: FluxTransformerBlock x1, FluxSingleTransformerBlock x1"}
    assert isinstance(pipe.transformer, diffusers.FluxTransformer2DModel)  # not wrapped: its blocks are
    blocks = [*pipe.transformer.transformer_blocks, *pipe.transformer.single_transformer_blocks]
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert getattr(pipe.transformer, "_compiled_call_impl", None) is None


@pytest.mark.e2e
def test_regional_compiles_are_reported_as_the_transformers() -> None:
    """The compile watch names compiles by the module being called: the transformer runs
    eagerly around its compiled blocks, so every block compile is the transformer's."""
    pipe = FluxLikePipe(tiny_flux())
    spec = flux_spec(compile_mode="default", compile_backend="eager", compile_scope="regional")
    apply_settings(built_of(spec, pipe), spec)
    events = Recorder()
    watch = CompileWatch(events, 0, {"transformer": pipe.transformer}, backend="eager").install()
    watch.on_call(0)
    run_flux(pipe)
    watch.close()
    starts = [e for e in events.events if isinstance(e, CompileStarted)]
    assert starts and {e.module for e in starts} == {"transformer"}


def test_a_transformer_without_declared_blocks_compiles_its_stacked_blocks() -> None:
    """SD3 declares no ``_repeated_blocks`` in diffusers 0.42.1: its JointTransformerBlocks
    are compiled one by one, as compile_repeated_blocks would, and the words say how."""
    spec = CellSpec(
        "sd3-txt2img", weights="tiny", compile_mode="default", compile_backend="eager", compile_scope="regional"
    )
    model = tiny_sd3()
    applied = apply_settings(built_of(spec, FluxLikePipe(model)), spec)
    blocks = [m for m in model.modules() if type(m).__name__ == "JointTransformerBlock"]
    assert len(blocks) >= 2 and all(b._compiled_call_impl is not None for b in blocks)
    assert model._compiled_call_impl is None  # the model itself stays a plain module
    assert applied.levers["compile_scope"] == (
        f"regional: JointTransformerBlock x{len(blocks)} (stacked blocks; none declared)"
    )
    assert applied.compiled == ["transformer"]


def test_a_unet_without_declared_blocks_is_refused() -> None:
    spec = CellSpec("sd-controlnet", compile_mode="default", compile_backend="eager", compile_scope="regional")
    controlnet = diffusers.ControlNetModel(
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        conditioning_embedding_out_channels=(16, 32),
    )
    with pytest.raises(Unsupported, match=r"ControlNetModel \(controlnet\) declares no repeated blocks"):
        levers.compile_regional([("controlnet", None, "controlnet", controlnet)], spec)


def test_regional_compile_of_a_unet_without_its_declared_blocks_is_refused() -> None:
    """IF's UNets are UNet2DConditionModel, which declares BasicTransformerBlock, yet
    their attention blocks hold none."""
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type=None,
        layers_per_block=1,
        sample_size=8,
    )
    spec = CellSpec("if-cascade", compile_mode="default", compile_backend="eager", compile_scope="regional")
    with pytest.raises(Unsupported, match="declares repeated blocks BasicTransformerBlock but holds none of them"):
        levers.compile_regional([("I.unet", None, "unet", unet)], spec)


def test_repeated_blocks_are_counted_per_class() -> None:
    assert dict(levers.repeated_blocks(tiny_flux())) == {"FluxTransformerBlock": 1, "FluxSingleTransformerBlock": 1}
    assert dict(levers.repeated_blocks(tiny_sd3())) == {}


# --- --cache ------------------------------------------------------------------------------------------


def cached_calls(spec: CellSpec, calls: int = 2) -> tuple[Applied, list[int | None]]:
    pipe = FluxLikePipe(tiny_flux())
    built = built_of(spec, pipe)
    preflight(spec)
    applied = apply_settings(built, spec)
    computed = []
    for _ in range(calls):
        run_flux_steps(pipe)
        computed.append(applied.take_computed("main"))
    return applied, computed


def run_flux_steps(pipe: Any) -> None:
    with torch.inference_mode():
        pipe(STEPS)


def test_fbc_with_a_huge_threshold_reuses_most_steps_and_a_tiny_one_computes_all() -> None:
    applied, computed = cached_calls(flux_spec(cache="fbc:0.99"))
    assert applied.levers == {"cache": "fbc:0.99: FirstBlockCache, threshold 0.99 on transformer (2 modules hooked)"}
    assert computed == [1, 1]  # the first step computes; every later one reuses (the state resets per call)
    _, computed = cached_calls(flux_spec(cache="fbc:1e-06"))
    assert computed == [STEPS, STEPS]


@pytest.mark.parametrize(
    ("cache", "expected", "words"),
    [
        ("taylorseer", 4, "TaylorSeer, order 1: all of the first 3 steps, then one in 5 computed"),
        ("magcache", None, "MagCache with diffusers' FLUX.1 ratios"),
        ("faster", None, "FasterCache, attention reused every other step for timesteps in (-1, 681)"),
        ("pab", None, "Pyramid Attention Broadcast, attention reused every other step for timesteps in (100, 800)"),
    ],
)
def test_each_cache_runs_and_counts_what_it_computed(cache: str, expected: int | None, words: str) -> None:
    applied, computed = cached_calls(flux_spec(cache=cache))
    assert words in applied.levers["cache"]
    assert computed[0] == computed[1]
    assert computed[0] is not None and 1 <= computed[0] < STEPS
    if expected is not None:
        assert computed[0] == expected  # steps 0-2, then step 4 (TaylorSeer's schedule)


def test_no_cache_no_counter() -> None:
    applied, computed = cached_calls(flux_spec())
    assert applied.computed == {} and computed == [None, None] and applied.levers == {}


class TwoBranchPipe(FluxLikePipe):
    """Qwen-Image's and Wan's loop: the transformer once per guidance branch, each call
    in its own cache context."""

    def __call__(self, steps: int = STEPS) -> Any:
        inputs = flux_inputs()
        x = inputs.pop("hidden_states")
        for i in range(steps):
            t = torch.tensor([1000.0 * (1 - i / steps)])
            self._current_timestep = t
            outs = []
            for branch in ("cond", "uncond"):
                with self.transformer.cache_context(branch):
                    outs.append(self.transformer(hidden_states=x, **{**inputs, "timestep": t / 1000})[0])
            x = self.scheduler.step(x - 0.1 * (outs[1] + 2 * (outs[0] - outs[1])))
        self._current_timestep = None
        self.transformer._reset_stateful_cache()
        return x


@pytest.mark.parametrize("cache", ["pab", "faster"])
def test_attention_caches_with_one_state_refuse_per_branch_calls(cache: str) -> None:
    """PAB and FasterCache keep one state per attention layer (diffusers 0.42.1), so with a
    call per guidance branch the uncond call would reuse the cond call's attention."""
    pipe = TwoBranchPipe(tiny_flux())
    spec = flux_spec(cache=cache)
    apply_settings(built_of(spec, pipe), spec)
    with pytest.raises(
        Unsupported, match=r"calls its transformer once per guidance branch \(cache contexts cond, uncond"
    ):
        run_flux_steps(pipe)


def test_state_per_context_caches_count_both_branches() -> None:
    pipe = TwoBranchPipe(tiny_flux())
    spec = flux_spec(cache="taylorseer")
    applied = apply_settings(built_of(spec, pipe), spec)
    run_flux_steps(pipe)
    assert applied.computed["main"].forwards == 2 * STEPS
    assert applied.take_computed("main") == 4  # each branch on TaylorSeer's schedule


def test_taylorseer_names_attention_layers_its_default_patterns_miss() -> None:
    """Wan's attention layers are blocks.N.attn1/attn2; TaylorSeer's default patterns
    ("^blocks.*attn", fully matched) miss them, so they are named."""
    from sdtop.profiler.worker.levers_cache import enable_cache

    torch.manual_seed(0)
    wan = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        text_dim=32,
        freq_dim=32,
        ffn_dim=64,
        num_layers=2,
        rope_max_seq_len=32,
    )
    spec = CellSpec("wan-t2v", weights="tiny", cache="taylorseer")
    words, counters = enable_cache(
        [("transformer", FluxLikePipe(wan), "transformer", wan)], spec, {"main": 4}, {"transformer": "main"}
    )
    assert "(attention layers named explicitly, e.g. blocks.0.attn1" in words and "(4 modules hooked)" in words
    assert counters["main"].probe is wan.blocks[-1].attn1.to_q


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            CellSpec("sd-txt2img", cache="fbc:0.2"),
            "cache fbc:0.2: diffusers' step caches (enable_cache) hook transformer blocks",
        ),
        (CellSpec("qwen-image", weights="tiny", cache="magcache"), "diffusers 0.42.1 ships them for FLUX.1 only"),
        (
            flux_spec(cache="fbc:0.2", compile_mode="default", compile_backend="eager"),
            "cache fbc:0.2 with torch.compile(fullgraph=True): FirstBlockCache decides each step on the host",
        ),
        (
            flux_spec(cache="pab", compile_mode="default", compile_scope="regional"),
            "data-dependent branching), a graph break fullgraph forbids; run it with --no-fullgraph",
        ),
    ],
)
def test_cache_refusals(spec: CellSpec, expected: str) -> None:
    assert expected in refused(spec)


def test_a_model_without_enable_cache_is_refused() -> None:
    spec = CellSpec("sd3-txt2img", weights="tiny", cache="fbc:0.2")
    with pytest.raises(Unsupported, match="SD3Transformer2DModel has no enable_cache in diffusers"):
        apply_settings(built_of(spec, FluxLikePipe(tiny_sd3())), spec)


def test_the_probe_is_inside_the_deepest_blocks_attention_fused_or_not() -> None:
    model = tiny_flux()
    block = deepest_block(model)
    assert block is model.single_transformer_blocks[-1]
    assert deep_probe(block) is block.attn.to_q
    model.fuse_qkv_projections()
    assert deep_probe(block) is block.attn.to_qkv


def test_computed_steps_arithmetic() -> None:
    counter = ComputedSteps(10)
    assert counter.take() is None
    counter.forwards, counter.deep = 20, 10  # CFG: two forwards a step, half of them computed
    assert counter.take() == 5
    assert (counter.forwards, counter.deep) == (0, 0)


def matrix_cells() -> list[tuple[CellSpec, str]]:
    """``--compile none,default --compile-backend eager --compile-scope whole,regional
    --cache none,fbc:0.2`` (fullgraph on), and the compiled caches once more with
    --no-fullgraph: the verdict each cell must get."""
    return [
        (flux_spec(), "ok"),
        (flux_spec(cache="fbc:0.2"), "ok"),
        (flux_spec(compile_mode="default", compile_backend="eager"), "ok"),
        (flux_spec(compile_mode="default", compile_backend="eager", compile_scope="regional"), "ok"),
        (flux_spec(compile_mode="default", compile_backend="eager", cache="fbc:0.2"), "fullgraph"),
        (
            flux_spec(compile_mode="default", compile_backend="eager", compile_scope="regional", cache="fbc:0.2"),
            "fullgraph",
        ),
        (flux_spec(compile_mode="default", compile_backend="eager", cache="fbc:0.2", fullgraph=False), "ok"),
        (
            flux_spec(
                compile_mode="default",
                compile_backend="eager",
                compile_scope="regional",
                cache="fbc:0.2",
                fullgraph=False,
            ),
            "ok",
        ),
    ]


def test_cache_x_compile_verdicts_before_the_build() -> None:
    for spec, verdict in matrix_cells():
        if verdict == "ok":
            preflight(spec)
        else:
            assert "with torch.compile(fullgraph=True): FirstBlockCache decides each step on the host" in refused(spec)


@pytest.mark.e2e
def test_cache_x_compile_matrix_is_ok_or_truly_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell of :func:`matrix_cells` runs two calls, or is refused with the reason torch
    gives when it is tried anyway (measured: "Skip inlining `torch.compiler.disable()`d
    function" under whole and regional compile alike)."""
    for spec, verdict in matrix_cells():
        torch._dynamo.reset()
        if verdict == "fullgraph":
            assert "graph break fullgraph forbids" in refused(spec)
            pipe = FluxLikePipe(tiny_flux())
            with monkeypatch.context() as m:  # apply it anyway, to see what torch says
                m.setattr(apply, "cache_problem", lambda spec: None)
                apply_settings(built_of(spec, pipe), spec)
            with pytest.raises(Exception, match=r"torch\.compiler\.disable"):
                run_flux_steps(pipe)
            continue
        applied, computed = cached_calls(spec)
        if spec.cache == "none" or spec.compiled:  # a compiled cell's steps are not counted
            assert computed == [None, None], spec.label()
            assert spec.cache == "none" or applied.levers["cache"].endswith("not counted under torch.compile")
        else:
            assert computed == [STEPS, STEPS], spec.label()  # tiny random weights: fbc:0.2 reuses nothing


# --- --offload ----------------------------------------------------------------------------------------


class Model(torch.nn.Module):
    """A model that records the offload calls diffusers would get."""

    def __init__(self, log: list[Any]) -> None:
        super().__init__()
        self.log = log
        self.linear = torch.nn.Linear(2, 2)

    def enable_group_offload(self, **kwargs: Any) -> None:
        self.log.append(("enable_group_offload", kwargs))


class OffloadPipe:
    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.transformer = Model(log)
        self.text_encoder = torch.nn.Linear(2, 2)
        self.scheduler = Scheduler()

    @property
    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "text_encoder": self.text_encoder, "scheduler": self.scheduler}

    def enable_model_cpu_offload(self, device: str) -> None:
        self.log.append(("enable_model_cpu_offload", device))


def test_offload_on_a_cpu_cell_is_refused() -> None:
    for how in ("model", "group"):
        assert (
            refused(flux_spec(offload=how))
            == "offload moves weights between CPU memory and a GPU; this cell runs on cpu"
        )


def test_model_offload_hands_the_pipeline_its_device(gpu: Any) -> None:
    gpu((9, 0))
    log: list[Any] = []
    spec = flux_spec(offload="model", device="cuda", attention="flex")
    preflight(spec)
    applied = Applied()
    from sdtop.profiler.worker.apply import apply_offload

    apply_offload(built_of(spec, OffloadPipe(log)), spec, applied)
    assert log == [("enable_model_cpu_offload", "cuda")]
    assert applied.levers == {
        "offload": "model offload: each model moves to cuda when called (enable_model_cpu_offload)"
    }


def test_group_offload_streams_the_denoiser_and_the_other_models(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers.hooks

    log: list[Any] = []
    monkeypatch.setattr(
        diffusers.hooks, "apply_group_offloading", lambda model, **kw: log.append((type(model).__name__, kw))
    )
    spec = flux_spec(offload="group", device="cuda")
    text = levers.offload([(OffloadPipe(log), ("transformer",))], spec)
    cuda = torch.device("cuda")
    assert log == [
        (
            "enable_group_offload",
            {
                "offload_device": torch.device("cpu"),
                "onload_device": cuda,
                "offload_type": "leaf_level",
                "use_stream": True,
            },
        ),
        ("Linear", {"onload_device": cuda, "offload_type": "leaf_level", "use_stream": True}),
    ]
    assert text == "group offload (leaf level, CUDA streams) of transformer, text_encoder"


# --- memory format and the levers' words ---------------------------------------------------------


def test_channels_last_only_where_it_fits() -> None:
    conv2d, conv3d = torch.nn.Conv2d(2, 2, 1), torch.nn.Conv3d(2, 2, 1)
    assert levers.channels_last_fits(conv2d)
    assert not levers.channels_last_fits(conv3d)  # Wan's patch embedding: channels_last refuses 5-D
    assert not levers.channels_last_fits(tiny_flux())  # nothing 4-D: nothing to gain
    spec = flux_spec()
    applied = apply_settings(built_of(spec, FluxLikePipe(tiny_flux())), spec)
    assert applied.channels_last == []


def test_one_lever_entry_per_lever_that_is_not_off() -> None:
    pytest.importorskip("torchao")
    spec = flux_spec(fuse_qkv=True, quant="int8wo", cache="fbc:0.5")
    preflight(spec)
    applied = apply_settings(built_of(spec, FluxLikePipe(tiny_flux())), spec)
    assert sorted(applied.levers) == ["cache", "fuse_qkv", "quant"]
    assert (
        applied.levers["quant"].startswith("int8wo on ") and "Linear layers of transformer" in applied.levers["quant"]
    )
