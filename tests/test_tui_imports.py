"""The UI process never imports torch, diffusers or transformers (nor accelerate).

Each tui module is imported in a fresh interpreter, so nothing another test imported can
hide a heavy import. The view-models and the data path must not need textual either:
they are the part a headless front end or a test can use alone.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
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


def imported_after(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_every_module_is_listed() -> None:
    assert {
        "sdtop.tui.app",
        "sdtop.tui.screens.live",
        "sdtop.tui.screens.setup",
        "sdtop.tui.widgets.latency",
        "sdtop.tui.models.summary",
    } <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_tui_module_imports_no_torch(module: str) -> None:
    loaded = imported_after(module)
    heavy = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert heavy == [], f"{module} imports {heavy[:5]}"
    if module.startswith(NO_TEXTUAL):
        assert not any(m.split(".")[0] in ("textual", "textual_plotext") for m in loaded), module


def test_starting_a_run_imports_no_torch() -> None:
    """The live path imports profiler.host.runner when a run starts: the parent half only."""
    host = "sdtop.profiler.host"
    loaded = imported_after(f"sdtop.tui.app, sdtop.tui.sources, {host}.runner, {host}.session, {host}.probe")
    assert not any(m.split(".")[0] in FORBIDDEN for m in loaded)
