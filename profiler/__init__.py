"""sdtop's profiler: a torch-free parent half (launching, session log, summaries) and a
worker half (building, timing) that only the worker process imports."""

__version__ = "0.1.0"
