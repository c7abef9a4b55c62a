"""CSV: the one writer of sdtop's CSV values, for the summary (one row per cell and stage)
and the comparison alike, so both read the same way in pandas and neither lets a
control character from an event reach a terminal."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from typing import Any

from .rows import COLUMNS, Row
from .text import escape_controls


def csv_value(v: Any) -> str:
    """Empty for a missing figure, ``true``/``false`` for flags, 4 decimals for figures,
    ``inf`` / ``-inf`` for an infinite one (an identical output's PSNR: pandas reads both
    as floats; NaN, never a figure, is empty), text with its control characters escaped
    (an error message may carry ESC)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4f}" if math.isfinite(v) else ""
    return escape_controls(str(v), keep_newlines=False)


def to_csv(rows: Iterable[Row]) -> str:
    """RFC 4180 CSV (the csv module's quoting, CRLF line ends) with :data:`COLUMNS` as the
    header, values by :func:`csv_value`, so ``pandas.read_csv`` reads it without options
    and gets real dtypes."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([csv_value(getattr(row, c)) for c in COLUMNS])
    return buf.getvalue()
