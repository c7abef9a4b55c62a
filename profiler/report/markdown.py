"""summary.md: the seed's layout, one table of it/s per (device, batch size), rows =
pipelines, columns = the settings that vary. Built here only; :mod:`profiler.report.render`
is what writes it (finalize, ``sdtop export``, the dashboard's export key)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...pipelines import registry
from ..contract import status as st
from .fold import opt_str
from .rows import FAMILY_COLUMNS, LEVERS, Row, has_breakdown, lever_off
from .text import (
    BREAKDOWN_TITLE,
    ENV_LINE_LABELS,
    FAMILY_LABELS,
    GFLOP_NOTE,
    IDLE_NOTE,
    MFU_NOTE,
    PARETO_LEGEND,
    PARETO_MARK,
    PROFILE_NOTE,
    PSNR_NOTE,
    PSNR_UNIT_NOTE,
    SHARES_NOTE,
    TFLOPS_NOTE,
    UNIT_LINE,
    escape_controls,
    fmt_figure,
    fmt_psnr,
    fmt_rate,
    fmt_steps_computed,
    md_cell,
)

#: What a Markdown table shows for a combination that was never run (the seed's "-").
NOT_RUN = "-"

# Settings that may tell two cells of one (device, batch size, pipeline) apart, in the order
# their parts appear in a column label. The compile settings (scope included) are one part
# of the label; the levers follow it as the seed's attention and compile do.
_LABEL_KEYS = (
    "torch_version",
    "diffusers_version",
    "weights",
    "model",
    "dtype",
    "attention",
    "compile_mode",
    "compile_backend",
    "fullgraph",
    "compile_scope",
    "quant",
    "cache",
    "offload",
    "fuse_qkv",
    "channels_last",
    "size",
    "frames",
    "steps",
    "iterations",
)
_COMPILE_KEYS = frozenset({"compile_mode", "compile_backend", "fullgraph", "compile_scope"})


def to_markdown(rows: Iterable[Row], env: Mapping[str, Any] | None = None) -> str:
    """The seed's layout: one table per (device name, batch size), rows = pipelines in
    registry order, columns = the combinations of the settings that vary between cells of
    the same pipeline, device and batch size (e.g. "sdpa · compile none"), cells = it/s.

    A setting that differs only *between* pipelines (each pipeline's native size) does not
    make columns: it would spread one pipeline per column. Settings shared by every cell
    are listed once above the tables. Cells show the status instead of a figure when it is
    not ``ok`` ("OOM after warmup", "not supported: ..."), ``a / b / c`` for a multi-stage
    cell (if-cascade: stage I / stage II / upscaler), and "-" for a combination never run.
    Beside the it/s, where the row has them: a step cache's steps computed ("(12/28
    computed)"), a video's frames/s, the PSNR against the cell's baseline, and
    :data:`PARETO_MARK` for a cell on the speed–fidelity–memory front; notes under the
    table say what each means. ``env`` (session.json's ``environment``) adds a versions line
    under the title.

    When some cell was profiled (``--profile``), a "Where the time goes" table follows: one
    line per profiled cell, labelled as its column above, with the op families' shares of
    the profiled call's busy time, the idle share, GFLOP/step, TFLOP/s and MFU
    (:func:`_breakdown_table`), and a line under it defining each column.
    """
    all_rows = list(rows)
    lines = ["# sdtop summary", ""]
    env_line = escape_controls(_env_line(env or {}), keep_newlines=False)
    if env_line:
        lines += [env_line, ""]
    if not all_rows:
        lines += ["No cell has started yet.", ""]
        return "\n".join(lines)

    cells: dict[int, list[Row]] = {}
    for r in all_rows:
        cells.setdefault(r.cell, []).append(r)
    settings = {cell: _label_values(rs[0]) for cell, rs in cells.items()}
    for cell, rs in cells.items():  # a cell run at several sizes (--resolutions) is labelled by all
        if len(_sizes_of(rs)) > 1:
            settings[cell]["size"] = "→".join(f"{h}x{w}" for h, w in _sizes_of(rs))
    varying = _varying_keys(cells, settings)

    common = _common_label(settings, exclude=varying)
    if common:
        lines += [f"Settings common to every cell: {escape_controls(common, keep_newlines=False)}", ""]
    where = _where_line(cells)
    if where:
        lines += [escape_controls(where, keep_newlines=False), ""]

    device_fallback = opt_str((env or {}).get("device_name"))
    tables: dict[tuple[str, int], dict[tuple[str, tuple[Any, ...]], list[Row]]] = {}
    combos: dict[tuple[Any, ...], str] = {}
    pipelines: list[str] = []
    for cell, rs in cells.items():
        first = rs[0]
        device = first.device_name or device_fallback or first.device or "unknown device"
        key = (device, first.batch_size or 0)
        combo = tuple(settings[cell][k] for k in varying)
        combos.setdefault(combo, _combo_label(settings[cell], varying))
        tables.setdefault(key, {})[(first.pipeline, combo)] = rs
        if first.pipeline not in pipelines:
            pipelines.append(first.pipeline)
    pipelines.sort(key=_pipeline_order)
    if not varying:
        combos = {(): _fixed_label(settings)}

    device_order = list(dict.fromkeys(device for device, _ in tables))
    for device, batch in sorted(tables, key=lambda k: (device_order.index(k[0]), k[1])):
        table = tables[(device, batch)]
        lines.append(f"### {md_cell(device)} · batch size {batch}")
        lines.append("")
        lines.append("| pipeline | " + " | ".join(md_cell(label) for label in combos.values()) + " |")
        lines.append("| --- |" + " --- |" * len(combos))
        for pipeline in pipelines:
            texts = [_cell_text(table.get((pipeline, combo))) for combo in combos]
            lines.append(f"| {md_cell(pipeline)} | " + " | ".join(md_cell(t) for t in texts) + " |")
        lines.append("")
        lines.append(UNIT_LINE + ".")
        notes = _table_notes(table.values())
        if notes:
            lines.append("")
            lines.extend(notes)
        lines.append("")
    labels = {cell: combos[tuple(settings[cell][k] for k in varying)] for cell in cells}
    lines += _breakdown_table(cells, labels)
    return "\n".join(lines)


#: The breakdown table's figure columns after the family shares: (header, Row field).
_BREAKDOWN_FIGURES = (("GFLOP/step", "gflop_per_step"), ("TFLOP/s", "tflops"), ("MFU %", "mfu_pct"))


def _breakdown_table(cells: Mapping[int, list[Row]], labels: Mapping[int, str]) -> list[str]:
    """ "Where the time goes": one line per profiled cell (the shares and the idle share
    are the whole profiled call's; GFLOP/step, TFLOP/s and MFU per stage, joined by " / "
    as the it/s are), each column defined in a line under the table; nothing when no cell
    was profiled. An MFU that is not a figure says why ("n/a (unknown card ...)")."""
    profiled = {cell: rs for cell, rs in cells.items() if any(has_breakdown(r) for r in rs)}
    if not profiled:
        return []
    devices = {rs[0].device_name or rs[0].device for rs in profiled.values()}
    header = ["cell", "pipeline", "settings"]
    header += [f"{FAMILY_LABELS[f]} %" for f in FAMILY_COLUMNS] + ["idle %"]
    header += [title for title, _ in _BREAKDOWN_FIGURES]
    lines = [f"### {BREAKDOWN_TITLE}", "", "| " + " | ".join(header) + " |", "| --- | --- | --- |"]
    lines[-1] += " ---: |" * (len(header) - 3)
    for cell, rs in sorted(profiled.items()):
        first = next(r for r in rs if has_breakdown(r))
        label = labels.get(cell, "")
        if len(devices) > 1:
            label = " · ".join(x for x in (first.device_name or first.device or "", label) if x)
        texts = [str(cell), first.pipeline, label or "-"]
        texts += [fmt_figure(getattr(first, column)) for column in FAMILY_COLUMNS.values()]
        texts.append(fmt_figure(first.idle_pct))
        for _, field in _BREAKDOWN_FIGURES:
            texts.append(" / ".join(_stage_figure(r, field) for r in rs))
        lines.append("| " + " | ".join(md_cell(t) for t in texts) + " |")
    lines.append("")
    notes = [SHARES_NOTE, IDLE_NOTE, GFLOP_NOTE, TFLOPS_NOTE, MFU_NOTE, PROFILE_NOTE]
    if any(len(rs) > 1 for rs in profiled.values()):
        notes.append("GFLOP/step, TFLOP/s and MFU of a cell with stages: one per stage, as its it/s above")
    lines += [escape_controls(n, keep_newlines=False) + "." for n in notes]
    lines.append("")
    return lines


def _stage_figure(row: Row, field: str) -> str:
    """One stage's figure; for a missing MFU, why (``mfu_note``)."""
    value = getattr(row, field)
    if field == "mfu_pct" and value is None and row.mfu_note:
        return f"n/a ({row.mfu_note})"
    return fmt_figure(value)


def _label_values(row: Row) -> dict[str, Any]:
    """The settings a column label may name. Backend, fullgraph and scope mean nothing for
    an uncompiled cell, so they are blanked there and cannot split "compile none" in two."""
    compiled = row.compile_mode not in (None, "none")
    size = f"{row.height}x{row.width}" if row.height is not None and row.width is not None else None
    return {
        "torch_version": row.torch_version,
        "diffusers_version": row.diffusers_version,
        "weights": row.weights,
        "model": row.model,
        "dtype": row.dtype,
        "attention": row.attention,
        "compile_mode": row.compile_mode,
        "compile_backend": row.compile_backend if compiled else None,
        "fullgraph": row.fullgraph if compiled else None,
        "compile_scope": row.compile_scope if compiled else None,
        "quant": row.quant,
        "cache": row.cache,
        "offload": row.offload,
        "fuse_qkv": row.fuse_qkv,
        "channels_last": row.channels_last,
        "size": size,
        "frames": row.frames,
        "steps": row.steps,
        "iterations": row.iterations,
    }


def _varying_keys(cells: Mapping[int, list[Row]], settings: Mapping[int, dict[str, Any]]) -> tuple[str, ...]:
    """Keys with more than one value (ignoring blanks) inside some group of cells that
    share pipeline, device and batch size: the ones a reader needs to tell columns apart."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for cell, rs in cells.items():
        r = rs[0]
        groups.setdefault((r.pipeline, r.device_name, r.device, r.batch_size), []).append(settings[cell])
    varying = set()
    for members in groups.values():
        for key in _LABEL_KEYS:
            if len({m[key] for m in members if m[key] is not None}) > 1:
                varying.add(key)
    return tuple(k for k in _LABEL_KEYS if k in varying)


def _part(key: str, value: Any) -> str:
    if key == "torch_version":
        return f"torch {value}"
    if key == "diffusers_version":
        return f"diffusers {value}"
    if key == "weights":
        return f"{value} weights"
    if key == "channels_last":
        return "channels_last" if value else "contiguous"
    if key == "steps":
        return f"{value} steps"
    if key == "iterations":
        return f"{value} iterations"
    if key in ("quant", "cache", "offload"):
        return f"{key} {value}"
    if key == "fuse_qkv":
        return "fuse qkv " + ("on" if value else "off")
    if key == "compile_scope":
        return f"compile scope {value}"
    if key == "frames":
        return f"{value} frames"
    return str(value)


def _compile_part(values: Mapping[str, Any], show_backend: bool, show_fullgraph: bool, show_scope: bool = False) -> str:
    mode = values["compile_mode"]
    if mode in (None, "none"):
        return "compile none"
    extras = []
    if show_backend and values["compile_backend"] is not None:
        extras.append(str(values["compile_backend"]))
    if show_fullgraph and values["fullgraph"] is not None:
        extras.append("fullgraph" if values["fullgraph"] else "no fullgraph")
    if show_scope and values["compile_scope"] is not None:
        extras.append(str(values["compile_scope"]))
    return f"compile {mode}" + (f" ({', '.join(extras)})" if extras else "")


def _combo_label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts: list[str] = []
    for key in keys:
        if key in _COMPILE_KEYS:
            if not any(p.startswith("compile ") for p in parts):
                parts.append(
                    _compile_part(values, "compile_backend" in keys, "fullgraph" in keys, "compile_scope" in keys)
                )
        elif values[key] is not None:
            parts.append(_part(key, values[key]))
    return " · ".join(parts) or "it/s"


def _constant(settings: Mapping[int, dict[str, Any]], key: str) -> tuple[bool, Any]:
    values = {v[key] for v in settings.values()}
    return (len(values) == 1, next(iter(values)) if len(values) == 1 else None)


def _fixed_label(settings: Mapping[int, dict[str, Any]]) -> str:
    """The one column's label when nothing varies: attention, compile, dtype, where every
    cell agrees (a pipeline-specific value would make the label lie for other rows)."""
    parts: list[str] = []
    same, attention = _constant(settings, "attention")
    if same and attention is not None:
        parts.append(str(attention))
    same_mode, _ = _constant(settings, "compile_mode")
    same_backend, _ = _constant(settings, "compile_backend")
    if same_mode:
        parts.append(_compile_part(next(iter(settings.values())), same_backend, False))
    same, dtype = _constant(settings, "dtype")
    if same and dtype is not None:
        parts.append(str(dtype))
    return " · ".join(parts) or "it/s"


def _common_label(settings: Mapping[int, dict[str, Any]], exclude: Sequence[str]) -> str:
    """Settings every cell shares, for the line above the tables (the seed stated its
    method in prose; here it is derived, so it cannot go stale)."""
    parts: list[str] = []
    for key in ("weights", "model", "dtype", "channels_last", "size", "steps", "iterations"):
        if key in exclude:
            continue
        same, value = _constant(settings, key)
        if same and value is not None:
            parts.append(_part(key, value))
    # A lever is named when every cell it applies to (compiled cells for the scope, videos
    # for frames) holds it at one value other than off: a lever left off everywhere goes
    # unsaid, as in the seed's tables, which had none.
    for key in LEVERS:
        if key in exclude:
            continue
        values = {v[key] for v in settings.values() if v[key] is not None}
        if len(values) == 1 and not lever_off(key, value := next(iter(values))):
            parts.append(_part(key, value))
    return " · ".join(parts)


def _cell_text(rows_of_cell: list[Row] | None) -> str:
    """it/s of each stage joined by " / ", or the cell's status when it is not ok; the
    status is the cell's, so a failed cascade reads once, like the seed's "not supported".
    A cell run at several sizes shows each: "64x64: 12.31 · 96x96: 7.40"; one where torch
    hit its recompile limit and fell back to eager says so after its figures."""
    if not rows_of_cell:
        return NOT_RUN
    status = rows_of_cell[0].status
    if not st.is_ok(status):
        return st.one_line(status, 80)
    note = " (eager fallback)" if any(r.eager_fallback for r in rows_of_cell) else ""
    psnr = fmt_psnr(rows_of_cell[0].psnr_db)
    fidelity = f" · PSNR {psnr}{'' if rows_of_cell[0].psnr_db == math.inf else ' dB'}" if psnr else ""
    sizes = _sizes_of(rows_of_cell)
    if len(sizes) == 1:
        return _size_text(rows_of_cell) + fidelity + _mark(rows_of_cell) + note
    parts = [
        f"{h}x{w}: " + _size_text(at) + _mark(at)
        for h, w in sizes
        if (at := [r for r in rows_of_cell if (r.height, r.width) == (h, w)])
    ]
    return " · ".join(parts) + fidelity + note


def _size_text(rows_at_size: Sequence[Row]) -> str:
    """The stages' it/s at one size (each with its steps computed under a step cache), and
    a video's frames/s (a whole-call figure, once)."""
    stages = []
    for r in rows_at_size:
        computed = fmt_steps_computed(r.steps_computed, r.steps)
        stages.append(fmt_rate(r.it_per_s) + (f" ({computed} computed)" if computed else ""))
    fps = rows_at_size[0].frames_per_s
    return " / ".join(stages) + (f" · {fmt_rate(fps)} frames/s" if fps is not None else "")


def _mark(rows: Sequence[Row]) -> str:
    return f" {PARETO_MARK}" if any(r.pareto for r in rows) else ""


def _sizes_of(rows_of_cell: Sequence[Row]) -> list[tuple[int | None, int | None]]:
    return list(dict.fromkeys((r.height, r.width) for r in rows_of_cell))


def _table_notes(cells: Iterable[list[Row]]) -> list[str]:
    """What the table's figures beside the it/s mean, each said once and only where the
    table shows one; and why an ok cell of a table with PSNRs has none."""
    notes: list[str] = []
    cells = list(cells)
    if any(len(rs) > 1 and rs[0].pipeline == "if-cascade" for rs in cells):
        notes.append("if-cascade: stage I / stage II / upscaler.")
    if any(rs[0].pipeline == "if-cascade" and (rs[0].batch_size or 1) > 1 for rs in cells):
        notes.append(f"if-cascade: {registry.get('if-cascade').seed_note}.")
    shown = [rs for rs in cells if st.is_ok(rs[0].status)]
    if any(r.steps_computed is not None for rs in shown for r in rs):
        notes.append(
            "(n/N computed) = a step cache's steps whose denoiser really ran, of the call's N "
            "(median of measured calls)."
        )
    if any(r.frames_per_s is not None for rs in shown for r in rs):
        notes.append("frames/s = frames × batch size ÷ median whole-call time.")
    if any(rs[0].psnr_db is not None for rs in shown):
        notes.append(PSNR_NOTE + ".")
        notes.append(PSNR_UNIT_NOTE + ".")
        missing = [rs[0] for rs in shown if rs[0].psnr_db is None and rs[0].fidelity_note]
        notes += [f"No PSNR for cell {r.cell} ({r.pipeline}): {r.fidelity_note}." for r in missing]
    if any(r.pareto for rs in shown for r in rs):
        notes.append(PARETO_LEGEND + ".")
    return [escape_controls(n, keep_newlines=False) for n in notes]


def _where_line(cells: Mapping[int, list[Row]]) -> str:
    """ "Ran on 2 lanes: CPU 0 (cells 1, 3, 5) · CPU 1 (cells 2, 4, 6)" where cells ran side by
    side (``lane`` set), with the machine where more than one ran them (a Ray cluster, a
    merge); nothing for a sequential run on one machine."""
    by_place: dict[str, list[int]] = {}
    hosts = {rs[0].hostname for rs in cells.values() if rs and rs[0].hostname}
    for cell, rs in cells.items():
        first = rs[0]
        if not first.lane and len(hosts) < 2:
            continue
        parts = [p for p in (first.lane, first.hostname if len(hosts) > 1 else None) if p]
        by_place.setdefault(" on ".join(parts) or "?", []).append(cell + 1)
    if not by_place:
        return ""
    noun = "lanes" if any(rs[0].lane for rs in cells.values() if rs) else "machines"
    places = " · ".join(f"{place} (cells {', '.join(map(str, sorted(c)))})" for place, c in by_place.items())
    return f"Ran on {len(by_place)} {noun}: {places}"


def _env_line(env: Mapping[str, Any]) -> str:
    parts = [f"{label} {env[key]}" for key, label in ENV_LINE_LABELS if env.get(key) not in (None, "")]
    return " · ".join(parts)


def _pipeline_order(name: str) -> tuple[int, str]:
    names = registry.PIPELINE_NAMES
    return (names.index(name), "") if name in names else (len(names), name)
