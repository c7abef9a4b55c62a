"""The setup form as plain data: what the user chose, turned into a :class:`MatrixSpec`
with the CLI's own parsers, so a bad value gets exactly the message ``sdtop run`` prints.

Choices are lists in the order chosen (a matrix's axis order is its cells' order, so the
form keeps it); numbers and free text stay text until :meth:`SetupForm.to_matrix`, so a
half-typed value is shown as typed and refused with the CLI's words, never coerced.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ...pipelines import settings
from ...pipelines.settings import MatrixSpec


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


def field_of(message: str) -> str | None:
    """The form field a one-line message is about: the first option it names (``--batch must
    be >= 1`` -> "batch"), or None when that option is not on the form (--resolutions...).

    ctrl+r on a bad form shows that field: with five tabs, the value at fault may be out of sight.
    """
    match = _OPTION.search(message)
    if match is None:
        return None
    return OPTION_FIELDS.get(match.group(0))


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
