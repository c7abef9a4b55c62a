"""The setup form as plain data: what the user chose, turned into a :class:`MatrixSpec`
with the CLI's own parsers, so a bad value gets exactly the message ``sdtop run`` prints.

Choices are lists in the order chosen (a matrix's axis order is its cells' order, so the
form keeps it); numbers and free text stay text until :meth:`SetupForm.to_matrix`, so a
half-typed value is shown as typed and refused with the CLI's words, never coerced.

Where the cells run is not part of the matrix (the same cells, measured the same way,
whoever runs them): it is a form of its own, :class:`WhereForm`, turned into a
:class:`Placement` by the CLI's :func:`settings.parse_placement`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ...pipelines import settings
from ...pipelines.settings import MatrixSpec, Placement


def default_matrix(has_gpu: bool) -> MatrixSpec:
    """The matrix the setup screen starts from: the CLI's embedded default, made explicit
    so the user sees (and can edit) what will run. ``has_gpu`` is the instant guess of
    :func:`profiler.host.probe.has_nvidia_gpu`; the worker host has the final word on devices.
    """
    pipelines, weights = settings.embedded_default(cuda_available=has_gpu)
    return MatrixSpec(pipelines=pipelines, weights=weights)


def keep_order(previous: Sequence[str], now: Sequence[str]) -> list[str]:
    """``now``'s items, those already in ``previous`` first and in its order, then the new ones.

    A choice list reports its own order (declared order, then clicks); the matrix's order is
    the user's: ``--attention classic,sdpa`` runs classic first. Keeping the earlier order and
    appending new picks means a matrix shown on the form comes back unchanged, and a choice
    added later runs later, as it would appended to the CLI's comma list.
    """
    chosen = set(now)
    kept = [v for v in previous if v in chosen]
    return kept + [v for v in dict.fromkeys(now) if v not in kept]


@dataclass
class SetupForm:
    """The form's fields as the widgets hold them: lists for choices, text for what is typed.

    Every field of a :class:`MatrixSpec` a user picks per run is here; the rest (sizes run in
    turn, threads, recompile stance, compile cache, trace folder) are the CLI's and come from
    the base matrix unchanged.
    """

    # What runs
    pipelines: list[str]
    weights: list[str]
    model: str  # blank: the registry's checkpoint
    device: str  # blank: auto (cuda when the worker's torch sees it)
    dtypes: list[str]  # empty: auto (fp16 on CUDA, fp32 on CPU)
    # Levers
    attention: list[str]
    compile_modes: list[str]
    compile_backends: list[str]
    compile_scopes: list[str]
    fullgraph: bool
    quants: list[str]
    caches: str  # free text: "none,fbc:0.2" (fbc takes a threshold, so not a fixed list)
    offloads: list[str]
    fuse_qkv: list[str]  # "off" / "on": a switch that is also an axis
    channels_last: bool
    # Shape
    batch: str
    steps: str
    height: str  # blank: native
    width: str
    frames: str  # blank: each video pipeline's own
    seed: str
    prompt: str  # as typed: an empty prompt is a prompt
    # Run
    iterations: str
    warmup: str
    baseline: str  # blank: each cell's first lossless cell of its kind
    outputs: str  # settings.OUTPUTS

    @classmethod
    def from_matrix(cls, m: MatrixSpec) -> SetupForm:
        def blank(value: int | None) -> str:
            return "" if value is None else str(value)

        return cls(
            pipelines=list(m.pipelines),
            weights=list(m.weights),
            model=m.model or "",
            device=m.device or "",
            dtypes=list(m.dtypes or ()),
            attention=list(m.attention),
            compile_modes=list(m.compile_modes),
            compile_backends=list(m.compile_backends),
            compile_scopes=list(m.compile_scopes),
            fullgraph=m.fullgraph,
            quants=list(m.quants),
            caches=",".join(m.caches),
            offloads=list(m.offloads),
            fuse_qkv=[settings.ON_OFF[int(b)] for b in m.fuse_qkv],
            channels_last=m.channels_last,
            batch=",".join(map(str, m.batch_sizes)),
            steps=",".join(map(str, m.steps)),
            height=blank(m.height),
            width=blank(m.width),
            frames=blank(m.frames),
            seed=str(m.seed),
            prompt=m.prompt,
            iterations=str(m.iterations),
            warmup=str(m.warmup),
            baseline=blank(m.baseline),
            outputs=m.outputs,
        )

    def option_texts(self) -> dict[str, str]:
        """The form as ``sdtop run``'s option texts (what a user would type after each option)."""
        return {
            "--pipeline": ",".join(self.pipelines),
            "--weights": ",".join(self.weights),
            "--model": self.model,
            "--device": self.device,
            "--dtype": ",".join(self.dtypes),
            "--attention": ",".join(self.attention),
            "--compile": ",".join(self.compile_modes),
            "--compile-backend": ",".join(self.compile_backends),
            "--compile-scope": ",".join(self.compile_scopes),
            "--quant": ",".join(self.quants),
            "--cache": self.caches,
            "--offload": ",".join(self.offloads),
            "--fuse-qkv": ",".join(self.fuse_qkv),
            "--batch": self.batch,
            "--steps": self.steps,
            "--height": self.height,
            "--width": self.width,
            "--frames": self.frames,
            "--seed": self.seed,
            "--iterations": self.iterations,
            "--warmup": self.warmup,
            "--baseline": self.baseline,
        }

    def to_matrix(self, base: MatrixSpec | None = None) -> MatrixSpec:
        """The matrix, or :class:`settings.BadInput` naming the option as the CLI does.

        Fields the form does not show come from ``base``. The texts go through
        :func:`settings.parse_matrix`, the CLI's own path, so the first message is the one
        ``sdtop run`` would print for the same texts.
        """
        # parse_matrix keeps base's device for a blank --device (the CLI never sends one);
        # here blank is a choice, auto, so it is passed typed and a named device overrides it.
        return settings.parse_matrix(
            self.option_texts(),
            base,
            device=None,
            fullgraph=self.fullgraph,
            channels_last=self.channels_last,
            prompt=self.prompt,
            outputs=self.outputs,
        )

    def describe(self, base: MatrixSpec | None = None) -> tuple[MatrixSpec | None, str]:
        """(matrix, "") when valid, (None, the one-line message) when not."""
        try:
            return self.to_matrix(base), ""
        except settings.BadInput as exc:
            return None, str(exc)


#: The form field behind each option a message can name: ``option_texts``' keys, and
#: --outputs, which the form sends typed (the CLI spells it --no-outputs).
OPTION_FIELDS = {
    "--pipeline": "pipelines",
    "--weights": "weights",
    "--model": "model",
    "--device": "device",
    "--dtype": "dtypes",
    "--attention": "attention",
    "--compile": "compile_modes",
    "--compile-backend": "compile_backends",
    "--compile-scope": "compile_scopes",
    "--quant": "quants",
    "--cache": "caches",
    "--offload": "offloads",
    "--fuse-qkv": "fuse_qkv",
    "--batch": "batch",
    "--steps": "steps",
    "--height": "height",
    "--width": "width",
    "--frames": "frames",
    "--seed": "seed",
    "--iterations": "iterations",
    "--warmup": "warmup",
    "--baseline": "baseline",
    "--outputs": "outputs",
}
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


#: Where the cells run: one of these ways, each a ``sdtop run`` spelling.
ONE, LANES, GPUS, RAY = "one", "lanes", "gpus", "ray"
WAYS = (ONE, LANES, GPUS, RAY)
#: Why the GPU way cannot be picked on a host without CUDA (shown beside it).
NO_CUDA = "no CUDA on this host"
#: The typed fields each way sends (the rest are kept as typed, and not sent): lanes is
#: CPU workers on its own and cells in flight with Ray, as ``--lanes`` is on the CLI.
WAY_FIELDS: dict[str, tuple[str, ...]] = {
    ONE: (),
    LANES: ("lanes",),
    GPUS: ("gpus",),
    RAY: ("ray", "lanes", "accelerators", "retries"),
}


def where_choices(cuda_available: bool) -> list[tuple[str, str, str]]:
    """(label, way, why it cannot be picked here, or "") for each way, in order.

    ``--gpus`` runs one lane per CUDA card of this machine; with none (this host's guess,
    the one the cell count uses) the choice is shown, greyed, with the reason, so the user
    learns it exists and why it is off rather than wondering where it went.
    """
    gpus = ("GPUs", GPUS, "") if cuda_available else ("GPUs: no CUDA", GPUS, NO_CUDA)
    return [("one lane", ONE, ""), ("lanes (CPU)", LANES, ""), gpus, ("Ray cluster", RAY, "")]


@dataclass
class WhereForm:
    """Where the cells run, as the widgets hold it: the way chosen and ``sdtop run``'s texts.

    Every field keeps what was typed whichever way is chosen, so switching ways and back
    loses nothing; only the chosen way's fields (:data:`WAY_FIELDS`) are sent to
    :func:`settings.parse_placement`, so a value for another way is never an error.
    """

    way: str  # WAYS
    lanes: str  # --lanes: CPU workers; with Ray, cells in flight
    gpus: str  # --gpus: "all" or card indices "0,1"
    ray: str  # --ray: host:port, auto or local
    accelerators: str  # --accelerator: blank = any node
    retries: str  # --retries

    @classmethod
    def from_placement(cls, p: Placement | None) -> WhereForm:
        """The form for a placement (None: not given, one lane), with the other ways'
        fields at values that work as they are (all cards, the cluster ``auto`` finds)."""
        p = p or Placement()
        if p.ray:
            way = RAY
        elif p.wants_gpus:
            way = GPUS
        else:
            way = LANES if p.lanes > 1 else ONE
        return cls(
            way=way,
            lanes=str(p.lanes),
            gpus="all" if p.all_gpus or not p.gpus else ",".join(map(str, p.gpus)),
            ray=p.ray or "auto",
            accelerators=",".join(p.accelerators),
            retries=str(p.retries),
        )

    def option_texts(self) -> dict[str, str | None]:
        """:func:`settings.parse_placement`'s keywords: the chosen way's texts, None for the
        options it does not give (a blank accelerator or retries is not given either: any
        node, the default retries)."""
        sent = WAY_FIELDS.get(self.way, ())

        def given(field: str, text: str, *, blank_is_none: bool = False) -> str | None:
            if field not in sent or (blank_is_none and not text.strip()):
                return None
            return text

        return {
            "lanes": given("lanes", self.lanes, blank_is_none=self.way == RAY),
            "gpus": given("gpus", self.gpus),
            "ray": given("ray", self.ray),
            "accelerator": given("accelerators", self.accelerators, blank_is_none=True),
            "retries": given("retries", self.retries, blank_is_none=True),
        }

    def to_placement(self, device: str = "") -> Placement:
        """The placement, or :class:`settings.BadInput` with the CLI's line for these texts.

        ``device`` is the What tab's (blank: auto): ``--gpus`` and ``--accelerator`` refuse
        ``--device cpu`` as the CLI does. A blank lane count on the lanes way is refused
        here: the CLI has no "--lanes" without a number, and blank silently meaning one
        lane would run sequentially what the user asked to run side by side.
        """
        if self.way not in WAYS:
            raise settings.BadInput(f"unknown way to run the cells {self.way!r}; valid: {', '.join(WAYS)}")
        if self.way == LANES and not self.lanes.strip():
            raise settings.BadInput("--lanes needs a whole number >= 1 (CPU workers side by side), e.g. 2")
        if self.way == RAY and not self.ray.strip():
            # The address is the Ray way's own value: its message, not "--retries ... give
            # --ray too", which the CLI says of retries given without any --ray.
            return settings.parse_placement(ray=self.ray)  # raises BadInput: a blank --ray
        return settings.parse_placement(**self.option_texts(), device=device or None)

    def describe(self, device: str = "") -> tuple[Placement | None, str]:
        """(placement, "") when valid, (None, the one-line message) when not."""
        try:
            return self.to_placement(device), ""
        except settings.BadInput as exc:
            return None, str(exc)


def where_in_brief(p: Placement) -> str:
    """Where the cells go, in the few words the count line has room for at 80 columns ("on 2
    lanes", "on Ray auto"); "" for one lane, the default, which goes unsaid. The Run tab
    shows the whole :meth:`Placement.describe` under its fields."""
    if p.ray:
        return f"on Ray {p.ray}"
    if p.all_gpus:
        return "on every GPU"
    if p.gpus:
        return f"on GPUs {','.join(map(str, p.gpus))}"
    return f"on {p.lanes} lanes" if p.lanes > 1 else ""


#: The where-form field behind each option a placement message can name.
PLACEMENT_FIELDS = {
    "--lanes": "lanes",
    "--gpus": "gpus",
    "--ray": "ray",
    "--accelerator": "accelerators",
    "--retries": "retries",
}


def field_of(message: str) -> str | None:
    """The form field a one-line message is about: the first option it names (``--batch must
    be >= 1`` -> "batch"), or None when that option is not on the form (--resolutions...).

    ctrl+r on a bad form shows that field: with five tabs, the value at fault may be out of sight.
    """
    match = _OPTION.search(message)
    if match is None:
        return None
    option = match.group(0)
    return OPTION_FIELDS.get(option) or PLACEMENT_FIELDS.get(option)


def count_cells(m: MatrixSpec, *, cuda_available: bool) -> tuple[str, str]:
    """("N cells × C calls", "") or ("", the reason the matrix makes no cells on this host).

    The reason is :func:`settings.expand`'s one line (a size a pipeline cannot make, a
    --baseline past the last cell, --device cuda without CUDA): the form's values each
    parsed, but together they do not expand. The device part is this host's guess; the
    worker host has the final word, so it is shown, not enforced.
    """
    try:
        n = m.n_cells(cuda_available=cuda_available)
    except settings.BadInput as exc:
        return "", str(exc)
    calls = m.warmup + m.iterations
    return f"{n} cell{'s' * (n != 1)} × {calls} calls", ""


def cells_text(m: MatrixSpec, *, cuda_available: bool) -> str:
    """The count, or the reason there is none, as one line."""
    count, problem = count_cells(m, cuda_available=cuda_available)
    return count or problem
