"""Run import-linter over the ``sdtop`` namespace as it is installed.

import-linter (grimp) finds a package's modules by walking the folder of a top-level package,
and sdtop's sub-packages live in other folders (pyproject's package-dir mapping keeps the
design card's root layout). So the contracts are checked on a throw-away tree that links
``sdtop/tui``, ``sdtop/profiler`` and ``sdtop/pipelines`` to the real folders: the same files,
under their import names. Exit status is lint-imports' own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINKED = ("tui", "profiler", "pipelines")


def main() -> int:
    lint = shutil.which("lint-imports")
    if lint is None:
        print("lint_layers: lint-imports is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sdtop-lint-") as tmp:
        pkg = Path(tmp) / "sdtop"
        pkg.mkdir()
        shutil.copy(ROOT / "sdtop" / "__init__.py", pkg / "__init__.py")
        for name in LINKED:
            (pkg / name).symlink_to(ROOT / name, target_is_directory=True)
        env = {**os.environ, "PYTHONPATH": tmp}
        # cwd = the throw-away tree: lint-imports puts the working directory first on sys.path.
        return subprocess.run([lint, str(ROOT / "pyproject.toml")], cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
