"""Builders for the worker process alone: they import torch, diffusers and transformers."""
