"""Forced SDPA kernels scoped to the denoisers, and which kernel really ran (worker only).

Why the forced kernel is scoped: ``--attention sdpa-flash`` (etc.) used to wrap the whole
pipeline call in ``torch.nn.attention.sdpa_kernel``, so the VAE ran under it too. The SD
VAE's mid-block attention has one head of size 512, beyond flash's limit (256) and cuDNN's
(256 on sm90 with cuDNN >= 9.10, else 128): every flash/cuDNN cell failed "not supported"
after a whole denoising loop, and ``sdpa-math`` forced a 65,536-token math attention on
the x4 upscaler's decode. The lever is about the denoisers, so it now holds only around
their forward: a forward pre-hook enters the context and an ``always_call`` forward hook
leaves it, also when the forward raises.

Where the hooks go: on the object the pipeline calls. ``apply_compile`` replaces
``pipe.unet`` by ``torch.compile(pipe.unet)``, an ``OptimizedModule`` whose own hooks run
in plain Python around the compiled call (dynamo traces only the inner module's
``__call__``), so the kernel choice is in force while dynamo traces and every time the
compiled code runs. A module compiled in place (``module.compile()``) runs its hooks inside
the compiled frame, where a context entered in one hook and left in another is not a
``with`` block dynamo can trace; for such a module the compiled call itself is wrapped in
a real ``with`` instead (:func:`scope_kernel`).

Which kernel ran: torch picks among the kernels a context allows, and the default context
allows all of them, so the setting does not say what ran. :class:`KernelProbe` profiles
the denoisers of ONE step per cell with ``torch.profiler`` on CUDA and maps the names it
saw to a family (:func:`kernel_family`). On CPU nothing is sampled: torch's CPU SDPA has
no separately named fused kernels to tell apart (flash on CPU is an ATen CPU op, math is
matmuls), and the question the column answers ("did the card run flash?") is a GPU one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

#: Kernel families in the order they are reported (and tested: cuDNN first, because
#: cuDNN's SDPA kernels can carry "flash" in their names).
FAMILIES = ("cudnn", "flash", "efficient", "math")

#: Words that make a cuDNN kernel an attention kernel (cuDNN also runs the convolutions).
_CUDNN_ATTENTION = ("sdpa", "attention", "fmha")
#: The memory-efficient kernel: ATen op names say "efficient"; its CUDA kernels are the
#: cutlass ones, ``fmha_cutlassF_...(PyTorchMemEffAttention::AttentionKernel<...>)``.
_EFFICIENT = ("efficient", "memeff", "mem_eff", "fmha_cutlass")
#: The math fallback as an ATen op (eager). Compiled, it is decomposed into matmuls and a
#: softmax, so a softmax with no fused attention kernel beside it is read as math too.
_MATH_OP = "scaled_dot_product_attention_math"

#: Which step of the cell (counted over its calls, from 0) the probe profiles: the third,
#: after torch.compile has compiled (step 0) and CUDA graph trees have warmed up and
#: recorded (steps 0 and 1), so the sample sees the kernels the steady state replays and
#: never profiles a CUDA-graph capture. With the default warmup it falls in the first
#: call, which no steady-state figure reads.
SAMPLE_STEP = 2


def _family_of(name: str) -> str | None:
    """The fused family one kernel or op name belongs to, None for any other name."""
    n = name.lower()
    if "cudnn" in n and any(w in n for w in _CUDNN_ATTENTION):
        return "cudnn"
    if "flash" in n:
        return "flash"
    if any(w in n for w in _EFFICIENT):
        return "efficient"
    if _MATH_OP in n:
        return "math"
    return None


def kernel_family(names: Iterable[str]) -> str | None:
    """The SDPA kernel family that ran, from the op and kernel names of a profiler sample.

    ``"flash"``, ``"efficient"``, ``"cudnn"`` or ``"math"``; several joined with ``+`` in
    :data:`FAMILIES` order when the sample holds more than one (torch may pick per call
    when nothing is forced); None when the names show no attention at all (a classic
    processor, or a sample that missed the step). A softmax kernel with no fused attention
    kernel beside it reads as ``"math"``: compiled math attention leaves no op name.
    """
    found: set[str] = set()
    softmax = False
    for name in names:
        family = _family_of(name)
        if family is not None:
            found.add(family)
        elif "softmax" in name.lower():
            softmax = True
    if not found and softmax:
        found.add("math")
    if not found:
        return None
    return "+".join(f for f in FAMILIES if f in found)


# -- the forced kernel, scoped to the denoisers -----------------------------------------------


class ForcedKernel:
    """Holds ``sdpa_kernel(backend)`` while a denoiser's forward runs.

    One instance per cell, shared by every hooked module; contexts are a stack so that a
    hooked module called from another one (none is today) still unwinds in order.
    """

    def __init__(self, make_context: Callable[[], contextlib.AbstractContextManager[Any]]) -> None:
        self.make_context = make_context
        self.open: list[contextlib.AbstractContextManager[Any]] = []

    def enter(self) -> None:
        ctx = self.make_context()
        ctx.__enter__()
        self.open.append(ctx)

    def exit(self) -> None:
        if self.open:
            self.open.pop().__exit__(None, None, None)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The same scope as a ``with`` block (for a module compiled in place)."""
        self.enter()
        try:
            yield
        finally:
            self.exit()


def _pre_hook(scope: ForcedKernel) -> Callable[..., None]:
    def enter_kernel(module: torch.nn.Module, args: Any) -> None:
        scope.enter()

    return enter_kernel


def _post_hook(scope: ForcedKernel) -> Callable[..., None]:
    def exit_kernel(module: torch.nn.Module, args: Any, output: Any) -> None:
        scope.exit()

    return exit_kernel


def scope_kernel(module: torch.nn.Module, scope: ForcedKernel) -> list[torch.utils.hooks.RemovableHandle]:
    """Make ``scope`` hold exactly while ``module`` runs; returns the hook handles.

    ``module`` is what the pipeline calls (``pipe.unet``: the module, or its
    ``torch.compile`` wrapper). The exit hook is ``always_call``: torch runs it when the
    forward raises, so a failing call never leaves the kernel forced for the VAE or the
    next cell phase. A module compiled in place has its compiled call wrapped instead (the
    module docstring says why); that path returns no handles.
    """
    compiled_call = getattr(module, "_compiled_call_impl", None)
    if compiled_call is not None:

        def call_in_scope(*args: Any, **kwargs: Any) -> Any:
            with scope.held():
                return compiled_call(*args, **kwargs)

        module._compiled_call_impl = call_in_scope
        return []
    return [
        module.register_forward_pre_hook(_pre_hook(scope)),
        module.register_forward_hook(_post_hook(scope), always_call=True),
    ]


def sdpa_backend_context(backend_name: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of ``sdpa_kernel(SDPBackend.<backend_name>)`` contexts; raises
    AttributeError where this torch has no such backend (the caller makes it "not
    supported")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def make() -> contextlib.AbstractContextManager[Any]:
        return sdpa_kernel(backend)

    return make


# -- which kernel ran ------------------------------------------------------------------------------


def _profiled_names(prof: Any) -> list[str]:
    """Every op and kernel name of a finished ``torch.profiler.profile``: device kernels are
    events of their own and also hang under the CPU op that launched them (replayed CUDA
    graphs have no CPU op), so both are read."""
    names: list[str] = []
    for event in prof.events() or []:
        names.append(str(event.name))
        names.extend(str(k.name) for k in getattr(event, "kernels", ()) or ())
    return names


class KernelProbe:
    """Profiles the denoisers of one step per stage and keeps the family per stage.

    Steps are counted per stage by :meth:`on_step_end` (the step boundary the worker
    observes); :meth:`on_denoiser` starts the profiler at the first denoiser call of the
    stage's step :data:`SAMPLE_STEP`, and the end of that step stops it, so the sample is
    the denoisers' kernels of one whole step (ControlNet and UNet alike) plus the
    scheduler's few elementwise kernels. Per stage, because a cascade's stages have
    different heads and may get different kernels. ``profile`` is injectable for tests;
    in the worker it makes a CUDA+CPU ``torch.profiler.profile``.
    """

    def __init__(
        self,
        *,
        sample_step: int = SAMPLE_STEP,
        profile: Callable[[], Any] | None = None,
        names_of: Callable[[Any], list[str]] = _profiled_names,
    ) -> None:
        self.sample_step = sample_step
        self.profile = profile or _cuda_profile
        self.names_of = names_of
        self.steps: dict[str, int] = {}
        self.running: dict[str, Any] = {}
        self.sampled: set[str] = set()
        self.found: dict[str, str] = {}

    def on_denoiser(self, stage: str) -> None:
        if stage in self.sampled or self.steps.get(stage, 0) != self.sample_step:
            return
        self.sampled.add(stage)
        try:
            prof = self.profile()
            prof.start()
        except Exception:  # a profiler that cannot start (CUPTI refused): the column stays empty
            return
        self.running[stage] = prof

    def on_step_end(self, stage: str) -> None:
        self.steps[stage] = self.steps.get(stage, 0) + 1
        prof = self.running.pop(stage, None)
        if prof is None:
            return
        try:
            prof.stop()  # synchronises the device, so every kernel of the step is in
            family = kernel_family(self.names_of(prof))
        except Exception:  # the sample is a label, never a reason for the cell to fail
            return
        if family is not None:
            self.found[stage] = family

    def take(self, stage: str) -> str:
        """The family found in ``stage`` (once: the call that sampled it reports it)."""
        return self.found.pop(stage, "")


def _cuda_profile() -> Any:
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])


def probe_hook(probe: KernelProbe, stage: str) -> Callable[..., None]:
    """A forward pre-hook telling ``probe`` a denoiser of ``stage`` is about to run."""

    def sample_kernels(module: torch.nn.Module, args: Any) -> None:
        probe.on_denoiser(stage)

    return sample_kernels
