"""sdtop: ``top`` for diffusion pipelines.

The import names are ``sdtop.tui``, ``sdtop.profiler`` and ``sdtop.pipelines``; their folders
stay ``tui/``, ``profiler/`` and ``pipelines/`` at the repository root (pyproject's package-dir
mapping), so nothing of sdtop is a top-level package that a user's own folder could shadow.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Run from a source checkout (this folder holds only this file; a tool started in the
# checkout finds it before the installed package), the sub-packages are the folders beside
# it. An installed sdtop has them inside this folder and skips this.
_here = _Path(__file__).resolve().parent
if not (_here / "tui").is_dir() and (_here.parent / "pyproject.toml").is_file() and (_here.parent / "tui").is_dir():
    __path__.append(str(_here.parent))
del _here, _Path
