"""The words and number formats every text output of the report layer shares, and the one
guard against untrusted text: sessions are shared and merged, so any string from an event
(an error message, a device name) may carry terminal escape sequences.

One definition each, so the summary, the comparison and the dashboard (``tui/models`` may
import this; the reverse is forbidden) cannot drift apart.
"""

from __future__ import annotations

import math
import re

#: The line under every it/s table, so nobody mistakes the unit (the seed's T4 table
#: switched to seconds per iteration; sdtop never does).
UNIT_LINE = "it/s = denoising steps per second, median of measured calls"

#: What a table shows for an ok cell that produced no figure (no measured call).
NO_FIGURE = "n/a"

#: What marks a row on the speed–fidelity–memory Pareto front (:mod:`profiler.report.pareto`)
#: in every table: the summary's Markdown, the dashboard.
PARETO_MARK = "★"
#: The legend of :data:`PARETO_MARK`, under every table that shows it.
PARETO_LEGEND = (
    f"{PARETO_MARK} = on the Pareto front of the cells compared with the same baseline "
    "(call time, PSNR and peak memory: no other cell is as good in all three and better in one)"
)
#: How a table writes an infinite PSNR (the output is identical to its baseline's); the CSV
#: and JSON write ``inf``.
INFINITE_PSNR = "∞"
#: Under every table that shows a PSNR (the caveat people miss).
PSNR_NOTE = (
    "PSNR/max_abs_diff against each cell's baseline (baseline_cell); on random or tiny weights "
    "PSNR measures numerical deviation, not visual quality"
)
#: What :data:`INFINITE_PSNR` means, beside :data:`PSNR_NOTE`.
PSNR_UNIT_NOTE = f"PSNR in dB; {INFINITE_PSNR} = identical to the baseline's output"

#: Versions of a session's environment (key, the label a person reads), in the order they
#: are shown: compare calls out the ones that differ between sessions.
VERSION_LABELS: tuple[tuple[str, str], ...] = (
    ("sdtop", "sdtop"),
    ("torch", "torch"),
    ("diffusers", "diffusers"),
    ("transformers", "transformers"),
    ("cuda", "CUDA"),
    ("driver", "driver"),
)
#: summary.md's versions line: the same, and the interpreter.
ENV_LINE_LABELS: tuple[tuple[str, str], ...] = (*VERSION_LABELS, ("python", "python"))

# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and the
# bidirectional overrides/isolates that make a terminal show text in another order.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROLS_AND_NEWLINES = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# What json.dumps(ensure_ascii=False) leaves raw: DEL, C1 and the bidi controls.
_JSON_RAW = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with control characters written out (ESC as ``\\x1b``), so a crafted event
    cannot move the cursor, retitle the terminal or hide text. Tabs stay; newlines stay
    unless ``keep_newlines`` is false (inside a table cell a newline is not structure)."""
    pattern = _CONTROLS if keep_newlines else _CONTROLS_AND_NEWLINES
    return pattern.sub(_escaped, text) if pattern.search(text) else text


def escape_json(text: str) -> str:
    """JSON text with the control characters ``json.dumps(ensure_ascii=False)`` leaves raw
    (DEL, C1, bidi) written as ``\\uXXXX``: still the same JSON, now safe on a terminal."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def md_cell(text: str) -> str:
    """A Markdown table cell: controls escaped (newlines too: a cell is one line), then
    what would break the table (a pipe in an error message)."""
    return escape_controls(text, keep_newlines=False).replace("\\", "\\\\").replace("|", "\\|")


def fmt_rate(v: float | None) -> str:
    """it/s as every table shows it: 2 decimals like the seed, 3 significant digits below
    0.1 it/s so slow cells do not read "0.00"; :data:`NO_FIGURE` when there is none."""
    if v is None:
        return NO_FIGURE
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3g}"


def fmt_psnr(v: float | None) -> str:
    """A PSNR in dB with one decimal (a tenth of a dB is below what anyone reads into it),
    :data:`INFINITE_PSNR` for an identical output, "" when there is none."""
    if v is None or math.isnan(v):
        return ""
    if math.isinf(v):
        return INFINITE_PSNR
    return f"{v:.1f}"


def fmt_steps_computed(computed: float | None, steps: int | None) -> str:
    """Steps a step cache let the denoiser really compute, of the call's steps ("12/28"):
    a median of calls may fall between two counts ("12.5/28"); "" without a cache."""
    if computed is None:
        return ""
    count = f"{computed:.0f}" if float(computed).is_integer() else f"{computed:.1f}"
    return f"{count}/{steps}" if steps else count


# --- the profiled call's breakdown (--profile) ------------------------------------------------

#: Each op family's (:data:`profiler.contract.events.OP_FAMILIES`) short name in every table
#: header and legend: the summary's "Where the time goes", compare, the dashboard.
FAMILY_LABELS: dict[str, str] = {
    "attention": "attn",
    "gemm": "gemm",
    "conv": "conv",
    "norm": "norm",
    "elementwise": "elem",
    "copy": "copy",
    "other": "other",
}
#: The title of the breakdown table (summary.md) and panel (the dashboard's "Breakdown").
BREAKDOWN_TITLE = "Where the time goes"
#: One line per breakdown column, under every table that shows them.
SHARES_NOTE = (
    "attn … other = each op family's share of the profiled call's busy time (CUDA kernel time on a GPU, "
    "op self-time on a CPU), in %; they add up to 100"
)
IDLE_NOTE = "idle = share of the profiled call's span with no kernel running on the GPU, in % (CUDA only)"
GFLOP_NOTE = (
    "GFLOP/step = FLOPs of one denoising step of the stage's denoisers (torch's FLOP-counter formulas on the "
    "profiled call's ops ÷ its steps)"
)
TFLOPS_NOTE = (
    "TFLOP/s = GFLOP/step × steps ÷ the median measured denoising-loop time: steady state, not the profiled call"
)
MFU_NOTE = (
    "MFU = TFLOP/s ÷ the card's dense peak for the cell's dtype, in % (no sparsity; fp32: the non-tensor FP32 "
    "peak; the table with its sources: profiler/report/data/gpu_peaks.csv)"
)
PROFILE_NOTE = (
    "The profiled call is one extra call per cell under torch.profiler after the measured ones (--profile); "
    "it never counts in it/s"
)
#: What a view says where the session has no breakdown at all.
PROFILE_HINT = "no profile in this session: run with --profile"


def fmt_figure(v: float | None, digits: int = 1) -> str:
    """A breakdown figure (a share or MFU in %, GFLOP/step, TFLOP/s) as every table shows
    it: one decimal (a tenth of a percent is below what a profile resolves), but three
    significant digits where that decimal would read 0 (a tiny model's 0.0013 GFLOP/step);
    :data:`NO_FIGURE` when there is none."""
    if v is None or not math.isfinite(v):
        return NO_FIGURE
    if v != 0 and round(v, digits) == 0:
        return f"{v:.3g}"
    return f"{v:.{digits}f}"
