"""The seed's benchmark loop as a bare script: side A of the overhead benchmark.

What the diffusers "PyTorch 2.0" benchmark did, and nothing more: build the pipeline,
apply the settings, call it ``warmup`` times, then time ``iterations`` calls. It takes
the same options as ``sdtop run`` (parsed and expanded by sdtop's own CLI code, so the
cell is exactly the one ``sdtop run`` would run) and must describe exactly one cell.

Same pipeline, settings and calls as sdtop's worker:

- the modules come from ``pipelines.builders.build.build`` and ``profiler.worker.apply.apply_settings``
  (the same random/tiny weights, attention processors, channels_last, torch.compile),
  and torch's CPU thread count is the cell's (``resolve_threads``, as the worker sets it);
- every call runs under ``torch.inference_mode()`` (a forced SDPA kernel holds in the
  denoisers through the hooks ``apply_settings`` installs) with the
  stage kwargs ``build`` made, a fresh ``torch.Generator("cpu")`` seeded ``seed + call``,
  and chained stages (if-cascade) fed the previous stage's images, as the worker does.

What is NOT here (the observer whose cost is being measured): no sdtop worker process or
fork server, no step callbacks, no progress-bar/encode/decode wrappers, no events, no
parent reading a pipe or sampling. The progress bar is disabled by ``build`` for both.

What it measures: each call's wall time, ``synchronize(); t0 = perf_counter(); <all
stages>; synchronize(); t1 = perf_counter()`` (one synchronise per call on CUDA, none
inside it), exactly the boundaries of sdtop's own ``CallFinished.wall_s``. It does not
time the denoising loop alone: that needs marks inside the call, which is what is being
measured. Results go to ``--json`` (stdout belongs to whatever the libraries print).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def parse_cell(argv: list[str], cuda_available: bool) -> Any:
    """The one CellSpec that ``sdtop run <argv>`` would run (sdtop's own parser and expansion)."""
    from sdtop.pipelines.settings import expand
    from sdtop.tui.cli import build_run_parser, matrix_from_args

    args = build_run_parser().parse_args(argv)
    cells = expand(matrix_from_args(args), cuda_available=cuda_available)
    if len(cells) != 1:
        raise SystemExit(f"seed_loop: the options describe {len(cells)} cells; give exactly one")
    return cells[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--json", required=True, help="write the per-call results here")
    own, rest = p.parse_known_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

    t_start = time.perf_counter()
    import torch
    from sdtop.pipelines.builders.build import build
    from sdtop.pipelines.settings import resolve_threads
    from sdtop.profiler.worker.apply import apply_settings

    spec = parse_cell(rest, cuda_available=torch.cuda.is_available())
    cuda = spec.device.startswith("cuda")
    # A setting of the cell like any other (--threads; auto = all cores but one on CPU),
    # applied the way the worker applies it: on a loaded 2-core box the thread count
    # alone changes a tiny call's time ten-fold.
    threads = resolve_threads(getattr(spec, "threads", 0), spec.device, os.cpu_count())
    if threads is not None:
        torch.set_num_threads(threads)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    built = build(spec)
    apply_settings(built, spec)
    t_ready = time.perf_counter()
    steps_per_call = sum(st.steps for st in built.stages)
    calls: list[dict[str, Any]] = []
    for call in range(spec.warmup + spec.iterations):
        kind = "first" if call == 0 and spec.warmup > 0 else ("warmup" if call < spec.warmup else "measured")
        with torch.inference_mode():
            sync()
            t0 = time.perf_counter()
            prev: Any = None
            for st in built.stages:
                kwargs = dict(st.kwargs)
                if st.chain is not None and prev is not None:
                    kwargs.update(st.chain(prev))
                kwargs["generator"] = torch.Generator("cpu").manual_seed(spec.seed + call)
                prev = st.pipe(**kwargs).images
            sync()
            wall = time.perf_counter() - t0
        calls.append({"call": call, "kind": kind, "wall_s": wall, "steps": steps_per_call})
    Path(own.json).write_text(
        json.dumps(
            {
                "spec": spec.to_dict(),
                "calls": calls,
                "setup_s": t_ready - t_start,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
