"""Dense peak TFLOP/s per GPU and dtype: the denominator of MFU (``mfu_pct``).

Stdlib only (parent half), like :mod:`profiler.report.reference`: the table ships inside the
package (``data/gpu_peaks.csv``) so ``sdtop export`` works from a wheel, offline.

What the table holds, and why
-----------------------------
One row per card: the figures NVIDIA's datasheet (or architecture whitepaper) gives for its
tensor cores, **dense**. Datasheets headline the "with sparsity" figures (2:4 structured
sparsity, marked ``*``), which no diffusers pipeline uses, so those are halved, or the dense
figure is taken where the datasheet states one beside them; each row's ``note`` says which,
and its ``source`` is the document. MFU against a sparse peak would read half of the truth.

- ``fp16`` / ``bf16``: tensor-core FP16 / BF16 with FP32 accumulate, which is what PyTorch's
  matmuls and convolutions use; GeForce cards publish a twice-as-high FP16-accumulate figure
  that would halve their MFU for nothing.
- ``fp32``: the **FP32 non-tensor** (CUDA-core) peak, on every card. PyTorch runs fp32 matmuls
  in full FP32 unless TF32 is switched on (``torch.backends.cuda.matmul.allow_tf32``, off by
  default) and sdtop does not switch it on. cuDNN convolutions do use TF32 by default on
  Ampere and newer, so a convolution-heavy fp32 cell can read above 100%: a sign its convs
  ran on tensor cores, not an error in the count.
- ``tf32``: the TF32 tensor figure, kept for reference (and for a session that enabled TF32);
  no cell's dtype selects it.
- ``fp8``: where the card has FP8 tensor cores (Hopper, Ada).

An empty cell means the card has no such hardware path (a T4 has no BF16), so its MFU is not
a figure ("no bf16 peak for T4") rather than one read against the wrong peak. A quantised
cell (``--quant fp8dq``, ``int8dq``) is still read against its dtype's peak: only some of its
FLOPs run at the lower precision.

Matching a device to a row
--------------------------
A device name (torch's ``get_device_name``: "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB",
"Tesla V100-SXM2-16GB", "NVIDIA GeForce RTX 4090") is cut into upper-case words at every
character that is not a letter or digit. A row matches when every word of its ``match``
column is one of them and no word of its ``exclude`` column is ("H100" without "PCIE" or
"NVL" is the SXM board; "L4" is not "L40S"). When several rows match, the one with the most
``match`` words wins. No row: the card is unknown and MFU says so.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

#: The dtype columns of the table, in its order.
PEAK_DTYPES: tuple[str, ...] = ("fp16", "bf16", "tf32", "fp32", "fp8")
#: The table's header.
CSV_COLUMNS: tuple[str, ...] = ("gpu", "match", "exclude", *PEAK_DTYPES, "source", "note")
#: The shipped table, inside the package.
SHIPPED = "gpu_peaks.csv"

_WORD = re.compile(r"[^A-Z0-9]+")


class PeakTableError(ValueError):
    """A peak table that cannot be read; the message is one line."""


@dataclass(frozen=True)
class Peak:
    """One card: its name, the words that pick it out of a device name, its dense peak
    TFLOP/s per dtype (a dtype it has no hardware for is absent), and where they come from."""

    gpu: str
    match: tuple[str, ...]
    exclude: tuple[str, ...]
    tflops: Mapping[str, float]
    source: str
    note: str

    def matches(self, words: frozenset[str]) -> bool:
        return all(w in words for w in self.match) and not any(w in words for w in self.exclude)


def words_of(device_name: str) -> frozenset[str]:
    """The upper-case words of a device name ("NVIDIA A100-SXM4-80GB" -> NVIDIA, A100, SXM4, 80GB)."""
    return frozenset(w for w in _WORD.split(device_name.upper()) if w)


def _words_in_order(text: str) -> tuple[str, ...]:
    return tuple(w for w in _WORD.split(text.upper()) if w)


def parse(text: str) -> tuple[Peak, ...]:
    """A peak table from CSV text (:data:`CSV_COLUMNS`); :class:`PeakTableError` names the
    first line that is wrong, so a broken install says where."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != CSV_COLUMNS:
        raise PeakTableError(f"peak table: the header must be {','.join(CSV_COLUMNS)}")
    out: list[Peak] = []
    for n, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(CSV_COLUMNS):
            raise PeakTableError(f"peak table line {n}: {len(fields)} fields, expected {len(CSV_COLUMNS)}")
        row = dict(zip(CSV_COLUMNS, fields, strict=True))
        tflops: dict[str, float] = {}
        for dtype in PEAK_DTYPES:
            text_value = row[dtype].strip()
            if not text_value:
                continue
            try:
                value = float(text_value)
            except ValueError:
                raise PeakTableError(f"peak table line {n}: {dtype} {text_value!r} is not a number") from None
            if not math.isfinite(value) or value <= 0:
                raise PeakTableError(f"peak table line {n}: {dtype} {text_value!r} is not a positive figure")
            tflops[dtype] = value
        match = _words_in_order(row["match"])
        if not match:
            raise PeakTableError(f"peak table line {n}: no match words")
        out.append(
            Peak(
                gpu=row["gpu"].strip(),
                match=match,
                exclude=_words_in_order(row["exclude"]),
                tflops=tflops,
                source=row["source"].strip(),
                note=row["note"].strip(),
            )
        )
    if not out:
        raise PeakTableError("peak table has no rows")
    return tuple(out)


@functools.cache
def load() -> tuple[Peak, ...]:
    """The shipped table, read once per process."""
    return parse(resources.files(__package__).joinpath("data", SHIPPED).read_text(encoding="utf-8"))


def card_for(device_name: str | None, peaks: Sequence[Peak] | None = None) -> Peak | None:
    """The row a device name is (module docstring: the rule); None for an unknown card."""
    if not device_name:
        return None
    words = words_of(device_name)
    found = [p for p in (load() if peaks is None else peaks) if p.matches(words)]
    return max(found, key=lambda p: len(p.match)) if found else None


def mfu(
    tflops: float,
    *,
    device_name: str | None,
    dtype: str | None,
    peaks: Sequence[Peak] | None = None,
) -> tuple[float | None, str | None]:
    """(MFU in %, None) of an achieved TFLOP/s on a CUDA device, or (None, why not): "unknown
    card <name>", "no <dtype> peak for <card>". The caller says "cpu" itself (a CPU has no
    row here, and saying "unknown card" of it would be wrong)."""
    card = card_for(device_name, peaks)
    if card is None:
        return None, f"unknown card {device_name or '(no device name)'}"
    peak = card.tflops.get(dtype or "")
    if peak is None:
        return None, f"no {dtype or 'dtype'} peak for {card.gpu}"
    return 100.0 * tflops / peak, None
