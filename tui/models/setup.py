"""The setup form as plain data: what the user chose, turned into a :class:`MatrixSpec`
with the CLI's own parsers, so a bad value gets exactly the message ``sdtop run`` prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...pipelines import registry, settings
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
        base = base or MatrixSpec()
        m = dataclasses.replace(
            base,
            pipelines=settings.parse_choices("--pipeline", self.pipelines, registry.PIPELINE_NAMES),
            weights=settings.parse_choices("--weights", self.weights, settings.WEIGHTS),
            attention=settings.parse_choices("--attention", self.attention, settings.ATTENTION),
            compile_modes=settings.parse_choices("--compile", self.compile_modes, settings.COMPILE_MODES),
            fullgraph=self.fullgraph,
            compile_backends=settings.parse_choices(
                "--compile-backend", self.compile_backends, settings.COMPILE_BACKENDS
            ),
            channels_last=self.channels_last,
            dtypes=settings.parse_choices("--dtype", self.dtypes, settings.DTYPES) if self.dtypes else None,
            batch_sizes=settings.parse_ints("--batch", self.batch),
            steps=settings.parse_ints("--steps", self.steps),
            height=settings.parse_size("--height", self.height.strip()),
            width=settings.parse_size("--width", self.width.strip()),
            iterations=settings.parse_int("--iterations", self.iterations.strip()),
            warmup=settings.parse_int("--warmup", self.warmup.strip(), minimum=0),
        )
        return settings.validate_matrix(m)

    def describe(self, base: MatrixSpec | None = None) -> tuple[MatrixSpec | None, str]:
        """(matrix, "") when valid, (None, the one-line message) when not."""
        try:
            return self.to_matrix(base), ""
        except settings.BadInput as exc:
            return None, str(exc)


def cells_text(m: MatrixSpec) -> str:
    n = m.n_cells()
    calls = m.warmup + m.iterations
    return f"{n} cell{'s' * (n != 1)} × {calls} calls"
