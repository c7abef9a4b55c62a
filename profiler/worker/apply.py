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
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ...pipelines.builders.build import BuiltPipeline
from ...pipelines.registry import module_key
from ...pipelines.settings import CellSpec
from .attention import ForcedKernel, KernelProbe, probe_hook, scope_kernel, sdpa_backend_context
from .cudagraphs import StepMarker, needs_step_marks
from .timing import on_step_boundary

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline


class Unsupported(RuntimeError):
    """This combination cannot run here; the cell becomes "not supported: <reason>"."""


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


class ComputedSteps:
    """Counts, over one call, the denoiser's forward calls and the calls in which its
    deepest block really ran; ``take`` turns them into steps computed (a CFG pipeline that
    calls the denoiser twice a step counts each step once)."""

    def __init__(self, steps_per_call: int) -> None:
        self.steps_per_call = steps_per_call
        self.forwards = 0
        self.deep = 0

    def take(self) -> int | None:
        forwards, deep = self.forwards, self.deep
        self.forwards = self.deep = 0
        if forwards == 0:
            return None
        return round(self.steps_per_call * deep / forwards)


def denoisers(built: BuiltPipeline) -> Iterator[tuple[str, DiffusionPipeline, str, torch.nn.Module]]:
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
    applied = Applied()
    choice = spec.attention
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


def apply_memory_format(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    if not spec.channels_last:
        return
    for key, _pipe, _attr, module in denoisers(built):
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        applied.channels_last.append(key)


def apply_compile(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """Wrap each denoiser as the seed does: ``pipe.unet = torch.compile(pipe.unet, ...)``.

    ``mode`` is an inductor option; other backends ignore it with a warning, so it is only
    passed to inductor.
    """
    if not spec.compiled:
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


def apply_settings(built: BuiltPipeline, spec: CellSpec) -> Applied:
    applied = apply_attention(built, spec)
    apply_memory_format(built, spec, applied)
    apply_compile(built, spec, applied)
    install_hooks(built, spec, applied)
    return applied


#: Where a stage's pipeline keeps the cell's kernel probe, for :func:`sampled_kernel`.
PROBE_ATTR = "_sdtop_kernel_probe"


def install_hooks(built: BuiltPipeline, spec: CellSpec, applied: Applied) -> None:
    """Hook the levers that act during a call onto what each pipeline calls.

    Last of the settings, because ``apply_compile`` replaces ``pipe.unet`` by its compiled
    wrapper and the hooks belong on the wrapper (their code then runs outside the
    compiled frame; :mod:`.attention` explains why that matters).

    - ``sdpa-*``: the forced kernel holds around each denoiser's forward only;
    - SDPA attention on CUDA: one step per stage is profiled (:class:`KernelProbe`); on CPU
      nothing is sampled (see :mod:`.attention`), so the ``sdpa_kernel`` column is empty;
    - several modules compiled in a CUDA-graph mode: one step mark per step.
    """
    name = SDPA_KERNELS.get(spec.attention)
    if name is not None:
        applied.forced = ForcedKernel(sdpa_backend_context(name))
    if spec.device.startswith("cuda") and (spec.attention == "sdpa" or name is not None):
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
    """True for torch's "no kernel can run this" errors under a forced SDPA backend."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("No viable backend" in text or "No available kernel" in text)
