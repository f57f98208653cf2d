#!/usr/bin/env bash
# The GPU check, one command on a GPU machine that has PyTorch and nvcc but nothing else of ours and
# no network, inside one device call (at most 10 minutes; the whole session has about 15):
#
#   OUT=$OUT bash benchmarks/gpu_check.sh          (repository root; carry .whl, and .gpu_cache once made)
#
# Phases, each under `timeout` and cut to what is left of GPU_CHECK_BUDGET (default 420 s, so the
# script ends well before a 600-s kill): detect (no GPU: the JSON says "gpu": false, exit 3),
# install (.whl/ wheels: fetch them beforehand with benchmarks/gpu_wheels.sh), builds (nerfacc's JIT
# kernels while nvdiffrast's and tinycudann's wheels build from .whl/*-src.tar.gz beside it, then every
# accelerator's probe; a failed build is deleted and disabled for every later process through
# DREAMFUSION_DISABLE), cache (.gpu_cache/ packed as $OUT/gpu_cache.tar.gz when under 15 MiB:
# unpack it into the tree and carry .gpu_cache next time), tests (pytest -m cuda, each test at most
# DREAMFUSION_TEST_TIMEOUT s), figures (benchmarks/gpu_figures.py).
#
# Whatever happens (a phase times out, a build fails, the script is interrupted), an EXIT trap prints
# the JSON as the last line and writes it to $OUT/gpu_check.json; $OUT/state/ and the phase logs in
# $OUT/ hold the results as each phase ends. Exit 0 only when every phase and test passed.
# For testing the script itself: GPU_CHECK_HANG=<phase> makes that phase hang (the JSON must still
# come out), GPU_CHECK_DRY_RUN=1 goes on past detect without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-$PWD/.gpu_out}
export STATE=$OUT/state
mkdir -p "$OUT" "$STATE"
BUDGET=${GPU_CHECK_BUDGET:-420}  # 7 minutes: a 480-s device call leaves room for a rerun
RESERVE=15  # seconds kept for the report
export GPU_CHECK_HANG=${GPU_CHECK_HANG:-}
start=$(date +%s)
log() { echo "[gpu_check $(( $(date +%s) - start ))s] $*"; }
left() { echo $(( BUDGET - RESERVE - ($(date +%s) - start) )); }

report() {
  local code=$?
  trap - EXIT INT TERM
  python3 benchmarks/gpu_report.py "$OUT" "$(( $(date +%s) - start ))" "$code" \
    || { echo "{\"error\": \"benchmarks/gpu_report.py failed\", \"seconds\": $(( $(date +%s) - start ))}"; exit 1; }
  exit "$(cat "$STATE/exit_code" 2>/dev/null || echo 1)"
}
trap report EXIT
trap 'exit 130' INT TERM

# run_phase NAME CAP_SECONDS: run the function phase_NAME under timeout (CAP, or what is left);
# its status (ok, failed, timeout, skipped) and seconds go to $STATE/phase_NAME.
run_phase() {
  local name=$1 cap=$2 t status began=$(date +%s)
  t=$(left); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 5 ]; then
    echo "skipped 0 no time left" > "$STATE/phase_$name"; log "$name: skipped (no time left)"; return 1
  fi
  log "$name (at most ${t}s)"
  timeout -k 5 "$t" bash -c "[ \"\$GPU_CHECK_HANG\" = $name ] && sleep 100000; phase_$name"
  case $? in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  echo "$status $(( $(date +%s) - began ))" > "$STATE/phase_$name"
  log "$name: $status"
  python3 benchmarks/gpu_report.py "$OUT" "$(( $(date +%s) - start ))" 0 --quiet  # $OUT/gpu_check.json so far
  [ "$status" = ok ]
}

phase_detect() {
  python3 - "$STATE" <<'EOF'
import json, sys, torch
info = {"gpu": torch.cuda.is_available(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": sys.version.split()[0]}
if info["gpu"]:
    info["device"] = torch.cuda.get_device_name(0)
    info["capability"] = "%d.%d" % torch.cuda.get_device_capability()
open(f"{sys.argv[1]}/detect.json", "w").write(json.dumps(info))
print(info)
EOF
}

phase_install() {
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no .whl/ folder (send it along: carry .whl); using the packages already installed"
    return 0
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
}

# build_wheel NAME [SUBDIR]: .whl/NAME-src.tar.gz -> .gpu_cache/wheels/NAME-*.whl, its compiler log in $OUT.
build_wheel() {
  local name=$1 subdir=${2:-.}
  if ls .gpu_cache/wheels/"$name"-*.whl >/dev/null 2>&1; then echo cached > "$STATE/build_$name"; return 0; fi
  if [ ! -f ".whl/$name-src.tar.gz" ]; then echo "absent (no .whl/$name-src.tar.gz)" > "$STATE/build_$name"; return 0; fi
  rm -rf "/tmp/src_$name" && mkdir -p "/tmp/src_$name" .gpu_cache/wheels && tar -xzf ".whl/$name-src.tar.gz" -C "/tmp/src_$name"
  if python3 -m pip wheel --no-index --no-deps --no-build-isolation -w .gpu_cache/wheels "/tmp/src_$name/$subdir" > "$OUT/build_$name.log" 2>&1; then
    echo built > "$STATE/build_$name"
  else
    echo "failed (see build_$name.log)" > "$STATE/build_$name"
  fi
}
export -f build_wheel

phase_builds() {
  mkdir -p .gpu_cache
  # the wheels build in the background (each at most GPU_CHECK_BUILD_CAP s) while nerfacc's kernels compile
  local cap=${GPU_CHECK_BUILD_CAP:-150} name
  declare -A pids
  export TCNN_CUDA_ARCHITECTURES=${TCNN_CUDA_ARCHITECTURES:-${TORCH_CUDA_ARCH_LIST//./}}
  timeout -k 5 "$cap" bash -c "build_wheel nvdiffrast" & pids[nvdiffrast]=$!
  timeout -k 5 "$cap" bash -c "build_wheel tinycudann bindings/torch" & pids[tinycudann]=$!
  python3 -c 'from dreamfusion.utils import capabilities as c; print("nerfacc", c.nerfacc_cuda_available(), c.failure_reason("nerfacc") or "")' \
    > "$OUT/build_nerfacc.log" 2>&1
  for name in nvdiffrast tinycudann; do
    wait "${pids[$name]}" || [ -s "$STATE/build_$name" ] || echo "timed out after ${cap}s" > "$STATE/build_$name"
  done
  for wheel in .gpu_cache/wheels/*.whl; do
    [ -e "$wheel" ] && python3 -m pip install -q --no-index --no-deps --target /tmp/site "$wheel"
  done
  python3 - "$STATE" <<'EOF'
import json, sys
from dreamfusion.utils import capabilities as c
probes = {}
for name, check in (("nerfacc", c.nerfacc_cuda_available), ("tinycudann", c.tinycudann_available), ("nvdiffrast", c.nvdiffrast_available)):
    ok = check()
    probes[name] = "ok" if ok else (c.failure_reason(name) or "not available (no CUDA device)")
    print(f"probe {name}: {probes[name]}", flush=True)
open(f"{sys.argv[1]}/probes.json", "w").write(json.dumps(probes))
EOF
}

phase_cache() {
  mkdir -p .gpu_cache
  tar -czf "$OUT/gpu_cache.tar.gz" .gpu_cache
  local size; size=$(stat -c %s "$OUT/gpu_cache.tar.gz")
  if [ "$size" -gt $(( 15 * 1024 * 1024 )) ]; then  # what comes back from the GPU machine is at most 16 MiB a file
    rm -f "$OUT/gpu_cache.tar.gz"; echo "too big: $(( size / 1024 / 1024 )) MiB, not kept" > "$STATE/cache"
  else
    echo "$(( size / 1024 )) KiB" > "$STATE/cache"
  fi
}

phase_tests() {
  DREAMFUSION_TEST_TIMEOUT=${DREAMFUSION_TEST_TIMEOUT:-90} python3 -m pytest -q -m cuda tests/test_cuda.py \
    -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml" > "$OUT/cuda_tests.log" 2>&1
}

phase_figures() {
  python3 benchmarks/gpu_figures.py --prior assets/toy_prior > "$OUT/gpu_figures.log" 2>&1
}
export -f phase_detect phase_install phase_builds phase_cache phase_tests phase_figures

run_phase detect 60 || exit 1
if ! python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["gpu"] else 1)' "$STATE/detect.json" \
   && [ -z "${GPU_CHECK_DRY_RUN:-}" ]; then
  log "no CUDA GPU here: nothing to check"; exit 3
fi
run_phase install 90 || exit 1
export PYTHONPATH=/tmp/site:$PWD
export TORCH_EXTENSIONS_DIR=$PWD/.gpu_cache/torch_extensions
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("capability", ""))' "$STATE/detect.json")}
export TORCH_CUDA_ARCH_LIST PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# sources unpacked from the wheels are newer than a carried build: age them so ninja reuses the build
find /tmp/site \( -path '*nerfacc*' -o -path '*nvdiffrast*' -o -path '*tinycudann*' \) -exec touch -h -d '2001-01-01' {} + 2>/dev/null
run_phase builds 200
# a build that failed (or timed out) is deleted and disabled, so no later process pays for it again
disable=""
for name in nerfacc tinycudann nvdiffrast; do
  if ! python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get(sys.argv[2]) == "ok" else 1)' "$STATE/probes.json" "$name" 2>/dev/null; then
    disable="$disable,$name"
    [ "$name" = nerfacc ] && rm -rf "$TORCH_EXTENSIONS_DIR"/*nerfacc*
  fi
done
export DREAMFUSION_DISABLE=${disable#,}
echo "$DREAMFUSION_DISABLE" > "$STATE/disabled"
run_phase cache 30
run_phase tests 180
run_phase figures 90
exit 0
