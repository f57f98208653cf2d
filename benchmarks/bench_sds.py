"""Time one SDS step: render 64x64 -> resize -> (VAE encode) -> U-Net with CFG -> backward into the render.

* CPU: the tiny latent and pixel pipelines (dreamfusion.guidance.tiny), saved and loaded through
  `from_pretrained` like a real checkpoint. The latent one mirrors SD's shape at 1/4 scale: the
  render is upsampled to 128, encoded to 32x32 latents.
* CUDA (when present): a randomly initialised pipeline with Stable Diffusion 2.1-base's
  architecture in fp16 (865M-parameter U-Net, 84M VAE; render upsampled to 512, 64x64 latents),
  no download. Text embeddings are random: the text encoder is not part of a step.

With --rules, also the distillation rules' step on the bundled toy prior (CFG as each paper's,
batch 2 renders of 32x32, the coarse stage's), interleaved in one process, and each one's ratio to
SDS: the prior's share of a run's cost (VSD's online model trains each step; ISM inverts first).

Prints human-readable lines, then as the last line one JSON object of the figures.
Usage: python benchmarks/bench_sds.py [--runs 10] [--rules sds,csd,nfsd,ism,vsd]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dreamfusion.cameras import make_cameras
from dreamfusion.guidance import GuidanceConfig, make_guidance
from dreamfusion.guidance.tiny import save_tiny_latent_model, save_tiny_pixel_model, sd21_base_random


def time_steps(guidance, batch: int, runs: int, device: torch.device, warmup: int = 2, size: int = 64) -> list[float]:
    """Milliseconds of each timed SDS step (forward + backward into the render)."""
    g = torch.Generator().manual_seed(0)
    cameras = make_cameras(torch.full((batch,), 15.0), torch.linspace(-180, 180, batch + 1)[:-1],
                           torch.full((batch,), 2.0), torch.full((batch,), 50.0)).to(device)
    times = []
    for i in range(warmup + runs):
        rgb = torch.rand(batch, size, size, 3, device=device, requires_grad=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = guidance(rgb, cameras, step=i, generator=g)
        out.loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(1000.0 * (time.perf_counter() - start))
    return times


def rule_steps(rules: list[str], runs: int, rounds: int = 3) -> dict[str, float]:
    """Median ms of an SDS step per rule on the bundled toy prior, the rules interleaved round by round."""
    from dreamfusion.paths import data_dir

    cpu = torch.device("cpu")
    scale = {"sds": 4.0, "csd": 1.0}
    guidances = {}
    for rule in rules:
        cfg = GuidanceConfig(type="pixel", model=str(data_dir("assets") / "toy_prior"), embedding_cache=None, distillation=rule,
                             guidance_scale=scale.get(rule, 7.5))
        guidances[rule] = make_guidance(cfg, cpu)
        guidances[rule].prepare("a red cube")
    times: dict[str, list[float]] = {rule: [] for rule in rules}
    for _ in range(rounds):
        for rule in rules:
            times[rule] += time_steps(guidances[rule], 2, runs, cpu, size=32)
    return {rule: statistics.median(t) for rule, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rules", default=None, help="also time these distillation rules on the toy prior, e.g. sds,vsd")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    figures: dict[str, object] = {"batch": args.batch, "runs": args.runs, "cpu_threads": torch.get_num_threads()}

    with tempfile.TemporaryDirectory() as tmp:
        latent_dir = save_tiny_latent_model(Path(tmp) / "latent", sample_size=32, vae_blocks=(8, 16, 16))
        pixel_dir = save_tiny_pixel_model(Path(tmp) / "pixel", sample_size=64, camera=True)
        for kind, folder in (("latent", latent_dir), ("pixel", pixel_dir)):
            guidance = make_guidance(GuidanceConfig(type=kind, model=str(folder), embedding_cache=None), cpu)
            guidance.prepare("a small wooden chair")
            times = time_steps(guidance, args.batch, args.runs, cpu)
            median = statistics.median(times)
            figures[f"cpu_tiny_{kind}_ms"] = round(median, 2)
            print(f"CPU tiny {kind:6s} pipeline (render 64 -> {guidance.resolution}): {median:8.2f} ms/step "
                  f"(median of {args.runs}, min {min(times):.2f})")

    if args.rules:
        rules = [r.strip() for r in args.rules.split(",")]
        medians = rule_steps(rules, args.runs)
        base = medians.get("sds")
        for rule, ms in medians.items():
            ratio = f", {ms / base:.2f}x SDS" if base else ""
            print(f"CPU toy prior, {rule:4s}: {ms:8.2f} ms/step (median, interleaved){ratio}")
        figures["toy_prior_rule_ms"] = {rule: round(ms, 2) for rule, ms in medians.items()}
        if base:
            figures["toy_prior_rule_ratio_to_sds"] = {rule: round(ms / base, 2) for rule, ms in medians.items()}

    figures.update(gpu_name=None, gpu_sd21_base_fp16_ms=None, gpu_peak_memory_gb=None)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        guidance = sd21_base_random(device)
        torch.cuda.reset_peak_memory_stats(device)
        times = time_steps(guidance, args.batch, args.runs, device, warmup=3)
        median = statistics.median(times)
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        figures.update(gpu_name=torch.cuda.get_device_name(device), gpu_sd21_base_fp16_ms=round(median, 2),
                       gpu_peak_memory_gb=round(peak, 2))
        print(f"GPU {figures['gpu_name']}: SD 2.1-base architecture fp16 (render 64 -> 512): "
              f"{median:8.2f} ms/step, peak memory {peak:.2f} GiB")
    else:
        print("GPU: no CUDA device, SD 2.1-base figure skipped")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
