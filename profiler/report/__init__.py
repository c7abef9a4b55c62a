"""The report layer: events to rows, statuses, figures, CSV / Markdown / JSON, comparisons and
the published reference tables. Derived from events alone, so every output is rebuildable."""
