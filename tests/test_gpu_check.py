"""benchmarks/gpu_check.sh cannot lose its result: without a GPU it says so at once, a hung phase
still ends in the JSON before the script's own time limit, and the report's verdict is strict."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_report  # noqa: E402


def run_check(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float, dict]:
    start = time.time()
    result = subprocess.run(["bash", str(SCRIPT)], env={**os.environ, "OUT": str(tmp_path / "out"), **env},
                            capture_output=True, text=True, timeout=120)
    last = result.stdout.strip().splitlines()[-1]
    return result, time.time() - start, json.loads(last)


def test_the_script_is_executable_in_git():
    mode = subprocess.run(["git", "ls-files", "-s", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True, text=True).stdout
    assert mode.startswith("100755"), mode


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_without_a_gpu_it_prints_its_json_at_once_and_fails(tmp_path):
    result, seconds, data = run_check(tmp_path)
    assert result.returncode == 3, result.stderr[-2000:]
    assert data["gpu"] is False and data["phases"]["detect"]["status"] == "ok" and data["ok"] is False
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == data
    assert seconds < 60


def test_a_hung_phase_still_ends_in_the_json_before_the_time_limit(tmp_path):
    result, seconds, data = run_check(tmp_path, GPU_CHECK_DRY_RUN="1", GPU_CHECK_HANG="install", GPU_CHECK_BUDGET="25")
    assert result.returncode != 0
    assert data["phases"]["install"]["status"] == "timeout" and data["ok"] is False
    assert "tests" not in data["phases"]  # nothing ran after the hang
    assert seconds < 25, seconds


def _fake_out(tmp: Path, failures: int = 0, phase_status: str = "ok") -> Path:
    state = tmp / "state"
    state.mkdir(parents=True)
    (state / "detect.json").write_text(json.dumps({"gpu": True, "device": "H100", "torch": "2.11"}))
    for name in gpu_report.PHASES:
        (state / f"phase_{name}").write_text(f"{phase_status if name == 'figures' else 'ok'} 12")
    (state / "probes.json").write_text(json.dumps({"nerfacc": "ok", "tinycudann": "tinycudann is not installed", "nvdiffrast": "ok"}))
    (state / "build_nvdiffrast").write_text("built")
    (state / "disabled").write_text("tinycudann")
    case = '<testcase name="test_a"/>' + '<testcase name="test_b"><failure message="x"/></testcase>' * failures
    (tmp / "cuda_tests.xml").write_text(
        f'<testsuites><testsuite tests="{1 + failures}" failures="{failures}" errors="0" skipped="0">{case}</testsuite></testsuites>')
    (tmp / "gpu_figures.log").write_text('probe line\n{"sds_sd21_base_fp16_ms": 80.5}\n')
    return tmp


def test_the_report_passes_only_when_every_phase_and_test_did(tmp_path):
    data, code = gpu_report.report(_fake_out(tmp_path / "good"), 300, 0)
    assert code == 0 and data["ok"] and data["tests"]["tests"] == 1 and data["figures"] == {"sds_sd21_base_fp16_ms": 80.5}
    assert data["probes"]["nerfacc"] == "ok" and data["builds"]["nvdiffrast"] == "built" and data["disabled"] == "tinycudann"
    data, code = gpu_report.report(_fake_out(tmp_path / "failing", failures=1), 300, 0)
    assert code == 1 and data["tests"]["failed"] == ["test_b"]
    assert gpu_report.report(_fake_out(tmp_path / "timeout", phase_status="timeout"), 300, 0)[1] == 1
    assert gpu_report.report(_fake_out(tmp_path / "killed"), 300, 130)[1] == 1
    skipped = _fake_out(tmp_path / "all-skipped")
    (skipped / "cuda_tests.xml").write_text('<testsuite tests="3" failures="0" errors="0" skipped="3"></testsuite>')
    assert gpu_report.report(skipped, 300, 0)[1] == 1  # on a GPU machine, every test skipped is a failure
