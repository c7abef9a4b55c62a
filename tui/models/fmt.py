"""Small formatters shared by the view-models, so every panel writes a figure the same way."""

from __future__ import annotations

import math

from ...profiler.report.text import fmt_rate


def duration(seconds: float | None) -> str:
    """``12.3s``, ``4m05s``, ``1h02m``: short enough for an 80-column header."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def clock_offset(seconds: float) -> str:
    """A log time stamp relative to the session start (``+01:23.4``).

    Relative, not wall-clock: it reads the same in every time zone and replays byte for
    byte, and "how long after the start" is what one compares between two sessions.
    """
    seconds = max(0.0, seconds)
    minutes, secs = divmod(seconds, 60.0)
    if minutes >= 60:
        hours, minutes = divmod(int(minutes), 60)
        return f"+{hours}:{minutes:02d}:{int(secs):02d}"
    return f"+{int(minutes):02d}:{secs:04.1f}"


def mib(value: float | None) -> str:
    """MiB below 10 GiB, GiB above: the unit a person compares against a card's size."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value >= 10 * 1024:
        return f"{value / 1024:.1f}G"
    if value >= 1024:
        return f"{value / 1024:.2f}G"
    return f"{value:.0f}M"


def ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def rate(value: float | None) -> str:
    """it/s as the report's tables write it (:func:`fmt_rate`: the seed's two decimals), so
    the dashboard and an export never show one cell two ways; "—" where there is none."""
    if value is None or not math.isfinite(value):
        return "—"
    return fmt_rate(value)


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
