"""The UI process never imports torch, diffusers or transformers (nor accelerate).

The tui modules are imported in a fresh interpreter, so nothing another test imported can
hide a heavy import. The view-models and the data path must not need textual either:
they are the part a headless front end or a test can use alone.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from sdtop import tui

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "diffusers", "transformers", "accelerate")
#: Modules that must work without textual installed (pure Python view-models, data path).
NO_TEXTUAL = ("sdtop.tui.models", "sdtop.tui.reader", "sdtop.tui.sources")

MODULES = sorted(
    ["sdtop.tui", *(m.name for m in pkgutil.walk_packages(tui.__path__, prefix="sdtop.tui."))],
)


def imported_after(*modules: str) -> set[str]:
    """``sys.modules`` of a fresh interpreter once ``modules`` are imported."""
    code = f"import json, sys; import {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def of(loaded: set[str], tops: Sequence[str]) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in tops)


def test_every_module_is_listed() -> None:
    assert {
        "sdtop.tui.app",
        "sdtop.tui.screens.live",
        "sdtop.tui.screens.setup",
        "sdtop.tui.widgets.latency",
        "sdtop.tui.models.summary",
    } <= set(MODULES)
    assert of({"torch._C", "json", "textual.app"}, FORBIDDEN) == ["torch._C"]


@pytest.mark.parametrize(
    ("modules", "tops"),
    [
        pytest.param(MODULES, FORBIDDEN, id="no-torch"),
        pytest.param([m for m in MODULES if m.startswith(NO_TEXTUAL)], (*FORBIDDEN, "textual", "textual_plotext"),
                     id="view-models-no-textual"),
    ],
)  # fmt: skip
def test_tui_modules_import_nothing_heavy(modules: list[str], tops: tuple[str, ...]) -> None:
    """All the modules in one fresh interpreter (one start, not one per module): if nothing
    heavy is loaded then, no module alone loads it; if something is, each module alone, in
    its own interpreter, names the ones that do."""
    if not of(imported_after(*modules), tops):
        return
    culprits = {m: found[:5] for m in modules if (found := of(imported_after(m), tops))}
    pytest.fail(f"imported by: {culprits}")


def test_starting_a_run_imports_no_torch() -> None:
    """The live path imports profiler.host.runner when a run starts: the parent half only."""
    host = "sdtop.profiler.host"
    loaded = imported_after(f"sdtop.tui.app, sdtop.tui.sources, {host}.runner, {host}.session, {host}.probe")
    assert not any(m.split(".")[0] in FORBIDDEN for m in loaded)
