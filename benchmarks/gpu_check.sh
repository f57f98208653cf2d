#!/usr/bin/env bash
# The GPU check, in one go (at most ~8 minutes on one GPU machine that has PyTorch and nvcc but
# nothing else of ours and no network):
#   1. installs what the image lacks from wheels brought along in .whl/ (fetch them beforehand on a
#      machine with network: benchmarks/gpu_wheels.sh);
#   2. builds nerfacc's CUDA kernels (JIT) and nvdiffrast (from .whl/nvdiffrast-src.tar.gz) once,
#      into .gpu_cache/, and leaves them as $OUT/gpu_cache.tar.gz: unpack it into the tree and carry
#      .gpu_cache next time, and the builds are skipped;
#   3. runs the tests marked `cuda` and benchmarks/gpu_figures.py;
#   4. prints one JSON line: the test counts and the figures.
# Usage (repository root): OUT=/some/dir bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/.gpu_out}
mkdir -p "$OUT" .gpu_cache
start=$(date +%s)
log() { echo "[gpu_check $(( $(date +%s) - start ))s] $*"; }

# 1. packages
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo '{"error": "installing .whl/ failed"}'; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  log "no .whl/ folder: using the packages already installed"
  export PYTHONPATH=$PWD
fi
# nvdiffrast compiles at install: build its wheel once into .gpu_cache/wheels, install it from there.
if [ -f .whl/nvdiffrast-src.tar.gz ] && ! ls .gpu_cache/wheels/nvdiffrast-*.whl >/dev/null 2>&1; then
  mkdir -p /tmp/nvdr .gpu_cache/wheels && tar -xzf .whl/nvdiffrast-src.tar.gz -C /tmp/nvdr
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')} \
    python3 -m pip wheel -q --no-deps --no-build-isolation -w .gpu_cache/wheels /tmp/nvdr && log "nvdiffrast built" || log "nvdiffrast build failed"
fi
if ls .gpu_cache/wheels/nvdiffrast-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_cache/wheels/nvdiffrast-*.whl
fi
# The extensions' sources were just unpacked (new mtimes); make them older than a carried build so
# ninja reuses it instead of compiling again.
find /tmp/site -path '*nerfacc*' -o -path '*nvdiffrast*' 2>/dev/null | xargs -r touch -h -d '2001-01-01' 2>/dev/null
export TORCH_EXTENSIONS_DIR=$PWD/.gpu_cache/torch_extensions
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log "python $(python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)'), arch $TORCH_CUDA_ARCH_LIST"

# 2. build the extensions once (their probes run the real kernels)
python3 - <<'EOF'
from dreamfusion.utils import capabilities as c
for name, probe in (("nerfacc", c.nerfacc_cuda_available), ("tinycudann", c.tinycudann_available), ("nvdiffrast", c.nvdiffrast_available)):
    print(f"probe {name}: {probe()} {c.failure_reason(name) or ''}", flush=True)
EOF
log "extensions ready"
tar -czf "$OUT/gpu_cache.tar.gz" .gpu_cache 2>/dev/null || true

# 3. tests and figures
python3 -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml" 2>&1 | tee "$OUT/cuda_tests.log"
log "tests done"
python3 benchmarks/gpu_figures.py --prior assets/toy_prior 2>&1 | tee "$OUT/gpu_figures.log"
log "figures done"

# 4. one JSON line
python3 - "$OUT" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
out, seconds = sys.argv[1], int(sys.argv[2])
result = {"seconds": seconds}
try:
    suite = ET.parse(f"{out}/cuda_tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    result["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    result["failed"] = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
except Exception as err:
    result["tests"] = f"no test report ({err})"
lines = [l for l in open(f"{out}/gpu_figures.log").read().splitlines() if l.startswith("{")]
result["figures"] = json.loads(lines[-1]) if lines else None
print(json.dumps(result))
EOF
