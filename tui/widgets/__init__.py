"""One widget per file; each renders one view-model from :mod:`tui.models` and decides nothing."""
