"""What sdtop runs: the registry of named pipelines (stdlib only) and, for the worker
process alone, the builders that import torch and diffusers."""
