#!/usr/bin/env python
"""The JSON of benchmarks/gpu_check.sh, assembled from what its phases left in OUT.

Every phase writes plain files as it ends (OUT/state/phase_<name>: "status seconds"; detect.json,
probes.json, build_<name>, cache, disabled; OUT/cuda_tests.xml; OUT/gpu_figures.log), so this report
can be made at any moment: after each phase (--quiet: only OUT/gpu_check.json is written) and from
the script's EXIT trap, whatever ended it. It prints the JSON as its last line and writes the exit
code the script should end with to OUT/state/exit_code: 0 when every phase passed and every test
passed, 3 without a GPU, else 1 (also when the GPU could not even be detected).
Usage: python benchmarks/gpu_report.py OUT SECONDS SCRIPT_EXIT_CODE [--quiet]
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PHASES = ("detect", "install", "builds", "cache", "tests", "figures")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _json(path: Path):
    text = _read(path)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def tests_of(xml_path: Path) -> dict | None:
    """Counts and failed test names from pytest's junit XML (None before the tests ran)."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [c.get("name") for c in suite.iter("testcase")
                        if c.find("failure") is not None or c.find("error") is not None]
    return counts


def figures_of(log_path: Path) -> dict | None:
    """The last JSON line of gpu_figures.py's output."""
    text = _read(log_path) or ""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


def report(out: Path, seconds: int, script_code: int) -> tuple[dict, int]:
    state = out / "state"
    detect = _json(state / "detect.json") or {}
    # gpu: None when detection itself did not finish
    result: dict = {"gpu": detect.get("gpu"), **{k: v for k, v in detect.items() if k != "gpu"}, "seconds": seconds}
    phases = {}
    for name in PHASES:
        text = _read(state / f"phase_{name}")
        if text:
            status, _, rest = text.partition(" ")
            phases[name] = {"status": status, "seconds": int(rest.split()[0]) if rest.split() else 0}
    result["phases"] = phases
    result["probes"] = _json(state / "probes.json")
    result["builds"] = {name: _read(state / f"build_{name}") for name in ("nvdiffrast", "tinycudann")}
    result["disabled"] = _read(state / "disabled")
    result["cache"] = _read(state / "cache")
    result["tests"] = tests_of(out / "cuda_tests.xml")
    result["figures"] = figures_of(out / "gpu_figures.log")

    tests = result["tests"]
    ran = bool(tests) and tests["tests"] - tests["skipped"] > 0  # all skipped on a GPU machine is a failure too
    tests_ok = ran and tests["failures"] == 0 and tests["errors"] == 0
    every_phase = all(phases.get(name, {}).get("status") == "ok" for name in PHASES)
    if result["gpu"] is False:
        code = 3
    elif script_code == 0 and every_phase and tests_ok:
        code = 0
    else:
        code = 1
    result["ok"] = code == 0
    return result, code


def main(argv: list[str]) -> int:
    out, seconds, script_code = Path(argv[0]), int(argv[1]), int(argv[2])
    result, code = report(out, seconds, script_code)
    (out / "state").mkdir(parents=True, exist_ok=True)
    (out / "state" / "exit_code").write_text(str(code))
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    if "--quiet" not in argv:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
