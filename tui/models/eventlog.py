"""The events panel: a time-stamped, filterable log of what happened, one line per entry.

Steps and telemetry samples are not logged (the charts show them); everything a person
would otherwise grep a log for is: phase changes, compiles and their durations,
recompiles and graph breaks with torch's reason, OOMs, errors, and each cell's result.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from ...profiler.contract import events as ev
from ...profiler.contract import status as st
from . import fmt

#: Filters, in the order the filter key cycles through them.
FILTERS = ("all", "phases", "compile", "problems", "results")

#: Which categories each filter keeps. "problems" is the one to look at after a bad run.
_FILTER_CATEGORIES = {
    "all": frozenset({"session", "phase", "compile", "problem", "result"}),
    "phases": frozenset({"phase"}),
    "compile": frozenset({"compile"}),
    "problems": frozenset({"problem"}),
    "results": frozenset({"result", "session"}),
}


#: Events that never make a line (the charts show them). Steps can arrive thousands of
#: times a second; testing them first keeps the log's cost per step to one isinstance.
_NEVER_LOGGED = (ev.StepTimed, ev.StageTimed, ev.HostSample, ev.GpuSample, ev.TorchMemory)


@dataclass(frozen=True)
class LogEntry:
    ts: float
    offset_s: float  # seconds since the session started
    cell: int
    category: str  # session | phase | compile | problem | result
    severity: str  # info | good | warning | error
    text: str

    def stamp(self) -> str:
        return fmt.clock_offset(self.offset_s)


class EventLogModel:
    """The entries, bounded: a deque drops the oldest as a new one comes (a list trimmed
    from the front copied the whole log each time, 200 times a second at 10k steps/s), and
    the count per category is kept with it, so the panel's "N shown" costs no scan."""

    max_entries = 5000

    def __init__(self) -> None:
        self.entries: deque[LogEntry] = deque(maxlen=self.max_entries)
        self._counts: Counter[str] = Counter()
        self.filter = "all"
        self.start_ts: float | None = None
        self._compile_started: dict[tuple[int, str], float] = {}

    def cycle_filter(self) -> str:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        return self.filter

    def matches(self, entry: LogEntry) -> bool:
        return entry.category in _FILTER_CATEGORIES[self.filter]

    def visible(self) -> list[LogEntry]:
        return [e for e in self.entries if self.matches(e)]

    def visible_count(self) -> int:
        """How many entries the filter shows (what ``len(visible())`` says, without the scan)."""
        return sum(self._counts[c] for c in _FILTER_CATEGORIES[self.filter])

    def feed(self, event: ev.Event) -> LogEntry | None:
        """Log one event; the new entry (whether or not the filter shows it), else None."""
        if self.start_ts is None or isinstance(event, ev.SessionStarted):
            self.start_ts = event.ts
        if isinstance(event, _NEVER_LOGGED):  # most of a session's events: skip the match below
            return None
        made = self._describe(event)
        if made is None:
            return None
        category, severity, text = made
        entry = LogEntry(event.ts, event.ts - (self.start_ts or event.ts), event.cell, category, severity, text)
        if len(self.entries) == self.max_entries:
            self._counts[self.entries[0].category] -= 1  # the deque drops it below
        self.entries.append(entry)
        self._counts[category] += 1
        return entry

    def _describe(self, e: ev.Event) -> tuple[str, str, str] | None:
        """(category, severity, text) for the events worth a line; None for the rest."""
        c = f"cell {e.cell + 1}: " if e.cell >= 0 else ""
        match e:
            case ev.SessionStarted():
                n = len(e.cells)
                return "session", "info", _words("session", e.session_id, f"started, {_plural(n, 'cell')}")
            case ev.SessionFinished():
                sev = "good" if e.status == "complete" else "warning"
                why = f" ({st.one_line(e.reason, 80)})" if e.reason else ""
                return "session", sev, f"session {e.status} after {fmt.duration(e.duration_s)}{why}"
            case ev.Log():
                sev = e.level if e.level in ("warning", "error") else "info"
                return ("problem" if sev != "info" else "session"), sev, f"{c}{st.one_line(e.message)}"
            case ev.CellStarted():
                return "phase", "info", c + _words("started", str(e.settings.get("pipeline", "")))
            case ev.WorkerStarted():
                return "phase", "info", f"{c}worker {e.pid} up ({e.launcher}, {fmt.duration(e.startup_s)})"
            case ev.PhaseStarted():
                return "phase", "info", c + _words("→", e.phase, _stage(e.stage))
            case ev.PhaseEnded():
                name = _words(e.phase, _stage(e.stage))
                if e.ok:
                    return "phase", "info", f"{c}{name} done in {fmt.duration(e.duration_s)}"
                return "phase", "error", f"{c}{name} failed after {fmt.duration(e.duration_s)}"
            case ev.SettingsApplied():
                # A transformer's dispatcher backend is what ran; a UNet's processors are.
                backends = sorted({b for names in e.attention_backends.values() for b in names})
                procs = sorted({p for names in e.attention_processors.values() for p in names})
                attn = "/".join(backends or procs) or "?"
                levers = "".join(f", {st.one_line(text)}" for text in e.levers.values())
                return (
                    "phase",
                    "info",
                    f"{c}applied: attention {attn}, compiled {', '.join(e.compiled) or 'nothing'}{levers}",
                )
            case ev.Fidelity():
                if e.identical:
                    text = f"output identical to cell {e.baseline_cell}'s"
                elif e.psnr_db is not None:
                    text = f"PSNR {e.psnr_db:.1f} dB against cell {e.baseline_cell}"
                    if e.max_abs_diff is not None:
                        text += f", max |Δlatent| {e.max_abs_diff:.3g}"
                else:
                    text = f"no PSNR: {st.one_line(e.reason)}"
                return "result", "info", c + text
            case ev.CompileStarted():
                return (
                    "compile",
                    "info",
                    c + _words("compile", e.module, e.compile_id, f"started ({e.backend})"),
                )
            case ev.CompileFinished():
                if e.fail_reason:
                    text = _words("compile", e.module, e.compile_id, f"FAILED: {st.one_line(e.fail_reason)}")
                    return "compile", "error", c + text
                breaks = f", {_plural(e.graph_breaks, 'graph break')}" if e.graph_breaks else ""
                text = _words("compiled", e.module, e.compile_id, f"in {fmt.duration(e.duration_s)}{breaks}")
                return "compile", "warning" if e.graph_breaks else "info", c + text
            case ev.Recompile():
                text = _words("recompile", e.function, f"{e.compile_id}:", st.one_line(e.reason))
                return "compile", "warning", c + text
            case ev.GraphBreak():
                times = f" ×{e.count}" if e.count != 1 else ""
                where = f" at {e.location}" if e.location else ""
                return "compile", "warning", f"{c}graph break{times}{where}: {st.one_line(e.reason)}"
            case ev.RecompileLimit():
                text = f"recompile limit {e.limit} hit for {e.function}, now eager: {st.one_line(e.reason)}"
                return "compile", "error", c + text
            case ev.CudagraphSkip():
                return "compile", "warning", f"{c}CUDA graphs skipped ×{e.count}: {st.one_line(e.reason)}"
            case ev.Error():
                label = "OOM" if e.error_kind == "oom" else e.error_kind
                where = _words(f" in {e.phase}" if e.phase else "", f"call {e.call + 1}" if e.call >= 0 else "")
                return "problem", "error", f"{c}{label}{where}: {st.one_line(e.message)}"
            case ev.CallFinished():
                kind = f" ({e.call_kind})" if e.call_kind != "measured" else ""
                return "result", "info", f"{c}call {e.call + 1}{kind} {fmt.duration(e.wall_s)}"
            case ev.CellFinished():
                sev = "good" if st.is_ok(e.status) else "error" if st.is_oom(e.status) else "warning"
                return "result", sev, f"{c}{e.status} in {fmt.duration(e.duration_s)}"
            case ev.WorkerExited() if e.signal or e.returncode not in (0, None):
                return "problem", "error", f"{c}worker {e.pid} {st.crashed(e.returncode, e.signal)}"
        return None


def _words(*parts: str) -> str:
    """Join the non-empty parts with one space (a missing module or id leaves no gap)."""
    return " ".join(p for p in parts if p)


def _stage(stage: str) -> str:
    return f"[{stage}]" if stage else ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"
