"""Issue 12's GPU levers, checked on CPU: a forced SDPA kernel holds around the denoisers'
forward only (never the VAE), also when a forward raises; the kernel-name mapping of the
profiled step; one CUDA-graph step mark per step when several modules are compiled.

The pipelines here are stand-ins (a loop of ControlNet, UNet and scheduler steps, then a
VAE) with the attributes the worker reads, so nothing compiles with inductor; the real
pipelines take these paths in the e2e tests and on the GPU script.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sdtop.pipelines.builders.build import BuiltPipeline, StageRun
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.worker import cudagraphs
from sdtop.profiler.worker.apply import Applied, install_hooks, sampled_kernel
from sdtop.profiler.worker.attention import (
    ForcedKernel,
    KernelProbe,
    kernel_family,
    scope_kernel,
    sdpa_backend_context,
)
from sdtop.profiler.worker.cudagraphs import StepMarker, needs_step_marks
from sdtop.profiler.worker.timing import on_step_boundary

Q = torch.randn(1, 2, 8, 16)


def backends() -> tuple[bool, bool, bool, bool]:
    """(flash, efficient, math, cudnn): what SDPA may use right now."""
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(), b.cudnn_sdp_enabled())


DEFAULT = backends()


class Recorder(torch.nn.Module):
    """A module that calls SDPA and records the backends it saw, or raises when told."""

    def __init__(self, name: str, log: list[tuple[str, tuple[bool, bool, bool, bool]]]) -> None:
        super().__init__()
        self.name = name
        self.log = log
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append((self.name, backends()))
        if self.fail:
            raise ValueError(f"{self.name} failed")
        return F.scaled_dot_product_attention(x, x, x)


class Attention(torch.nn.Module):
    """SDPA alone: what dynamo traces in the compiled tests."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)


class Scheduler:
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(("step", None))
        return x


class FakePipe:
    """A denoising loop as diffusers writes it: per step the ControlNet (if any), the
    UNet, then ``scheduler.step``; after the loop the VAE."""

    def __init__(self, log: list[Any], *, controlnet: bool = False, unet_calls: int = 1) -> None:
        self.unet = Recorder("unet", log)
        self.controlnet = Recorder("controlnet", log) if controlnet else None
        self.vae = Recorder("vae", log)
        self.scheduler = Scheduler(log)
        self.unet_calls = unet_calls

    def __call__(self, steps: int) -> torch.Tensor:
        x = Q
        for _ in range(steps):
            if self.controlnet is not None:
                x = self.controlnet(x)
            for _ in range(self.unet_calls):
                x = self.unet(x)
            x = self.scheduler.step(x)
        return self.vae(x)


def built_of(spec: CellSpec, *stages: tuple[str, FakePipe]) -> BuiltPipeline:
    runs = [
        StageRun(
            name=name,
            pipe=pipe,
            kwargs={},
            chain=None,
            compiled=(("controlnet", "unet") if pipe.controlnet is not None else ("unet",)),
            legacy_callback=False,
            steps=3,
            batch_size=1,
            height=64,
            width=64,
        )
        for name, pipe in stages
    ]
    return BuiltPipeline(spec=spec, stages=runs, parameters={})


def install(spec: CellSpec, *stages: tuple[str, FakePipe], compiled: list[str] | None = None) -> Applied:
    applied = Applied(compiled=list(compiled or []))
    install_hooks(built_of(spec, *stages), spec, applied)
    return applied


# --- the forced kernel is the denoisers' only -------------------------------------------------


@pytest.mark.parametrize(
    ("attention", "inside"),
    [
        ("sdpa-math", (False, False, True, False)),
        ("sdpa-flash", (True, False, False, False)),
    ],
)
def test_the_forced_kernel_holds_in_the_denoisers_and_not_in_the_vae(
    attention: str, inside: tuple[bool, bool, bool, bool]
) -> None:
    log: list[Any] = []
    pipe = FakePipe(log, controlnet=True)
    install(CellSpec("sd-controlnet", attention=attention), ("main", pipe))
    pipe(2)
    seen = {name: b for name, b in log if name != "step"}
    assert [name for name, _ in log] == ["controlnet", "unet", "step", "controlnet", "unet", "step", "vae"]
    assert seen["controlnet"] == seen["unet"] == inside
    assert seen["vae"] == DEFAULT
    assert backends() == DEFAULT


def test_a_kernel_that_cannot_run_fails_in_the_denoiser_and_the_vae_still_runs() -> None:
    """On CPU only math and flash exist: forced EFFICIENT fails in the UNet as on a card
    (the cell is "not supported"), and the VAE's attention, outside the scope, runs."""
    log: list[Any] = []
    pipe = FakePipe(log)
    install(CellSpec("sd-txt2img", attention="sdpa-efficient"), ("main", pipe))
    with pytest.raises(RuntimeError, match="No viable backend"):
        pipe.unet(Q)
    assert backends() == DEFAULT
    assert pipe.vae(Q).shape == Q.shape


def test_a_failing_forward_leaves_the_kernel_forced_nowhere() -> None:
    log: list[Any] = []
    pipe = FakePipe(log, controlnet=True)
    applied = install(CellSpec("sd-controlnet", attention="sdpa-math"), ("main", pipe))
    pipe.unet.fail = True
    with pytest.raises(ValueError, match="unet failed"):
        pipe(1)
    assert backends() == DEFAULT
    assert applied.forced is not None and applied.forced.open == []
    pipe.unet.fail = False
    pipe(1)  # and the next call forces it again
    assert dict((n, b) for n, b in log if n == "unet")["unet"] == (False, False, True, False)


def test_no_hooks_without_a_forced_kernel_on_cpu() -> None:
    log: list[Any] = []
    pipe = FakePipe(log)
    applied = install(CellSpec("sd-txt2img", attention="sdpa"), ("main", pipe))
    assert applied.forced is applied.probe is applied.marker is None
    assert applied.hooks == []
    assert sampled_kernel(pipe, "main") == ""


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["torch.compile", "module.compile"])
def test_the_scope_holds_around_a_compiled_call(how: str) -> None:
    """The hooks go on what the pipeline calls: ``torch.compile``'s wrapper (hooks run
    outside the compiled frame) or, compiled in place, the compiled call wrapped. Forced
    EFFICIENT fails while dynamo traces (so the kernel is forced there), and the flags are
    back afterwards; forced MATH runs."""
    torch._dynamo.reset()
    for name, ok in (("EFFICIENT_ATTENTION", False), ("MATH", True)):
        module: torch.nn.Module = Attention()
        if how == "torch.compile":
            called: torch.nn.Module = torch.compile(module, backend="eager", fullgraph=True)  # type: ignore[assignment]
        else:
            module.compile(backend="eager", fullgraph=True)
            called = module
        scope = ForcedKernel(sdpa_backend_context(name))
        scope_kernel(called, scope)
        if ok:
            assert called(Q).shape == Q.shape
        else:
            with pytest.raises(RuntimeError, match="No viable backend"):
                called(Q)
        assert backends() == DEFAULT and scope.open == []
    torch._dynamo.reset()


# --- which kernel ran ---------------------------------------------------------------------------

CONV = [
    "aten::conv2d",
    "aten::cudnn_convolution",
    "sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64_warpgroupsize1x1x1"
    "_execute_kernel__5x_cudnn",
    "void cudnn::engines_precompiled::nchwToNhwcKernel<__half, __half, float, false, true, "
    "(cudnnKernelDataType_t)0>(cudnn::engines_precompiled::nchw2nhwc_params_t<float>, __half const*, __half*)",
    "void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<"
    "at::native::CUDAFunctor_add<c10::Half> >(at::TensorIteratorBase&, "
    "at::native::CUDAFunctor_add<c10::Half> const&)::{lambda(int)#1}>(int, ...)",
    "aten::scaled_dot_product_attention",
]
FLASH = [
    "aten::_scaled_dot_product_flash_attention",
    "aten::_flash_attention_forward",
    "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 64, 4, false, false, cutlass::half_t, "
    "Flash_kernel_traits<64, 128, 64, 4, cutlass::half_t> >, false, true, false, false, true, true, false, false>"
    "(FLASH_NAMESPACE::Flash_fwd_params)",
]
EFFICIENT = [
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_efficient_attention_forward",
    "fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::half_t, "
    "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)",
]
CUDNN = [
    "aten::_scaled_dot_product_cudnn_attention",
    "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_kernel0_0",
]
MATH = [
    "aten::_scaled_dot_product_attention_math",
    "aten::bmm",
    "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
    "void (anonymous namespace)::softmax_warp_forward<c10::Half, c10::Half, float, 7, false, false>"
    "(c10::Half*, c10::Half const*, int, int, int, bool const*, int, bool)",
]


@pytest.mark.parametrize(
    ("names", "family"),
    [
        (CONV + FLASH, "flash"),
        (CONV + EFFICIENT, "efficient"),
        (CONV + CUDNN, "cudnn"),  # a cuDNN SDPA kernel named "...flash_fprop..." is cuDNN's
        (CONV + MATH, "math"),
        ([*FLASH[2:], "triton_poi_fused_add_convolution_0"], "flash"),  # a replayed CUDA graph: kernels only
        (EFFICIENT[2:], "efficient"),
        (CUDNN[1:], "cudnn"),
        (["triton_per_fused__softmax_mul_3", "extern_kernels.bmm", *CONV[2:4]], "math"),  # compiled math
        (CONV + FLASH + EFFICIENT, "flash+efficient"),
        (CONV, None),  # convolutions run on cuDNN: not attention
        ([], None),
    ],
)
def test_kernel_family(names: list[str], family: str | None) -> None:
    assert kernel_family(names) == family
    assert kernel_family(iter(reversed(names))) == family


class FakeProfile:
    def __init__(self, names: list[str], log: list[str]) -> None:
        self.names = names
        self.log = log

    def start(self) -> None:
        self.log.append("start")

    def stop(self) -> None:
        self.log.append("stop")


def test_the_probe_samples_one_step_per_stage_and_the_sampling_call_reports_it() -> None:
    log: list[str] = []
    probe = KernelProbe(
        sample_step=1,
        profile=lambda: FakeProfile(CONV + FLASH, log),
        names_of=lambda prof: prof.names,
    )
    for stage in ("I", "II"):
        for _step in range(3):
            probe.on_denoiser(stage)
            log.append(f"{stage} denoise")
            probe.on_denoiser(stage)  # a second module of the same step: no second start
            probe.on_step_end(stage)
        assert probe.take(stage) == "flash"
        assert probe.take(stage) == ""  # once: later calls carry nothing
    assert log == [
        "I denoise",
        "start",
        "I denoise",
        "stop",
        "I denoise",
        "II denoise",
        "start",
        "II denoise",
        "stop",
        "II denoise",
    ]


def test_a_profiler_that_fails_leaves_the_column_empty() -> None:
    def refuse() -> Any:
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    probe = KernelProbe(sample_step=0, profile=refuse)
    probe.on_denoiser("main")
    probe.on_step_end("main")
    probe.on_denoiser("main")  # sampled once, even when the sample failed
    assert probe.take("main") == "" and probe.running == {}


def test_the_probe_rides_the_pipeline_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed for SDPA attention on CUDA (hooks only: the stand-in runs on CPU), fed by
    the denoisers' pre-hooks and the scheduler's steps."""
    log: list[Any] = []
    pipe = FakePipe(log, controlnet=True)
    applied = install(CellSpec("sd-controlnet", attention="sdpa", device="cuda"), ("main", pipe))
    probe = applied.probe
    assert probe is not None and applied.forced is None
    events: list[str] = []
    probe.profile = lambda: FakeProfile(CONV + EFFICIENT, events)
    probe.names_of = lambda prof: prof.names
    pipe(4)
    assert events == ["start", "stop"]
    assert sampled_kernel(pipe, "main") == "efficient"
    assert sampled_kernel(pipe, "main") == ""


# --- CUDA-graph step marks -------------------------------------------------------------------


@pytest.fixture
def marks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    out: list[int] = []
    monkeypatch.setattr(cudagraphs, "_mark_step_begin", lambda: out.append(1))
    return out


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_two_compiled_modules_mark_each_step_once(mode: str, marks: list[int]) -> None:
    log: list[Any] = []
    pipe = FakePipe(log, controlnet=True)
    spec = CellSpec("sd-controlnet", compile_mode=mode)
    applied = install(spec, ("main", pipe), compiled=["controlnet", "unet"])
    assert applied.marker is not None
    pipe(5)
    assert len(marks) == 5
    pipe(3)  # the next call: its first step is marked too
    assert len(marks) == 8


def test_a_module_called_twice_in_a_step_marks_once(marks: list[int]) -> None:
    log: list[Any] = []
    pipe = FakePipe(log, controlnet=True, unet_calls=2)
    install(CellSpec("sd-controlnet", compile_mode="reduce-overhead"), ("main", pipe), compiled=["controlnet", "unet"])
    pipe(4)
    assert len(marks) == 4


def test_a_cascade_marks_each_step_of_each_stage(marks: list[int]) -> None:
    log: list[Any] = []
    stages = [(name, FakePipe(log)) for name in ("I", "II", "upscaler")]
    install(
        CellSpec("if-cascade", compile_mode="reduce-overhead"), *stages, compiled=["I.unet", "II.unet", "upscaler.unet"]
    )
    for steps, (_name, pipe) in zip((3, 2, 4), stages, strict=True):
        pipe(steps)
    assert len(marks) == 9


@pytest.mark.parametrize(
    ("mode", "backend", "compiled"),
    [
        ("reduce-overhead", "inductor", ["unet"]),  # one compiled module
        ("default", "inductor", ["controlnet", "unet"]),  # no CUDA graphs
        ("max-autotune-no-cudagraphs", "inductor", ["controlnet", "unet"]),
        ("reduce-overhead", "eager", ["controlnet", "unet"]),  # mode is inductor's only
        ("none", "inductor", []),
    ],
)
def test_no_marks_without_several_cuda_graph_modules(
    mode: str, backend: str, compiled: list[str], marks: list[int]
) -> None:
    log: list[Any] = []
    pipe = FakePipe(log, controlnet=True)
    applied = install(
        CellSpec("sd-controlnet", compile_mode=mode, compile_backend=backend), ("main", pipe), compiled=compiled
    )
    pipe(3)
    assert applied.marker is None and marks == []


def test_needs_step_marks() -> None:
    assert needs_step_marks("reduce-overhead", "inductor", 2)
    assert needs_step_marks("max-autotune", "inductor", 3)
    assert not needs_step_marks("reduce-overhead", "inductor", 1)
    assert not needs_step_marks("default", "inductor", 2)


def test_the_real_mark_is_torchs_and_harmless_on_cpu() -> None:
    marker = StepMarker()
    marker.before_compiled_call()
    assert marker.marks == 1 and not torch.cuda.is_initialized()


def test_a_shared_scheduler_is_wrapped_once() -> None:
    log: list[Any] = []
    pipe = FakePipe(log)
    other = FakePipe(log)
    other.scheduler = pipe.scheduler
    seen: list[str] = []
    listeners: list[Callable[[], None]] = [lambda: seen.append("a"), lambda: seen.append("b")]
    assert on_step_boundary(pipe, listeners[0])  # type: ignore[arg-type]
    assert on_step_boundary(other, listeners[1])  # type: ignore[arg-type]
    pipe(1)
    assert seen == ["a", "b"]
    assert not on_step_boundary(object(), listeners[0])  # type: ignore[arg-type]
