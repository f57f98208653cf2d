#!/usr/bin/env bash
# Fetch into .whl/ (git-ignored) the wheels benchmarks/gpu_check.sh installs on a GPU machine that has
# PyTorch, nvcc and ninja but no network: what the toolkit needs beyond such an image (checked against
# the lent H200 image: Python 3.12, torch, transformers, sentencepiece, scikit-image, imageio, rich).
# nvdiffrast is not on the package index and (0.4) compiles its CUDA extension at install: pass its
# source folder (a clone of NVlabs/nvdiffrast) as the first argument and it is packed as
# .whl/nvdiffrast-src.tar.gz, which gpu_check.sh builds on the GPU machine once (kept in .gpu_cache/).
# imageio-ffmpeg (68 MB) would not fit the 64 MiB a device call carries: the GPU runs skip the mp4.
# Usage (repository root, on a machine with network): bash benchmarks/gpu_wheels.sh [NVDIFFRAST_SRC]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl \
  diffusers==0.42.1 importlib_metadata nerfacc==0.5.3 trimesh==5.2.0 xatlas==0.0.11 fast-simplification==0.2.0
if [ $# -ge 1 ]; then
  tar -czf .whl/nvdiffrast-src.tar.gz -C "$1" setup.py pyproject.toml README.md LICENSE.txt nvdiffrast csrc
fi
ls -la .whl
du -sh .whl
