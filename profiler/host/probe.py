"""Cheap, torch-free guesses about the host, for defaults shown before any worker exists.

The authoritative answer (does the worker's torch see CUDA?) comes from the worker host's
hello; this only pre-fills the setup screen instantly.
"""

from __future__ import annotations

import glob
import os


def has_nvidia_gpu() -> bool:
    """True when an NVIDIA driver exposes at least one device node on this host."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) and os.path.exists("/proc/driver/nvidia/version")
