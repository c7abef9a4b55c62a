"""A profiled call's :class:`~profiler.contract.events.ProfileSummary` as figures: each op
family's share of the busy time, the idle share, the top kernels.

Stdlib only (parent half). :mod:`profiler.report.rows` builds its breakdown columns from
these (its docstring defines them) and the dashboard's Breakdown panel its bars and its
top-kernel list, so a share never reads one way in summary.md and another on screen.

Events come from disk, possibly from another worker version: a family this version does
not know counts as ``other`` (the shares still add up to 100), a negative time as none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..contract.events import OP_FAMILIES, ProfileSummary


def _seconds(v: Any) -> float:
    """A busy time in seconds; 0 for anything that is not a finite, positive number."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        return 0.0
    return float(v)


def family_seconds(p: ProfileSummary) -> dict[str, float]:
    """Busy seconds per family, in :data:`OP_FAMILIES` order, every family present; a
    family this version does not know is added to ``other``."""
    out = dict.fromkeys(OP_FAMILIES, 0.0)
    raw: Mapping[str, Any] = p.family_s if isinstance(p.family_s, dict) else {}
    for family, seconds in raw.items():
        out[family if family in out else "other"] += _seconds(seconds)
    return out


def family_shares(p: ProfileSummary) -> dict[str, float] | None:
    """Each family's share of the busy time in % (:data:`OP_FAMILIES` order, adding up to
    100); None when the profile timed nothing. The denominator is the families' own sum,
    not ``busy_s``, so the shares add up even if the two disagree."""
    seconds = family_seconds(p)
    total = math.fsum(seconds.values())
    if total <= 0:
        return None
    return {family: 100.0 * s / total for family, s in seconds.items()}


def idle_pct(p: ProfileSummary) -> float | None:
    """The share of the profiled call's span the GPU ran no kernel, in % (``idle_s /
    span_s``, within 0..100); None on CPU (``idle_s`` None: ops overlap nothing there) or
    without a span."""
    if p.idle_s is None:
        return None
    span = _seconds(p.span_s)
    if span <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * max(0.0, float(p.idle_s)) / span))


@dataclass(frozen=True)
class TopOp:
    """One of the kernels (ops, on CPU) with the most time in the profiled call."""

    name: str
    family: str
    count: int
    total_ms: float
    #: of the profiled call's busy time, in %; None when the profile timed nothing
    share_pct: float | None


def top_ops(p: ProfileSummary, n: int | None = None) -> list[TopOp]:
    """The profile's top list (the worker sorts it; sorted again here, most time first),
    each entry's figures read defensively; at most ``n``."""
    busy_ms = 1000.0 * math.fsum(family_seconds(p).values())
    out: list[TopOp] = []
    for item in p.top if isinstance(p.top, list) else []:
        if not isinstance(item, dict):
            continue
        total = _seconds(item.get("total_ms"))
        family = item.get("family")
        count = item.get("count")
        out.append(
            TopOp(
                name=str(item.get("name") or "?"),
                family=family if isinstance(family, str) and family in OP_FAMILIES else "other",
                count=count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0,
                total_ms=total,
                share_pct=100.0 * total / busy_ms if busy_ms > 0 else None,
            )
        )
    out.sort(key=lambda t: -t.total_ms)
    return out if n is None else out[:n]
