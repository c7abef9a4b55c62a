"""Where a ``--weights hub`` cell's weights come from, and whether they are on this disk.

Stdlib only, and no huggingface_hub: the parent checks the hub cells of a matrix before any
worker starts (:func:`preflight`), and the parent never imports torch; reading the cache's
folder layout costs microseconds and works offline, where asking the hub would not.

The rule (issue 12, 7d): a hub cell needs its model already on disk, either a local
directory holding ``model_index.json`` or a hub id whose snapshot in the local cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) holds one.
sdtop never downloads during a matrix: a download of gigabytes in the middle of a timed run
is slow, may fail half way, and is better done once, explicitly. A matrix with any hub
model missing is refused as a whole, before anything runs or is written (exit 2, one line
naming every missing model): the simplest honest rule, since a matrix that runs half its
cells and reports the rest as errors is easy to misread as a complete comparison.

A snapshot holding ``model_index.json`` but not every weight file passes here; the worker
then reports ``cannot load ...`` for its cells, as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from . import registry
from .settings import BadInput, CellSpec


def cache_dir() -> Path:
    """The hub cache huggingface_hub would use, from the same variables it reads."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(name)
        if value:
            return Path(value).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def looks_like_path(source: str) -> bool:
    """A filesystem path rather than a hub id ("name" or "owner/name")."""
    return source.startswith((".", "/", "~")) or (os.sep in source and source.count("/") != 1)


def stage_source(model: str | None, info: registry.PipelineSpec, stage: registry.StageInfo) -> str:
    """Where a stage's weights come from: ``--model`` or the registry checkpoint.

    A multi-stage pipeline (IF) takes ``--model`` as a directory with one sub-directory per
    stage name (what the builders' ``save_pretrained`` writes); a stage without one, or a
    hub id given as ``--model``, applies to stage I only and the others use the registry.
    Shared by the worker's builder and the parent's preflight, so both look at one place.
    """
    if not model:
        return stage.checkpoint
    model = registry.canonical_model(model)
    if len(info.stages) == 1:
        return model
    per_stage = os.path.join(os.path.expanduser(model), stage.name)
    if os.path.isdir(per_stage):
        return per_stage
    return model if stage is info.stages[0] else stage.checkpoint


def in_cache(repo_id: str, filename: str = "model_index.json") -> bool:
    """Whether some snapshot of ``repo_id`` in the local hub cache holds ``filename``."""
    folder = cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    try:
        return any((snap / filename).is_file() for snap in folder.iterdir())
    except OSError:  # no such folder, not readable
        return False


def available(source: str, filename: str = "model_index.json") -> bool:
    """A local directory holding ``filename``, or a hub id cached with it."""
    if looks_like_path(source) or os.path.isdir(os.path.expanduser(source)):
        return os.path.isfile(os.path.join(os.path.expanduser(source), filename))
    return in_cache(source, filename)


def needed(cell: CellSpec) -> list[tuple[str, str]]:
    """(source, file that marks it present) of every model a hub cell loads."""
    if cell.weights != "hub":
        return []
    info = registry.get(cell.pipeline)
    out: list[tuple[str, str]] = []
    for stage in registry.stages_for(cell.pipeline, cell.batch_size):
        source = stage_source(cell.model, info, stage)
        out.append((source, "model_index.json"))
        local = os.path.isdir(os.path.expanduser(source))
        for extra in info.extra_checkpoints:  # a ControlNet: a model, not a pipeline
            if not (local and os.path.isdir(os.path.join(os.path.expanduser(source), "controlnet"))):
                out.append((extra, "config.json"))
    return out


def missing(cells: Iterable[CellSpec]) -> list[str]:
    """The models some hub cell of ``cells`` needs and this disk lacks, in first-use order."""
    seen: dict[str, bool] = {}
    for cell in cells:
        for source, marker in needed(cell):
            if source not in seen:
                seen[source] = available(source, marker)
    return [source for source, ok in seen.items() if not ok]


def preflight(cells: Iterable[CellSpec]) -> None:
    """Refuse (BadInput, one line) a matrix whose hub cells need a model not on this disk."""
    absent = missing(cells)
    if not absent:
        return
    names = ", ".join(repr(s) for s in absent)
    paths = [s for s in absent if looks_like_path(s) or os.path.isdir(os.path.expanduser(s))]
    where = (
        f"a local --model directory needs a model_index.json; hub ids are looked up in {cache_dir()}"
        if paths
        else f"not in the local hub cache {cache_dir()}"
    )
    raise BadInput(
        f"--weights hub: {names} {'is' if len(absent) == 1 else 'are'} not on this disk ({where}); "
        "nothing was run: use --weights random or tiny, or download it first "
        "(huggingface-cli download ID)"
    )
