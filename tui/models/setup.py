"""The setup form as plain data: what the user chose, turned into a :class:`MatrixSpec`
with the CLI's own parsers, so a bad value gets exactly the message ``sdtop run`` prints.
"""

from __future__ import annotations

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


@dataclass
class SetupForm:
    """The form's fields as the widgets hold them (lists for choices, text for numbers)."""

    pipelines: list[str]
    weights: list[str]
    attention: list[str]
    compile_modes: list[str]
    compile_backends: list[str]
    dtypes: list[str]  # empty: auto (fp16 on CUDA, fp32 on CPU)
    fullgraph: bool
    channels_last: bool
    batch: str
    steps: str
    height: str
    width: str
    iterations: str
    warmup: str

    @classmethod
    def from_matrix(cls, m: MatrixSpec) -> SetupForm:
        return cls(
            pipelines=list(m.pipelines),
            weights=list(m.weights),
            attention=list(m.attention),
            compile_modes=list(m.compile_modes),
            compile_backends=list(m.compile_backends),
            dtypes=list(m.dtypes or ()),
            fullgraph=m.fullgraph,
            channels_last=m.channels_last,
            batch=",".join(map(str, m.batch_sizes)),
            steps=",".join(map(str, m.steps)),
            height="" if m.height is None else str(m.height),
            width="" if m.width is None else str(m.width),
            iterations=str(m.iterations),
            warmup=str(m.warmup),
        )

    def to_matrix(self, base: MatrixSpec | None = None) -> MatrixSpec:
        """The matrix, or :class:`settings.BadInput` naming the option as the CLI does.

        Fields the form does not show (model, device, seed, prompt) come from ``base``.
        Checks run in the CLI's order, so the first message is the one ``sdtop`` would print.
        """
        texts = {
            "--pipeline": ",".join(self.pipelines),
            "--weights": ",".join(self.weights),
            "--attention": ",".join(self.attention),
            "--compile": ",".join(self.compile_modes),
            "--compile-backend": ",".join(self.compile_backends),
            "--dtype": ",".join(self.dtypes),
            "--batch": self.batch,
            "--steps": self.steps,
            "--height": self.height,
            "--width": self.width,
            "--iterations": self.iterations,
            "--warmup": self.warmup,
        }
        return settings.parse_matrix(texts, base, fullgraph=self.fullgraph, channels_last=self.channels_last)

    def describe(self, base: MatrixSpec | None = None) -> tuple[MatrixSpec | None, str]:
        """(matrix, "") when valid, (None, the one-line message) when not."""
        try:
            return self.to_matrix(base), ""
        except settings.BadInput as exc:
            return None, str(exc)


def cells_text(m: MatrixSpec, *, cuda_available: bool) -> str:
    try:
        n = m.n_cells(cuda_available=cuda_available)
    except settings.BadInput as exc:  # e.g. --device cuda where there is none
        return str(exc)
    calls = m.warmup + m.iterations
    return f"{n} cell{'s' * (n != 1)} × {calls} calls"
