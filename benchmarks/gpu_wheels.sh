#!/usr/bin/env bash
# Fetch into .whl/ (git-ignored) what benchmarks/gpu_check.sh installs on a GPU machine that has
# PyTorch, nvcc and ninja but no network. .whl/ must then travel with the tree: it is git-ignored,
# so name it in the device call's carry list (README, "The GPU check").
#
# Pinned to what the GPU image seen so far needs (Python 3.12, torch 2.11, transformers 5.17, nvcc 13)
# and what CI tests (diffusers 0.42.1). Installed with --no-deps, so nothing here drags in a newer
# dependency: importlib_metadata, which diffusers lists but imports only before Python 3.8, is left out
# (its newest release needs a package that image lacks).
# nvdiffrast and tinycudann are not on the package index and compile CUDA code at install: pass their
# source folders (clones of NVlabs/nvdiffrast and NVlabs/tiny-cuda-nn, the latter with its submodules)
# and they are packed as .whl/<name>-src.tar.gz, which gpu_check.sh builds once on the GPU machine,
# beside nerfacc's kernels (kept in .gpu_cache/). tinycudann's build takes minutes: without its source
# the check reports it as absent, and its test skips (untested).
# imageio-ffmpeg (68 MB) would not fit the 64 MiB a device call carries: the GPU runs skip the mp4.
# Usage (repository root, on a machine with network):
#   bash benchmarks/gpu_wheels.sh [NVDIFFRAST_SRC [TINY_CUDA_NN_SRC]]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl \
  diffusers==0.42.1 nerfacc==0.5.3 trimesh==5.2.0 xatlas==0.0.11 fast-simplification==0.2.0
if [ $# -ge 1 ]; then
  tar -czf .whl/nvdiffrast-src.tar.gz -C "$1" setup.py pyproject.toml README.md LICENSE.txt nvdiffrast csrc
fi
if [ $# -ge 2 ]; then  # tiny-cuda-nn's PyTorch bindings build from its bindings/torch folder
  tar -czf .whl/tinycudann-src.tar.gz -C "$2" --exclude=.git .
fi
ls -la .whl
du -sh .whl
