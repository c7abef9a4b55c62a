"""A throw-away tree in which ``sdtop/`` holds its sub-packages under their import names.

Static tools (import-linter's grimp, mypy) find a package's modules by walking the folder of
a top-level package; sdtop's sub-packages live in other folders (pyproject's package-dir
mapping keeps the design card's root layout). Linking ``sdtop/tui``, ``sdtop/profiler`` and
``sdtop/pipelines`` to the real folders shows them the same files under their import names.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINKED = ("tui", "profiler", "pipelines")


@contextlib.contextmanager
def linked_tree() -> Iterator[Path]:
    """The folder to put first on the tool's path (it holds ``sdtop/``)."""
    with tempfile.TemporaryDirectory(prefix="sdtop-linked-") as tmp:
        pkg = Path(tmp) / "sdtop"
        pkg.mkdir()
        shutil.copy(ROOT / "sdtop" / "__init__.py", pkg / "__init__.py")
        for name in LINKED:
            (pkg / name).symlink_to(ROOT / name, target_is_directory=True)
        yield Path(tmp)
