#!/usr/bin/env python
"""The GPU figures of benchmarks/gpu_check.sh, measured in one process on a CUDA device.

1. SDS steps/s with the Stable Diffusion 2.1-base architecture (random weights, fp16): a 64x64
   render upsampled to 512x512 into the VAE, CFG batch of 2, backward into the render.
2. Hash-grid field forward+backward samples/s (16 levels, 2^19 table, as the real-model recipes):
   the PyTorch grid, and tinycudann's when it passes its probe, on the same points.
3. Wall time of a 1,000-step toy run (the default recipe, configs/toy-gaussians.yaml, with a tiny random prior standing in for the
   bundled one's weights when --prior is not given), export and video included.
Human-readable lines first; the last line is one JSON object of the figures.
Usage: python benchmarks/gpu_figures.py [--prior assets/toy_prior] [--toy-steps 1000]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dreamfusion.cameras import make_cameras  # noqa: E402
from dreamfusion.field.encoding import HashGridConfig, HashGridEncoding, TcnnHashGridEncoding  # noqa: E402
from dreamfusion.guidance.tiny import sd21_base_random  # noqa: E402
from dreamfusion.utils.capabilities import tinycudann_available  # noqa: E402


def cuda_median_ms(fn, runs: int, warmup: int = 3) -> float:
    times = []
    for i in range(warmup + runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def sds_figure(runs: int) -> dict:
    guidance = sd21_base_random("cuda")
    g = torch.Generator().manual_seed(0)
    one = lambda v: torch.tensor([v], device="cuda")  # noqa: E731
    cams = make_cameras(one(15.0), one(30.0), one(2.0), one(50.0))

    def step():
        rgb = torch.rand(1, 64, 64, 3, device="cuda", requires_grad=True)
        guidance(rgb, cams, generator=g).loss.backward()

    ms = cuda_median_ms(step, runs)
    return {"sds_sd21_base_fp16_ms": round(ms, 2), "sds_sd21_base_fp16_steps_per_s": round(1000 / ms, 2),
            "sds_peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def field_figures(n: int, runs: int) -> dict:
    cfg = HashGridConfig()  # 16 levels, 2^19, as configs/dreamfusion-*.yaml
    x = torch.rand(n, 3, device="cuda")
    out = {}
    encodings = {"torch": HashGridEncoding(cfg, seed=0).cuda()}
    if tinycudann_available():
        encodings["tcnn"] = TcnnHashGridEncoding(cfg, seed=0).cuda()
    for name, enc in encodings.items():
        def step(enc=enc):
            enc.zero_grad(set_to_none=True)
            enc(x).square().sum().backward()

        ms = cuda_median_ms(step, runs)
        out[f"field_{name}_samples_per_s"] = round(n / (ms / 1000))
    if "tcnn" in encodings:
        out["field_tcnn_speedup"] = round(out["field_tcnn_samples_per_s"] / out["field_torch_samples_per_s"], 2)
    return out


def toy_run_figure(steps: int, prior: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        if prior is None:
            from dreamfusion.guidance.tiny import save_tiny_pixel_model

            prior = str(save_tiny_pixel_model(Path(tmp) / "prior", sample_size=32, camera=True))
        cmd = [sys.executable, str(REPO / "scripts" / "dream.py"), "--prompt", "a red cube", "--device", "cuda", "--quiet",
               "--workspace", str(Path(tmp) / "ws"), "--steps", str(steps), f"guidance.model={prior}", "guidance.embedding_cache=null"]
        if importlib.util.find_spec("imageio_ffmpeg") is None:  # its wheel does not travel to the GPU machine
            cmd.append("export.video=false")
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        summary_path = Path(tmp) / "ws" / "run.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
    return {"toy_run_steps": steps, "toy_run_exit": result.returncode, "toy_run_wall_s": round(wall, 1),
            "toy_run_train_s": summary.get("train_seconds"), "toy_run_export_s": summary.get("export_seconds")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default=None, help="guidance model of the toy run (default: a tiny random one)")
    p.add_argument("--toy-steps", type=int, default=1000)
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        sys.exit(1)
    figures: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name, fn in (("sds", lambda: sds_figure(args.runs)), ("field", lambda: field_figures(2**20, args.runs)),
                     ("toy", lambda: toy_run_figure(args.toy_steps, args.prior))):
        try:
            part = fn()
        except Exception as err:  # noqa: BLE001 - one failed figure must not hide the others
            part = {f"{name}_error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
        print(f"{name}: {part}", flush=True)
        figures.update(part)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
