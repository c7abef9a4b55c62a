"""Run mypy (settings in pyproject.toml) over the ``sdtop`` namespace as installed.

See :mod:`tests.tools.linked` for why a linked tree. Exit status is mypy's own.
"""

from __future__ import annotations

import os
import subprocess
import sys

from linked import ROOT, linked_tree


def main() -> int:
    with linked_tree() as tmp:
        env = {**os.environ, "MYPYPATH": str(tmp)}
        argv = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "sdtop"]
        return subprocess.run(argv, cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
