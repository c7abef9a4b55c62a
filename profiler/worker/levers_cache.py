"""``--cache``: diffusers' step caches on a transformer denoiser, and how many steps really
computed (worker only: torch, diffusers).

A step cache decides, step by step, to reuse earlier results instead of running (part of)
the transformer: FirstBlockCache and MagCache skip every block after the first when little
changed; TaylorSeer, FasterCache and Pyramid Attention Broadcast reuse (or extrapolate)
attention outputs. ``enable_cache(config)`` installs diffusers' hooks on the blocks; the
pipelines give each denoiser call a ``cache_context`` and reset the hooks' state after each
call (``maybe_free_model_hooks``).

Counting (``StageTimed.steps_computed``): a forward pre-hook on what the pipeline calls
counts the denoiser's calls; a forward pre-hook on a projection inside the attention of
the deepest block counts the calls in which that block really computed. The hook sits on a
submodule, not on the block, because the caches replace the block's (or the attention's)
``forward``: torch's hooks on the block itself still fire when the cache reuses its output.

With torch.compile, a cache's decisions are host-side (``torch.compiler.disable``d checks
with ``.item()``; Python branches on the current timestep), which fullgraph=True forbids:
measured on CPU (backend eager, tiny transformers: all five caches on FLUX, fbc and
taylorseer on Qwen-Image and Wan), every cache fails to trace under whole and regional
compile with fullgraph, and runs with graph breaks without it. So a compiled cell with a
cache must be ``--no-fullgraph``, and there its steps are not counted (``steps_computed``
stays empty): a Python counter inside compiled code is guarded by value (a recompile every
step), and hooks in the code dynamo resumes after a graph break do not run at all
(measured: Wan with TaylorSeer, whole compile, no-fullgraph: 0 of 16 calls of a block's
feed-forward reached its hook, against 16 uncompiled).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ...pipelines import registry
from ...pipelines.settings import CellSpec
from .levers import Target, Unsupported, diffusers_version, is_attention_module

#: Why each cache cannot trace under torch.compile(fullgraph=True): what torch refused, in
#: words (measured: "Skip inlining `torch.compiler.disable()`d function", "Data-dependent
#: branching").
FULLGRAPH_REASON = {
    "fbc": "FirstBlockCache decides each step on the host (a torch.compiler.disable'd check with .item())",
    "taylorseer": "TaylorSeer counts steps and extrapolates under torch.compiler.disable",
    "magcache": "MagCache's block hooks run under torch.compiler.disable",
    "faster": "FasterCache branches in Python on the current timestep (data-dependent branching)",
    "pab": "Pyramid Attention Broadcast branches in Python on the current timestep (data-dependent branching)",
}

#: The pipelines diffusers ships MagCache ratios for (``diffusers.hooks.mag_cache.FLUX_MAG_RATIOS``).
MAGCACHE_PIPELINES = ("flux-txt2img",)

#: Names of a transformer's block lists, in the order diffusers' caches look for them.
BLOCK_LISTS = (
    "transformer_blocks",
    "single_transformer_blocks",
    "blocks",
    "layers",
    "temporal_transformer_blocks",
    "visual_transformer_blocks",
)


def cache_kind(cache: str) -> str:
    """ "fbc:0.2" -> "fbc": the kind, without the threshold only fbc takes."""
    return cache.partition(":")[0]


def cache_problem(spec: CellSpec) -> str | None:
    """Why ``spec.cache`` cannot run (before the build), or None."""
    if spec.cache == "none":
        return None
    kind = cache_kind(spec.cache)
    if registry.get(spec.pipeline).family != "transformer":
        return (
            f"cache {spec.cache}: diffusers' step caches (enable_cache) hook transformer blocks; "
            f"{spec.pipeline} is a UNet pipeline"
        )
    if kind == "magcache" and spec.pipeline not in MAGCACHE_PIPELINES:
        return (
            f"magcache: MagCache needs magnitude ratios calibrated for the model; diffusers {diffusers_version()} "
            f"ships them for FLUX.1 only (FLUX_MAG_RATIOS), not for {spec.pipeline} (a calibration run reuses "
            "nothing, so it would not be a cache)"
        )
    if spec.compiled and spec.fullgraph:
        return (
            f"cache {spec.cache} with torch.compile(fullgraph=True): {FULLGRAPH_REASON[kind]}, a graph break "
            "fullgraph forbids; run it with --no-fullgraph or without compile"
        )
    return None


class ComputedSteps:
    """Counts, over one call, the denoiser's forward calls and the calls in which its
    deepest block really ran; ``take`` turns them into steps computed (a CFG pipeline that
    calls the denoiser twice a step counts each step once)."""

    def __init__(self, steps_per_call: int, probe: torch.nn.Module | None = None) -> None:
        self.steps_per_call = steps_per_call
        self.probe = probe  # the submodule inside the deepest block whose calls are counted
        self.forwards = 0
        self.deep = 0

    def take(self) -> int | None:
        forwards, deep = self.forwards, self.deep
        self.forwards = self.deep = 0
        if forwards == 0:
            return None
        return round(self.steps_per_call * deep / forwards)

    def on_forward(self, module: torch.nn.Module, args: Any) -> None:
        self.forwards += 1

    def on_deep(self, module: torch.nn.Module, args: Any) -> None:
        self.deep += 1


def count_steps(counter: ComputedSteps, called: torch.nn.Module) -> list[Any]:
    """Hook ``counter`` onto the denoiser the pipeline calls and onto its probe (an
    uncompiled cell's: see the module docstring); returns the handles."""
    handles = [called.register_forward_pre_hook(counter.on_forward)]
    if counter.probe is not None:
        handles.append(counter.probe.register_forward_pre_hook(counter.on_deep))
    return handles


def deepest_block(module: torch.nn.Module) -> torch.nn.Module | None:
    """The last block of the transformer's last block list (what FirstBlockCache and
    MagCache treat as the tail)."""
    last: torch.nn.Module | None = None
    for name, child in module.named_children():
        if name in BLOCK_LISTS and isinstance(child, torch.nn.ModuleList) and len(child):
            last = child[-1]
    return last


def deep_probe(block: torch.nn.Module) -> torch.nn.Module | None:
    """The submodule of ``block`` whose calls say the block's attention really ran: the
    query projection (``to_qkv`` once fused) of its first attention layer, else the
    block's first Linear. Inside the attention, so the attention-level caches (TaylorSeer,
    FasterCache, PAB), which replace the attention's forward, are counted too."""
    for layer in block.modules():
        if not is_attention_module(layer):
            continue
        names = ("to_qkv", "to_q") if getattr(layer, "fused_projections", False) else ("to_q",)
        for name in names:
            sub = getattr(layer, name, None)
            if isinstance(sub, torch.nn.Module):
                return sub
        return next((m for m in layer.modules() if isinstance(m, torch.nn.Linear)), None)
    return next((m for m in block.modules() if isinstance(m, torch.nn.Linear)), None)


def _hooked(module: torch.nn.Module) -> dict[str, frozenset[str]]:
    """The diffusers hooks each submodule holds (``HookRegistry`` on ``_diffusers_hook``)."""
    out: dict[str, frozenset[str]] = {}
    for name, sub in module.named_modules():
        hooks = getattr(getattr(sub, "_diffusers_hook", None), "hooks", None)
        if name and isinstance(hooks, dict) and hooks:
            out[name] = frozenset(hooks)
    return out


#: Caches whose hooks keep one state per attention layer, not one per ``cache_context``
#: (diffusers 0.42.1: ``self.state`` on the hook, no StateManager).
ONE_CONTEXT = {"pab": "Pyramid Attention Broadcast", "faster": "FasterCache"}


def guard_one_context(module: torch.nn.Module, cache: str, stage: str) -> None:
    """Refuse, at the first call that shows it, a pipeline that calls the transformer once per
    guidance branch under a cache of :data:`ONE_CONTEXT`: the unconditional call would reuse
    the conditional call's attention (Qwen-Image's texts differ in length: a shape error;
    Wan's match: silently the wrong branch). The pipelines name each branch's call with
    ``cache_context(name)``; a second name in one cell is that case."""
    original: Callable[..., contextlib.AbstractContextManager[Any]] = module.cache_context  # type: ignore[assignment]
    seen: set[str] = set()
    what = ONE_CONTEXT[cache_kind(cache)]

    @contextlib.contextmanager
    def one_context(name: str, **kwargs: Any) -> Iterator[None]:
        seen.add(name)
        if len(seen) > 1:
            raise Unsupported(
                f"{cache_kind(cache)}: stage {stage} calls its transformer once per guidance branch (cache contexts "
                f"{', '.join(sorted(seen))}), and diffusers {diffusers_version()} keeps one {what} state per "
                "attention layer, not per context: one branch would reuse the other's attention"
            )
        with original(name, **kwargs):
            yield

    module.cache_context = one_context  # type: ignore[assignment]


def attention_names(module: torch.nn.Module) -> list[str]:
    """The names of the attention layers inside ``module``'s block lists."""
    return [
        name
        for name, sub in module.named_modules()
        if name.split(".", 1)[0] in BLOCK_LISTS and is_attention_module(sub)
    ]


def _enable(module: torch.nn.Module, config: Any, spec: CellSpec) -> int:
    """``enable_cache(config)``; how many submodules gained a diffusers hook."""
    before = _hooked(module)
    try:
        module.enable_cache(config)  # type: ignore[operator]
    except (ValueError, IndexError) as exc:  # e.g. FirstBlockCache on a model with one block
        raise Unsupported(f"cache {spec.cache}: {type(module).__name__}: {type(exc).__name__}: {exc}") from exc
    after = _hooked(module)
    return sum(1 for name, hooks in after.items() if hooks - before.get(name, frozenset()))


def cache_config(spec: CellSpec, pipe: Any, steps: int, dtype: torch.dtype) -> tuple[Any, str]:
    """diffusers' config for ``spec.cache`` and what it does in words.

    Arguments each config requires in diffusers 0.42.1: PAB and FasterCache read the
    current timestep through ``current_timestep_callback`` (the pipeline's
    ``current_timestep``); MagCache needs the model's magnitude ratios and the number of
    steps to stretch them over. FasterCache's unconditional-branch skip splits a batch of
    [uncond, cond] inputs; FLUX, Qwen-Image and Wan call their transformer once per branch
    instead, so it is off (``is_guidance_distilled``) and FasterCache reuses attention only.
    """
    from diffusers.hooks import (
        FasterCacheConfig,
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    kind = cache_kind(spec.cache)
    if kind == "fbc":
        threshold = float(spec.cache.partition(":")[2])
        return FirstBlockCacheConfig(threshold=threshold), f"FirstBlockCache, threshold {threshold:g}"
    if kind == "taylorseer":
        ts = TaylorSeerCacheConfig(taylor_factors_dtype=dtype)
        return ts, (
            f"TaylorSeer, order {ts.max_order}: all of the first {ts.disable_cache_before_step} steps, "
            f"then one in {ts.cache_interval} computed"
        )
    if kind == "magcache":
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

        mc = MagCacheConfig(mag_ratios=FLUX_MAG_RATIOS, num_inference_steps=steps)
        return mc, (
            f"MagCache with diffusers' FLUX.1 ratios, threshold {mc.threshold:g}, "
            f"at most {mc.max_skip_steps} steps skipped in a row"
        )
    if not hasattr(type(pipe), "current_timestep") and not hasattr(pipe, "current_timestep"):
        raise Unsupported(
            f"{kind}: it reads the pipeline's current_timestep, which {type(pipe).__name__} does not keep"
        )

    def timestep() -> Any:
        return pipe.current_timestep

    if kind == "faster":
        video = registry.get(spec.pipeline).video
        fc = FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 681),
            attention_weight_callback=lambda _module: 0.5,
            current_timestep_callback=timestep,
            tensor_format="BCFHW" if video else "BCHW",
            is_guidance_distilled=True,
        )
        lo, hi = fc.spatial_attention_timestep_skip_range
        return fc, f"FasterCache, attention reused every other step for timesteps in ({lo}, {hi})"
    pab = PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=timestep,
    )
    lo, hi = pab.spatial_attention_timestep_skip_range
    return pab, f"Pyramid Attention Broadcast, attention reused every other step for timesteps in ({lo}, {hi})"


def enable_cache(
    targets: list[Target], spec: CellSpec, steps: dict[str, int], stage_of: dict[str, str]
) -> tuple[str, dict[str, ComputedSteps]]:
    """``enable_cache`` with the cell's config on each transformer denoiser; returns the
    words and one :class:`ComputedSteps` per stage (``steps``: the steps of each stage,
    ``stage_of``: the stage of each denoiser key), to be hooked last; none for a compiled
    cell, whose steps cannot be counted (module docstring)."""
    counters: dict[str, ComputedSteps] = {}
    parts: list[str] = []
    for key, pipe, _attr, module in targets:
        enable = getattr(module, "enable_cache", None)
        if not callable(enable):
            raise Unsupported(
                f"cache {spec.cache}: {type(module).__name__} has no enable_cache in diffusers "
                f"{diffusers_version()} (it is not a CacheMixin model)"
            )
        stage = stage_of[key]
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
        config, words = cache_config(spec, pipe, steps[stage], dtype)
        hooked = _enable(module, config, spec)
        if hooked == 0 and cache_kind(spec.cache) == "taylorseer" and attention_names(module):
            # TaylorSeer's documented default is every attention layer, but its patterns
            # ("^blocks.*attn", fully matched) miss names like Wan's "blocks.0.attn1": name them.
            named = attention_names(module)
            module.disable_cache()  # type: ignore[operator]
            config.cache_identifiers = [rf"^{re.escape(name)}$" for name in named]
            hooked = _enable(module, config, spec)
            words += f" (attention layers named explicitly, e.g. {named[0]}: the default patterns miss them)"
        if hooked == 0:
            raise Unsupported(f"cache {spec.cache}: {words} hooked no module of {type(module).__name__}")
        if cache_kind(spec.cache) in ONE_CONTEXT:
            guard_one_context(module, spec.cache, stage)
        block = deepest_block(module)
        probe = deep_probe(block) if block is not None else None
        if not spec.compiled and probe is not None:  # no probe, no count (never a false 0)
            counters.setdefault(stage, ComputedSteps(steps[stage], probe))
        parts.append(f"{words} on {key} ({hooked} modules hooked)")
    uncounted = "; steps computed not counted under torch.compile" if spec.compiled else ""
    return f"{spec.cache}: " + "; ".join(parts) + uncounted, counters
