"""The worker half: builds a pipeline, applies the levers, times its steps and watches
compilation. The only layer that imports torch; only worker processes import it."""
