"""``--profile``'s worker half (profiler/worker/profiling.py): the op-family table, idle time,
the FLOP counts against torch's own FlopCounterMode, the profiled call's files, and (e2e)
``sdtop run --profile`` on tiny SD 1.5 and FLUX.

Everything but the e2e tests runs in this process on CPU: synthetic traces for the
arithmetic, and a tiny SD 1.5 UNet and a tiny FLUX transformer called directly (no
pipeline) for the FLOP counts, about a second each."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from sdtop.profiler.contract.events import OP_FAMILIES, CallFinished, Log, PhaseEnded, ProfileSummary
from sdtop.profiler.worker import profiling, torch_private
from sdtop.profiler.worker.profiling import DeviceEvent, Op, Trace
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread (as tests/test_pipelines_build.py): these tests check counts, not
    speed, and two spinning OpenMP threads on a shared 2-core box made tiny forwards 10-30x
    slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the family table: one CUDA kernel name and one CPU op name per family (at least) ----------

FAMILY_CASES = [
    # attention: fused SDPA kernels of each backend, their ops, classic attention's ops
    (
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 64, 4>, true>(Flash_fwd_params)",
        "attention",
    ),
    (
        "fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::half_t>::Params)",
        "attention",
    ),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64_4x1x1_cga1x1x1", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_efficient_attention_forward", "attention"),
    ("aten::baddbmm", "attention"),
    ("aten::bmm", "attention"),
    ("void (anonymous namespace)::softmax_warp_forward<c10::Half, c10::Half, float, 7, false, false>", "attention"),
    # gemm: cuBLAS (classic and nvjet), cutlass, the matmul ops
    (
        "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
        "gemm",
    ),
    ("nvjet_hsh_192x128_64x4_1x2_h_bz_coopA_NTN", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_f16_s16816gemm_relu_f16_256x128_32x3_nn_align8>(Params)", "gemm"),
    ("ampere_sgemm_128x64_nn", "gemm"),
    ("aten::addmm", "gemm"),
    ("aten::mm", "gemm"),
    ("aten::linear", "gemm"),
    ("triton_tem_fused_mm_0", "gemm"),
    # conv: cuDNN's implicit-gemm kernels are conv, not gemm; the conv ops
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x64x64_warpgroupsize1x1x1", "conv"),
    ("void cudnn::winograd_nonfused::winogradForwardData4x4<float, float>(cudnn::winograd_nonfused::Params)", "conv"),
    ("aten::mkldnn_convolution", "conv"),
    ("aten::conv2d", "conv"),
    # norm
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half, float>", "norm"),
    ("void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<float>(long, float, float const*)", "norm"),
    ("aten::native_group_norm", "norm"),
    ("aten::rms_norm", "norm"),
    ("triton_red_fused_native_group_norm_1", "norm"),
    # elementwise (and the simple reductions)
    (
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::Half>, "
        "std::array<char*, 3ul>>",
        "elementwise",
    ),
    ("void at::native::(anonymous namespace)::GeluCUDAKernelImpl(at::TensorIteratorBase&)", "elementwise"),
    ("triton_poi_fused_add_mul_silu_2", "elementwise"),
    ("aten::silu", "elementwise"),
    ("aten::mul", "elementwise"),
    ("aten::mean", "elementwise"),
    # copy: device copies, layout changes, concatenation
    (
        "void at::native::elementwise_kernel<128, 2, at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>",
        "copy",
    ),
    ("Memcpy HtoD (Pageable -> Device)", "copy"),
    ("Memset (Device)", "copy"),
    ("void cudnn::engines_precompiled::nchwToNhwcKernel<__half, __half, float, false, true>", "copy"),
    (
        "void at::native::(anonymous namespace)::CatArrayBatchedCopy<"
        "at::native::(anonymous namespace)::OpaqueType<2u>>",
        "copy",
    ),
    ("aten::copy_", "copy"),
    ("aten::contiguous", "copy"),
    ("aten::cat", "copy"),
    # other
    ("aten::normal_", "other"),
    ("aten::upsample_nearest2d", "other"),
    ("aten::embedding", "other"),
    ("void at::native::index_put_kernel", "other"),
]


def test_every_family_has_a_case() -> None:
    assert {family for _, family in FAMILY_CASES} == set(OP_FAMILIES)


@pytest.mark.parametrize(("name", "family"), FAMILY_CASES, ids=[n[:48] for n, _ in FAMILY_CASES])
def test_family_table(name: str, family: str) -> None:
    assert profiling.name_family(name) == family


def _op(name: str, parent: int = -1, self_us: float = 1.0, **kw: Any) -> Op:
    return Op(name=name, start_us=kw.pop("start", 0.0), end_us=kw.pop("end", 1.0), self_us=self_us, parent=parent, **kw)


def test_anything_under_an_attention_op_is_attention() -> None:
    """SDPA's math path runs bmm and softmax kernels; a classic processor's bmm runs a
    gemm kernel: all attention, by their enclosing ops."""
    trace = Trace(
        ops=[
            _op("aten::scaled_dot_product_attention"),  # 0
            _op("aten::_scaled_dot_product_attention_math", 0),  # 1
            _op("aten::_softmax", 1),  # 2
            _op("aten::bmm", -1),  # 3: a classic processor's
        ],
        device=[
            DeviceEvent("void (anonymous namespace)::softmax_warp_forward<float>", 0, 1, op=2),
            DeviceEvent("ampere_sgemm_128x64_nn", 1, 2, op=3),
        ],
    )
    assert trace.op_families() == ["attention"] * 4
    assert [trace.device_family(k) for k in trace.device] == ["attention", "attention"]


def test_otherwise_the_outermost_op_with_a_family_decides() -> None:
    trace = Trace(
        ops=[
            _op("aten::linear"),  # 0
            _op("aten::addmm", 0),  # 1
            _op("aten::copy_", 1),  # 2: the bias copy is part of the linear
            _op("aten::conv2d"),  # 3
            _op("aten::cudnn_convolution", 3),  # 4
            _op("aten::empty"),  # 5: no family
            _op("sdtop::denoiser::unet", annotation=True),  # 6: a range, no family of its own
            _op("aten::group_norm", 6),  # 7
            _op("aten::native_group_norm", 7),  # 8
        ],
        device=[
            DeviceEvent("void at::native::elementwise_kernel<128, 2, direct_copy_kernel_cuda>", 0, 1, op=2),
            DeviceEvent("void cudnn::engines_precompiled::nchwToNhwcKernel<__half>", 0, 1, op=4),
            DeviceEvent("void at::native::reduce_kernel<512, 1>", 0, 1, op=8),
            DeviceEvent("nvjet_hsh_192x128_64x4_1x2_h_bz_coopA_NTN", 0, 1, op=-1),  # a CUDA-graph replay
            DeviceEvent("void at::native::vectorized_elementwise_kernel<4, FillFunctor>", 0, 1, op=5),
        ],
    )
    assert trace.op_families() == ["gemm", "gemm", "gemm", "conv", "conv", "other", "other", "norm", "norm"]
    assert [trace.device_family(k) for k in trace.device] == ["gemm", "conv", "norm", "gemm", "elementwise"]


# --- idle and the breakdowns -----------------------------------------------------------------


def test_union_counts_overlaps_once() -> None:
    assert profiling.union_us([(0, 10), (5, 15), (20, 30), (22, 25)]) == 25
    assert profiling.union_us([]) == 0
    assert profiling.union_us([(3, 4), (0, 10)]) == 10  # one inside another, any order


def test_idle_is_the_window_minus_the_union_of_kernels() -> None:
    # window 0..100 µs; kernels cover 10..40 (two overlapping), 50..60, and 90..120 (clipped at 100)
    kernels = [(10.0, 30.0), (20.0, 40.0), (50.0, 60.0), (90.0, 120.0), (-20.0, -5.0)]
    assert profiling.idle_s(kernels, (0.0, 100.0)) == pytest.approx((100 - 30 - 10 - 10) / 1e6)
    assert profiling.idle_s([], (0.0, 100.0)) == pytest.approx(100e-6)
    assert profiling.idle_s([(0.0, 100.0), (10.0, 20.0)], (0.0, 100.0)) == 0.0  # never busy > span


def test_cuda_breakdown_is_kernel_time_in_the_window() -> None:
    trace = Trace(
        ops=[_op("sdtop::profiled_call", annotation=True), _op("aten::mm", 0), _op("aten::add", 0)],
        device=[
            DeviceEvent("ampere_sgemm_128x64_nn", 10, 40, op=1),
            DeviceEvent("ampere_sgemm_128x64_nn", 30, 50, op=1),  # overlaps (another stream)
            DeviceEvent("vectorized_elementwise_kernel<add>", 60, 70, op=2),
            DeviceEvent("vectorized_elementwise_kernel<add>", 95, 110, op=2),  # half outside
        ],
        window=(0.0, 100.0),
    )
    b = profiling.cuda_breakdown(trace)
    assert list(b.family_s) == list(OP_FAMILIES)
    assert b.family_s["gemm"] == pytest.approx(50e-6) and b.family_s["elementwise"] == pytest.approx(15e-6)
    assert b.idle_s == pytest.approx((100 - 40 - 10 - 5) / 1e6)
    assert b.top[0] == {"name": "ampere_sgemm_128x64_nn", "family": "gemm", "count": 2, "total_ms": pytest.approx(0.05)}


def test_cpu_breakdown_is_op_self_time_without_ranges() -> None:
    trace = Trace(
        ops=[
            _op("sdtop::denoiser::unet", self_us=500.0, annotation=True),  # Python time: not ops
            _op("aten::linear", 0, self_us=2.0),
            _op("aten::addmm", 1, self_us=30.0),
            _op("aten::silu", 0, self_us=5.0),
        ]
    )
    b = profiling.cpu_breakdown(trace)
    assert b.idle_s is None
    assert b.family_s["gemm"] == pytest.approx(32e-6) and b.family_s["elementwise"] == pytest.approx(5e-6)
    assert sum(b.family_s.values()) == pytest.approx(37e-6)
    assert [t["name"] for t in b.top] == ["aten::addmm", "aten::silu", "aten::linear"]


def test_top_lists_fifteen_names_each_under_its_main_family() -> None:
    long = "void cutlass::Kernel2<" + "x" * 400 + ">"
    device = [DeviceEvent(f"kernel_{i}", 0, 100 - i) for i in range(20)]
    device += [DeviceEvent(long, 0, 200)]
    # the same gemm kernel name serves attention (under bmm) and gemm (under mm): attention took more
    ops = [_op("aten::bmm"), _op("aten::mm")]
    device += [DeviceEvent("ampere_sgemm", 0, 300, op=0), DeviceEvent("ampere_sgemm", 0, 100, op=1)]
    b = profiling.cuda_breakdown(Trace(ops=ops, device=device, window=(0.0, 1000.0)))
    assert len(b.top) == profiling.TOP_N
    assert b.top[0] == {"name": "ampere_sgemm", "family": "attention", "count": 2, "total_ms": pytest.approx(0.4)}
    assert b.top[1]["name"].endswith("…") and len(b.top[1]["name"]) == profiling.NAME_CHARS
    assert [t["total_ms"] for t in b.top] == sorted((t["total_ms"] for t in b.top), reverse=True)


# --- FLOPs -----------------------------------------------------------------------------------


def test_flops_count_the_outermost_op_inside_each_denoiser() -> None:
    """FlopCounterMode's formulas at the outermost op that has one; the check takes the
    profiler's flops at the outermost op that carries them, and counts SDPA analytically
    (the math kernel's bmm under it counts once)."""
    table = profiling.formulas()
    q = [2, 4, 64, 8]
    trace = Trace(
        ops=[
            _op("aten::mm", inputs=([3, 4], [4, 5]), flops=120),  # 0: outside every denoiser
            _op("sdtop::denoiser::unet", annotation=True),  # 1
            _op("aten::linear", 1, inputs=([16, 32], [64, 32], [64])),  # 2
            _op("aten::addmm", 2, inputs=([64], [16, 32], [32, 64], 1, 1), flops=2 * 16 * 32 * 64),  # 3
            _op("aten::scaled_dot_product_attention", 1, inputs=(q, q, q, None, 0.0, False)),  # 4
            _op("aten::_scaled_dot_product_attention_math", 4, inputs=(q, q, q)),  # 5
            _op("aten::bmm", 5, inputs=([8, 64, 8], [8, 8, 64]), flops=2 * 8 * 64 * 8 * 64),  # 6: QKᵀ
            _op("aten::bmm", 5, inputs=([8, 64, 64], [8, 64, 8]), flops=2 * 8 * 64 * 64 * 8),  # 7: PV
            _op("aten::mul", 1, inputs=([8], [8]), flops=8),  # 8: elementwise: in neither count
            _op("sdtop::denoiser::controlnet", annotation=True),  # 9
            _op("aten::convolution", 9, inputs=([1, 4, 16, 16], [8, 4, 3, 3], [8], [2, 2], [1, 1], [1, 1], False)),
            _op("aten::_convolution", 10, inputs=([1, 4, 16, 16], [8, 4, 3, 3], [8], [2, 2], [1, 1], [1, 1], False)),
        ]
    )
    flops = profiling.count_flops(trace, table)
    addmm, attention = 2 * 16 * 32 * 64, 2 * (2 * 8 * 64 * 64 * 8)
    assert flops.total == {"unet": addmm + attention, "controlnet": 8 * 8 * 8 * 4 * 9 * 2}
    assert flops.attention == {"unet": attention}
    assert flops.check == {"unet": addmm + profiling.sdpa_flops(q, q, q)}
    assert profiling.sdpa_flops(q, q, q) == 4 * 2 * 4 * 64 * 64 * 8 == attention
    assert not flops.uncounted


def test_an_op_a_formula_cannot_read_is_said_not_guessed() -> None:
    trace = Trace(ops=[_op("sdtop::denoiser::unet", annotation=True), _op("aten::mm", 0, inputs=([3], None))])
    flops = profiling.count_flops(trace, profiling.formulas())
    assert flops.uncounted == {"aten::mm"} and flops.total == {"unet": 0}


def test_sdpa_flops_follow_the_query_heads() -> None:
    """Grouped-query attention: key and value have fewer heads, broadcast to the query's."""
    assert profiling.sdpa_flops([1, 8, 10, 16], [1, 2, 12, 16], [1, 2, 12, 32]) == 2 * 8 * 10 * 12 * (16 + 32)


def _sd_unet(attention: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    from sdtop.pipelines.builders.build import load_config

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(load_config("tiny", "sd15.unet")).eval()
    unet.set_attn_processor(AttnProcessor() if attention == "classic" else AttnProcessor2_0())
    g = torch.Generator().manual_seed(0)
    inputs = {
        "sample": torch.randn(2, 4, 8, 8, generator=g),
        "timestep": torch.tensor(10),
        "encoder_hidden_states": torch.randn(2, 7, 32, generator=g),
    }
    return unet, inputs


def _flux(backend: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from diffusers import FluxTransformer2DModel
    from sdtop.pipelines.builders.build import load_config

    torch.manual_seed(0)
    model = FluxTransformer2DModel.from_config(load_config("tiny", "flux-dev.transformer")).eval()
    model.set_attention_backend(backend)
    g = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 16, 64, generator=g),
        "encoder_hidden_states": torch.randn(1, 8, 64, generator=g),
        "pooled_projections": torch.randn(1, 32, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_ids": torch.zeros(16, 3),
        "txt_ids": torch.zeros(8, 3),
        "guidance": torch.tensor([3.5]),
    }
    return model, inputs


def _with_flop_counter(module: torch.nn.Module, inputs: dict[str, Any]) -> tuple[int, int]:
    """(total, attention) as torch's FlopCounterMode counts one forward, with its own SDPA
    formula for CPU SDPA (its table has none for it)."""
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_sdpa(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(q, k, v)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        module(**inputs)
    per_op = counter.get_flop_counts()["Global"]
    attention = sum(v for op, v in per_op.items() if "bmm" in str(op) or "scaled_dot_product" in str(op))
    return counter.get_total_flops(), attention


def _profiled(module: torch.nn.Module, inputs: dict[str, Any]) -> profiling.Flops:
    undo = profiling.annotate(module, profiling.DENOISER_RANGE + "m")
    try:
        activities = [torch.profiler.ProfilerActivity.CPU]
        with (
            torch.inference_mode(),
            torch.profiler.profile(activities=activities, record_shapes=True, with_flops=True) as prof,
        ):
            module(**inputs)
    finally:
        undo()
    assert not module._forward_pre_hooks and not module._forward_hooks  # undone
    return profiling.count_flops(profiling.trace_from_profiler(prof.events()), profiling.formulas())


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, dict[str, Any]]]] = {
    "sd15-unet-sdpa": lambda: _sd_unet("sdpa"),
    "sd15-unet-classic": lambda: _sd_unet("classic"),
    "flux-native": lambda: _flux("native"),
    "flux-native-math": lambda: _flux("_native_math"),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_flops_equal_flop_counter_modes_and_the_check_agrees(model: str) -> None:
    """The count from the profile is FlopCounterMode's own on the same forward (to the
    FLOP), and the profiler's count plus analytical SDPA agrees within 5%."""
    module, inputs = MODELS[model]()
    want_total, want_attention = _with_flop_counter(module, inputs)
    flops = _profiled(module, inputs)
    assert not flops.uncounted
    assert flops.total["m"] == want_total > 0
    assert flops.attention["m"] == want_attention > 0
    assert flops.check["m"] == pytest.approx(flops.total["m"], rel=0.05)


@pytest.mark.parametrize("pair", [("sd15-unet-sdpa", "sd15-unet-classic"), ("flux-native", "flux-native-math")])
def test_attention_flops_do_not_depend_on_the_kernel(pair: tuple[str, str]) -> None:
    """Fused SDPA, its math path and a classic processor compute the same products."""
    a, b = (_profiled(*MODELS[name]()) for name in pair)
    assert a.attention["m"] == b.attention["m"] and a.total["m"] == b.total["m"]


# --- the profiled call: files, failures, the private APIs ------------------------------------------


def test_profiles_folder() -> None:
    assert profiling.profiles_folder("off") is None and profiling.profiles_folder("session") is None
    assert profiling.profiles_folder("/s/profiles") == Path("/s/profiles")


def test_the_profiled_call_writes_a_gzip_trace_relative_to_the_session(tmp_path: Path) -> None:
    module, inputs = _sd_unet("sdpa")
    target = profiling.Target("unet", module, steps=2)
    with (
        torch.inference_mode(),
        profiling.ProfiledCall(device="cpu", targets=[target], folder=tmp_path / "profiles", cell=3) as profiled,
    ):
        module(**inputs)
        module(**inputs)
    assert not module._forward_pre_hooks and not module._forward_hooks  # taken down with the call
    summary = profiled.summary(call=7, steps=2)
    assert summary.trace == "profiles/cell-3/trace.json.gz"
    trace = json.loads(gzip.decompress((tmp_path / summary.trace).read_bytes()))
    assert any(ev.get("name") == profiling.CALL_RANGE for ev in trace["traceEvents"])
    assert sorted(p.name for p in (tmp_path / "profiles" / "cell-3").iterdir()) == ["trace.json.gz"]  # no leftovers
    assert summary.call == 7 and summary.source == "cpu op self-time" and summary.idle_s is None
    assert summary.busy_s == pytest.approx(sum(summary.family_s.values())) and 0 < summary.busy_s <= summary.span_s
    total, attention = _with_flop_counter(module, inputs)
    assert summary.flops_per_step == {"unet": total}  # two forwards over two steps
    assert summary.attention_flops_per_step == {"unet": attention}
    assert summary.check_flops_per_step["unet"] == pytest.approx(total, rel=0.05)
    assert summary.memory_snapshot == "" and profiled.notes == []


def test_a_memory_snapshot_is_na_on_cpu(tmp_path: Path) -> None:
    module, inputs = _flux("native")
    with (
        profiling.ProfiledCall(
            device="cpu",
            targets=[profiling.Target("transformer", module, 1)],
            folder=tmp_path / "profiles",
            cell=0,
            memory_snapshot=True,
        ) as profiled,
        torch.inference_mode(),
    ):
        module(**inputs)
    summary = profiled.summary(call=0, steps=1)
    assert (summary.memory_snapshot, summary.memory_html) == ("n/a", "n/a")
    assert profiled.notes == ["memory snapshot: n/a on a CPU cell (it records the CUDA allocator)"]


def test_a_profiler_that_cannot_start_leaves_nothing_installed(tmp_path: Path) -> None:
    module, _ = _flux("native")

    def broken() -> Any:
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    call = profiling.ProfiledCall(
        device="cpu",
        targets=[profiling.Target("transformer", module, 1)],
        folder=tmp_path / "profiles",
        cell=0,
        make_profile=broken,
    )
    with pytest.raises(RuntimeError, match="CUPTI"), call:
        pass
    assert not module._forward_pre_hooks and not module._forward_hooks


def test_a_call_that_raises_takes_everything_down(tmp_path: Path) -> None:
    module, inputs = _flux("native")
    bad = dict(inputs, hidden_states=torch.randn(1, 16, 3))  # the wrong width: the forward raises
    with (
        pytest.raises(RuntimeError),
        profiling.ProfiledCall(
            device="cpu", targets=[profiling.Target("transformer", module, 1)], folder=tmp_path / "p", cell=0
        ),
        torch.inference_mode(),
    ):
        module(**bad)
    assert not module._forward_pre_hooks and not module._forward_hooks
    with torch.profiler.profile():  # the profiler was stopped: a new one starts
        pass


def _event(name: str, start: float, end: float, *, device: str = "CPU", **kw: Any) -> SimpleNamespace:
    """A stand-in for torch's FunctionEvent, as a CUDA profile has them (no GPU here)."""
    from torch.autograd import DeviceType

    defaults = dict(
        id=0,
        activity_type="cpu_op",
        is_async=False,
        is_user_annotation=False,
        cpu_parent=None,
        cpu_children=[],
        input_shapes=[],
        concrete_inputs=[],
        flops=0,
        linked_correlation_id=0,
        self_cpu_time_total=end - start,
    )
    ev = SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end), **{**defaults, **kw})
    ev.device_type = getattr(DeviceType, device)
    return ev


def _adopt(parent: SimpleNamespace, *children: SimpleNamespace) -> None:
    parent.cpu_children = list(children)
    for child in children:
        child.cpu_parent = parent


def test_a_cuda_profile_links_each_kernel_to_the_op_that_launched_it() -> None:
    """Kernels name their op by correlation id; CUDA runtime calls carry CUPTI's ids (which
    can equal an op's) and the user ranges are mirrored on the GPU timeline: neither may be
    taken for an op or for device work."""
    call = _event(profiling.CALL_RANGE, 0, 100, activity_type="user_annotation", id=1)
    unet = _event("sdtop::denoiser::unet", 5, 95, activity_type="user_annotation", id=2)
    sdpa = _event("aten::scaled_dot_product_attention", 10, 40, id=3)
    math = _event("aten::_scaled_dot_product_attention_math", 11, 39, id=4)
    softmax = _event("aten::_softmax", 20, 22, id=5)
    launch = _event("cudaLaunchKernel", 21, 22, activity_type="cuda_runtime", id=3)  # CUPTI id == sdpa's
    linear = _event("aten::linear", 50, 60, id=6)
    _adopt(call, unet)
    _adopt(unet, sdpa, linear)
    _adopt(sdpa, math)
    _adopt(math, softmax)
    _adopt(softmax, launch)
    kernels = [
        _event("softmax_warp_forward", 30, 45, device="CUDA", activity_type="kernel", linked_correlation_id=5),
        _event("nvjet_hsh_192x128", 60, 80, device="CUDA", activity_type="kernel", linked_correlation_id=6),
        _event("Memcpy DtoD", 80, 90, device="CUDA", activity_type="gpu_memcpy", linked_correlation_id=99),
        _event("sdtop::denoiser::unet", 5, 95, device="CUDA", activity_type="gpu_user_annotation"),
    ]
    events = [call, unet, sdpa, math, softmax, launch, linear, *kernels]
    trace = profiling.trace_from_profiler(events)
    assert trace.window == (0, 100)
    names = [op.name for op in trace.ops]
    assert [trace.ops[k.op].name if k.op >= 0 else None for k in trace.device] == [
        "aten::_softmax",
        "aten::linear",
        None,
    ]
    assert trace.ops[names.index("cudaLaunchKernel")].annotation
    b = profiling.cuda_breakdown(trace)
    assert (b.family_s["attention"], b.family_s["gemm"], b.family_s["copy"]) == pytest.approx((15e-6, 20e-6, 10e-6))
    assert b.idle_s == pytest.approx((100 - 15 - 30) / 1e6)  # busy 30..45 and 60..90


def test_the_memory_snapshot_is_dumped_after_a_call_that_succeeded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a CUDA cell (the allocator faked here): history on, the call, the profiler stops,
    the snapshot and its HTML are written, history off; a failed call dumps nothing."""
    calls: list[str] = []

    def dump(snapshot: str, html: str) -> tuple[str, str]:
        calls.append("dump")
        Path(snapshot).write_bytes(b"torch writes this")
        Path(html).write_text("<html></html>")
        return "", ""

    monkeypatch.setattr(torch_private, "start_memory_history", lambda: calls.append("start") or "")
    monkeypatch.setattr(torch_private, "stop_memory_history", lambda: calls.append("stop"))
    monkeypatch.setattr(torch_private, "dump_memory", dump)
    module, inputs = _flux("native")

    def cpu_profile() -> Any:  # what a CUDA cell profiles, less the CUDA activity this box lacks
        calls.append("profile")
        return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)

    def profiled_call() -> profiling.ProfiledCall:
        target = profiling.Target("transformer", module, 1)
        return profiling.ProfiledCall(
            device="cuda",
            targets=[target],
            folder=tmp_path / "profiles",
            cell=2,
            memory_snapshot=True,
            make_profile=cpu_profile,
        )

    with profiled_call() as profiled, torch.inference_mode():
        module(**inputs)
    assert calls == ["start", "profile", "dump", "stop"]
    assert profiled.memory_paths == ("profiles/cell-2/memory.pickle", "profiles/cell-2/memory.html")
    assert (tmp_path / profiled.memory_paths[1]).read_text() == "<html></html>"
    calls.clear()
    with pytest.raises(ZeroDivisionError), profiled_call():
        _ = 1 / 0
    assert calls == ["start", "profile", "stop"]


def test_private_apis_say_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch.utils.flop_counter as flop_counter

    monkeypatch.delattr(torch.cuda.memory, "_record_memory_history")
    monkeypatch.delattr(torch.cuda.memory, "_dump_snapshot")
    monkeypatch.delattr(torch.cuda.memory, "_snapshot")
    assert torch_private.start_memory_history().startswith("n/a: this torch")
    torch_private.stop_memory_history()  # harmless
    notes = torch_private.dump_memory(str(tmp_path / "m.pickle"), str(tmp_path / "m.html"))
    assert all(n.startswith("n/a: this torch") for n in notes) and not list(tmp_path.iterdir())
    monkeypatch.delattr(flop_counter, "flop_registry")
    monkeypatch.delattr(flop_counter, "sdpa_flop_count")
    assert torch_private.flop_formulas() == {} and profiling.formulas() == {}
    assert torch_private.sdpa_flop_count() is None


def test_the_formula_table_reads_torchs() -> None:
    table = torch_private.flop_formulas()
    assert {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::convolution",
        "aten::_scaled_dot_product_flash_attention",
    } <= set(table)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in profiling.formulas()


# --- end to end ----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_failed_profiled_call_leaves_the_cell_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error in the profile phase (here injected) is one warning and a not-ok phase."""
    from sdtop.pipelines.settings import CellSpec
    from sdtop.profiler.contract import faults
    from sdtop.profiler.worker.cell import CellRun

    monkeypatch.setenv(faults.ENV, "oom:profile")
    spec = CellSpec(pipeline="sd-txt2img", steps=2, warmup=0, iterations=1, outputs="off", profile=str(tmp_path / "p"))
    emitted: list[Any] = []
    threads = torch.get_num_threads()
    try:
        assert CellRun(0, spec, emitted.append).run(launcher="test", startup_s=0.0) == "ok"
    finally:
        torch.set_num_threads(threads)
    [ended] = [e for e in emitted if isinstance(e, PhaseEnded) and e.phase == "profile"]
    assert not ended.ok
    [warning] = [e for e in emitted if isinstance(e, Log) and e.level == "warning"]
    assert warning.message.startswith("profile not taken: OutOfMemoryError")
    assert [e.call_kind for e in emitted if isinstance(e, CallFinished)] == ["measured"]
    assert not any(isinstance(e, ProfileSummary) for e in emitted)


def _run(out: Path, *args: str) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "sdtop.tui.cli", "run", "--weights", "tiny", "--steps", "2"),
            *("--iterations", "1", "--warmup", "1", "--profile", "--out", str(out), *args),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.e2e
def test_sdtop_run_profile_on_tiny_sd_and_flux(tmp_path: Path) -> None:
    """Every ok cell: one profiled call after its measured one, a gzip JSON trace, family
    shares that make up its busy time, FLOPs per step that the check confirms."""
    from sdtop.profiler.contract.events import CellFinished
    from sdtop.profiler.host.session import read_events

    sessions = [tmp_path / "a", tmp_path / "b"]
    _run(sessions[0], "--pipeline", "sd-txt2img,flux-txt2img", "--attention", "sdpa,classic")
    _run(sessions[1], "--pipeline", "flux-txt2img", "--attention", "native,_native_math")
    ok_cells = 0
    for session in sessions:
        events = read_events(session / "events.jsonl")
        statuses = {e.cell: e.status for e in events if isinstance(e, CellFinished)}
        assert len(statuses) == (4 if session.name == "a" else 2)
        for cell, cell_status in statuses.items():
            mine = [e for e in events if e.cell == cell]
            if cell_status != "ok":
                assert cell_status.startswith("not supported")  # flux's classic cell, by design
                continue
            ok_cells += 1
            calls = [e for e in mine if isinstance(e, CallFinished)]
            assert [e.call_kind for e in calls] == ["first", "measured", "profiled"]  # --iterations 1 measured call
            [summary] = [e for e in mine if isinstance(e, ProfileSummary)]
            assert summary.call == calls[-1].call
            trace = json.loads(gzip.decompress((session / summary.trace).read_bytes()))
            assert trace["traceEvents"]
            assert set(summary.family_s) == set(OP_FAMILIES) and summary.busy_s > 0
            shares = [100 * v / summary.busy_s for v in summary.family_s.values()]
            assert sum(shares) == pytest.approx(100, abs=1)
            assert summary.flops_per_step and all(v > 0 for v in summary.flops_per_step.values())
            for key, value in summary.flops_per_step.items():
                assert summary.check_flops_per_step[key] == pytest.approx(value, rel=0.05)
                assert 0 < summary.attention_flops_per_step[key] < value
            assert not [e for e in mine if isinstance(e, Log) and e.level == "warning"]
    assert ok_cells == 5
