"""torch.compile telemetry for one cell: compiles, recompiles, graph breaks, recompile
limits and skipped CUDA graphs, emitted as events while they happen (worker half; torch).

This is the ONE module of sdtop that touches torch's private compile APIs
(``torch._dynamo``, ``torch._inductor``, ``torch._logging`` internals). They change between
releases, so every use is guarded (``hasattr``/``try`` and :func:`torch_version`): where one
is missing, the cell runs exactly as without sdtop, a :class:`~profiler.contract.events.Log` says
"compile telemetry n/a: <why>", and the missing figures are "n/a" (text) or None
(numbers). A failure inside an observer never reaches torch's compiler either: each
callback and log handler swallows its own errors and reports them once, as a Log.

Where each event comes from (checked on torch 2.13; field notes in shared/notes):

- CompileStarted / CompileFinished: ``torch._dynamo.callback.callback_handler``'s start and
  end callbacks. torch writes its record of a compile (``get_compilation_metrics()``:
  duration, the inductor part, ``fail_reason``) only after the end callback has run, so
  the finish event is emitted at the next quiet point: when the compiled module's call
  returns, when the next compile starts, at the next pipeline call, or at the end.
- Recompile: the ``recompiles`` log artifact (logger ``torch._dynamo.guards.__recompiles``),
  with the guard-failure text exactly as torch writes it.
- GraphBreak: the ``graph_breaks`` artifact (``torch._dynamo.symbolic_convert.__graph_breaks``).
  Both artifacts are switched on for this process only and their loggers stop propagating,
  so torch's own multi-line copies do not flood worker.log.
- RecompileLimit: torch's warning "torch._dynamo hit config.recompile_limit" on logger
  ``torch._dynamo.convert_frame`` (left propagating: the warning stays in worker.log).
- CudagraphSkip: a record of the ``cudagraphs`` artifact that says torch skipped CUDA graphs
  ("skipping cudagraphs due to <reason>", "disabling cudagraphs due to ...": what torch's
  ``log_cudagraph_skip_and_bump_counter`` writes, see :func:`is_cudagraph_skip`), with
  torch's reason. The same logger also carries advice ("CUDAGraph supports dynamic shapes
  by recording a new graph...") and debug detail: those are not skips and are ignored.
  Skips torch only counts (``counters['inductor']['cudagraph_skips']``) become one event
  with reason "n/a" and their count.
- Compile-cache hits: inductor's on-disk caches (FX graph cache, AOTAutograd cache) make a
  compile after an identical one minutes shorter. ``counters['inductor']['fxgraph_cache_*']``
  and ``counters['aot_autograd']['autograd_cache_*']`` are read at a compile's start and end
  callbacks and the difference goes on its ``CompileFinished`` (``cache_hits`` /
  ``cache_misses``, None for another backend or a torch without the counters), so a warm
  compile is never taken for a cold one. Where the caches live is the cell's
  ``compile_cache`` setting, applied by :func:`apply_compile_cache` before the first call.

Which module compiled: torch names the compiled UNet frame ``wrapper`` or ``forward``,
which says nothing about WHICH model it was. Every compiled module (the
``OptimizedModule`` wrappers ``apply_compile`` installs) gets a forward pre-hook and an
always-called post-hook that push and pop its key ("unet", "controlnet", "I.unet"):
``OptimizedModule.__call__`` runs these hooks in plain Python outside the compiled frame,
so they add nothing to a graph, and any compile torch starts meanwhile belongs to the top
of that stack. A compile outside every module call has module "".
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..contract.events import (
    NOT_COMPILE_TRIGGERS,
    CompileFinished,
    CompileStarted,
    CudagraphSkip,
    Event,
    GraphBreak,
    Log,
    Recompile,
    RecompileLimit,
)

if TYPE_CHECKING:
    from ...pipelines.builders.build import BuiltPipeline
    from ...pipelines.settings import CellSpec

NA = "n/a"

#: Below this, none of the APIs used here exist in a usable form: telemetry is off.
MIN_TORCH = (2, 1)

RECOMPILES_LOGGER = "torch._dynamo.guards.__recompiles"
GRAPH_BREAKS_LOGGER = "torch._dynamo.symbolic_convert.__graph_breaks"
CONVERT_FRAME_LOGGER = "torch._dynamo.convert_frame"
CUDAGRAPHS_LOGGER = "torch._inductor.cudagraph_utils.__cudagraphs"

_RECOMPILING = re.compile(r"Recompiling function (\S+) in (\S+)")
_FAIL_ON_RECOMPILE = "stance is 'fail_on_recompile'"
_LIMIT_PREFIX = "torch._dynamo hit config."
_REASON_LIMIT = 2000

#: What torch writes when it does not use CUDA graphs (``log_cudagraph_skip_and_bump_counter``:
#: "skipping cudagraphs due to ...", "skipping cudagraph due to function ... exceeding max
#: re-recording limit", "disabling cudagraphs due to override_cudagraphs annotation").
_CUDAGRAPH_SKIP = re.compile(r"^\s*(?:skipping|disabling) cudagraphs?\b", re.IGNORECASE)

#: torch's counters of inductor's on-disk cache lookups: (counter group, key) per outcome.
CACHE_HIT_KEYS = (("inductor", "fxgraph_cache_hit"), ("aot_autograd", "autograd_cache_hit"))
CACHE_MISS_KEYS = (("inductor", "fxgraph_cache_miss"), ("aot_autograd", "autograd_cache_miss"))

#: ``CellSpec.compile_cache`` values that are not a folder (see :func:`compile_cache_env`).
CACHE_SHARED, CACHE_OFF, CACHE_SESSION = "shared", "off", "session"

Emit = Callable[[Event], None]
#: (hits, misses) of inductor's caches as torch counted them so far.
CacheCounts = tuple[int, int]


def torch_version() -> tuple[int, int]:
    """(major, minor) of the running torch; (0, 0) when it cannot be read."""
    m = re.match(r"(\d+)\.(\d+)", str(getattr(torch, "__version__", "")))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def guard_failures(text: str) -> list[str]:
    """The guard failures of a recompile message or error, one line each, as torch wrote
    them ("0/0: tensor 'args[0]' size mismatch at index 2. expected 8, actual 12")."""
    _, _, rest = text.partition("triggered by the following guard failure(s):")
    return [ln.strip()[2:].strip() for ln in rest.splitlines() if ln.strip().startswith("- ")]


def recompile_refused(exc: BaseException) -> str | None:
    """The guard-failure reason when ``exc`` is torch refusing to recompile (the
    fail_on_recompile stance, or ``error_on_recompile`` in older torch), else None."""
    text = str(exc)
    refused = _FAIL_ON_RECOMPILE in text or type(exc).__name__ == "RecompileError"
    if not refused:
        return None
    failures = guard_failures(text)
    return "; ".join(failures) if failures else " ".join(text.split())[:_REASON_LIMIT]


def is_cudagraph_skip(message: str) -> bool:
    """Whether a ``cudagraphs`` log record says torch skipped CUDA graphs (not advice or
    debug detail from the same logger)."""
    return bool(_CUDAGRAPH_SKIP.match(message))


def cache_counts(counters: Any) -> CacheCounts | None:
    """(hits, misses) of inductor's FX graph and AOTAutograd caches in torch's ``counters``
    (a mapping of group -> key -> count); None where it is not such a mapping (a torch that
    lacks or reshaped it): the figures are then n/a, never a guess."""
    if not isinstance(counters, Mapping):
        return None

    def total(keys: tuple[tuple[str, str], ...]) -> int:
        n = 0
        for group, key in keys:
            found = counters.get(group) if group in counters else None  # never create a group
            value = found.get(key, 0) if isinstance(found, Mapping) else 0
            n += value if isinstance(value, int) and not isinstance(value, bool) else 0
        return n

    return total(CACHE_HIT_KEYS), total(CACHE_MISS_KEYS)


def cache_delta(before: CacheCounts | None, after: CacheCounts | None) -> tuple[int | None, int | None]:
    """The cache hits and misses between two readings; None for both if either is missing
    or the counters went backwards (someone cleared them: the difference means nothing)."""
    if before is None or after is None:
        return None, None
    hits, misses = after[0] - before[0], after[1] - before[1]
    if hits < 0 or misses < 0:
        return None, None
    return hits, misses


def compile_cache_env(setting: str) -> dict[str, str]:
    """The environment a cell's compile-cache setting needs (``CellSpec.compile_cache``):

    - a folder (what the runner makes of "session"): inductor's and Triton's caches there,
      so cells of one session share them and nothing of another run or session leaks in;
    - "shared": nothing, torch's default folder (warm across every run on the machine);
    - "off": ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``, every compile cold;
    - "session" still unresolved (a worker started without a runner): nothing, as shared.
    """
    if setting == CACHE_OFF:
        return {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    if setting in (CACHE_SHARED, CACHE_SESSION, ""):
        return {}
    folder = os.path.abspath(setting)
    return {"TORCHINDUCTOR_CACHE_DIR": folder, "TRITON_CACHE_DIR": os.path.join(folder, "triton")}


def apply_compile_cache(setting: str, emit: Emit, cell: int) -> None:
    """Put this worker's inductor caches where ``setting`` says, before anything compiles.

    The worker may be a child of the fork server, which imported torch long before the
    session existed: inductor reads ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR``
    afresh at each use, so setting them here works, but ``force_disable_caches`` was read
    from the environment when torch was imported, so "off" also sets torch's config.
    Compile sub-processes inherit this environment. One Log says where the cache is."""
    env = compile_cache_env(setting)
    os.environ.update(env)
    where = env.get("TORCHINDUCTOR_CACHE_DIR", "")
    if setting == CACHE_OFF:
        config = _private_attr("torch.compiler", "config")
        if config is not None and hasattr(config, "force_disable_caches"):
            config.force_disable_caches = True
        else:
            why = "compile cache: off is n/a: this torch has no torch.compiler.config.force_disable_caches"
            emit(Log(cell=cell, level="warning", message=why))
            return
    if where:
        clear = _private_attr("torch._inductor.utils", "clear_caches")
        if callable(clear):  # paths computed before (in the fork server) must not linger
            with contextlib.suppress(Exception):  # if it fails, new lookups still use the folder
                clear()
    if setting == CACHE_SESSION:
        what = "session, but no session folder was given: torch's default folder"
    elif where:
        what = f"this session's folder {where}"
    else:
        what = {CACHE_OFF: "off (every compile is cold)", CACHE_SHARED: "torch's default folder (shared)"}[setting]
    emit(Log(cell=cell, message=f"compile cache: {what}"))


def short_path(location: str) -> str:
    """``.../site-packages/diffusers/x.py:12`` -> ``diffusers/x.py:12``: the user location
    a reader recognises, without the machine's install prefix."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in location:
            return location.rsplit(marker, 1)[1]
    return location


@dataclass
class _Open:
    """A compile between its start and end callbacks."""

    compile_id: str
    module: str
    trigger: str
    call: int
    t0: float
    graph_breaks: int = 0
    cudagraph_skips: int = 0
    cache0: CacheCounts | None = None  # inductor's cache counters at the start


@dataclass
class _Done:
    """A compile whose end callback ran; its finish event waits for torch's record."""

    open: _Open
    wall_s: float
    cache_hits: int | None = None
    cache_misses: int | None = None


class _Handler(logging.Handler):
    """Hands each record of one logger to ``fn``; never raises into torch's logging."""

    def __init__(self, fn: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(logging.DEBUG)
        self.fn = fn

    def emit(self, record: logging.LogRecord) -> None:
        self.fn(record)


class CompileWatch:
    """Observes torch.compile for one cell and emits its events through ``emit``.

    Use: :meth:`install` once the modules are compiled (before the first call),
    :meth:`on_call` before each pipeline call, :meth:`fail_on_recompile` after warmup when
    asked, :meth:`close` at the end (with the exception, if the cell failed).
    """

    def __init__(
        self,
        emit: Emit,
        cell: int,
        modules: Mapping[str, torch.nn.Module],
        *,
        backend: str,
        fullgraph: bool = True,
        trace_dir: str | None = None,
    ) -> None:
        self.emit = emit
        self.cell = cell
        self.modules = dict(modules)
        self.backend = backend
        self.fullgraph = fullgraph
        self.trace_dir = trace_dir
        self.call = -1
        self.trace_file: str | None = None
        self._stack: list[str] = []
        self._last_module = ""
        self._open: _Open | None = None
        self._pending: list[_Done] = []
        self._undo: list[Callable[[], None]] = []
        self._said: set[str] = set()
        self._breaks_logged = False
        self._graph_break_counts: dict[str, int] = {}
        self._cudagraph_seen = 0
        self._cudagraph_base = 0
        self._trace_handler: logging.Handler | None = None
        self._active = False  # installed: there is something to flush
        self._closed = False

    # --- set up and tear down ------------------------------------------------------------

    def install(self) -> CompileWatch:
        """Hook everything that exists in this torch; say what does not."""
        if torch_version() < MIN_TORCH:
            self._na(f"torch {torch.__version__} is older than {MIN_TORCH[0]}.{MIN_TORCH[1]}")
            return self
        self._active = True
        self._hook_modules()
        self._install_callbacks()
        self._install_logs()
        if self.trace_dir:
            self._install_trace(Path(self.trace_dir) / f"cell-{self.cell}")
        self._cudagraph_base = self._cudagraph_counter() or 0
        self._graph_break_counts = self._graph_break_counter()
        return self

    def close(self, exc: BaseException | None = None) -> str | None:
        """Emit what is still pending and undo every hook (idempotent).

        Returns the status detail of a cell that failed because torch refused to recompile
        ("recompiled: <reason>") or hit the recompile limit under fullgraph, else None; the
        refused recompile itself is emitted as a :class:`Recompile` without compile id
        (torch logs nothing when its stance refuses)."""
        detail: str | None = None
        if exc is not None:
            detail = self._failure(exc)
        if self._closed:
            return detail
        self._closed = True
        self._safe(self.flush)
        if self._trace_handler is not None:  # read before the handler is closed: closing forgets it
            self.trace_file = getattr(self._trace_handler, "_stream_path", None)
        for undo in reversed(self._undo):
            self._safe(undo)
        self._undo.clear()
        if self.trace_file:
            folder = str(Path(self.trace_file).parent)
            hint = f"tlparse {folder} --latest -o {folder}/tlparse"
            self._log("info", f"torch trace: {self.trace_file} (open with: {hint})")
        return detail

    def on_call(self, call: int) -> None:
        """The pipeline call that events from now on belong to."""
        self.flush()
        self.call = call

    def fail_on_recompile(self) -> None:
        """From now on a recompile is an error (torch's ``fail_on_recompile`` stance; older
        torch: ``torch._dynamo.config.error_on_recompile``)."""
        set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
        if callable(set_stance):
            set_stance("fail_on_recompile")
            self._undo.append(lambda: set_stance("default"))
            return
        config = getattr(getattr(torch, "_dynamo", None), "config", None)
        if config is not None and hasattr(config, "error_on_recompile"):
            before = config.error_on_recompile
            config.error_on_recompile = True
            self._undo.append(lambda: setattr(config, "error_on_recompile", before))
            return
        self._na("--on-recompile fail: this torch has neither torch.compiler.set_stance nor error_on_recompile")

    # --- the module being called -----------------------------------------------------------

    @property
    def module(self) -> str:
        return self._stack[-1] if self._stack else ""

    def _hook_modules(self) -> None:
        for key, module in self.modules.items():
            pre = module.register_forward_pre_hook(self._pre_hook(key))
            try:
                post = module.register_forward_hook(self._post_hook(key), always_call=True)
            except TypeError:  # torch < 2.2: no always_call; a failing call then leaves a stale key
                post = module.register_forward_hook(self._post_hook(key))
            self._undo += [pre.remove, post.remove]

    def _pre_hook(self, key: str) -> Callable[[torch.nn.Module, tuple[object, ...]], None]:
        def hook(module: torch.nn.Module, args: tuple[object, ...]) -> None:
            self._stack.append(key)
            self._last_module = key

        return hook

    def _post_hook(self, key: str) -> Callable[[torch.nn.Module, tuple[object, ...], object], None]:
        def hook(module: torch.nn.Module, args: tuple[object, ...], output: object) -> None:
            if self._stack and self._stack[-1] == key:
                self._stack.pop()
            self._safe(self.flush)

        return hook

    # --- compile start / end ---------------------------------------------------------------

    def _install_callbacks(self) -> None:
        handler = self._private("torch._dynamo.callback", "callback_handler")
        if handler is None or not hasattr(handler, "register_start_callback"):
            self._na("no torch._dynamo.callback.callback_handler: compile start/end events are missing")
            return
        handler.register_start_callback(self._on_start)
        handler.register_end_callback(self._on_end)
        self._undo.append(lambda: handler.remove_start_callback(self._on_start))
        self._undo.append(lambda: handler.remove_end_callback(self._on_end))

    # torch's callback arguments differ between releases (none, or a CallbackArgs); they are
    # read with getattr only, so they are plain objects here.
    def _on_start(self, *args: object) -> None:
        self._safe(self._start, *args)

    def _on_end(self, *args: object) -> None:
        self._safe(self._end, *args)

    def _start(self, *args: object) -> None:
        info = args[0] if args else None  # older torch calls back without arguments
        trigger, compile_id = _trigger(info), _compile_id(info)
        self.flush()
        self._open = _Open(compile_id, self.module, trigger, self.call, time.perf_counter(), cache0=self._cache())
        if trigger in NOT_COMPILE_TRIGGERS:  # they become Log lines, not compile events
            return
        self.emit(
            CompileStarted(
                cell=self.cell,
                module=self.module,
                compile_id=compile_id,
                backend=self.backend,
                call=self.call,
                trigger=trigger,
            )
        )

    def _end(self, *args: object) -> None:
        opened, self._open = self._open, None
        if opened is None:
            return
        wall_s = time.perf_counter() - opened.t0
        if opened.trigger in NOT_COMPILE_TRIGGERS:
            what = opened.trigger.replace("_", " ")
            self._log("info", f"{what} {opened.module or NA} {opened.compile_id}: {wall_s:.3f} s")
            return
        hits, misses = cache_delta(opened.cache0, self._cache())
        self._pending.append(_Done(opened, wall_s, hits, misses))

    def flush(self) -> None:
        """Emit the finish events waiting for torch's records, and skips torch only counted."""
        if not self._active:
            return
        pending, self._pending = self._pending, []
        if pending:
            records = self._metrics()
            for done in pending:
                self._finish(done, records.get(done.open.compile_id))
        # what torch counted meanwhile came from those compiles (the last one, if several)
        self._counted_only(pending[-1].open if pending else None)

    def _finish(self, done: _Done, record: object) -> None:
        o = done.open
        duration = _seconds(record, "entire_frame_compile_time_s", "duration_us")
        inductor = _seconds(record, "inductor_cumulative_compile_time_us", "inductor_compile_time_s")
        if self.backend != "inductor":
            inductor = None
        breaks: int | None = o.graph_breaks if self._breaks_logged else None
        reported = getattr(record, "num_graph_breaks", None)
        if isinstance(reported, int) and (breaks is None or reported > breaks):
            breaks = reported
        fail = getattr(record, "fail_reason", None) if record is not None else None
        function = getattr(record, "co_name", None) if record is not None else None
        skip = getattr(record, "cudagraph_skip_reason", None) if record is not None else None
        if isinstance(skip, str) and skip and not o.cudagraph_skips:
            # torch recorded a skip with no warning we saw: report it with torch's reason
            self._cudagraph_base += 1
            self.emit(CudagraphSkip(cell=self.cell, reason=skip, module=o.module, compile_id=o.compile_id, call=o.call))
        self.emit(
            CompileFinished(
                cell=self.cell,
                module=o.module,
                compile_id=o.compile_id,
                backend=self.backend,
                duration_s=duration if duration is not None else done.wall_s,
                inductor_s=inductor,
                graph_breaks=breaks,
                fail_reason=str(fail)[:_REASON_LIMIT] if fail else "",
                call=o.call,
                trigger=o.trigger,
                function=str(function) if function else ("" if record is not None else NA),
                cache_hits=done.cache_hits,
                cache_misses=done.cache_misses,
            )
        )

    def _metrics(self) -> dict[str, object]:
        """torch's compile records by compile id (the latest wins); {} where unavailable.
        Their class and fields change between releases: read with getattr only."""
        get = self._private("torch._dynamo.utils", "get_compilation_metrics")
        if get is None:
            self._na("no torch._dynamo.utils.get_compilation_metrics: compile durations are wall-clock")
            return {}
        return {str(getattr(r, "compile_id", "")): r for r in get()}

    # --- logs --------------------------------------------------------------------------------

    def _install_logs(self) -> None:
        for mod in ("torch._dynamo.guards", "torch._dynamo.symbolic_convert", "torch._dynamo.convert_frame"):
            _import(mod)  # their artifact loggers are set up at import: import first, then adjust
        enabled = self._enable_artifacts("recompiles", "graph_breaks")
        if enabled:
            self._capture(RECOMPILES_LOGGER, self._on_recompile, quiet=True)
            self._capture(GRAPH_BREAKS_LOGGER, self._on_graph_break, quiet=True)
            self._breaks_logged = True
        else:
            self._na("torch._logging cannot enable the recompiles/graph_breaks logs: no recompile reasons")
        self._capture(CONVERT_FRAME_LOGGER, self._on_convert_frame, quiet=False)
        if self.backend == "inductor" and _import("torch._inductor.cudagraph_utils"):
            self._capture(CUDAGRAPHS_LOGGER, self._on_cudagraph_skip, quiet=False)

    def _enable_artifacts(self, *names: str) -> bool:
        """Switch torch's log artifacts on for this process only, leaving every other
        logging setting (TORCH_LOGS included) as it was; undone at close."""
        state = self._private("torch._logging._internal", "log_state")
        if state is None or not hasattr(state, "enable_artifact") or not hasattr(state, "artifact_names"):
            return False
        added = [n for n in names if n not in state.artifact_names]
        for name in added:
            state.enable_artifact(name)

        def undo() -> None:
            for name in added:
                state.artifact_names.discard(name)

        self._undo.append(undo)
        return True

    def _capture(self, name: str, fn: Callable[[logging.LogRecord], None], *, quiet: bool) -> None:
        """A handler on logger ``name``; ``quiet`` also stops it propagating (and lets its
        DEBUG records through) so torch's copy does not reach stderr."""
        log = logging.getLogger(name)
        handler = _Handler(lambda record: self._safe(fn, record))
        level, propagate = log.level, log.propagate
        log.addHandler(handler)
        if quiet:
            log.setLevel(logging.DEBUG)
            log.propagate = False

        def undo() -> None:
            log.removeHandler(handler)
            log.setLevel(level)
            log.propagate = propagate

        self._undo.append(undo)

    def _on_recompile(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        first, _, rest = message.partition("\n")
        m = _RECOMPILING.match(first)
        self.emit(
            Recompile(
                cell=self.cell,
                function=m.group(1) if m else NA,
                reason=textwrap.dedent(rest).strip()[:_REASON_LIMIT] or first,
                compile_id=self._current_compile_id(),
                module=self.module,
                call=self.call,
            )
        )

    def _on_graph_break(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        first, _, rest = message.partition("\n")
        where = first.split(" in user code at ", 1)
        reason = rest.split("Graph Break Reason:", 1)[-1].split("\nUser code traceback:", 1)[0].strip()
        if self._open is not None:
            self._open.graph_breaks += 1
        self.emit(
            GraphBreak(
                cell=self.cell,
                reason=reason[:_REASON_LIMIT] or first,
                location=short_path(where[1].strip()) if len(where) == 2 else NA,
                module=self.module,
                compile_id=self._current_compile_id(),
                call=self.call,
            )
        )

    def _on_convert_frame(self, record: logging.LogRecord) -> None:
        args = record.args
        if not str(record.msg).startswith(_LIMIT_PREFIX) or not isinstance(args, tuple) or len(args) < 4:
            return
        limit_type, limit, function, reason = args[:4]
        self.emit(
            RecompileLimit(
                cell=self.cell,
                function=str(function),
                limit=int(limit) if isinstance(limit, int) else 0,
                reason=str(reason)[:_REASON_LIMIT],
                module=self.module,
                call=self.call,
            )
        )
        then = (
            "fullgraph=True makes that an error"
            if self.fullgraph
            else "torch runs it eagerly from now on: this cell's later figures are eager"
        )
        self._log("warning", f"torch hit {limit_type} ({limit}) for {function}; {then}")

    def _on_cudagraph_skip(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not is_cudagraph_skip(message):  # advice or detail on the same logger
            return
        self._cudagraph_seen += 1
        if self._open is not None:
            self._open.cudagraph_skips += 1
        self.emit(
            CudagraphSkip(
                cell=self.cell,
                reason=message[:_REASON_LIMIT],
                module=self.module,
                compile_id=self._current_compile_id(),
                call=self.call,
            )
        )

    def _counted_only(self, compiled: _Open | None) -> None:
        """CUDA-graph skips (and, without the graph-break log, graph breaks) that torch
        counted but did not log: one event each, with the count and reason "n/a" (inductor
        only counts its skips on a non-CUDA device, for example)."""
        counted = self._cudagraph_counter()
        if counted is not None:
            extra = counted - self._cudagraph_base - self._cudagraph_seen
            if extra > 0:
                self._cudagraph_base += extra
                module, cid, call = (
                    (compiled.module, compiled.compile_id, compiled.call) if compiled else ("", "", self.call)
                )
                self.emit(
                    CudagraphSkip(cell=self.cell, reason=NA, count=extra, module=module, compile_id=cid, call=call)
                )
        if self._breaks_logged:
            return
        now = self._graph_break_counter()
        for reason, n in now.items():
            extra = n - self._graph_break_counts.get(reason, 0)
            if extra > 0:
                self.emit(GraphBreak(cell=self.cell, reason=reason[:_REASON_LIMIT], location=NA, count=extra))
        self._graph_break_counts = now

    def _cudagraph_counter(self) -> int | None:
        counters = self._private("torch._dynamo.utils", "counters")
        if counters is None:
            return None
        value = counters["inductor"].get("cudagraph_skips", 0) if "inductor" in counters else 0
        return int(value)

    def _cache(self) -> CacheCounts | None:
        """Inductor's cache counters now; None for another backend (no inductor runs, its
        counters say nothing about this compile) or where torch lacks them."""
        if self.backend != "inductor":
            return None
        return cache_counts(self._private("torch._dynamo.utils", "counters"))

    def _graph_break_counter(self) -> dict[str, int]:
        counters = self._private("torch._dynamo.utils", "counters")
        if counters is None or "graph_break" not in counters:
            return {}
        return {str(k): int(v) for k, v in counters["graph_break"].items()}

    # --- the structured trace ----------------------------------------------------------------

    def _install_trace(self, folder: Path) -> None:
        """What TORCH_TRACE=folder does, for this worker only: torch's own lazy handler on
        its ``torch.__trace`` logger (the file appears at the first compile)."""
        handler_cls = self._private("torch._logging._internal", "LazyTraceHandler")
        formatter_cls = self._private("torch._logging._internal", "TorchLogsFormatter")
        trace_log = self._private("torch._logging._internal", "trace_log")
        if handler_cls is None or formatter_cls is None or trace_log is None:
            self._na("--trace: torch._logging has no structured trace handler")
            return
        folder.mkdir(parents=True, exist_ok=True)
        handler = handler_cls(str(folder))
        handler.setFormatter(formatter_cls(trace=True))
        trace_log.addHandler(handler)
        self._trace_handler = handler

        def undo() -> None:
            trace_log.removeHandler(handler)
            handler.close()

        self._undo.append(undo)

    # --- failures ----------------------------------------------------------------------------

    def _failure(self, exc: BaseException) -> str | None:
        refused = recompile_refused(exc)
        if refused is not None:
            m = re.search(r"function name: '([^']+)'", str(exc)) or _RECOMPILING.search(str(exc))
            self.emit(
                Recompile(
                    cell=self.cell,
                    function=m.group(1) if m else NA,
                    reason=_refused_text(str(exc)),
                    module=self._last_module,
                    call=self.call,
                )
            )
            return f"recompiled: {refused}"
        if type(exc).__name__ == "FailOnRecompileLimitHit":
            return f"recompile limit hit ({' '.join(str(exc).split())})"
        return None

    # --- helpers ------------------------------------------------------------------------------

    def _current_compile_id(self) -> str:
        guards = self._private("torch._guards", "CompileContext")
        try:
            cid = guards.current_compile_id() if guards is not None else None
        except Exception:
            cid = None
        if cid is None:
            return self._open.compile_id if self._open is not None else NA
        return str(cid)

    def _private(self, module: str, attr: str) -> Any:
        """``module.attr`` of torch's private API, or None where this torch lacks it.
        ``Any`` on purpose: what it is depends on the torch release; every use is guarded."""
        try:
            return getattr(importlib.import_module(module), attr, None)
        except Exception:
            return None

    def _safe(self, fn: Callable[..., None], *args: object) -> None:
        """Run an observer; its failure becomes one Log per kind, never torch's problem."""
        try:
            fn(*args)
        except Exception as exc:  # an observer must never break the compile
            self._na(f"{getattr(fn, '__name__', 'observer')} failed: {type(exc).__name__}: {exc}")

    def _na(self, why: str) -> None:
        if why not in self._said:
            self._said.add(why)
            self._log("warning", f"compile telemetry n/a: {why}")

    def _log(self, level: str, message: str) -> None:
        self.emit(Log(cell=self.cell, level=level, message=message))


def _private_attr(module: str, attr: str) -> Any:
    """:meth:`CompileWatch._private` for module-level helpers: ``module.attr`` or None."""
    try:
        return getattr(importlib.import_module(module), attr, None)
    except Exception:
        return None


def _import(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


def _trigger(info: object) -> str:
    trigger = getattr(info, "callback_trigger", None)
    if trigger is None:
        return "dynamo" if info is None else NA
    return str(getattr(trigger, "name", trigger)).lower()


def _compile_id(info: object) -> str:
    cid = getattr(info, "compile_id", None)
    return str(cid) if cid not in (None, "") else NA


def _seconds(record: object, *fields: str) -> float | None:
    """The first of ``fields`` the record has, in seconds (``*_us`` fields are converted)."""
    if record is None:
        return None
    for name in fields:
        value = getattr(record, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value / 1e6 if name.endswith("_us") else float(value)
    return None


def _refused_text(text: str) -> str:
    """The "triggered by the following guard failure(s): ..." part of a refusal, dedented."""
    _, sep, rest = text.partition("triggered by the following guard failure(s):")
    if not sep:
        return " ".join(text.split())[:_REASON_LIMIT]
    return (sep + "\n" + textwrap.dedent(rest).strip())[:_REASON_LIMIT]


def compiled_modules(built: BuiltPipeline) -> Iterator[tuple[str, torch.nn.Module]]:
    """(key, module) of every module ``apply_compile`` wrapped, as the pipeline holds it now."""
    from .apply import denoisers

    for key, _pipe, _attr, module in denoisers(built):
        yield key, module


def watch_cell(emit: Emit, cell: int, built: BuiltPipeline, spec: CellSpec) -> CompileWatch:
    """The watch for one cell, installed; an uncompiled cell gets one that watches nothing."""
    modules = dict(compiled_modules(built)) if spec.compiled else {}
    if spec.compiled and spec.compile_backend == "inductor":  # only inductor has these caches
        apply_compile_cache(spec.compile_cache, emit, cell)
    watch = CompileWatch(
        emit,
        cell,
        modules,
        backend=spec.compile_backend,
        fullgraph=spec.fullgraph,
        trace_dir=spec.trace_dir,
    )
    return watch.install() if spec.compiled else watch
