"""How far each cell's output is from its baseline's: the parent's half of the fidelity
check (numpy, Pillow and safetensors' numpy API; no torch).

A lever that makes a cell faster may also change what it makes (quantisation, step
caches, sage attention do so on purpose; compile and attention kernels change the
rounding). Timings alone cannot say which: so every cell keeps its last measured call's
output (:mod:`profiler.worker.outputs` writes it and emits ``OutputSaved``), and the
parent compares it with the output of the cell's baseline
(:func:`sdtop.pipelines.settings.baselines`) as soon as both exist, emitting one
:class:`Fidelity` event per cell.

The :class:`Judge` is fed the session's events (``observe``), asked after each cell which
comparisons became possible (``after_cell``) and, at the session's end, says why the rest
have no figures (``finish``). It is seeded with an earlier run's events on ``--resume``,
so a cell compared then is not compared again, and a cell waiting then is compared once
its baseline runs now.

The figures, and why these: ``psnr_db`` over the decoded 8-bit images (what a user looks
at; 10*log10(255^2/MSE) over every saved PNG of the pair together), infinite with
``identical`` when every pixel matches; ``max_abs_diff`` over the float32 final latents
(catches a difference the 8-bit rounding hides, and says how big the worst one is). The
files are tiny for tiny weights (a few ms a pair); the dependencies are imported only to
compare, and a parent without them gets a reason, not a crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from ...pipelines.settings import CellSpec, baselines
from ..contract import status
from ..contract.events import CellFinished, Event, Fidelity, OutputSaved

#: Why a cell has no baseline when ``--baseline`` was not given (the baseline_key's fields).
NO_BASELINE = "no cell without lossy levers of the same pipeline, size, batch, dtype, steps and seed"


class Figures(NamedTuple):
    """One comparison's result: the Fidelity fields other than the cells."""

    psnr_db: float | None = None
    max_abs_diff: float | None = None
    identical: bool = False
    reason: str = ""


SELF = Figures(psnr_db=math.inf, max_abs_diff=0.0, identical=True)


def _reasons(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _load_rgb(path: Path) -> Any:
    """An (H, W, 3) uint8 array of a saved PNG (RGB whatever the file's mode)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _load_latents(path: Path) -> Any:
    import numpy as np
    from safetensors.numpy import load_file

    return np.asarray(load_file(str(path))["latents"], dtype=np.float32)


def _image_psnr(root: Path, mine: OutputSaved, base: OutputSaved) -> tuple[float | None, bool, str]:
    """(psnr_db, identical, reason) over the images the two outputs share by file name."""
    import numpy as np

    names = {PurePosixPath(p).name: p for p in mine.images}
    base_names = {PurePosixPath(p).name: p for p in base.images}
    if not names and not base_names:
        return None, False, "no images saved"
    if set(names) != set(base_names):
        return None, False, f"images differ: {sorted(names)} vs the baseline's {sorted(base_names)}"
    sse, count = 0, 0
    for name in sorted(names):
        a, b = _load_rgb(root / names[name]), _load_rgb(root / base_names[name])
        if a.shape != b.shape:
            size = f"{a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}"
            return None, False, f"image sizes differ ({name}: {size})"
        d = a.astype(np.int32) - b.astype(np.int32)
        sse += int(np.einsum("ijk,ijk->", d, d, dtype=np.int64))
        count += d.size
    if sse == 0:
        return math.inf, True, ""
    return 10.0 * math.log10(255.0**2 / (sse / count)), False, ""


def _latents_diff(root: Path, mine: OutputSaved, base: OutputSaved) -> tuple[float | None, str]:
    """(max_abs_diff, reason) over the two outputs' float32 latents."""
    import numpy as np

    if not mine.latents or not base.latents:
        return None, "no latents saved" if not mine.latents else "the baseline saved no latents"
    a, b = _load_latents(root / mine.latents), _load_latents(root / base.latents)
    if a.shape != b.shape:
        return None, f"latents shapes differ: {list(a.shape)} vs {list(b.shape)}"
    if a.size == 0:
        return None, "empty latents"
    diff = float(np.max(np.abs(a - b)))
    if not math.isfinite(diff):
        return None, "latents are not finite (NaN or inf)"
    return diff, ""


def compare(root: Path, mine: OutputSaved, base: OutputSaved) -> Figures:
    """Compare two saved outputs of a session rooted at ``root``. Never raises: a missing
    dependency or an unreadable file is a reason, not a crash of the parent."""
    try:
        import numpy  # noqa: F401
        import PIL  # noqa: F401
        import safetensors.numpy  # noqa: F401
    except ImportError as exc:
        return Figures(reason=f"cannot compare outputs: {exc.name or exc} is not installed in the parent")
    try:
        psnr, identical, why_images = _image_psnr(root, mine, base)
        diff, why_latents = _latents_diff(root, mine, base)
    except Exception as exc:  # a file deleted, truncated, not what it claims to be
        return Figures(reason=f"cannot read the outputs: {status.one_line(f'{type(exc).__name__}: {exc}')}")
    return Figures(psnr, diff, identical, _reasons(why_images, why_latents))


class Judge:
    """Compares each cell's output with its baseline's, as soon as both exist.

    ``cells`` are the session's cells, ``override`` its ``--baseline`` (None: each cell's
    own, :func:`baselines`), ``session_dir`` the folder OutputSaved paths are relative to.
    Not thread-safe: the runner calls it from its one running thread."""

    def __init__(self, cells: Sequence[CellSpec], override: int | None, session_dir: Path) -> None:
        self.cells = list(cells)
        self.override = override
        self.root = Path(session_dir)
        self.base = baselines(self.cells, override)
        self.saved: dict[int, OutputSaved] = {}
        self.status: dict[int, str] = {}
        # Cells whose latest output has not been compared with their baseline's latest.
        self.pending: set[int] = set()
        # The last Fidelity of each cell (seeded or given): finish() does not repeat it.
        self.last: dict[int, Figures] = {}

    def _known(self, cell: int) -> bool:
        return 0 <= cell < len(self.cells)

    def observe(self, ev: Event) -> None:
        """Record what comparisons need: outputs, statuses, and (seeding) verdicts given."""
        if not self._known(ev.cell):
            return
        if isinstance(ev, OutputSaved):
            self.saved[ev.cell] = ev
            self.pending.add(ev.cell)
            # a baseline's new output (a rerun) changes every comparison made with it
            self.pending.update(c for c in self.saved if self.base[c] == ev.cell)
        elif isinstance(ev, CellFinished):
            self.status[ev.cell] = ev.status
        elif isinstance(ev, Fidelity):
            self.last[ev.cell] = Figures(ev.psnr_db, ev.max_abs_diff, ev.identical, ev.reason)
            b = self.base[ev.cell]
            if ev.cell in self.saved and b is not None and b == ev.baseline_cell and b in self.saved:
                self.pending.discard(ev.cell)  # compared with the outputs seen so far

    def _computable(self, cell: int) -> bool:
        b = self.base[cell]
        return cell in self.saved and b is not None and b in self.saved

    def _judge(self, cell: int) -> Fidelity:
        b = self.base[cell]
        assert b is not None  # _computable
        figures = SELF if b == cell else compare(self.root, self.saved[cell], self.saved[b])
        return self._give(cell, b, figures)

    def _give(self, cell: int, baseline: int | None, figures: Figures) -> Fidelity:
        self.pending.discard(cell)
        self.last[cell] = figures
        return Fidelity(cell=cell, baseline_cell=baseline, **figures._asdict())

    def after_cell(self, idx: int) -> list[Fidelity]:
        """The comparisons that became possible once cell ``idx`` ended: its own (when its
        baseline's output exists; a baseline against itself), and, if it is a baseline,
        every cell that waited for it. In cell order."""
        ready = sorted(c for c in self.pending if self._computable(c))
        return [self._judge(c) for c in ready]

    def finish(self) -> list[Fidelity]:
        """At the session's end: a Fidelity for every cell with an output that never got
        one, saying why it has no figures (or its figures, if they can be had now), except
        where the same verdict was already recorded (a resumed session)."""
        out: list[Fidelity] = []
        for cell in sorted(self.pending):
            if self._computable(cell):
                out.append(self._judge(cell))
                continue
            figures = Figures(reason=self.why_not(cell))
            if self.last.get(cell) != figures:
                out.append(self._give(cell, self.base[cell], figures))
        return out

    def why_not(self, cell: int) -> str:
        """Why ``cell``'s output cannot be compared now (one line)."""
        b = self.base[cell]
        if b is None:
            if self.override is not None:
                return f"--baseline {self.override} is not a cell of this session (0 to {len(self.cells) - 1})"
            return NO_BASELINE
        if b in self.saved:
            return ""
        cell_status = self.status.get(b)
        if cell_status is None:
            why = "it did not run"
        elif not status.is_ok(cell_status):
            why = cell_status
        elif self.cells[b].outputs == "off":
            why = "its outputs are off"
        else:
            why = "it ended ok without saving one (see its log)"
        return f"baseline cell {b} has no output: {why}"
