"""The second wave's levers on a built pipeline's denoisers (worker only: torch, diffusers, torchao).

Each lever is one function that applies one setting to the denoisers (the modules the seed
compiles, as ``(key, pipe, attr, module)`` from :func:`.apply.denoisers`) and returns what it
did in the words the event log shows (``SettingsApplied.levers``). A setting that cannot run
here raises :class:`Unsupported` with the reason, and the cell ends "not supported: <reason>".
What can be decided from the cell's settings and this machine alone (a missing package, a
GPU generation, a CPU cell) is decided by the ``*_problem`` functions, which
:func:`.apply.preflight` calls before anything is built; what depends on the model (does it
declare repeated blocks, do its attention processors use diffusers' dispatcher) is decided
when the lever is applied. Step caches live in :mod:`.levers_cache`.

Everything is read back from the modules rather than trusted: diffusers accepts settings it
then ignores (``set_attention_backend`` on a processor outside its dispatcher,
``fuse_qkv_projections`` on Qwen-Image's attention), so what is recorded is what the modules
hold afterwards.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch

from ...pipelines import registry
from ...pipelines.settings import DISPATCH_ATTENTION, UNET_ATTENTION, CellSpec, canonical_attention

#: A denoiser as :func:`.apply.denoisers` yields it: (key, pipe, attribute, module).
Target = tuple[str, Any, str, torch.nn.Module]


class Unsupported(RuntimeError):
    """This combination cannot run here; the cell becomes "not supported: <reason>"."""


# --- facts about this machine (module-level so tests can monkeypatch them) ---------------------


def cuda_capability(device: str) -> tuple[int, int] | None:
    """(major, minor) of ``device``'s GPU, None for a CPU cell. Only asked for CUDA cells,
    whose worker has initialised CUDA already (``device_facts``), so asking costs nothing."""
    if not device.startswith("cuda"):
        return None
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return int(major), int(minor)


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (a package's import may be
    slow or print; absence is what the preflight needs to know)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def diffusers_version() -> str:
    try:
        return importlib.metadata.version("diffusers")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _sm(capability: tuple[int, int]) -> str:
    return f"compute capability {capability[0]}.{capability[1]}"


# --- attention --------------------------------------------------------------------------------

#: The dispatcher backends that are torch's SDPA with one kernel forced (what the UNets'
#: ``sdpa-*`` choices force around their processors), by SDPBackend name.
NATIVE_KERNELS = {
    "_native_flash": "FLASH_ATTENTION",
    "_native_efficient": "EFFICIENT_ATTENTION",
    "_native_cudnn": "CUDNN_ATTENTION",
    "_native_math": "MATH",
}
#: Backends that are torch's own SDPA: on CUDA the kernel that ran is sampled for these.
NATIVE_SDPA = ("native", *NATIVE_KERNELS)
#: Backends from another package: (module to import, what to install).
_PACKAGES = {
    "flash": ("flash_attn", "flash-attn (FlashAttention 2)"),
    "_flash_3": ("flash_attn_interface", "FlashAttention 3 (flash_attn_interface, built from source)"),
    "sage": ("sageattention", "sageattention"),
    "xformers": ("xformers", "xformers"),
}
#: Backends whose kernels exist only on CUDA (torch's CPU SDPA has math and flash only).
_CUDA_ONLY = ("flash", "_flash_3", "sage", "xformers", "_native_efficient", "_native_cudnn")
#: The oldest GPU generation each backend's kernels run on (FlashAttention 2, torch's flash
#: and cuDNN SDPA, SageAttention: Ampere; FlashAttention 3 is written for Hopper only).
_MIN_CAPABILITY = {
    "flash": (8, 0),
    "_flash_3": (9, 0),
    "sage": (8, 0),
    "_native_flash": (8, 0),
    "_native_cudnn": (8, 0),
}
_MAX_CAPABILITY = {"_flash_3": (9, 0)}
#: Backends whose CUDA kernels take fp16/bf16 only (torch's CPU flash also takes fp32).
_HALF_ONLY = ("flash", "_flash_3", "sage", "_native_cudnn", "_native_flash")


def _valid(choices: Iterable[str]) -> str:
    return ", ".join(choices)


def attention_choice_problem(spec: CellSpec) -> str | None:
    """Why ``spec.attention`` is no choice for its pipeline's family, naming the valid ones."""
    choice = canonical_attention(spec.pipeline, spec.attention)
    if registry.get(spec.pipeline).family != "transformer":
        if choice in UNET_ATTENTION:
            return None
        return (
            f"{spec.attention}: a backend of diffusers' attention dispatcher, which {spec.pipeline}'s UNets do "
            f"not use (their attention is a processor); valid for UNet pipelines: {_valid(UNET_ATTENTION)}"
        )
    if choice in DISPATCH_ATTENTION:
        return None
    return (
        f"{spec.attention}: attention processors are the UNets' choice; {spec.pipeline} is a transformer "
        f"pipeline, set through diffusers' attention dispatcher: valid: {_valid(DISPATCH_ATTENTION)} "
        "(sdpa, sdpa-flash, sdpa-efficient, sdpa-math, sdpa-cudnn name the same SDPA kernels)"
    )


def attention_problem(spec: CellSpec, capability: tuple[int, int] | None) -> str | None:
    """Why ``spec``'s attention cannot run here (one line), or None. Before the build: the
    family's valid choices, then (transformers) the backend's package, CUDA, the GPU
    generation and the dtype. The UNets' SDPA kernels are left to fail in the denoiser, as
    they always have ("no SDPA kernel of that kind can run this")."""
    problem = attention_choice_problem(spec)
    choice = canonical_attention(spec.pipeline, spec.attention)
    if problem is not None or registry.get(spec.pipeline).family != "transformer":
        return problem
    package = _PACKAGES.get(choice)
    if package is not None and not has_module(package[0]):
        return f"{choice}: {package[1]} is not installed (no module {package[0]})"
    if choice == "flex" and not has_module("torch.nn.attention.flex_attention"):
        return f"flex: torch {torch.__version__} has no flex attention (torch.nn.attention.flex_attention)"
    if capability is None:
        if choice in _CUDA_ONLY:
            return f"{choice}: its kernels run on a CUDA GPU only; this cell runs on {spec.device}"
        return None
    low, high = _MIN_CAPABILITY.get(choice), _MAX_CAPABILITY.get(choice)
    if low is not None and capability < low:
        return f"{choice}: needs a GPU of {_sm(low)} or newer; this one is {_sm(capability)}"
    if high is not None and capability[0] > high[0]:
        return f"{choice}: its kernels are written for {_sm(high)} (Hopper) only; this GPU is {_sm(capability)}"
    if choice in _HALF_ONLY and spec.dtype == "fp32":
        return f"{choice}: its CUDA kernels take fp16 or bf16 only; this cell is fp32 (use --dtype fp16 or bf16)"
    return None


def is_attention_module(module: torch.nn.Module) -> bool:
    """An attention layer of diffusers (old ``Attention`` or the new mixin): it has a processor."""
    return hasattr(module, "processor") and hasattr(module, "set_processor")


def backend_names(module: torch.nn.Module, forced: str = "") -> list[str]:
    """The attention backends ``module``'s attention layers hold (sorted, unique).

    A processor of diffusers' dispatcher holds ``_attention_backend`` (its value is the
    backend's name; None means the process-wide default, "native" unless changed). One
    outside the dispatcher (SD3's JointAttnProcessor2_0 calls SDPA itself) reads as the
    backend it is equivalent to, so the column compares across pipelines: "native" (SDPA
    as it is), or the ``_native_*`` backend whose kernel is forced around the denoiser
    (``forced``, an SDPBackend name); its processor class is in ``attention_processors``.
    """
    kernel_backend = {kernel: name for name, kernel in NATIVE_KERNELS.items()}
    names: set[str] = set()
    for layer in module.modules():
        if not is_attention_module(layer):
            continue
        processor = getattr(layer, "processor", None)
        if processor is None:
            continue
        if hasattr(processor, "_attention_backend"):
            backend = processor._attention_backend
            names.add(str(getattr(backend, "value", backend)) if backend is not None else "native")
        else:
            names.add(kernel_backend.get(forced, "native"))
    return sorted(names)


def _outside_dispatcher(module: torch.nn.Module) -> list[str]:
    """Processor classes of ``module``'s attention layers that do not use the dispatcher."""
    return sorted(
        {
            type(layer.processor).__name__
            for layer in module.modules()
            if is_attention_module(layer)
            and layer.processor is not None
            and not hasattr(layer.processor, "_attention_backend")
        }
    )


def set_backends(targets: list[Target], spec: CellSpec) -> str:
    """``set_attention_backend`` on every transformer denoiser; returns the SDPA kernel to
    force around the denoisers ("" for none).

    Processors outside the dispatcher (SD3's, in diffusers 0.42.1) ignore the call: with
    "native" they already are plain SDPA; with a ``_native_*`` kernel the same kernel is
    forced around the denoiser's forward instead (as the UNets' ``sdpa-*``), so the choice
    still holds; any other backend cannot reach them and the cell is not supported.
    """
    choice = canonical_attention(spec.pipeline, spec.attention)
    forced = ""
    for key, _pipe, _attr, module in targets:
        setter = getattr(module, "set_attention_backend", None)
        if not callable(setter):
            raise Unsupported(f"{choice}: {key} ({type(module).__name__}) has no set_attention_backend")
        outside = _outside_dispatcher(module)
        if outside and choice not in NATIVE_SDPA:
            raise Unsupported(
                f"{choice}: {type(module).__name__}'s attention processors ({', '.join(outside)}) call torch's SDPA "
                f"directly, outside diffusers' attention dispatcher (diffusers {diffusers_version()}), so no "
                f"backend but SDPA reaches them; valid here: {_valid(NATIVE_SDPA)}"
            )
        try:
            setter(choice)
        except (RuntimeError, ValueError) as exc:  # diffusers' own check: a package or version missing
            raise Unsupported(f"{choice}: {exc}") from exc
        if outside and choice in NATIVE_KERNELS:
            forced = NATIVE_KERNELS[choice]
    return forced


def read_backends(targets: list[Target], forced: str) -> dict[str, list[str]]:
    """Each transformer denoiser's backends as its attention layers hold them now."""
    return {key: backend_names(module, forced) for key, _pipe, _attr, module in targets}


# --- fused QKV ----------------------------------------------------------------------------------


def fuse_problem(spec: CellSpec) -> str | None:
    """Why ``--fuse-qkv on`` cannot run with ``spec`` (before the build), or None."""
    if not spec.fuse_qkv or registry.get(spec.pipeline).family == "transformer":
        return None
    choice = canonical_attention(spec.pipeline, spec.attention)
    if choice in ("classic", "xformers"):
        return (
            f"fuse_qkv with {choice} attention: diffusers fuses a UNet's QKV by installing its SDPA processor "
            "(FusedAttnProcessor2_0) on every attention layer, which would replace the attention asked for; "
            "fuse_qkv runs with sdpa attention only"
        )
    return None


def fuse_qkv(targets: list[Target]) -> str:
    """``fuse_qkv_projections()`` on each denoiser (diffusers' model API, the one that
    exists for FLUX, SD3, Qwen-Image, Wan and the UNets), then counts the attention layers
    whose projections really are fused: Qwen-Image's accepts the call and fuses nothing."""
    parts: list[str] = []
    for key, _pipe, _attr, module in targets:
        fuse = getattr(module, "fuse_qkv_projections", None)
        layers = [m for m in module.modules() if is_attention_module(m)]
        if not callable(fuse) or not layers:
            raise Unsupported(f"fuse_qkv: {key} ({type(module).__name__}) has no attention projections to fuse")
        try:
            fuse()
        except ValueError as exc:  # "not supported for models having added KV projections" (IF's UNets)
            raise Unsupported(f"fuse_qkv: {type(module).__name__}: {exc}") from exc
        fused = sum(bool(getattr(m, "fused_projections", False)) for m in layers)
        if fused == 0:
            procs = sorted({type(m.processor).__name__ for m in layers if m.processor is not None})
            raise Unsupported(
                f"fuse_qkv: {type(module).__name__} has no fused-QKV path in diffusers {diffusers_version()}: "
                f"fuse_qkv_projections fused none of its {len(layers)} attention layers ({', '.join(procs)})"
            )
        parts.append(f"{fused} of {len(layers)} attention layers of {key}")
    return "fused QKV in " + ", ".join(parts)


# --- quantisation (torchao) ---------------------------------------------------------------------

#: ``--quant`` -> torchao's config class (``torchao.quantization``).
QUANT_CONFIGS = {
    "int8wo": "Int8WeightOnlyConfig",
    "int8dq": "Int8DynamicActivationInt8WeightConfig",
    "fp8dq": "Float8DynamicActivationFloat8WeightConfig",
    "fp8wo": "Float8WeightOnlyConfig",
}
#: float8 matmuls need Ada (sm89) or newer.
FP8_CAPABILITY = (8, 9)
TORCHAO_MISSING = "torchao is not installed: pip install 'sdtop[quant]'"


def torchao_problem() -> str | None:
    """Why torchao cannot serve this torch, or None.

    torchao states its torch compatibility at import: a release built for another torch
    skips loading its C++ extensions and keeps why in ``torchao._skip_reason`` ("...
    incompatible torch version ..."; 0.18.0 wants torch >= 2.11.0; older releases listed
    the exact torch builds they match, torchao issue #2919). A torchao whose import fails
    (a mismatched binary can abort or raise) is as unusable.
    """
    if not has_module("torchao"):
        return TORCHAO_MISSING
    try:
        version = importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    try:
        torchao = importlib.import_module("torchao")
    except Exception as exc:  # any import failure means the same thing: no torchao here
        return f"torchao {version} cannot be imported beside torch {torch.__version__}: {type(exc).__name__}: {exc}"
    reason = getattr(torchao, "_skip_reason", None)
    if isinstance(reason, str) and "incompatible" in reason.lower():
        return f"torchao {version} does not match torch {torch.__version__}: {' '.join(reason.split())}"
    return None


def quant_problem(spec: CellSpec, capability: tuple[int, int] | None) -> str | None:
    """Why ``spec.quant`` cannot run here (before the build), or None."""
    if spec.quant == "none":
        return None
    if not has_module("torchao"):
        return TORCHAO_MISSING
    if spec.quant.startswith("fp8"):
        if capability is None:
            return (
                f"{spec.quant}: torchao's float8 kernels need a CUDA GPU of {_sm(FP8_CAPABILITY)} or newer "
                f"(Ada, Hopper, Blackwell); this cell runs on {spec.device}"
            )
        if capability < FP8_CAPABILITY:
            need = _sm(FP8_CAPABILITY)
            return f"{spec.quant}: torchao's float8 kernels need {need} or newer; this GPU is {_sm(capability)}"
    problem = torchao_problem()
    if problem is not None:
        return problem
    quantization = importlib.import_module("torchao.quantization")
    if not hasattr(quantization, QUANT_CONFIGS[spec.quant]) or not hasattr(quantization, "quantize_"):
        version = importlib.metadata.version("torchao")
        return f"{spec.quant}: torchao {version} has no torchao.quantization.{QUANT_CONFIGS[spec.quant]}"
    return None


def is_quantized(layer: torch.nn.Module) -> bool:
    """A Linear whose weight torchao replaced by one of its tensor subclasses."""
    weight = getattr(layer, "weight", None)
    return isinstance(weight, torch.Tensor) and type(weight) not in (torch.Tensor, torch.nn.Parameter)


def quantize(targets: list[Target], quant: str) -> str:
    """torchao's ``quantize_`` with ``quant``'s config on each denoiser's Linear layers;
    says how many layers really hold quantized weights afterwards."""
    quantization = importlib.import_module("torchao.quantization")
    config_cls = getattr(quantization, QUANT_CONFIGS[quant])
    parts: list[str] = []
    for key, _pipe, _attr, module in targets:
        quantization.quantize_(module, config_cls())
        n = sum(isinstance(m, torch.nn.Linear) and is_quantized(m) for m in module.modules())
        if n == 0:
            raise Unsupported(f"{quant}: torchao quantized no Linear layer of {key} ({type(module).__name__})")
        parts.append(f"{n} Linear layers of {key}")
    return f"{quant} on " + ", ".join(parts)


# --- regional compile -------------------------------------------------------------------------


def repeated_blocks(module: torch.nn.Module) -> Counter[str]:
    """How many blocks of each class ``module`` declares as repeated (``_repeated_blocks``,
    what ``compile_repeated_blocks`` compiles), in declaration order."""
    names = [str(n) for n in (getattr(module, "_repeated_blocks", None) or ())]
    found = Counter(type(m).__name__ for m in module.modules() if type(m).__name__ in names)
    return Counter({n: found[n] for n in names if found[n]})


def stacked_blocks(module: torch.nn.Module) -> Counter[str]:
    """The repeated blocks of a transformer that declares none (SD3 in diffusers 0.42.1): the
    classes of the top-level ``nn.ModuleList`` children that repeat (``transformer_blocks``:
    JointTransformerBlock x24). Regional compile is exactly "compile each of those once"."""
    found: Counter[str] = Counter()
    for child in module.children():
        if isinstance(child, torch.nn.ModuleList):
            kinds = Counter(type(m).__name__ for m in child)
            found.update({name: n for name, n in kinds.items() if n >= 2})
    return found


def compile_regional(targets: list[Target], spec: CellSpec) -> str:
    """``compile_repeated_blocks`` on each denoiser with the cell's mode (inductor only, as
    :func:`.apply.apply_compile` passes it), backend and fullgraph: each block compiles in
    place, once, and the blocks of one class reuse its code. Every denoiser is checked
    before any is compiled. The denoiser itself stays a plain module, so the hooks on it
    (the compile watch's module key, the kernel scope) run outside compiled code.

    A transformer whose class declares no ``_repeated_blocks`` (SD3's, in diffusers 0.42.1)
    gets the same treatment on its stacked blocks (:func:`stacked_blocks`), said so in the
    lever's words; a UNet that declares none is refused (its top-level lists hold unlike
    down/up blocks, not a repeated block)."""
    found: list[tuple[str, torch.nn.Module, Counter[str], bool]] = []
    for key, _pipe, _attr, module in targets:
        declared = getattr(module, "_repeated_blocks", None)
        if not declared or not callable(getattr(module, "compile_repeated_blocks", None)):
            stacked = stacked_blocks(module) if "Transformer" in type(module).__name__ else Counter()
            if not stacked:
                raise Unsupported(
                    f"regional compile: {type(module).__name__} ({key}) declares no repeated blocks "
                    f"(_repeated_blocks is empty in diffusers {diffusers_version()}); use --compile-scope whole"
                )
            found.append((key, module, stacked, False))
            continue
        blocks = repeated_blocks(module)
        if not blocks:
            raise Unsupported(
                f"regional compile: {type(module).__name__} ({key}) declares repeated blocks "
                f"{', '.join(map(str, declared))} but holds none of them; use --compile-scope whole"
            )
        found.append((key, module, blocks, True))
    kwargs: dict[str, Any] = {"fullgraph": spec.fullgraph, "backend": spec.compile_backend}
    if spec.compile_backend == "inductor":
        kwargs["mode"] = None if spec.compile_mode == "default" else spec.compile_mode
    for _key, module, blocks, declared_by_diffusers in found:
        if declared_by_diffusers:
            module.compile_repeated_blocks(**kwargs)  # type: ignore[operator]
            continue
        for sub in module.modules():  # what compile_repeated_blocks does, on the stacked classes
            if type(sub).__name__ in blocks:
                sub.compile(**kwargs)
    words = [
        ", ".join(f"{name} x{n}" for name, n in blocks.items())
        + ("" if declared else " (stacked blocks; none declared)")
        for _k, _m, blocks, declared in found
    ]
    if len(found) == 1:
        return f"regional: {words[0]}"
    return "regional: " + "; ".join(f"{key}: {w}" for (key, *_rest), w in zip(found, words, strict=True))


# --- offload --------------------------------------------------------------------------------------

OFFLOAD_CPU = "offload moves weights between CPU memory and a GPU; this cell runs on cpu"


def offload_problem(spec: CellSpec) -> str | None:
    """Offload needs a GPU to offload from (before the build)."""
    if spec.offload == "none" or spec.device.startswith("cuda"):
        return None
    return OFFLOAD_CPU if spec.device == "cpu" else f"offload needs a CUDA GPU; this cell runs on {spec.device}"


def _models(pipe: Any) -> dict[str, torch.nn.Module]:
    components = getattr(pipe, "components", None)
    if not isinstance(components, dict):
        return {}
    return {name: c for name, c in components.items() if isinstance(c, torch.nn.Module)}


def offload(stages: list[tuple[Any, tuple[str, ...]]], spec: CellSpec) -> str:
    """Offload each stage's models (``stages``: (pipe, denoiser attributes) per stage).

    - model: ``pipe.enable_model_cpu_offload(device=...)``: each whole model moves to the
      GPU when the pipeline calls it and back to CPU memory when the next one is called;
    - group: the denoisers' ``enable_group_offload`` and diffusers' ``apply_group_offloading``
      for the other models, leaf level with CUDA streams (diffusers' recipe: the next
      layers' weights are copied while the current ones run).

    Applied before compile (diffusers' own compile test enables group offloading, then
    compiles; model offload hooks the pipeline's components, which must be the modules, not
    compiled wrappers).
    """
    if spec.offload == "model":
        for pipe, _attrs in stages:
            enable = getattr(pipe, "enable_model_cpu_offload", None)
            if not callable(enable):
                raise Unsupported(f"offload model: {type(pipe).__name__} has no enable_model_cpu_offload")
            enable(device=spec.device)
        return f"model offload: each model moves to {spec.device} when called (enable_model_cpu_offload)"
    from diffusers.hooks import apply_group_offloading

    onload = torch.device(spec.device)
    stream = onload.type == "cuda"
    denoised: list[str] = []
    others: list[str] = []
    for pipe, attrs in stages:
        for name, model in _models(pipe).items():
            kwargs: dict[str, Any] = {"onload_device": onload, "offload_type": "leaf_level", "use_stream": stream}
            if name in attrs:
                enable = getattr(model, "enable_group_offload", None)
                if not callable(enable):
                    raise Unsupported(f"offload group: {name} ({type(model).__name__}) has no enable_group_offload")
                try:
                    enable(offload_device=torch.device("cpu"), **kwargs)
                except ValueError as exc:  # "... does not support group offloading"
                    raise Unsupported(f"offload group: {exc}") from exc
                denoised.append(name)
            else:
                apply_group_offloading(model, **kwargs)
                others.append(name)
    how = "leaf level, CUDA streams" if stream else "leaf level"
    return f"group offload ({how}) of {', '.join(denoised + others)}"


# --- memory format --------------------------------------------------------------------------------


def channels_last_fits(module: torch.nn.Module) -> bool:
    """Whether channels_last means anything for ``module`` and can be applied: it has 4-D
    tensors (2-D convolutions) and no 5-D ones (Wan's 3-D patch convolution, which
    ``module.to(memory_format=channels_last)`` refuses: "required rank 4 tensor")."""
    ranks = {t.dim() for t in (*module.parameters(), *module.buffers())}
    return 4 in ranks and 5 not in ranks
