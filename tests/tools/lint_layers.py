"""Run import-linter's contracts (pyproject.toml) over the ``sdtop`` namespace as installed.

See :mod:`tests.tools.linked` for why a linked tree. Exit status is lint-imports' own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from linked import ROOT, linked_tree


def main() -> int:
    lint = shutil.which("lint-imports")
    if lint is None:
        print("lint_layers: lint-imports is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    with linked_tree() as tmp:
        env = {**os.environ, "PYTHONPATH": str(tmp)}
        # cwd = the linked tree: lint-imports puts the working directory first on sys.path.
        return subprocess.run([lint, str(ROOT / "pyproject.toml")], cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
