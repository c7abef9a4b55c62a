#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what the GPU machine lacks for tests/gpu/run.sh: it has
# torch (2.11), transformers, accelerate, safetensors, rich, psutil, nvidia-ml-py, but no diffusers
# and no torchao (0.18.0 is the release built against torch 2.11: the float8 cell needs it).
# Run here, from the repo root; pip reaches PyPI from this side only.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for pkg in diffusers==0.42.1 importlib-metadata zipp torchao==0.18.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pkg"
done
ls -la .whl
