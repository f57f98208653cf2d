#!/usr/bin/env bash
# Fetch into .whl/ (git-ignored) the wheels benchmarks/gpu_check.sh installs on a GPU machine that has
# PyTorch, nvcc and ninja but no network: what the toolkit needs beyond such an image (checked against
# the lent H200 image: Python 3.12, torch, transformers, sentencepiece, scikit-image, imageio, rich).
# nvdiffrast is not on the package index: pass its source folder (git clone of NVlabs/nvdiffrast) as
# the first argument to build its (pure-Python, JIT-compiled) wheel here too. imageio-ffmpeg (68 MB)
# would not fit the 64 MiB a device call carries: the GPU runs skip the mp4 (export.video=false).
# Usage (repository root, on a machine with network): bash benchmarks/gpu_wheels.sh [NVDIFFRAST_SRC]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl \
  diffusers==0.42.1 importlib_metadata nerfacc==0.5.3 trimesh==5.2.0 xatlas==0.0.11
if [ $# -ge 1 ]; then
  python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl "$1"
fi
ls -la .whl
du -sh .whl
