"""Apply a cell's settings to a built pipeline (torch; worker process only).

Attention is applied to every denoiser module the seed compiles (the UNets, the
ControlNet) and then READ BACK: diffusers can accept an attention choice and silently keep
another (``set_attention_backend`` does nothing on UNet2DConditionModel), so what is
recorded is the processor classes the modules really hold.

Levers that act while the pipeline runs are hooks on the denoisers, installed last (on
the objects the pipelines call, compiled wrappers included): a forced SDPA kernel holds
only around the denoisers' forward, never the VAE (:mod:`.attention`); on CUDA one step's
kernels are sampled to say which SDPA kernel ran; with several modules compiled into CUDA
graphs each step is marked once (:mod:`.cudagraphs`).

The second wave's levers (transformer attention backends, fused QKV, torchao quantisation,
regional compile, step caches, offload) are functions of :mod:`.levers` and
:mod:`.levers_cache`; :func:`apply_settings` says in which order they are applied and why.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ...pipelines import registry
from ...pipelines.builders.build import BuiltPipeline
from ...pipelines.registry import module_key
from ...pipelines.settings import CellSpec, canonical_attention
from . import levers
from .attention import ForcedKernel, KernelProbe, probe_hook, scope_kernel, sdpa_backend_context
from .cudagraphs import StepMarker, needs_step_marks
from .levers import NATIVE_SDPA, Target, Unsupported
from .levers_cache import ComputedSteps, cache_problem, count_steps, enable_cache
from .timing import on_step_boundary

__all__ = ["Applied", "ComputedSteps", "Unsupported", "apply_settings", "denoisers", "preflight"]

SDPA_KERNELS = {
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-math": "MATH",
    "sdpa-cudnn": "CUDNN_ATTENTION",
}


@dataclass
class Applied:
    attention_processors: dict[str, list[str]] = field(default_factory=dict)
    compiled: list[str] = field(default_factory=list)
    channels_last: list[str] = field(default_factory=list)
    sdpa_backend: str = ""
    #: The forced SDPA kernel's scope (``sdpa-*`` only), held around the denoisers' forward.
    forced: ForcedKernel | None = None
    #: Samples which SDPA kernel ran (CUDA, SDPA attention only).
    probe: KernelProbe | None = None
    #: Marks CUDA-graph steps (several modules compiled in a CUDA-graph mode only).
    marker: StepMarker | None = None
    hooks: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)
    #: Transformer denoisers: the dispatcher backend(s) their attention modules hold, read back.
    attention_backends: dict[str, list[str]] = field(default_factory=dict)
    #: The second wave's levers as applied, in words (``SettingsApplied.levers``).
    levers: dict[str, str] = field(default_factory=dict)
    #: Per stage, what counts the steps a step cache let the denoiser compute (``--cache``).
    computed: dict[str, ComputedSteps] = field(default_factory=dict)

    def take_computed(self, stage: str) -> int | None:
        """Steps of ``stage`` computed (not reused) in the call that just ended; None
        without a step cache. Resets the count for the next call."""
        counter = self.computed.get(stage)
        return counter.take() if counter is not None else None


def denoisers(built: BuiltPipeline) -> Iterator[Target]:
    """(key, pipe, attribute, module) for every module the seed would compile."""
    for st in built.stages:
        for attr in st.compiled:
            module = getattr(st.pipe, attr, None)
            if isinstance(module, torch.nn.Module):
                yield module_key(st.name, attr), st.pipe, attr, module


def processor_classes(module: torch.nn.Module) -> list[str]:
    procs = getattr(module, "attn_processors", None)
    if not isinstance(procs, dict):
        return []
    return sorted({type(p).__name__ for p in procs.values()})


def _to_sdpa(module: torch.nn.Module) -> None:
    """Switch every processor to its SDPA ("2_0") counterpart, keeping its family.

    IF's UNets hold added-KV processors: forcing plain AttnProcessor2_0 on them would break
    the model, so each processor class is mapped to ``<name>2_0`` where diffusers has one.
    """
    from diffusers.models import attention_processor as ap

    procs = getattr(module, "attn_processors", None)  # diffusers' AttentionMixin, not every Module
    if not isinstance(procs, dict):
        raise Unsupported(f"{type(module).__name__} has no attention processors")
    new: dict[str, object] = {}
    for name, proc in procs.items():
        cls_name = type(proc).__name__
        if cls_name.endswith("2_0"):
            new[name] = proc
            continue
        sdpa_cls = getattr(ap, f"{cls_name}2_0", None)
        if sdpa_cls is None:
            raise Unsupported(f"no SDPA version of attention processor {cls_name}")
        new[name] = sdpa_cls()
    module.set_attn_processor(new)  # type: ignore[operator]


def apply_attention(built: BuiltPipeline, spec: CellSpec) -> Applied:
    """The cell's attention on every denoiser, read back.

    UNet pipelines: their processors (the seed's choices; a dispatcher name with an SDPA
    equivalent is that SDPA choice, :func:`canonical_attention`). Transformer pipelines:
    diffusers' dispatcher backend (:func:`.levers.set_backends`), read back per module
    into ``attention_backends`` (processor classes too, into ``attention_processors``).
    """
    applied = Applied()
    problem = levers.attention_choice_problem(spec)
    if problem is not None:
        raise Unsupported(problem)
    if registry.get(spec.pipeline).family == "transformer":
        targets = list(denoisers(built))
        applied.sdpa_backend = levers.set_backends(targets, spec)
        read_back_attention(built, applied)
        return applied
    choice = canonical_attention(spec.pipeline, spec.attention)
    if choice == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError:
            raise Unsupported("xformers not installed") from None
        for st in built.stages:
            try:
                st.pipe.enable_xformers_memory_efficient_attention()
            except Exception as exc:  # xformers present but unusable on this device
                raise Unsupported(f"xformers: {exc}") from exc
    if choice in SDPA_KERNELS:  # before any work: a torch without the backend cannot run the cell
        from torch.nn.attention import SDPBackend

        if getattr(SDPBackend, SDPA_KERNELS[choice], None) is None:
            raise Unsupported(f"{choice}: this torch has no SDPBackend.{SDPA_KERNELS[choice]}")
    for key, _pipe, _attr, module in denoisers(built):
        if not hasattr(module, "set_attn_processor"):
            continue
        if choice == "classic":
            module.set_default_attn_processor()  # type: ignore[operator]
        elif choice == "sdpa" or choice in SDPA_KERNELS:
            _to_sdpa(module)
        applied.attention_processors[key] = processor_classes(module)
    if choice in SDPA_KERNELS:
        applied.sdpa_backend = SDPA_KERNELS[choice]
    return applied


def read_back_attention(built: BuiltPipeline, applied: Applied) -> None:
    """Record what each denoiser's attention layers hold now: processor classes for every
    module that has them, and for transformers the dispatcher backends."""
    transformer = registry.get(built.spec.pipeline).family == "transformer"
    targets = list(denoisers(built))
    for key, _pipe, _attr, module in targets:
        if hasattr(module, "set_attn_processor") or transformer:
            applied.attention_processors[key] = processor_classes(module)
    if transformer:
        applied.attention_backends = levers.read_backends(targets, applied.sdpa_backend)


def apply_fuse_qkv(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """``--fuse-qkv on``: after attention (diffusers' UNet fusion installs its own SDPA
    processor, and the readback must see it), before quantisation (the fused layer is
    the one to quantise) and compile."""
    if not spec.fuse_qkv:
        return
    problem = levers.fuse_problem(spec)
    if problem is not None:
        raise Unsupported(problem)
    applied.levers["fuse_qkv"] = levers.fuse_qkv(list(denoisers(built)))
    read_back_attention(built, applied)


def apply_quant(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """``--quant``: torchao's ``quantize_`` on the denoisers, before compile (torchao's
    order: quantize, then ``torch.compile`` traces the quantized matmuls)."""
    if spec.quant == "none":
        return
    applied.levers["quant"] = levers.quantize(list(denoisers(built)), spec.quant)


def apply_memory_format(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """channels_last on the denoisers it fits (:func:`.levers.channels_last_fits`): the
    UNets' 2-D convolutions; a transformer without 4-D weights gains nothing and Wan's
    3-D convolution cannot take it, so those are left as they are and not recorded."""
    if not spec.channels_last:
        return
    for key, _pipe, _attr, module in denoisers(built):
        if not levers.channels_last_fits(module):
            continue
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        applied.channels_last.append(key)


def apply_cache(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """``--cache``: diffusers' step cache on each transformer denoiser, and a step counter
    per stage (hooked last, on what the pipeline calls). Before compile: the cache's hooks
    replace block forwards that torch.compile traces at the first call (either order
    traces the same code; ``enable_cache`` belongs on the model, not a compiled wrapper)."""
    if spec.cache == "none":
        return
    problem = cache_problem(spec)
    if problem is not None:
        raise Unsupported(problem)
    targets = list(denoisers(built))
    steps = {st.name: st.steps for st in built.stages}
    stage_of = {module_key(st.name, attr): st.name for st in built.stages for attr in st.compiled}
    applied.levers["cache"], applied.computed = enable_cache(targets, spec, steps, stage_of)


def apply_offload(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """``--offload``: before compile (:func:`.levers.offload` says why)."""
    if spec.offload == "none":
        return
    problem = levers.offload_problem(spec)
    if problem is not None:
        raise Unsupported(problem)
    applied.levers["offload"] = levers.offload([(st.pipe, st.compiled) for st in built.stages], spec)


def apply_compile(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """Whole: wrap each denoiser as the seed does, ``pipe.unet = torch.compile(pipe.unet, ...)``.
    Regional: compile the denoisers' repeated blocks in place (:func:`.levers.compile_regional`).

    ``mode`` is an inductor option; other backends ignore it with a warning, so it is only
    passed to inductor.
    """
    if not spec.compiled:
        return
    if spec.compile_scope == "regional":
        targets = list(denoisers(built))
        applied.levers["compile_scope"] = levers.compile_regional(targets, spec)
        applied.compiled.extend(key for key, _pipe, _attr, _module in targets)
        return
    mode = None if spec.compile_mode == "default" else spec.compile_mode
    for key, pipe, attr, module in list(denoisers(built)):
        if spec.compile_backend == "inductor":
            compiled = torch.compile(module, mode=mode, fullgraph=spec.fullgraph, backend="inductor")
        else:
            compiled = torch.compile(module, fullgraph=spec.fullgraph, backend=spec.compile_backend)
        setattr(pipe, attr, compiled)
        applied.compiled.append(key)


def preflight(spec: CellSpec) -> None:
    """Refuse, before anything is built, a combination that cannot run here: raises
    :class:`Unsupported` with the reason (a missing package, a GPU generation, a device)."""
    capability = levers.cuda_capability(spec.device) if spec.device.startswith("cuda") else None
    checks = (
        lambda: levers.attention_problem(spec, capability),
        lambda: levers.fuse_problem(spec),
        lambda: levers.quant_problem(spec, capability),
        lambda: cache_problem(spec),
        lambda: levers.offload_problem(spec),
    )
    for check in checks:
        problem = check()
        if problem is not None:
            raise Unsupported(problem)


def apply_settings(built: BuiltPipeline, spec: CellSpec) -> Applied:
    """Every setting of the cell, in an order that lets each one see the model it expects:

    attention (the processors dynamo will trace), fused QKV (replaces projections and, on
    UNets, processors), quantisation (torchao quantises, then compile traces the quantised
    matmuls), memory format, step cache (hooks on the blocks, traced at the first call),
    offload (diffusers enables group offloading, then compiles; model offload hooks the
    pipeline's own modules), compile (whole wraps what the pipeline calls, regional compiles
    blocks in place), and last the hooks that act during a call, on the compiled wrappers.
    """
    applied = apply_attention(built, spec)
    apply_fuse_qkv(built, spec, applied)
    apply_quant(built, spec, applied)
    apply_memory_format(built, spec, applied)
    apply_cache(built, spec, applied)
    apply_offload(built, spec, applied)
    apply_compile(built, spec, applied)
    install_hooks(built, spec, applied)
    return applied


#: Where a stage's pipeline keeps the cell's kernel probe, for :func:`sampled_kernel`.
PROBE_ATTR = "_sdtop_kernel_probe"


def forced_kernel(spec: CellSpec, applied: Applied) -> str | None:
    """The SDPA kernel forced around the denoisers: a UNet's ``sdpa-*`` choice, or the
    kernel a transformer's ``_native_*`` backend stands for on processors outside the
    dispatcher (:func:`.levers.set_backends`); None for torch's own choice."""
    if registry.get(spec.pipeline).family == "transformer":
        return applied.sdpa_backend or None
    return SDPA_KERNELS.get(canonical_attention(spec.pipeline, spec.attention))


def samples_kernel(spec: CellSpec) -> bool:
    """Whether the SDPA kernel that ran is sampled: torch's SDPA attention on CUDA."""
    choice = canonical_attention(spec.pipeline, spec.attention)
    return spec.device.startswith("cuda") and (choice == "sdpa" or choice in SDPA_KERNELS or choice in NATIVE_SDPA)


def install_hooks(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """Hook the levers that act during a call onto what each pipeline calls.

    Last of the settings, because ``apply_compile`` replaces ``pipe.unet`` by its compiled
    wrapper and the hooks belong on the wrapper (their code then runs outside the
    compiled frame; :mod:`.attention` explains why that matters).

    - ``sdpa-*`` (and ``_native_*`` outside the dispatcher): the forced kernel holds around
      each denoiser's forward only;
    - SDPA attention on CUDA (the UNets' sdpa, the transformers' native backends): one step
      per stage is profiled (:class:`KernelProbe`); on CPU nothing is sampled (see
      :mod:`.attention`), so the ``sdpa_kernel`` column is empty;
    - several modules compiled in a CUDA-graph mode: one step mark per step;
    - a step cache (uncompiled): the stage's step counter (:func:`.levers_cache.count_steps`).
    """
    name = forced_kernel(spec, applied)
    if name is not None:
        applied.forced = ForcedKernel(sdpa_backend_context(name))
    if samples_kernel(spec):
        applied.probe = KernelProbe()
    if spec.compiled and needs_step_marks(spec.compile_mode, spec.compile_backend, len(applied.compiled)):
        applied.marker = StepMarker()
    for st in built.stages:
        called = [m for attr in st.compiled if isinstance(m := getattr(st.pipe, attr, None), torch.nn.Module)]
        if not called:
            continue
        for module in called:
            if applied.marker is not None:
                applied.hooks.append(module.register_forward_pre_hook(applied.marker.pre_hook))
            if applied.probe is not None:
                applied.hooks.append(module.register_forward_pre_hook(probe_hook(applied.probe, st.name)))
            if applied.forced is not None:
                applied.hooks.extend(scope_kernel(module, applied.forced))
        counter = applied.computed.get(st.name)
        if counter is not None:
            applied.hooks.extend(count_steps(counter, called[0]))
        if applied.marker is not None:
            on_step_boundary(st.pipe, applied.marker.on_step_end)
        if applied.probe is not None:
            on_step_boundary(st.pipe, functools.partial(applied.probe.on_step_end, st.name))
            setattr(st.pipe, PROBE_ATTR, applied.probe)


def sampled_kernel(pipe: object, stage: str) -> str:
    """The SDPA kernel family sampled in ``stage`` of this call ("" when this call did not
    sample it: CPU, non-SDPA attention, or any call but the one holding the sampled step).
    What the cell loop puts in ``StageTimed.sdpa_kernel``."""
    probe = getattr(pipe, PROBE_ATTR, None)
    return probe.take(stage) if isinstance(probe, KernelProbe) else ""


def is_kernel_unavailable(exc: BaseException) -> bool:
    """True for "no kernel can run this" errors: torch's under a forced SDPA backend, and
    diffusers' dispatcher refusing an attention mask its backend has no input for (Qwen-
    Image's padded prompt under ``_native_flash``, flash, sage: "`attn_mask` is not
    supported for native flash attention")."""
    text = str(exc)
    if isinstance(exc, ValueError):
        return "`attn_mask` is not" in text and "supported" in text
    return isinstance(exc, RuntimeError) and ("No viable backend" in text or "No available kernel" in text)
