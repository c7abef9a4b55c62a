"""The one contract between the parent and the worker: events, statuses, the fault grammar.
Stdlib only, so every layer can import it."""
