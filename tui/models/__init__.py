"""View-models: everything the dashboard shows, computed from events in pure Python.

Nothing in this package imports textual. Widgets only lay out what these objects already
decided, so the numbers a user reads (p50, ETA, speedups, what a filter keeps) are tested
without a terminal, and the same code can back a headless report later.
"""
