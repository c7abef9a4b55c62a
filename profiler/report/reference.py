"""Published reference figures: the diffusers "PyTorch 2.0" tables, shipped with sdtop.

Stdlib only (parent half): ``sdtop compare --reference seed`` and the UI's summary panel
read it, and neither may import torch.

Why a value type rather than floats
-----------------------------------
The published cells are not all numbers, and each kind means something different to a
reader, so :func:`parse_cell` keeps them apart instead of coercing them to float/NaN:

- ``44.03``: iterations per second (:data:`RATE`);
- ``20.21 / 13.84 / 24.00``: if-cascade at batch size 1, it/s of stage I / stage II /
  upscaler (:data:`STAGES`); :meth:`Published.part` picks one stage;
- ``2.34s``: **seconds per iteration** (:data:`SEC_PER_IT`): the T4 batch-16 figures were
  published in the other unit. The figure keeps its unit; :meth:`Published.it_per_s`
  converts (``1 / x``) only for display beside an it/s figure, and every view that does so
  says it (:attr:`Published.converted`);
- ``OOM``, ``OOM after warmup``, ``OOM after 2nd iteration``: ran out of memory, and when
  (:data:`OOM`);
- ``not supported``: the combination did not work (:data:`NOT_SUPPORTED`);
- ``-``: not measured (:data:`NOT_MEASURED`).

``Published.text`` is always the cell exactly as published ("9.9" stays "9.9").

What the figures are
--------------------
The seed's figure is tqdm's progress-bar rate of the denoising loop (a smoothed average),
fp16, the published checkpoints, channels_last, three calls; sdtop's ``it_per_s`` is the
median of ``steps / loop time`` over measured calls. The two are close, not equal: they are
shown side by side, never mixed in one column (see the README's "What it/s means here").

Torch columns
-------------
Each (GPU, batch size, pipeline) has four cells: torch 2.0 and torch nightly (2.1 dev at
the time), each without and with ``torch.compile``. :func:`torch_column_for` picks the one
closer to a session's torch: ``2.0`` for torch 2.0.x or older, ``nightly`` for 2.1 and
newer; ``2.0`` when the version is unknown (the released build the guide's headline names).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

# --- cell values ----------------------------------------------------------------------------

RATE = "it/s"
STAGES = "stages"
SEC_PER_IT = "s/it"
OOM = "oom"
NOT_SUPPORTED = "not supported"
NOT_MEASURED = "not measured"

KINDS = (RATE, STAGES, SEC_PER_IT, OOM, NOT_SUPPORTED, NOT_MEASURED)

#: if-cascade's stages in the order of a published "a / b / c" cell.
CASCADE_STAGES = ("I", "II", "upscaler")

#: The torch columns of the published tables, in their order.
TORCHES = ("2.0", "nightly")
TORCH_LABELS = {"2.0": "torch 2.0", "nightly": "torch nightly"}

#: The CSV header of a reference table (the seed's file; a user's own file must match).
CSV_COLUMNS = (
    "gpu",
    "batch_size",
    "pipeline",
    "torch2.0_no_compile",
    "torch_nightly_no_compile",
    "torch2.0_compile",
    "torch_nightly_compile",
)
_VALUE_COLUMNS: dict[str, tuple[str, bool]] = {
    "torch2.0_no_compile": ("2.0", False),
    "torch_nightly_no_compile": ("nightly", False),
    "torch2.0_compile": ("2.0", True),
    "torch_nightly_compile": ("nightly", True),
}

#: Named references shipped inside the package (``--reference NAME``).
SHIPPED = {"seed": "reference_tables.csv"}
SEED_DESCRIPTION = (
    'diffusers "PyTorch 2.0" guide (benchmark code from diffusers PR 3313, diffusers 0.17.0.dev0): '
    "tqdm progress-bar it/s, fp16, the published checkpoints, channels_last, 3 calls"
)

_NUMBER = r"\d+(?:\.\d+)?"
_RATE_RE = re.compile(rf"^{_NUMBER}$")
_SPI_RE = re.compile(rf"^({_NUMBER})\s*s$")


class ReferenceError(ValueError):
    """A reference that cannot be read or a cell that is none of the published kinds; the
    message is one line, shown to the user as is."""


@dataclass(frozen=True)
class Published:
    """One published cell: its verbatim ``text``, its ``kind`` (one of :data:`KINDS`) and
    its figures in the published unit (one for RATE / SEC_PER_IT, three for STAGES, none
    otherwise)."""

    text: str
    kind: str
    figures: tuple[float, ...] = ()

    @property
    def unit(self) -> str | None:
        """``it/s``, ``s/it`` or None (no figure)."""
        if self.kind in (RATE, STAGES):
            return "it/s"
        if self.kind == SEC_PER_IT:
            return "s/it"
        return None

    @property
    def converted(self) -> bool:
        """True when :meth:`it_per_s` is a conversion of a seconds-per-iteration figure, so
        a view showing it next to it/s must say so."""
        return self.kind == SEC_PER_IT

    def part(self, index: int) -> Published:
        """Stage ``index`` of an "a / b / c" cell, as a RATE with that part's text. A
        single figure is stage 0's (if-cascade above batch 1 ran stage I only, so its one
        number is stage I's); asking it for a later stage gives "not measured". A status
        (OOM, not supported, "-") is the whole cell's, so every stage gets it."""
        if self.kind == STAGES:
            if 0 <= index < len(self.figures):
                part = self.text.split("/")[index].strip()
                return Published(part, RATE, (self.figures[index],))
            return Published("-", NOT_MEASURED)
        if self.kind in (RATE, SEC_PER_IT) and index != 0:
            return Published("-", NOT_MEASURED)
        return self

    def for_stage(self, stage: str) -> Published:
        """The part for one of sdtop's stage names (``main`` and ``I`` are part 0)."""
        return self.part(CASCADE_STAGES.index(stage) if stage in CASCADE_STAGES else 0)

    def it_per_s(self) -> float | None:
        """The figure in it/s: as published for RATE, ``1 / x`` for SEC_PER_IT (check
        :attr:`converted`), None for a multi-stage cell (take a :meth:`part`) or a status."""
        if self.kind == RATE:
            return self.figures[0]
        if self.kind == SEC_PER_IT and self.figures[0] > 0:
            return 1.0 / self.figures[0]
        return None

    def display(self) -> str:
        """Short text for a table column of it/s figures: the published text, except a
        seconds-per-iteration figure, shown converted with the published text beside it
        (``0.427 it/s (2.34s)``) so the unit change is never silent."""
        if self.kind == SEC_PER_IT:
            rate = self.it_per_s()
            return f"{_fmt(rate)} it/s ({self.text})" if rate is not None else self.text
        return self.text


def parse_cell(text: str) -> Published:
    """One published cell -> :class:`Published`. Raises :class:`ReferenceError` for text
    that is none of the published kinds (better than a silent NaN in a user's table)."""
    t = " ".join(str(text).split())
    if t == "-":
        return Published(t, NOT_MEASURED)
    if t.lower().startswith("not supported"):
        return Published(t, NOT_SUPPORTED)
    if t.upper().startswith("OOM"):
        return Published(t, OOM)
    if _RATE_RE.match(t):
        return Published(t, RATE, (float(t),))
    m = _SPI_RE.match(t)
    if m:
        return Published(t, SEC_PER_IT, (float(m.group(1)),))
    if "/" in t:
        parts = [p.strip() for p in t.split("/")]
        if len(parts) == len(CASCADE_STAGES) and all(_RATE_RE.match(p) for p in parts):
            return Published(t, STAGES, tuple(float(p) for p in parts))
    raise ReferenceError(
        f"unrecognised published cell {t!r}; expected it/s, 'a / b / c', '2.34s', OOM..., 'not supported' or '-'"
    )


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One published cell with its coordinates."""

    gpu: str
    batch_size: int
    pipeline: str
    torch: str  # "2.0" | "nightly"
    compiled: bool
    value: Published


@dataclass(frozen=True)
class ReferenceTable:
    """Every published cell, indexed by (gpu, batch size, pipeline, torch, compiled)."""

    name: str
    description: str
    entries: tuple[Entry, ...]
    _index: dict[tuple[str, int, str, str, bool], Published] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for e in self.entries:
            self._index[(e.gpu, e.batch_size, e.pipeline, e.torch, e.compiled)] = e.value

    @property
    def gpus(self) -> tuple[str, ...]:
        """GPUs in the order the table lists them (the seed: A100, V100, T4, RTX 3090, RTX 4090)."""
        return tuple(dict.fromkeys(e.gpu for e in self.entries))

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({e.batch_size for e in self.entries}))

    def get(self, gpu: str, pipeline: str, batch_size: int, *, compiled: bool, torch: str) -> Published | None:
        """The cell, or None when the table has no such row (the seed has no SDXL rows for
        V100 and RTX 3090, and only batch sizes 1, 4 and 16)."""
        return self._index.get((gpu, batch_size, pipeline, torch, compiled))

    def lookup(
        self, pipeline: str, batch_size: int, *, compiled: bool, torch: str, stage: str = "main"
    ) -> dict[str, Published | None]:
        """For every GPU of the table, the published figure for one of sdtop's cells: same
        pipeline, batch size and compile on/off, in the ``torch`` column, and for a
        multi-stage pipeline the stage's part of "a / b / c"."""
        out: dict[str, Published | None] = {}
        for gpu in self.gpus:
            value = self.get(gpu, pipeline, batch_size, compiled=compiled, torch=torch)
            out[gpu] = value.for_stage(stage) if value is not None else None
        return out

    def for_row(self, row: Any, *, torch: str | None = None) -> dict[str, Published | None]:
        """:meth:`lookup` for a :class:`profiler.report.summary.Row` (or anything with ``pipeline``,
        ``stage``, ``batch_size`` and ``compile_mode``): the call the UI's summary panel makes
        for its optional reference column. ``torch`` defaults to the column closest to the
        row's own ``torch_version``. An unknown batch size gives None for every GPU, and so
        does a cell whose attention the guide did not measure (:func:`has_published`)."""
        if not has_published(getattr(row, "attention", None)):
            return dict.fromkeys(self.gpus)
        column = torch or torch_column_for(getattr(row, "torch_version", None))
        compiled = getattr(row, "compile_mode", None) not in (None, "none")
        return self.lookup(
            str(row.pipeline), int(row.batch_size or 1), compiled=compiled, torch=column, stage=str(row.stage)
        )


def parse_table(text: str, *, name: str = "custom", description: str = "") -> ReferenceTable:
    """Parse a reference CSV (the seed's header, :data:`CSV_COLUMNS`). Every cell is kept
    with its kind; a bad header, batch size or cell is a one-line :class:`ReferenceError`
    naming its line."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
        raise ReferenceError(f"reference {name}: the header must be {','.join(CSV_COLUMNS)}")
    entries: list[Entry] = []
    for lineno, fields in enumerate(reader, start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(CSV_COLUMNS):
            raise ReferenceError(f"reference {name} line {lineno}: {len(fields)} fields, expected {len(CSV_COLUMNS)}")
        gpu, batch, pipeline = (f.strip() for f in fields[:3])
        try:
            batch_size = int(batch)
        except ValueError:
            raise ReferenceError(f"reference {name} line {lineno}: batch_size {batch!r} is not a number") from None
        for column, raw in zip(CSV_COLUMNS[3:], fields[3:], strict=True):
            torch, compiled = _VALUE_COLUMNS[column]
            try:
                value = parse_cell(raw)
            except ReferenceError as exc:
                raise ReferenceError(f"reference {name} line {lineno}: {exc}") from None
            entries.append(Entry(gpu, batch_size, pipeline, torch, compiled, value))
    if not entries:
        raise ReferenceError(f"reference {name} has no rows")
    return ReferenceTable(name=name, description=description, entries=tuple(entries))


def load(source: str = "seed") -> ReferenceTable:
    """A shipped reference by name (``seed``: the copy inside the package, so it works
    from a wheel without the repository) or a CSV file in the same format."""
    if source in SHIPPED:
        data = resources.files(__package__).joinpath("data", SHIPPED[source]).read_text(encoding="utf-8")
        return parse_table(data, name=source, description=SEED_DESCRIPTION)
    path = Path(source)
    if not path.is_file():
        raise ReferenceError(f"unknown reference {source!r}; valid: {', '.join(SHIPPED)} or a CSV file")
    try:
        data = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReferenceError(f"cannot read reference {source}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_table(data, name=path.name, description=f"{path}")


# --- matching a session to the reference ------------------------------------------------------


def has_published(attention: str | None) -> bool:
    """Whether the guide published figures for this attention: it measured SDPA only
    (``sdpa`` and its forced kernels), so a classic or xformers cell has none; an
    unknown attention (an old session) is given the benefit of the doubt."""
    return attention is None or attention.startswith("sdpa")


def attention_note(attentions: Iterable[str | None]) -> str | None:
    """The line a view adds under a reference column when some of its cells used an
    attention the guide did not measure (their published cells are left blank), or None."""
    others = sorted({a for a in attentions if a is not None and not has_published(a)})
    if not others:
        return None
    return f"published figures are SDPA only; {', '.join(others)}-attention cells have none"


def torch_column_for(version: str | None) -> str:
    """The published torch column closer to ``version`` (see the module docstring)."""
    m = re.match(r"^\s*(\d+)\.(\d+)", version or "")
    if not m:
        return "2.0"
    major, minor = int(m.group(1)), int(m.group(2))
    return "2.0" if (major, minor) <= (2, 0) else "nightly"


def gpu_for_device(device_name: str | None, gpus: Iterable[str]) -> str | None:
    """The reference GPU that ``device_name`` is (every word of the reference name appears
    in the device name: "NVIDIA A100-SXM4-80GB" is the A100, "NVIDIA GeForce RTX 4090" the
    RTX 4090), so a view can mark the column that is the user's own card."""
    if not device_name:
        return None
    words = set(re.split(r"[^A-Z0-9]+", device_name.upper()))
    for gpu in gpus:
        if all(w in words for w in gpu.upper().split()):
            return gpu
    return None


def caveats(rows: Sequence[Any]) -> list[str]:
    """Why a user's figures are not like for like with the published ones, one short line
    each (weights that are not the published models, another dtype, no GPU): shown under
    a reference column so nobody reads tiny-weight CPU figures against an A100's."""
    out: list[str] = []
    weights = sorted({str(r.weights) for r in rows if getattr(r, "weights", None) not in (None, "hub", "random")})
    if weights:
        out.append(f"{', '.join(weights)} weights are not the published models")
    dtypes = sorted({str(r.dtype) for r in rows if getattr(r, "dtype", None) not in (None, "fp16")})
    if dtypes:
        out.append(f"{', '.join(dtypes)} (published: fp16)")
    devices = sorted({str(r.device) for r in rows if getattr(r, "device", None) not in (None, "cuda")})
    if devices:
        out.append(f"device {', '.join(devices)} (published: CUDA GPUs)")
    return out


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def published_note(values: Iterable[Published | None]) -> str | None:
    """The note a view adds when one of ``values`` was converted from seconds per
    iteration, or None."""
    if any(v is not None and v.converted for v in values):
        return "figures published in seconds per iteration (2.34s) are shown as it/s = 1 / x, the published text beside"
    return None
