#!/usr/bin/env python
"""Where a training step of the default run spends its time, stage by stage.

    python benchmarks/profile_step.py [--prompt "a red cube"] [--config configs/toy.yaml] [--warmup 150]
        [--steps 30] [--threads 2]

A recipe (default: the default one, 3D Gaussians then the DMTet, on the bundled prior) in this
process: the coarse stage runs `--warmup` steps (past the ambient-only start, the NeRF's occupancy
warm-up and the Gaussians' first densifications), then `--steps` steps are timed; the fine DMTet
starts from the coarse result and is timed the same way. Each phase is timed
inclusively (a phase inside another counts in both) by wrapping the function that does it; the
backward pass is one phase. A few more steps then run under torch.profiler, whose heaviest
operators (forward and backward together, by self time) say what inside the phases costs.
Human-readable tables first; the last line is one JSON object (milliseconds a step, medians).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamfusion.guidance import make_guidance  # noqa: E402
from dreamfusion.run_config import load_run_config  # noqa: E402
from dreamfusion.stages import coarse_stage, fine_stage, stage_guidance  # noqa: E402
from dreamfusion.train import Trainer  # noqa: E402
from dreamfusion.workspace import Workspace  # noqa: E402


class _Timed:
    """A callable that adds its wall time to `totals[label]` and otherwise stands in for `original`
    (the trainer also reads attributes of what it calls, e.g. the guidance's sample_t)."""

    def __init__(self, original: Callable, label: str, totals: dict[str, float]) -> None:
        self._original, self._label, self._totals = original, label, totals

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._original(*args, **kwargs)
        finally:
            self._totals[self._label] += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        """Set on a class, it binds to instances as the method it replaces did."""
        return self if instance is None else types.MethodType(self, instance)


class PhaseTimer:
    """Inclusive wall time per named phase, per step: wraps functions in place and restores them."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self._patches: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        self._patches.append((owner, name, original))
        setattr(owner, name, _Timed(original, label, self.current))

    def end_step(self, total: float) -> None:
        self.current["step"] = total
        self.steps.append(dict(self.current))
        self.current.clear()

    def restore(self) -> None:
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches.clear()

    def medians_ms(self) -> dict[str, float]:
        labels = list(dict.fromkeys(k for s in self.steps for k in s))  # first-seen order
        return {k: round(1000 * statistics.median(s.get(k, 0.0) for s in self.steps), 2) for k in labels}


@contextlib.contextmanager
def phases(timer: PhaseTimer, targets: list[tuple[Any, str, str]]) -> Iterator[PhaseTimer]:
    for owner, name, label in targets:
        timer.wrap(owner, name, label)
    try:
        yield timer
    finally:
        timer.restore()


def coarse_targets(trainer: Trainer) -> list[tuple[Any, str, str]]:
    from dreamfusion.gaussians.scene import GaussianScene

    rep = trainer.rep
    if isinstance(rep, GaussianScene):
        return gaussian_targets(trainer)
    from dreamfusion.field import encoding, nerf
    from dreamfusion.render import renderer

    return [
        (rep, "prepare_step", "occupancy refresh"),
        (rep, "render", "render (forward)"),
        (renderer.VolumeRenderer, "_visible", "  sampling pre-pass (no grad)"),
        (nerf.NeRFField, "forward", "  field forward (+ analytic normals)"),
        (encoding.HashGridEncoding, "corner_indices_and_weights", "    hash-grid corners and weights"),  # points with a gradient
        (encoding.HashGridEncoding, "_corner_planes", "    hash-grid corners and weights"),  # ray samples
        (renderer, "compositing_weights", "  compositing weights"),
        (trainer, "guidance", "prior forward + SDS"),
        (rep, "regularizers", "regularizers"),
        (torch.Tensor, "backward", "backward"),
        (trainer.optimizer, "step", "optimizer step"),
    ]


def gaussian_targets(trainer: Trainer) -> list[tuple[Any, str, str]]:
    from dreamfusion.gaussians import scene, splat

    rep = trainer.rep
    return [
        (rep, "render", "render (forward)"),
        (scene, "project", "  projection (EWA)"),
        (scene, "rasterize", "  rasterize"),
        (splat, "pixel_pairs", "    (Gaussian, pixel) pairs"),
        (splat, "pair_alpha", "    pair alphas"),
        (trainer, "guidance", "prior forward + SDS"),
        (rep, "regularizers", "regularizers"),
        (torch.Tensor, "backward", "backward"),
        (trainer.optimizer, "step", "optimizer step"),
        (rep, "after_step", "densification statistics and rounds"),
    ]


def fine_targets(trainer: Trainer) -> list[tuple[Any, str, str]]:
    from dreamfusion.dmtet import scene as dmtet_scene

    rep = trainer.rep
    return [
        (rep, "render", "render (forward)"),
        (rep, "mesh", "  mesh (blur + marching tets)"),
        (dmtet_scene, "gaussian_blur", "    blur of the SDF and deformation"),
        (dmtet_scene, "marching_tets", "    marching tetrahedra"),
        (dmtet_scene, "render_mesh", "  rasterize + shade"),
        (rep, "albedo", "    texture field"),
        (trainer, "guidance", "prior forward + SDS"),
        (rep, "regularizers", "regularizers"),
        (torch.Tensor, "backward", "backward"),
        (trainer.optimizer, "step", "optimizer step"),
    ]


def timed_steps(trainer: Trainer, n: int, targets: Callable[[Trainer], list]) -> dict[str, float]:
    timer = PhaseTimer()
    with phases(timer, targets(trainer)):
        for _ in range(n):
            start = time.perf_counter()
            trainer.train_step()
            timer.end_step(time.perf_counter() - start)
    return timer.medians_ms()


def heaviest_operators(trainer: Trainer, n: int, top: int = 8) -> list[tuple[str, float]]:
    """The heaviest operators of n steps by self time (ms a step), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            trainer.train_step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [(r.key, round(r.self_cpu_time_total / 1000 / n, 2)) for r in rows]


def print_table(title: str, ms: dict[str, float], ops: list[tuple[str, float]]) -> None:
    step = ms.get("step", 0.0)
    print(f"\n{title}: median step {step:.1f} ms")
    for label in (k for k in ms if k != "step"):
        print(f"  {label:<44s} {ms[label]:8.1f} ms  {100 * ms[label] / step if step else 0:5.1f}%")
    print("  heaviest operators (self time, torch.profiler):")
    for name, t in ops:
        print(f"    {name:<42s} {t:8.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="a red cube")
    p.add_argument("--config", default=None, help="the recipe (default: the default one)")
    p.add_argument("--warmup", type=int, default=150, help="coarse steps before timing")
    p.add_argument("--steps", type=int, default=30, help="timed steps per stage")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], help="config overrides (key=value), e.g. for a recipe to compare")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["guidance.embedding_cache=null", "train.validation_every=100000", "fine.train.validation_every=100000", *args.set]
    cfg = load_run_config(args.config, overrides, {"prompt": args.prompt})
    device = torch.device("cpu")
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "prompt": args.prompt, "config": args.config, "overrides": args.set}
    with tempfile.TemporaryDirectory() as tmp:
        guidance = make_guidance(cfg.guidance, device)
        guidance.prepare(cfg.prompt)
        coarse = Trainer(coarse_stage(cfg, device), Workspace(Path(tmp) / "coarse"), device, guidance)
        for _ in range(args.warmup):
            coarse.train_step()
        out["coarse_ms"] = timed_steps(coarse, args.steps, coarse_targets)
        out["coarse_ops_ms"] = heaviest_operators(coarse, max(5, args.steps // 3))
        print_table(f"coarse {cfg.representation['type']} step", out["coarse_ms"], out["coarse_ops_ms"])
        start = time.perf_counter()
        fine = Trainer(fine_stage(cfg, device, coarse.rep), Workspace(Path(tmp) / "fine"), device,
                       stage_guidance(guidance, cfg, device))
        out["hand_over_s"] = round(time.perf_counter() - start, 2)
        for _ in range(5):
            fine.train_step()
        out["fine_ms"] = timed_steps(fine, args.steps, fine_targets)
        out["fine_ops_ms"] = heaviest_operators(fine, max(5, args.steps // 3))
        print_table("fine DMTet step", out["fine_ms"], out["fine_ops_ms"])
        print(f"\nhand-over (coarse {cfg.representation['type']} -> DMTet): {out['hand_over_s']} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
