"""torch.compile telemetry (profiler/worker/compile_watch.py), in this process, on CPU.

Backend ``eager`` everywhere but the one ``slow`` test: it runs dynamo (guards, recompiles,
graph breaks: everything these events are about) without inductor's code generation, so a
tiny UNet compiles in seconds. Each test starts from ``torch._dynamo.reset()`` so compile
ids are deterministic ("0/0" is the first compile of the test).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from sdtop.pipelines.builders.build import build  # noqa: E402
from sdtop.pipelines.settings import CellSpec  # noqa: E402
from sdtop.profiler.contract.events import (  # noqa: E402
    CompileFinished,
    CompileStarted,
    CudagraphSkip,
    Event,
    GraphBreak,
    Log,
    Recompile,
    RecompileLimit,
)
from sdtop.profiler.worker import compile_watch  # noqa: E402
from sdtop.profiler.worker.compile_watch import (  # noqa: E402
    CompileWatch,
    apply_compile_cache,
    cache_counts,
    cache_delta,
    compile_cache_env,
    guard_failures,
    is_cudagraph_skip,
    recompile_refused,
    short_path,
)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch.compiler.set_stance("default")
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def tiny_unet() -> Any:
    return build(CellSpec("sd-txt2img", weights="tiny", steps=2)).stages[0].pipe.unet


def unet_inputs(size: int) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, 4, size, size, generator=g), torch.tensor(10), torch.randn(1, 7, 32, generator=g))


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def compile_events(self) -> list[Event]:
        return [e for e in self.events if not isinstance(e, Log)]

    def logs(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, Log)]


class Breaks(torch.nn.Module):
    """A forced graph break between two ops."""

    def forward(self, x: Any) -> Any:
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2


class Double(torch.nn.Module):
    def forward(self, x: Any) -> Any:
        return x * 2


def watched(module: Any, key: str, rec: Recorder, **kw: Any) -> tuple[Any, CompileWatch]:
    fullgraph = kw.pop("fullgraph", True)
    compiled = torch.compile(module, backend="eager", fullgraph=fullgraph)
    watch = CompileWatch(rec, 3, {key: compiled}, backend="eager", fullgraph=fullgraph, **kw).install()
    return compiled, watch


# --- a tiny UNet at two sizes ------------------------------------------------------------------


@pytest.mark.e2e
def test_a_new_size_gives_exactly_one_recompile_with_torchs_reason(tiny_unet: Any) -> None:
    rec = Recorder()
    compiled, watch = watched(tiny_unet, "unet", rec)
    with torch.inference_mode():
        for call, size in enumerate((8, 12, 12)):
            watch.on_call(call)
            x, t, e = unet_inputs(size)
            compiled(x, t, encoder_hidden_states=e)
    assert watch.close() is None
    got = [(type(e).__name__, getattr(e, "compile_id", ""), getattr(e, "call", None)) for e in rec.compile_events()]
    assert got == [
        ("CompileStarted", "0/0", 0),
        ("CompileFinished", "0/0", 0),
        ("Recompile", "0/1", 1),
        ("CompileStarted", "0/1", 1),
        ("CompileFinished", "0/1", 1),
    ]
    assert rec.logs() == []
    recompile = next(e for e in rec.events if isinstance(e, Recompile))
    assert recompile.function == "wrapper" and recompile.module == "unet" and recompile.cell == 3
    assert recompile.reason == (
        "triggered by the following guard failure(s):\n"
        "- 0/0: tensor 'args[0]' size mismatch at index 2. expected 8, actual 12"
    )
    for ev in rec.events:
        if isinstance(ev, CompileStarted | CompileFinished):
            assert ev.module == "unet" and ev.backend == "eager" and ev.trigger == "dynamo"
    finished = [e for e in rec.events if isinstance(e, CompileFinished)]
    assert all(e.duration_s > 0 and e.function == "wrapper" and e.graph_breaks == 0 for e in finished)
    assert all(e.inductor_s is None and e.fail_reason == "" for e in finished)  # eager: no inductor share
    assert all(e.cache_hits is None and e.cache_misses is None for e in finished)  # eager: no inductor cache


@pytest.mark.e2e
def test_close_undoes_every_hook_and_log_setting(tiny_unet: Any) -> None:
    names = (compile_watch.RECOMPILES_LOGGER, compile_watch.GRAPH_BREAKS_LOGGER, compile_watch.CONVERT_FRAME_LOGGER)
    before = {n: (logging.getLogger(n).propagate, list(logging.getLogger(n).handlers)) for n in names}
    rec = Recorder()
    compiled, watch = watched(Double(), "double", rec)
    watch.close()
    compiled(torch.randn(2))
    assert rec.compile_events() == []  # nothing observed after close
    assert not compiled._forward_pre_hooks and not compiled._forward_hooks
    assert {n: (logging.getLogger(n).propagate, list(logging.getLogger(n).handlers)) for n in names} == before


# --- graph breaks, the stance, the limit ---------------------------------------------------------


@pytest.mark.e2e
def test_a_forced_graph_break_is_reported_with_its_reason_and_location() -> None:
    rec = Recorder()
    compiled, watch = watched(Breaks(), "breaks", rec, fullgraph=False)
    watch.on_call(0)
    compiled(torch.randn(2))
    watch.close()
    (brk,) = [e for e in rec.events if isinstance(e, GraphBreak)]
    assert "Call to `torch._dynamo.graph_break()`" in brk.reason
    assert "User code traceback" not in brk.reason
    assert brk.location.endswith("test_compile_watch.py:" + str(Breaks.forward.__code__.co_firstlineno + 2))
    assert (brk.module, brk.compile_id, brk.call, brk.count) == ("breaks", "0/0", 0, 1)
    first = next(e for e in rec.events if isinstance(e, CompileFinished) and e.compile_id == "0/0")
    assert first.graph_breaks == 1


@pytest.mark.e2e
def test_fail_on_recompile_refuses_a_new_shape_and_names_the_guard() -> None:
    rec = Recorder()
    compiled, watch = watched(Double(), "double", rec)
    compiled(torch.randn(2, 4))
    watch.fail_on_recompile()
    with pytest.raises(RuntimeError) as info:
        compiled(torch.randn(3, 4))
    detail = watch.close(info.value)
    assert detail == "recompiled: 0/0: tensor 'x' size mismatch at index 0. expected 2, actual 3"
    refused = rec.events[-1]
    assert isinstance(refused, Recompile) and refused.compile_id == "" and refused.module == "double"
    assert refused.reason.endswith("- 0/0: tensor 'x' size mismatch at index 0. expected 2, actual 3")
    compiled(torch.randn(5, 4))  # close() put the stance back: torch may compile again


@pytest.mark.e2e
def test_the_recompile_limit_is_reported_and_the_frame_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    monkeypatch.setattr(torch._dynamo.config, "automatic_dynamic_shapes", False)
    rec = Recorder()
    compiled, watch = watched(Double(), "double", rec, fullgraph=False)
    for n in (1, 2, 3, 4):
        assert torch.equal(compiled(torch.ones(n)), torch.full((n,), 2.0))
    watch.close()
    (limit,) = [e for e in rec.events if isinstance(e, RecompileLimit)]
    assert limit.limit == 2 and "'forward'" in limit.function and "size mismatch" in limit.reason
    assert any("runs it eagerly from now on" in m for m in rec.logs())


# --- torch versions and APIs that are not there -----------------------------------------------


def test_an_old_torch_gets_na_and_no_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_watch, "torch_version", lambda: (2, 0))
    rec = Recorder()
    compiled, watch = watched(Double(), "double", rec)
    compiled(torch.randn(2))
    watch.close()
    assert rec.compile_events() == []
    assert [m for m in rec.logs() if m.startswith("compile telemetry n/a: torch ")]


def test_missing_private_apis_are_na_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CompileWatch, "_private", lambda self, module, attr: None)
    rec = Recorder()
    compiled, watch = watched(Double(), "double", rec)
    compiled(torch.randn(2))
    compiled(torch.randn(3))
    watch.close()
    logs = rec.logs()
    assert any("compile start/end events are missing" in m for m in logs)
    assert any("no recompile reasons" in m for m in logs)
    assert all(m.startswith("compile telemetry n/a: ") for m in logs)


def test_an_observer_that_fails_is_reported_once_and_compiling_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: CompileWatch, *args: Any) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(CompileWatch, "_start", broken)
    rec = Recorder()
    compiled, watch = watched(Double(), "double", rec)
    compiled(torch.randn(2))
    compiled(torch.randn(2, 3))
    watch.close()
    assert rec.logs() == ["compile telemetry n/a: broken failed: ValueError: boom"]


# --- pure helpers ----------------------------------------------------------------------------------


def test_guard_failures_and_refusals_are_read_from_torchs_text() -> None:
    text = (
        "Detected recompile when torch.compile stance is 'fail_on_recompile'. filename: 'm.py', "
        "function name: 'forward', line number: 3\n    triggered by the following guard failure(s):\n"
        "    - 0/1: tensor 'x' size mismatch at index 0. expected 2, actual 3\n"
        "    - 0/0: tensor 'x' size mismatch at index 0. expected 1, actual 3"
    )
    assert guard_failures(text) == [
        "0/1: tensor 'x' size mismatch at index 0. expected 2, actual 3",
        "0/0: tensor 'x' size mismatch at index 0. expected 1, actual 3",
    ]
    assert recompile_refused(RuntimeError(text)) == "; ".join(guard_failures(text))
    assert recompile_refused(RuntimeError("CUDA out of memory")) is None
    path = "/usr/lib/python3.11/site-packages/diffusers/models/unets/unet_2d_condition.py:1180"
    assert short_path(path) == "diffusers/models/unets/unet_2d_condition.py:1180"
    assert short_path("/work/x.py:3") == "/work/x.py:3"


# --- the worker: --on-recompile fail ----------------------------------------------------------------


@pytest.mark.e2e
def test_on_recompile_fail_ends_the_cell_with_the_guard_failure() -> None:
    """A whole cell in this process, as the worker runs it: 64x64 compiles and is measured,
    then 96x96 would recompile, which the stance set after warmup refuses."""
    from sdtop.profiler.contract.events import CellFinished, Error, PhaseStarted
    from sdtop.profiler.worker.cell import CellRun

    spec = CellSpec(
        "sd-txt2img",
        compile_mode="default",
        compile_backend="eager",
        steps=2,
        iterations=1,
        resolutions=((64, 64), (96, 96)),
        on_recompile="fail",
    )
    rec = Recorder()
    final = CellRun(5, spec, rec).run(launcher="inline", startup_s=0.0)
    reason = "0/0: tensor 'args[0]' size mismatch at index 2. expected 8, actual 12"
    assert final == f"error: recompiled: {reason}"
    assert [e.status for e in rec.events if isinstance(e, CellFinished)] == [final]
    (refused,) = [e for e in rec.events if isinstance(e, Recompile)]
    assert refused.compile_id == "" and refused.module == "unet" and refused.call == 2
    assert refused.reason.endswith(f"- {reason}")
    (err,) = [e for e in rec.events if isinstance(e, Error)]
    assert (err.phase, err.call, err.error_kind) == ("first_call", 2, "error")
    sizes = [(e.phase, e.height, e.width) for e in rec.events if isinstance(e, PhaseStarted) and e.height]
    assert sizes == [("first_call", 64, 64), ("measure", 64, 64), ("first_call", 96, 96)]
    assert [e.compile_id for e in rec.events if isinstance(e, CompileFinished)] == ["0/0"]


# --- CUDA-graph skips: only torch's skip records ------------------------------------------------

SKIPS = [
    "skipping cudagraphs due to mutated inputs (1 instances). Found from : \n   File x.py, line 3",
    "skipping cudagraphs due to cpu device (arg0_1)",
    "skipping cudagraph due to function 0 exceeding max re-recording limit (=50) on cudagraph node None",
    "disabling cudagraphs due to override_cudagraphs annotation",
]
NOT_SKIPS = [
    "CUDAGraph supports dynamic shapes by recording a new graph for each distinct input size. Recording "
    "too many CUDAGraphs may lead to extra overhead. We have observed 9 distinct sizes.",
    "enabling cudagraphs due to override_cudagraphs annotation",
    "    buf0: cudagraph-unsafe (cpu)",
    "the graph was not skipping cudagraphs due to anything",  # the words, not at the start
]


@pytest.mark.parametrize("message", SKIPS)
def test_skip_messages_are_skips(message: str) -> None:
    assert is_cudagraph_skip(message)


@pytest.mark.parametrize("message", NOT_SKIPS)
def test_other_records_of_the_cudagraphs_logger_are_not_skips(message: str) -> None:
    assert not is_cudagraph_skip(message)


def test_only_skip_records_become_cudagraph_skip_events() -> None:
    """Records sent through torch's own ``cudagraphs`` logger, as inductor sends them."""
    rec = Recorder()
    watch = CompileWatch(rec, 1, {}, backend="inductor").install()
    log = logging.getLogger(compile_watch.CUDAGRAPHS_LOGGER)
    log.warning("%s", NOT_SKIPS[0])
    log.warning("skipping cudagraphs due to %s", "mutated inputs (2 instances)")
    log.warning("%s", SKIPS[2])
    watch.close()
    skips = [e for e in rec.events if isinstance(e, CudagraphSkip)]
    assert [(e.reason, e.count, e.cell) for e in skips] == [
        ("skipping cudagraphs due to mutated inputs (2 instances)", 1, 1),
        (SKIPS[2], 1, 1),
    ]


# --- compile caches ---------------------------------------------------------------------------------


def test_cache_counts_read_both_caches_and_survive_odd_counters() -> None:
    counters = {
        "inductor": Counter(fxgraph_cache_hit=3, fxgraph_cache_miss=1, cudagraph_skips=7),
        "aot_autograd": Counter(autograd_cache_hit=2),
    }
    assert cache_counts(counters) == (5, 1)
    assert cache_counts({}) == (0, 0)  # nothing compiled yet
    assert cache_counts({"inductor": "not a mapping"}) == (0, 0)
    assert cache_counts(None) is None  # a torch without counters: n/a
    assert cache_delta((5, 1), (7, 1)) == (2, 0)
    assert cache_delta(None, (7, 1)) == (None, None)
    assert cache_delta((5, 1), (0, 0)) == (None, None)  # cleared meanwhile: meaningless


def _fake_counters(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counter[str]]:
    """torch's counters replaced by a dict the test bumps, as inductor would during a compile."""
    fake: dict[str, Counter[str]] = {"inductor": Counter(), "aot_autograd": Counter()}
    real = CompileWatch._private

    def private(self: CompileWatch, module: str, attr: str) -> Any:
        if (module, attr) == ("torch._dynamo.utils", "counters"):
            return fake
        if (module, attr) == ("torch._dynamo.utils", "get_compilation_metrics"):
            return list  # no records: durations are wall-clock
        return real(self, module, attr)

    monkeypatch.setattr(CompileWatch, "_private", private)
    return fake


@pytest.mark.parametrize(("backend", "expected"), [("inductor", (1, 1)), ("eager", (None, None))])
def test_cache_lookups_during_a_compile_go_on_its_finish_event(
    monkeypatch: pytest.MonkeyPatch, backend: str, expected: tuple[int | None, int | None]
) -> None:
    counters = _fake_counters(monkeypatch)
    counters["inductor"]["fxgraph_cache_hit"] = 4  # earlier compiles' lookups are not this one's
    rec = Recorder()
    watch = CompileWatch(rec, 0, {}, backend=backend).install()
    info = SimpleNamespace(compile_id="0/0", callback_trigger=SimpleNamespace(name="DYNAMO"))
    watch._on_start(info)  # what torch's start callback does
    counters["aot_autograd"]["autograd_cache_hit"] += 1
    counters["inductor"]["fxgraph_cache_miss"] += 1
    watch._on_end(info)
    counters["inductor"]["fxgraph_cache_hit"] += 1  # after the end: another compile's
    watch.close()
    (done,) = [e for e in rec.events if isinstance(e, CompileFinished)]
    assert (done.cache_hits, done.cache_misses) == expected


def test_compile_cache_settings_become_the_workers_environment(tmp_path: Any) -> None:
    folder = str(tmp_path / "compile-cache")
    assert compile_cache_env(folder) == {
        "TORCHINDUCTOR_CACHE_DIR": folder,
        "TRITON_CACHE_DIR": os.path.join(folder, "triton"),
    }
    assert compile_cache_env("shared") == {}
    assert compile_cache_env("session") == {}  # no folder given: torch's default
    assert compile_cache_env("off") == {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}


def test_apply_compile_cache_moves_the_caches_of_this_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")  # restored after the test
    monkeypatch.setenv("TRITON_CACHE_DIR", "/elsewhere/triton")
    rec = Recorder()
    folder = str(tmp_path / "compile-cache")
    apply_compile_cache(folder, rec, 2)
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert cache_dir() == folder and os.environ["TRITON_CACHE_DIR"] == os.path.join(folder, "triton")
    assert rec.logs() == [f"compile cache: this session's folder {folder}"]


def test_apply_compile_cache_off_disables_them_in_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    config = torch.compiler.config
    monkeypatch.setattr(config, "force_disable_caches", False)  # restored after the test
    monkeypatch.setenv("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "0")
    rec = Recorder()
    apply_compile_cache("off", rec, 0)
    assert config.force_disable_caches is True and os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] == "1"
    assert rec.logs() == ["compile cache: off (every compile is cold)"]
