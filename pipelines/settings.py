"""The settings of one cell and of a whole matrix, validated without torch.

The CLI, the TUI's setup screen and the worker share these definitions, so a bad value
gets the same one-line message everywhere, naming the valid choices. Nothing here imports
torch: validation must be instant and must work in the UI process.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import registry

#: UNet pipelines' attention: their processors (the seed's choices).
UNET_ATTENTION = ("sdpa", "classic", "xformers", "sdpa-flash", "sdpa-efficient", "sdpa-math", "sdpa-cudnn")
#: Transformer pipelines' attention: diffusers' dispatcher backends (``set_attention_backend``),
#: those that need no download ("*_hub" kernels come from the hub at run time).
DISPATCH_ATTENTION = (
    "native",
    "_native_flash",
    "_native_efficient",
    "_native_cudnn",
    "_native_math",
    "flex",
    "flash",
    "_flash_3",
    "sage",
    "xformers",
)
ATTENTION = UNET_ATTENTION + tuple(a for a in DISPATCH_ATTENTION if a not in UNET_ATTENTION)
#: The same SDPA kernel choice spelled for each family: a UNet cell given a dispatcher name
#: (or a transformer cell given a seed name) runs its equivalent, and a matrix naming both
#: spellings gets one cell (:func:`canonical_attention`).
_SDPA_SPELLINGS = {
    "sdpa": "native",
    "sdpa-flash": "_native_flash",
    "sdpa-efficient": "_native_efficient",
    "sdpa-math": "_native_math",
    "sdpa-cudnn": "_native_cudnn",
}
#: Attention that changes the numbers on purpose (int8 QK): a lossy lever, like quant/cache.
LOSSY_ATTENTION = ("sage",)
#: ``--compile-scope``: the whole denoiser, or its repeated blocks (``compile_repeated_blocks``).
COMPILE_SCOPES = ("whole", "regional")
#: ``--quant``: torchao on the denoiser's Linear layers (weight-only or dynamic activations).
QUANTS = ("none", "int8wo", "int8dq", "fp8dq", "fp8wo")
#: ``--cache``: diffusers' step caches on the denoiser; "fbc" takes a threshold ("fbc:0.2").
CACHE_KINDS = ("none", "fbc", "taylorseer", "magcache", "faster", "pab")
CACHES_FORM = "none, fbc:<threshold> (e.g. fbc:0.2), taylorseer, magcache, faster, pab"
#: ``--offload``: nothing, whole models to the GPU in turn, or groups of layers streamed (CUDA only).
OFFLOADS = ("none", "model", "group")
ON_OFF = ("off", "on")
#: Where a cell's output (final latents, decoded images) is kept: the session's folder, or not at all.
OUTPUTS = ("session", "off")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_BACKENDS = ("inductor", "eager", "aot_eager")
DTYPES = ("fp16", "bf16", "fp32")
DEVICES = ("cuda", "cpu")
WEIGHTS = registry.WEIGHT_SOURCES
ON_RECOMPILE = ("warn", "fail")
#: Where inductor's on-disk caches live for a cell (``--compile-cache``): one folder per
#: session (a cell's ``compile_s`` is then cold unless an identical cell ran before it in
#: this session), torch's default folder (shared with every run on the machine), or off.
COMPILE_CACHES = ("session", "shared", "off")

#: One size of ``--resolutions``: (height, width), in pixels.
Size = tuple[int, int]

DEFAULT_PROMPT = "ghibli style, a fantasy landscape with castles"

# A hub repo id: "name" or "owner/name", the characters the hub allows.
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


class BadInput(ValueError):
    """A user error: its message is one line, shown as is, and the program exits 2."""


@dataclass(frozen=True)
class CellSpec:
    """Everything one worker needs to run one cell. Concrete: no "auto" values left."""

    pipeline: str
    weights: str = "tiny"
    model: str | None = None
    attention: str = "sdpa"
    compile_mode: str = "none"
    fullgraph: bool = True
    compile_backend: str = "inductor"
    channels_last: bool = True
    dtype: str = "fp32"
    batch_size: int = 1
    height: int = 64
    width: int = 64
    steps: int = 50
    iterations: int = 3
    warmup: int = 1
    device: str = "cpu"
    seed: int = 0
    prompt: str = DEFAULT_PROMPT
    # Sizes run one after another in this cell's worker, as a user changing sizes would
    # (``--resolutions``); empty = just (height, width), which is then the first size.
    resolutions: tuple[Size, ...] = ()
    # What a recompile after warmup does: "warn" (an event, the cell goes on) or "fail"
    # (torch's fail_on_recompile stance: the cell ends "error: recompiled: <reason>").
    on_recompile: str = "warn"
    # Where torch's structured trace (what tlparse reads) goes; None = not written.
    trace_dir: str | None = None
    # inductor's on-disk caches: one of COMPILE_CACHES as asked; the runner hands the worker
    # "session" resolved to the session's own folder (an absolute path), which only it knows.
    compile_cache: str = "session"
    # torch's CPU threads in the worker; 0 = auto (see resolve_threads).
    threads: int = 0
    # The second wave's levers (COMPILE_SCOPES, QUANTS, CACHE_KINDS, OFFLOADS); an
    # uncompiled cell's scope is always "whole" (it cannot differ).
    compile_scope: str = "whole"
    quant: str = "none"
    cache: str = "none"
    offload: str = "none"
    fuse_qkv: bool = False
    # Frames per video (video pipelines; 0 for images).
    frames: int = 0
    # Where the last measured call's output is kept: OUTPUTS as asked; the runner hands
    # the worker "session" resolved to the session's own outputs folder.
    outputs: str = "session"
    # --profile: one extra call under torch.profiler after the measured ones. "off", or
    # "session" as asked; the runner hands the worker the session's profiles folder.
    profile: str = "off"
    # --memory-snapshot (CUDA, with --profile): the allocator's history over that call.
    memory_snapshot: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped (sizes as lists), so the dict a session records reads back equal."""
        d = dataclasses.asdict(self)
        d["resolutions"] = [list(size) for size in self.resolutions]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "resolutions" in kw:  # JSON turned the tuples into lists
            kw["resolutions"] = _sizes(kw["resolutions"])
        return cls(**kw)

    @property
    def compiled(self) -> bool:
        return self.compile_mode != "none"

    @property
    def sizes(self) -> tuple[Size, ...]:
        """Every (height, width) this cell runs at, in order (at least one)."""
        return self.resolutions or ((self.height, self.width),)

    def label(self) -> str:
        """A short one-line description for progress displays."""
        parts = [self.pipeline, self.weights, self.attention, f"compile={self.compile_mode}"]
        if self.compiled:
            parts.append(f"{self.compile_backend}{'+fullgraph' if self.fullgraph else ''}")
            if self.compile_scope != "whole":
                parts.append(self.compile_scope)
        parts += [f"{k}={v}" for k, v in self.levers().items() if v not in ("none", "off")]
        size = "→".join(f"{h}x{w}" for h, w in self.sizes)
        if self.frames:
            size += f"x{self.frames}f"
        parts += [self.dtype, f"b{self.batch_size}", size, f"{self.steps} steps"]
        return " · ".join(parts)

    def levers(self) -> dict[str, str]:
        """The second wave's levers as words (the summary's columns)."""
        return {
            "quant": self.quant,
            "cache": self.cache,
            "offload": self.offload,
            "fuse_qkv": "on" if self.fuse_qkv else "off",
        }

    def lossy(self) -> list[str]:
        """The levers of this cell that change its output on purpose (what a baseline lacks)."""
        out = [f"quant {self.quant}"] if self.quant != "none" else []
        if self.cache != "none":
            out.append(f"cache {self.cache}")
        if self.attention in LOSSY_ATTENTION:
            out.append(f"attention {self.attention}")
        return out

    def baseline_key(self) -> tuple[Any, ...]:
        """What a cell and its baseline share: the same pipeline, weights, size(s), batch,
        dtype, steps, seed, prompt, frames and device make the same image but for the levers."""
        return (
            self.pipeline,
            self.weights,
            self.model,
            self.sizes,
            self.batch_size,
            self.dtype,
            self.steps,
            self.seed,
            self.prompt,
            self.frames,
            self.device,
        )


def _sizes(value: Any) -> tuple[Size, ...]:
    """Sizes read back from JSON (lists) as the tuples the dataclasses hold."""
    return tuple((int(h), int(w)) for h, w in value) if value else ()


@dataclass(frozen=True)
class MatrixSpec:
    """What the user asked for; each list is one axis of the cross product.

    ``device``/``dtype`` may be None ("auto"): they are resolved against the worker host's
    facts (is CUDA there?) by :func:`expand`, which the parent calls once the worker host
    has said what it has.
    """

    # Empty = the embedded default, chosen once the worker host says whether CUDA is there.
    pipelines: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    model: str | None = None
    attention: tuple[str, ...] = ("sdpa",)
    compile_modes: tuple[str, ...] = ("none",)
    fullgraph: bool = True
    compile_backends: tuple[str, ...] = ("inductor",)
    channels_last: bool = True
    dtypes: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] = (1,)
    steps: tuple[int, ...] = (50,)
    height: int | None = None
    width: int | None = None
    iterations: int = 3
    warmup: int = 1
    device: str | None = None
    seed: int = 0
    prompt: str = DEFAULT_PROMPT
    # Per cell, not axes: every cell runs all these sizes in turn (see CellSpec).
    resolutions: tuple[Size, ...] = ()
    on_recompile: str = "warn"
    trace_dir: str | None = None
    threads: int = 0
    compile_cache: str = "session"
    compile_scopes: tuple[str, ...] = ("whole",)
    quants: tuple[str, ...] = ("none",)
    caches: tuple[str, ...] = ("none",)
    offloads: tuple[str, ...] = ("none",)
    fuse_qkv: tuple[bool, ...] = (False,)
    # Frames per video for video pipelines; None = each one's native count.
    frames: int | None = None
    outputs: str = "session"
    # The cell every other cell's output is compared with (``--baseline``); None = for each
    # cell, the first cell of its kind without lossy levers (:func:`baselines`).
    baseline: int | None = None
    profile: bool = False
    memory_snapshot: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MatrixSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in known:
                continue
            kw[k] = tuple(v) if isinstance(v, list) else v
        if "resolutions" in kw:
            kw["resolutions"] = _sizes(kw["resolutions"])
        return cls(**kw)

    def __post_init__(self) -> None:
        # The one place a matrix is checked: every way of making one (the CLI, the setup
        # screen, a recorded session, code) goes through here, so a MatrixSpec is valid.
        validate_matrix(self)

    def n_cells(self, *, cuda_available: bool) -> int:
        """How many cells :func:`expand` makes on a host with (or without) CUDA."""
        return len(expand(self, cuda_available=cuda_available))


# --- where the cells run ---------------------------------------------------------------------

#: ``--ray`` values besides a cluster address: ``auto`` (the cluster this machine belongs
#: to, as ``ray.init(address="auto")`` finds it) and ``local`` (a one-machine cluster started
#: for this run, for trying it).
RAY_SPECIAL = ("auto", "local")
#: The cores a lane's worker may use ("0,1"): set by the parent per lane (``--lanes``,
#: ``--gpus``), applied by the worker before it imports torch.
LANE_CPUS_ENV = "SDTOP_LANE_CPUS"
#: The CPU threads a Ray slot holds (its task's ``num_cpus``): auto threads use that many.
THREADS_ENV = "SDTOP_THREADS"
#: Set by a launcher whose cell processes must die with the process that started them (a
#: Ray worker running the cell's task): that parent's pid (see the worker's
#: ``die_with_parent_if_asked``).
DIE_WITH_PARENT_ENV = "SDTOP_DIE_WITH_PARENT"
#: Seconds a fork server waits for its next cell before it exits by itself: set by a Ray
#: worker, which keeps one warm between tasks but cannot run code while Ray leaves it idle.
SERVER_IDLE_ENV = "SDTOP_SERVER_IDLE_S"
_ACCELERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Placement:
    """Where the cells run: not part of the matrix (the same cells, measured the same way,
    whoever runs them), recorded in ``SessionStarted.placement`` so ``--resume`` runs the
    unfinished cells the same way.

    One lane (the default) is the sequential run. ``lanes`` > 1 runs that many CPU workers
    side by side, each on its share of the cores (or, with ``ray``, keeps that many cells in
    flight on the cluster); ``gpus`` (or ``all_gpus``) runs one lane per card of this box.
    """

    lanes: int = 1
    gpus: tuple[int, ...] = ()
    all_gpus: bool = False
    # "" = this machine; "local", "auto" or a cluster address (host:port).
    ray: str = ""
    accelerators: tuple[str, ...] = ()
    # How often a cell whose Ray node was lost runs again elsewhere.
    retries: int = 1

    @property
    def wants_gpus(self) -> bool:
        return self.all_gpus or bool(self.gpus)

    @property
    def parallel(self) -> bool:
        """True where cells may run side by side (more than one lane, or Ray)."""
        return self.lanes > 1 or self.wants_gpus or bool(self.ray)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Placement:
        return cls(
            lanes=int(d.get("lanes", 1)),
            gpus=tuple(int(g) for g in d.get("gpus", ())),
            all_gpus=bool(d.get("all_gpus", False)),
            ray=str(d.get("ray", "")),
            accelerators=tuple(str(a) for a in d.get("accelerators", ())),
            retries=int(d.get("retries", 1)),
        )

    def describe(self) -> str:
        """One line for the start of a run ("2 lanes", "GPUs 0,1", "Ray cluster auto")."""
        if self.ray:
            accel = f", {'/'.join(self.accelerators)} nodes" if self.accelerators else ""
            slots = f", {self.lanes} cells in flight" if self.lanes > 1 else ""
            return f"Ray cluster {self.ray}{accel}{slots}"
        if self.all_gpus:
            return "every GPU of this machine, one lane each"
        if self.gpus:
            return f"GPUs {','.join(map(str, self.gpus))}, one lane each"
        return f"{self.lanes} lanes" if self.lanes > 1 else "one lane"


def parse_placement(
    *,
    lanes: str | int | None = None,
    gpus: str | None = None,
    ray: str | None = None,
    accelerator: str | None = None,
    retries: str | int | None = None,
    device: str | None = None,
) -> Placement:
    """A Placement from option texts (None = not given), refusing (BadInput, one line) what
    cannot go together. The counts this machine or cluster can give (cores, cards) are
    checked where they are known: by the runner, before anything is written."""
    n_lanes = 1 if lanes is None or str(lanes).strip() == "" else parse_int("--lanes", lanes, minimum=1)
    ray_text = (ray or "").strip()
    gpu_ids: tuple[int, ...] = ()
    all_gpus = False
    if gpus is not None:
        text = gpus.strip()
        if text == "all":
            all_gpus = True
        else:
            try:
                gpu_ids = parse_ints("--gpus", text, minimum=0)
            except BadInput:
                raise BadInput(
                    f"--gpus takes 'all' or card indices like 0,1,3 (as nvidia-smi counts), got {gpus!r}"
                ) from None
        if device == "cpu":
            raise BadInput("--gpus runs cells on CUDA cards; drop --device cpu, or use --lanes N for CPU workers")
        if lanes is not None:
            raise BadInput("--gpus and --lanes: give one (--gpus runs one lane per card)")
        if ray_text:
            raise BadInput("--gpus names this machine's cards; on --ray every cell takes one GPU of the cluster")
    accels: tuple[str, ...] = ()
    if accelerator is not None:
        accels = tuple(dict.fromkeys(split_list(accelerator)))
        if not accels:
            raise BadInput("--accelerator needs at least one Ray accelerator type, e.g. A100,H100")
        for a in accels:
            if not _ACCELERATOR.match(a):
                raise BadInput(f"--accelerator {a!r} is not a Ray accelerator type like A100, H100, L4")
        if not ray_text:
            raise BadInput("--accelerator picks the node types of a Ray cluster; give --ray too")
        if device == "cpu":
            raise BadInput("--accelerator picks GPU node types; it cannot go with --device cpu")
    n_retries = 1
    if retries is not None and str(retries).strip() != "":
        n_retries = parse_int("--retries", retries, minimum=0)
        if not ray_text:
            raise BadInput("--retries runs a cell again when its Ray node is lost; give --ray too")
    if ray is not None and not ray_text:
        raise BadInput(f"--ray takes a cluster address (host:port) or one of: {', '.join(RAY_SPECIAL)}")
    if ray_text and ray_text not in RAY_SPECIAL and (any(c.isspace() for c in ray_text) or ray_text.startswith("-")):
        raise BadInput(f"--ray {ray_text!r} is not a cluster address; valid: host:port, {', '.join(RAY_SPECIAL)}")
    return Placement(
        lanes=n_lanes, gpus=gpu_ids, all_gpus=all_gpus, ray=ray_text, accelerators=accels, retries=n_retries
    )


def lane_cpus(available: Sequence[int], lanes: int) -> list[tuple[int, ...]]:
    """Split the cores this process may use into ``lanes`` contiguous shares, as equal as
    they can be (the first ones get the extra core); each lane gets at least one."""
    cores = sorted(available)
    if lanes > len(cores):
        raise BadInput(
            f"--lanes {lanes}: this machine gives sdtop {len(cores)} core(s), one lane needs one; "
            f"valid: 1..{len(cores)}"
        )
    base, extra = divmod(len(cores), lanes)
    out: list[tuple[int, ...]] = []
    at = 0
    for i in range(lanes):
        n = base + (1 if i < extra else 0)
        out.append(tuple(cores[at : at + n]))
        at += n
    return out


def cpu_ranges(cpus: Sequence[int]) -> str:
    """Cores as a short list of ranges ("0-3,8"), as ``taskset`` writes them."""
    parts: list[str] = []
    run: list[int] = []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


# --- parsing helpers (shared by the CLI and the setup screen) -------------------------------


def split_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_choices(option: str, text: str | Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    items = split_list(text) if isinstance(text, str) else [str(t) for t in text]
    if not items:
        raise BadInput(f"{option} needs at least one value; valid: {', '.join(valid)}")
    for item in items:
        if item not in valid:
            raise BadInput(f"unknown {option} value {item!r}; valid: {', '.join(valid)}")
    return tuple(dict.fromkeys(items))


def parse_ints(option: str, text: str | Sequence[int], *, minimum: int = 1) -> tuple[int, ...]:
    items = split_list(text) if isinstance(text, str) else [str(t) for t in text]
    if not items:
        raise BadInput(f"{option} needs at least one whole number >= {minimum}")
    out: list[int] = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            raise BadInput(f"{option} takes whole numbers >= {minimum}, got {item!r}") from None
        if value < minimum:
            raise BadInput(f"{option} must be >= {minimum}, got {value}")
        out.append(value)
    return tuple(dict.fromkeys(out))


def parse_int(option: str, text: str | int, *, minimum: int = 1) -> int:
    return parse_ints(option, [text] if isinstance(text, int) else str(text), minimum=minimum)[0]


def parse_size(option: str, value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    size = parse_int(option, value, minimum=8)
    if size % 8:
        raise BadInput(f"{option} must be a multiple of 8, got {size}")
    return size


def parse_caches(option: str, text: str | Sequence[str]) -> tuple[str, ...]:
    """``"none,fbc:0.2,taylorseer"`` -> the cache choices, thresholds written canonically."""
    items = split_list(text) if isinstance(text, str) else [str(t) for t in text]
    if not items:
        raise BadInput(f"{option} needs at least one value; valid: {CACHES_FORM}")
    out: list[str] = []
    for item in items:
        kind, _, arg = item.partition(":")
        if kind not in CACHE_KINDS:
            raise BadInput(f"unknown {option} value {item!r}; valid: {CACHES_FORM}")
        if kind == "fbc":
            try:
                threshold = float(arg)
            except ValueError:
                raise BadInput(
                    f"{option} {item!r}: fbc takes a threshold, e.g. fbc:0.2; valid: {CACHES_FORM}"
                ) from None
            if not 0.0 < threshold < 1.0:
                raise BadInput(f"{option} {item!r}: the fbc threshold is a fraction between 0 and 1, e.g. fbc:0.2")
            item = f"fbc:{threshold:g}"
        elif arg:
            raise BadInput(f"{option} {item!r}: {kind} takes no argument; valid: {CACHES_FORM}")
        out.append(item)
    return tuple(dict.fromkeys(out))


def parse_on_off(option: str, text: str | Sequence[Any]) -> tuple[bool, ...]:
    """``"off,on"`` -> (False, True): a switch that is also an axis."""
    items = (
        split_list(text)
        if isinstance(text, str)
        else [("on" if t is True else "off" if t is False else str(t)) for t in text]
    )
    return tuple(v == "on" for v in parse_choices(option, items, ON_OFF))


RESOLUTIONS_FORM = "HEIGHTxWIDTH sizes in pixels, multiples of 8, e.g. 512x512,768x768"


def parse_resolutions(option: str, text: str | Sequence[Any] | None) -> tuple[Size, ...]:
    """``"512x512,768x640"`` (height x width, as diffusers' ``height=``/``width=`` and the
    summary's size column) -> ((512, 512), (768, 640)). Duplicates are dropped; order kept:
    it is the order the sizes run in."""
    if text is None or text == "" or (not isinstance(text, str) and not text):
        return ()
    items: list[Any] = split_list(text) if isinstance(text, str) else list(text)
    out: list[Size] = []
    for item in items:
        parts = item.lower().split("x") if isinstance(item, str) else [str(p) for p in item]
        try:
            height, width = (int(p) for p in parts)
        except ValueError:
            raise BadInput(f"{option} takes {RESOLUTIONS_FORM}; got {str(item)!r}") from None
        if height < 8 or width < 8 or height % 8 or width % 8:
            raise BadInput(f"{option} takes {RESOLUTIONS_FORM}; got {height}x{width}")
        out.append((height, width))
    return tuple(dict.fromkeys(out))


def validate_model(model: str | None) -> str | None:
    """A --model is an existing local directory or a well-formed hub repo id.

    Checked before anything is loaded: a path that does not exist gets its own message
    rather than the hub's, and nothing that looks like a URL or a shell fragment is passed on.
    """
    if model is None or model == "":
        return None
    looks_like_path = model.startswith((".", "/", "~")) or (os.sep in model and not _REPO_ID.match(model))
    if looks_like_path or os.path.exists(model):
        path = os.path.expanduser(model)
        if not os.path.isdir(path):
            raise BadInput(f"--model path {model!r} does not exist or is not a directory")
        return os.path.abspath(path)
    if not _REPO_ID.match(model):
        raise BadInput(f"--model {model!r} is neither an existing directory nor a hub id like 'owner/name'")
    return model


#: Options whose text is a comma list of choices: the MatrixSpec field each fills, its choices.
CHOICE_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "--pipeline": ("pipelines", registry.PIPELINE_NAMES),
    "--weights": ("weights", WEIGHTS),
    "--attention": ("attention", ATTENTION),
    "--compile": ("compile_modes", COMPILE_MODES),
    "--compile-backend": ("compile_backends", COMPILE_BACKENDS),
    "--dtype": ("dtypes", DTYPES),
    "--compile-scope": ("compile_scopes", COMPILE_SCOPES),
    "--quant": ("quants", QUANTS),
    "--offload": ("offloads", OFFLOADS),
}
#: Options whose text is a comma list of whole numbers (an axis), and their fields.
INT_LIST_OPTIONS = {"--batch": "batch_sizes", "--steps": "steps"}
#: Options that take one whole number, their fields and minimum.
INT_OPTIONS = {
    "--iterations": ("iterations", 1),
    "--warmup": ("warmup", 0),
    "--seed": ("seed", 0),
    "--threads": ("threads", 0),
}


def parse_matrix(texts: Mapping[str, str | None], base: MatrixSpec | None = None, **typed: Any) -> MatrixSpec:
    """A matrix from option texts as a user typed them (``{"--batch": "1,4", ...}``; a
    missing or None text keeps ``base``'s value), plus already-typed fields (flags, prompt).

    The CLI and the setup screen both come here: the text is turned into values (a number
    that is not a number is refused here), and the resulting MatrixSpec checks the rules.
    """
    kw: dict[str, Any] = dict(typed)
    for option, (name, valid) in CHOICE_OPTIONS.items():
        text = texts.get(option)
        if text is None:
            continue
        kw[name] = parse_choices(option, text, valid) if text.strip() or option != "--dtype" else None
    for option, name in INT_LIST_OPTIONS.items():
        if texts.get(option) is not None:
            kw[name] = parse_ints(option, str(texts[option]))
    for option, (name, minimum) in INT_OPTIONS.items():
        if texts.get(option) is not None:
            kw[name] = parse_int(option, str(texts[option]).strip(), minimum=minimum)
    for option in ("--height", "--width"):
        if option in texts:
            kw[option[2:]] = parse_size(option, (texts[option] or "").strip())
    if texts.get("--device"):
        kw["device"] = str(texts["--device"]).strip()
    if "--model" in texts:
        kw["model"] = validate_model(texts["--model"])
    if texts.get("--resolutions") is not None:
        kw["resolutions"] = parse_resolutions("--resolutions", texts["--resolutions"])
    if texts.get("--on-recompile") is not None:
        kw["on_recompile"] = str(texts["--on-recompile"]).strip()
    if texts.get("--compile-cache") is not None:
        kw["compile_cache"] = str(texts["--compile-cache"]).strip()
    if texts.get("--cache") is not None:
        kw["caches"] = parse_caches("--cache", str(texts["--cache"]))
    if texts.get("--fuse-qkv") is not None:
        kw["fuse_qkv"] = parse_on_off("--fuse-qkv", str(texts["--fuse-qkv"]))
    if "--frames" in texts:
        text = (texts["--frames"] or "").strip()
        kw["frames"] = parse_int("--frames", text) if text else None
    if "--baseline" in texts:
        text = (texts["--baseline"] or "").strip()
        kw["baseline"] = parse_int("--baseline", text, minimum=0) if text else None
    return dataclasses.replace(base or MatrixSpec(), **kw)


def embedded_default(*, cuda_available: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(pipelines, weights) when the user names none: every pipeline on tiny weights on a
    CPU box (runs in minutes), SD 1.5's real architecture with random weights on a GPU."""
    if cuda_available:
        return ("sd-txt2img",), ("random",)
    return registry.PIPELINE_NAMES, ("tiny",)


def validate_matrix(m: MatrixSpec) -> MatrixSpec:
    """The rules of a matrix, with the CLI's messages (run by ``MatrixSpec.__post_init__``).

    A --model path's existence is checked where the text is parsed (:func:`parse_matrix`),
    not here: a recorded session's matrix stays readable on a machine without that folder.
    """
    if m.pipelines:
        parse_choices("--pipeline", m.pipelines, registry.PIPELINE_NAMES)
    if m.weights:
        parse_choices("--weights", m.weights, WEIGHTS)
    parse_choices("--attention", m.attention, ATTENTION)
    parse_choices("--compile", m.compile_modes, COMPILE_MODES)
    parse_choices("--compile-backend", m.compile_backends, COMPILE_BACKENDS)
    if m.dtypes is not None:
        parse_choices("--dtype", m.dtypes, DTYPES)
    if m.device is not None:
        parse_choices("--device", [m.device], DEVICES)
    parse_ints("--batch", m.batch_sizes)
    parse_ints("--steps", m.steps)
    parse_int("--iterations", m.iterations)
    parse_int("--warmup", m.warmup, minimum=0)
    parse_size("--height", m.height)
    parse_size("--width", m.width)
    parse_resolutions("--resolutions", m.resolutions)
    if m.resolutions and (m.height is not None or m.width is not None):
        raise BadInput("--resolutions gives every size a cell runs; drop --height/--width")
    parse_choices("--on-recompile", [m.on_recompile], ON_RECOMPILE)
    parse_choices("--compile-cache", [m.compile_cache], COMPILE_CACHES)
    parse_int("--seed", m.seed, minimum=0)
    parse_int("--threads", m.threads, minimum=0)
    parse_choices("--compile-scope", m.compile_scopes, COMPILE_SCOPES)
    parse_choices("--quant", m.quants, QUANTS)
    if parse_caches("--cache", m.caches) != tuple(m.caches):
        raise BadInput(f"--cache values must be written canonically; valid: {CACHES_FORM}")
    parse_choices("--offload", m.offloads, OFFLOADS)
    parse_on_off("--fuse-qkv", m.fuse_qkv)
    if m.frames is not None:
        parse_int("--frames", m.frames)
    parse_choices("--outputs", [m.outputs], OUTPUTS)
    if m.baseline is not None:
        parse_int("--baseline", m.baseline, minimum=0)
    if m.memory_snapshot and not m.profile:
        raise BadInput("--memory-snapshot records the profiled call's allocations; add --profile")
    if m.model and not _REPO_ID.match(m.model) and not os.path.isabs(m.model):
        raise BadInput(f"--model {m.model!r} is neither an absolute directory nor a hub id like 'owner/name'")
    if m.model and m.weights and "hub" not in m.weights and "random" not in m.weights:
        raise BadInput(
            "--model applies to --weights hub (any checkpoint) and random (a published variant); "
            "add hub to --weights or drop --model"
        )
    return m


def resolve_threads(requested: int, device: str, cpu_count: int | None, lane_threads: int | None = None) -> int | None:
    """torch's CPU thread count for a cell; None = leave torch's default.

    On a CPU cell, auto leaves one core to the parent (sdtop's reader, sampler and UI):
    with every core busy in an OpenMP region, the parent's few cycles preempt a thread
    that the others then spin-wait for, and a step can take ten times as long (measured
    on a 2-core box under load: a tiny IF stage II call 0.7 s with 1 thread, 5-7 s with 2).
    On CUDA the host threads matter little and torch's default stays.

    ``cpu_count`` is the cores this worker may use (its lane's share, see
    :func:`lane_cpus`); ``lane_threads`` is what a Ray slot was given (``SDTOP_THREADS``),
    used as is: there the cell's task holds that many of the node's CPUs.
    """
    if requested > 0:
        return requested
    if device != "cpu":
        return None
    if lane_threads:
        return lane_threads
    return max(1, (cpu_count or 1) - 1)


def resolve_device(requested: str | None, cuda_available: bool) -> str:
    if requested is None:
        return "cuda" if cuda_available else "cpu"
    if requested == "cuda" and not cuda_available:
        raise BadInput("--device cuda: no CUDA device is available to the worker's torch; use --device cpu")
    return requested


def check_sizes(m: MatrixSpec, pipeline: str, weights: str) -> None:
    """Refuse (BadInput, one line) a size of ``m`` that ``pipeline`` cannot make on ``weights``.

    The sizes a user gave (``--resolutions``, or ``--height``/``--width`` with the native
    size for the side not given) are checked; a native size always passes.
    """
    native_h, native_w = registry.get(pipeline).native_size[weights]
    if m.resolutions:
        for h, w in m.resolutions:
            problem = registry.size_problem(pipeline, weights, "--resolutions", h, w)
            if problem:
                raise BadInput(problem)
        return
    for option, h, w, given in (
        ("--height", m.height or native_h, native_w, m.height),
        ("--width", native_h, m.width or native_w, m.width),
    ):
        if given is None:
            continue
        problem = registry.size_problem(pipeline, weights, option, h, w)
        if problem:
            raise BadInput(problem)


def canonical_attention(pipeline: str, attention: str) -> str:
    """The attention choice a cell of ``pipeline`` really runs: a UNet pipeline reads a
    dispatcher name with an SDPA equivalent as that SDPA choice ("native" is "sdpa"), a
    transformer pipeline reads a seed SDPA name as its dispatcher backend ("sdpa" is
    "native"); anything else is itself (and may be "not supported" there)."""
    if registry.get(pipeline).family == "transformer":
        return _SDPA_SPELLINGS.get(attention, attention)
    unet = {v: k for k, v in _SDPA_SPELLINGS.items()}
    return unet.get(attention, attention)


def _random_model(m: MatrixSpec, pipe: str, weights: str) -> str | None:
    """The model a cell builds: ``--model`` on hub (canonical id); on random weights a
    published variant of ``pipe`` (BadInput naming them otherwise); nothing on tiny."""
    if not m.model or weights == "tiny":
        return None
    if weights == "hub":
        return registry.canonical_model(m.model)
    if registry.variant_prefix(pipe, m.model) is None:
        known = ", ".join(registry.get(pipe).variants) or "none (its one architecture only)"
        raise BadInput(
            f"--model {m.model} with --weights random: random weights build a published architecture; "
            f"{pipe}'s are: {known}"
        )
    return next(k for k in registry.get(pipe).variants if k.lower() == m.model.lower())


def expand(m: MatrixSpec, *, cuda_available: bool) -> list[CellSpec]:
    """The cross product of the matrix in a stable order: pipeline, weights, batch, steps,
    dtype, attention, compile mode, backend (compiled modes only), compile scope (compiled
    modes only), quant, cache, offload, fuse-qkv.

    A setting that cannot differ makes no second cell: an uncompiled cell has one backend
    and one scope, and two spellings of one attention choice for a pipeline
    (:func:`canonical_attention`) make one cell, named as first typed.

    Sizes mean the image a cell produces, for every pipeline (see
    :class:`registry.StageInfo`); a size that would make some stage smaller than its model
    allows is a :class:`BadInput` naming the option, the pipeline and the smallest valid
    size, raised here because only here are the weights of each cell known. A ``--model``
    that names a seed checkpoint removed from the hub becomes its maintained copy in the
    cells (the matrix keeps what was typed, so the session records both). Video pipelines
    get ``--frames`` (or their native count); images get 0.
    """
    device = resolve_device(m.device, cuda_available)
    default_pipes, default_weights = embedded_default(cuda_available=device == "cuda")
    pipes = m.pipelines or default_pipes
    weights_axis = m.weights or (("hub",) if m.model else default_weights)
    dtypes: Iterable[str] = m.dtypes if m.dtypes else (("fp16",) if device == "cuda" else ("fp32",))
    modes: list[tuple[str, str, str]] = []
    for mode in m.compile_modes:
        if mode == "none":
            modes.append((mode, m.compile_backends[0], "whole"))
        else:
            modes.extend((mode, b, scope) for b in m.compile_backends for scope in m.compile_scopes)
    cells: list[CellSpec] = []
    seen: set[tuple[Any, ...]] = set()
    # Typed as Any: itertools.product's typed overloads stop at six iterables.
    axes: list[Sequence[Any]] = [
        pipes, weights_axis, m.batch_sizes, m.steps, tuple(dtypes), m.attention, modes,
        m.quants, m.caches, m.offloads, m.fuse_qkv,
    ]  # fmt: skip
    for combo in itertools.product(*axes):
        pipe, weights, batch, steps, dtype, attention, (mode, backend, scope), quant, cache, offload, fuse = combo
        info = registry.get(pipe)
        nh, nw = info.native_size[weights]
        if m.resolutions:  # the first size is the cell's height/width; a single one is just that
            nh, nw = m.resolutions[0]
        check_sizes(m, pipe, weights)
        frames = 0
        if info.video:
            frames = m.frames or info.native_frames[weights]
            problem = registry.frames_problem(pipe, "--frames", frames)
            if problem:
                raise BadInput(problem)
        key = (
            pipe,
            weights,
            batch,
            steps,
            dtype,
            canonical_attention(pipe, attention),
            mode,
            backend,
            scope,
            quant,
            cache,
            offload,
            fuse,
        )
        if key in seen:
            continue
        seen.add(key)
        cells.append(
            CellSpec(
                pipeline=pipe,
                weights=weights,
                model=_random_model(m, pipe, weights),
                attention=attention,
                compile_mode=mode,
                fullgraph=m.fullgraph,
                compile_backend=backend,
                channels_last=m.channels_last,
                dtype=dtype,
                batch_size=batch,
                height=m.height or nh,
                width=m.width or nw,
                steps=steps,
                iterations=m.iterations,
                warmup=m.warmup,
                device=device,
                seed=m.seed,
                prompt=m.prompt,
                threads=m.threads,
                resolutions=m.resolutions if len(m.resolutions) > 1 else (),
                on_recompile=m.on_recompile,
                trace_dir=m.trace_dir,
                compile_cache=m.compile_cache,
                compile_scope=scope,
                quant=quant,
                cache=cache,
                offload=offload,
                fuse_qkv=fuse,
                frames=frames,
                outputs=m.outputs,
                profile="session" if m.profile else "off",
                memory_snapshot=m.memory_snapshot,
            )
        )
    if m.baseline is not None and m.baseline >= len(cells):
        raise BadInput(f"--baseline {m.baseline}: the matrix has cells 0 to {len(cells) - 1}")
    return cells


def baselines(cells: Sequence[CellSpec], override: int | None = None) -> list[int | None]:
    """The baseline of each cell (an index into ``cells``), or None where it has none.

    With ``override`` (``--baseline N``) every cell is compared with cell N. Otherwise a
    cell's baseline is the first cell, in matrix order, of the same kind
    (:meth:`CellSpec.baseline_key`: same pipeline, size, batch, dtype, steps, seed...)
    whose lossy levers (quant, cache, sage attention) are all off; usually the uncompiled
    one, so compile's own numerical noise shows too. A baseline is its own baseline.
    """
    if override is not None:
        return [override if 0 <= override < len(cells) else None for _ in cells]
    first: dict[tuple[Any, ...], int] = {}
    for i, cell in enumerate(cells):
        if not cell.lossy():
            first.setdefault(cell.baseline_key(), i)
    return [first.get(cell.baseline_key()) for cell in cells]
