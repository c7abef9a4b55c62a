"""The report layer's public facade: rows, statuses, figures and the CSV / Markdown
writers under one name, so callers (the dashboard, tests) need not know the modules."""

from __future__ import annotations

from .figures import compile_figures, percentile, telemetry_figures
from .markdown import NOT_RUN, to_markdown
from .rows import COLUMNS, LEVERS, Row, lever_off, rows, session_environment, with_session_columns
from .speedup import fastest, row_key, speedups
from .statuses import INTERRUPTED, RUNNING, cell_status, cell_statuses
from .tables import csv_value, to_csv
from .text import NO_FIGURE, UNIT_LINE

__all__ = [
    "COLUMNS",
    "INTERRUPTED",
    "LEVERS",
    "NOT_RUN",
    "NO_FIGURE",
    "RUNNING",
    "UNIT_LINE",
    "Row",
    "cell_status",
    "cell_statuses",
    "compile_figures",
    "csv_value",
    "fastest",
    "lever_off",
    "percentile",
    "row_key",
    "rows",
    "session_environment",
    "speedups",
    "telemetry_figures",
    "to_csv",
    "to_markdown",
    "with_session_columns",
]
