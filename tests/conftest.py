"""Test tiers. ``pytest -n 2 -m "not e2e and not perf and not slow"`` is the inner loop (meant
to take under a minute on both cores); README's test command (``-m 'not slow'``) runs what CI
needs.

- ``e2e``: starts sdtop workers (a fork server, ``sdtop run`` in a subprocess) or does real
  torch work of that size (torch.compile, whole tiny pipelines). Whole modules are listed
  in :data:`E2E_MODULES`; single tests elsewhere carry ``@pytest.mark.e2e``.
- ``perf``: the smoke runs of the benchmarks in tests/perf.
- ``slow``: minutes-long (inductor compiles, full-size random weights); not in CI.

The marking is enforced, not trusted: a test without ``e2e`` that starts a worker or
``sdtop run`` fails at once, saying to mark it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

# This project's machines set PYTHONDONTWRITEBYTECODE: with no bytecode cache, every pytest
# process (each xdist worker, each run of the inner loop) compiles and assertion-rewrites the
# same ~200 test and sdtop modules again, ~5 s a worker. The cache is __pycache__/
# (gitignored); the subprocesses tests start keep the variable, and read what is cached.
sys.dont_write_bytecode = False


def _poll_idle_finer() -> None:
    """Textual's pilot waits for "idle" after every key and pause by sleeping 20 ms at a time
    until the process used under 5% of a window's CPU: every key costs at least 40 ms, a
    fifth of the TUI tests' time here. Same rule (5%), 2.5 ms windows: it still waits until
    the app is idle, it just notices sooner. textual is pinned (pyproject.toml); if its
    private ``_wait`` changes, this does nothing and the tests are only slower."""
    try:
        from textual import _wait
    except ImportError:
        return
    if isinstance(getattr(_wait, "SLEEP_GRANULARITY", None), float) and hasattr(_wait, "SLEEP_IDLE"):
        _wait.SLEEP_GRANULARITY = 1 / 400
        _wait.SLEEP_IDLE = _wait.SLEEP_GRANULARITY / 20


_poll_idle_finer()

#: Modules whose every test runs workers or real pipelines.
E2E_MODULES = frozenset(
    {
        "test_e2e_run.py",
        "test_e2e_lanes.py",
        "test_worker_paths.py",
        "test_compile_run.py",
        "test_reliability.py",
        "test_pipelines_build.py",
        "test_pipelines_params.py",
        "test_report_browser.py",  # a headless chromium per page
    }
)
PERF_MODULES = frozenset({"test_perf_smoke.py"})

#: What starting a worker looks like on a command line (fork server, portable worker, a run).
_WORKER_MODULES = ("sdtop.profiler.worker.forkserver", "sdtop.profiler.worker.cell")
_SDTOP_ENTRIES = ("sdtop.tui.cli", "/sdtop")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = item.path.name
        if name in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)
        if name in PERF_MODULES or "perf" in item.path.parts[:-1]:
            item.add_marker(pytest.mark.perf)


def starts_a_worker(argv: Sequence[str] | str) -> bool:
    """Whether a command line starts a worker: one of the worker modules, or `sdtop run`."""
    args = [argv] if isinstance(argv, str) else [str(a) for a in argv]
    if any(m in a for a in args for m in _WORKER_MODULES):
        return True
    return any(a.endswith(_SDTOP_ENTRIES) and args[i + 1 : i + 2] == ["run"] for i, a in enumerate(args))


@pytest.fixture(autouse=True)
def _workers_only_in_e2e(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Outside ``e2e`` and ``perf``, refuse to start a worker: the inner loop stays fast."""
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("perf"):
        yield
        return
    real = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen[bytes], args: Sequence[str] | str, *a: object, **kw: object) -> None:
        if starts_a_worker(args):
            raise AssertionError(f"{request.node.nodeid} starts a worker: mark it @pytest.mark.e2e")
        real(self, args, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield
