"""Builders for the worker process alone: they import torch, diffusers and transformers.

Importing this package quiets those libraries first (:func:`quiet_libraries`): every way in
to the builders (the worker, a test, a benchmark) passes through here before they load.
"""

import os


def quiet_libraries() -> None:
    """Silence known noise (transformers' torchvision notice, hub progress bars) before the
    libraries are imported; a user's own setting of any of these wins. The one place."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


quiet_libraries()
