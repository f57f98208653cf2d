"""Test-suite settings: the `cuda` and `browser` markers.

Tests marked `cuda` run the real GPU flows at small sizes (benchmarks/gpu_check.sh runs them on a
GPU machine); without a CUDA device they are skipped, saying why. Tests marked `browser` drive a
headless Chromium (tests/browser.py); without one they skip, saying why (.ci/run installs it).
DREAMFUSION_TEST_TIMEOUT=N fails any test that runs longer than N seconds (the GPU check sets it, so
one hung test cannot eat the machine's few minutes; no plugin needed on a bare GPU image).
"""
import os
import signal

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one; benchmarks/gpu_check.sh runs them)")
    config.addinivalue_line("markers", "browser: needs Chromium and ChromeDriver (skipped without them; .ci/run installs them)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    seconds = int(os.environ.get("DREAMFUSION_TEST_TIMEOUT", "0") or 0)
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        pytest.fail(f"timed out after {seconds} s (DREAMFUSION_TEST_TIMEOUT)", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
