"""The optimization loop: random cameras → shaded renders → SDS + regularizers → Adam.

One `Trainer` holds the scene, the guidance and the optimizer; `run()` steps until the configured
count, writing metrics every step, validation strips and checkpoints periodically. All randomness
flows from one seeded generator whose state is checkpointed, so a resumed CPU run ends in the same
state as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .cameras import make_cameras, sample_cameras
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .config import to_dict
from .field.nerf import normal_consistency_loss
from .render.renderer import RenderOutput
from .render.shading import sample_lights
from .run_config import RunConfig
from .scene import Scene, build_scene
from .utils.faults import fault_point
from .utils.images import normal_to_rgb, save_png
from .workspace import Workspace


class NonFiniteError(RuntimeError):
    """Too many steps in a row produced a non-finite loss or gradient."""


@dataclass
class StepResult:
    step: int
    metrics: dict[str, float]
    skipped: bool


def regularizers(out: RenderOutput, n_rays: int) -> dict[str, torch.Tensor]:
    """Unweighted regularizer terms of one render."""
    opacity = out.opacity.clamp(1e-5, 1 - 1e-5)
    terms = {
        "opacity": torch.sqrt(out.opacity.square() + 0.01).mean(),  # DreamFusion's opacity penalty
        "sparsity": out.opacity.mean(),
        "entropy": -(opacity * opacity.log() + (1 - opacity) * (1 - opacity).log()).mean(),
    }
    if out.sample_normals is not None:
        facing_away = (out.sample_normals * out.sample_dirs).sum(-1).clamp_min(0).square()
        terms["orientation"] = (out.weights.detach() * facing_away).sum() / n_rays
        if out.sample_predicted_normals is not None:
            terms["normal"] = normal_consistency_loss(out.weights, out.sample_predicted_normals, out.sample_normals)
    return terms


def _step_of(line: str) -> float:
    """The step of a metrics line; a line cut short by a kill counts as past every checkpoint."""
    try:
        return json.loads(line).get("step", math.inf)
    except (json.JSONDecodeError, AttributeError):
        return math.inf


class Trainer:
    def __init__(self, cfg: RunConfig, workspace: Workspace, device: torch.device, guidance: Callable | None = None):
        self.cfg, self.ws, self.device = cfg, workspace, device
        self.scene: Scene = build_scene(cfg, device=device, seed=cfg.seed)  # RunConfig has the scene sections
        self.guidance = guidance
        groups = self.scene.field.parameter_groups()
        t = cfg.train
        self.optimizer = torch.optim.Adam(
            [
                {"params": groups["encoding"], "lr": t.lr_encoding, "name": "encoding"},
                {"params": groups["network"] + groups["normal_head"], "lr": t.lr_network, "name": "network"},
                {"params": list(self.scene.background.parameters()), "lr": t.lr_background, "name": "background"},
            ],
            betas=(0.9, 0.99),
            eps=1e-15,
        )
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_in_a_row = 0

    # ---- checkpoints --------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "scene": self.scene.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "nonfinite_total": self.nonfinite_total,
            "config": to_dict(self.cfg),
        }

    def save(self) -> None:
        self._apply_schedules()  # the field's blob and active levels as of self.step travel with it
        state = self.state()
        save_checkpoint(self.ws.last_checkpoint, state)
        if self.step % self.cfg.train.checkpoint_every == 0:
            save_checkpoint(self.ws.checkpoints / f"step_{self.step:06d}.pt", state)

    def resume(self) -> None:
        state = load_checkpoint(self.ws.last_checkpoint, map_location=self.device)
        try:
            self.scene.load_state_dict(state["scene"])
            configured = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:  # the config's rates, e.g. lowered after a non-finite stop
                group["lr"] = configured[group["name"]]
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.step = int(state["step"])
            self.nonfinite_total = int(state.get("nonfinite_total", 0))
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"checkpoint {self.ws.last_checkpoint} does not match this config ({type(err).__name__}); "
                "start a new workspace or pass --overwrite"
            ) from None
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop metrics of steps after the checkpoint (they will be run again)."""
        path = self.ws.metrics_path
        if not path.is_file():
            return
        keep = [line for line in path.read_text(encoding="utf-8").splitlines() if _step_of(line) <= self.step]
        text = "".join(line + "\n" for line in keep)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    # ---- one step -------------------------------------------------------------------------------------
    def _shading(self) -> tuple[str, float, float]:
        t, light = self.cfg.train, self.cfg.light
        if self.step < t.ambient_only_steps:
            return "albedo", 1.0, 0.0
        u = torch.rand(2, generator=self.generator).tolist()
        if u[0] < t.lambertian_prob:
            return ("textureless" if u[1] < t.textureless_prob else "lambertian"), light.ambient, light.diffuse
        return "albedo", 1.0, 0.0

    def _apply_schedules(self) -> None:
        t, field = self.cfg.train, self.scene.field
        field.blob_scale = t.blob_scale(self.step)
        if t.progressive_levels > 0:
            field.active_levels = 1 + self.step // t.progressive_levels

    def train_step(self) -> StepResult:
        cfg, t = self.cfg, self.cfg.train
        start = time.perf_counter()
        self._apply_schedules()
        renderer = self.scene.renderer.train()
        occ = cfg.render.occupancy
        if occ.enabled and self.step % occ.update_every == 0:
            renderer.update_occupancy(self.step, self.generator)
        cams = sample_cameras(cfg.camera, t.batch_size, self.generator, device="cpu").to(self.device)
        lights = sample_lights(cfg.light, cams.position.cpu(), self.generator).to(self.device)
        shading, ambient, diffuse = self._shading()
        out = renderer(cams, t.resolution, t.resolution, shading=shading, light_positions=lights,
                       ambient=ambient, diffuse=diffuse, generator=self.generator)
        sds = self.guidance(out.rgb, cams, step=self.step, generator=self.generator)
        terms = regularizers(out, t.batch_size * t.resolution**2)
        weights = {"orientation": t.lambda_orientation(self.step), "opacity": t.lambda_opacity(self.step),
                   "sparsity": t.lambda_sparsity(self.step), "entropy": t.lambda_entropy(self.step),
                   "normal": t.lambda_normal(self.step)}
        loss = sds.loss + sum(weights[k] * v for k, v in terms.items() if weights.get(k, 0.0) > 0)
        self.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for g in self.optimizer.param_groups for p in g["params"])
        if finite:
            self.optimizer.step()
            self.nonfinite_in_a_row = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_total += 1
            self.nonfinite_in_a_row += 1
        self.step += 1
        metrics = {
            "step": self.step, "loss": loss.item() if finite else float("nan"), "sds": sds.loss.item(),
            "t": float(sds.t_frac.float().mean()) if torch.is_tensor(sds.t_frac) else float(sds.t_frac),
            "grad_norm": float(sds.grad_norm), "shading": shading, "opacity_mean": out.opacity.mean().item(),
            "samples": out.weights.numel(), "skipped_nonfinite": self.nonfinite_total,
            **{f"reg_{k}": v.item() for k, v in terms.items()},
            **{f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups},
            "seconds": time.perf_counter() - start,
        }
        if self.nonfinite_in_a_row >= t.max_nonfinite_in_a_row:
            raise NonFiniteError(
                f"{self.nonfinite_in_a_row} steps in a row gave a non-finite loss or gradient; "
                f"the last good checkpoint is {self.ws.last_checkpoint}. "
                "Lower the learning rates (train.lr_*) or guidance.guidance_scale and rerun with --resume."
            )
        return StepResult(self.step, metrics, not finite)

    # ---- validation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> Path:
        """A PNG strip of 4 views (azimuth 0/90/180/270): rgb, normals, opacity."""
        n = 4
        full = lambda v: torch.full((n,), float(v), device=self.device)  # noqa: E731
        dist = sum(self.cfg.camera.distance_range) / 2
        fovy = sum(self.cfg.camera.fovy_range) / 2
        cams = make_cameras(full(15.0), torch.arange(n, device=self.device) * 90.0, full(dist), full(fovy))
        renderer = self.scene.renderer.eval()
        res = self.cfg.train.resolution
        out = renderer(cams, res, res, shading="albedo")
        rows = [torch.cat(list(out.rgb), 1), torch.cat(list(normal_to_rgb(out.normal, out.opacity)), 1),
                torch.cat(list(out.opacity.expand(-1, -1, -1, 3)), 1)]
        path = self.ws.validation_dir / f"step_{self.step:06d}.png"
        save_png(path, torch.cat(rows, 0))
        renderer.train()
        return path

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self, on_step: Callable[[StepResult], None] | None = None, stop: Callable[[], bool] | None = None) -> None:
        t = self.cfg.train
        self.ws.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.ws.metrics_path, "a", encoding="utf-8") as metrics_file:
            while self.step < t.steps:
                result = self.train_step()
                metrics_file.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.metrics.items()}) + "\n")
                metrics_file.flush()
                fault_point("train_step")  # tests: a kill between a step and its checkpoint
                if on_step is not None:
                    on_step(result)
                if self.step % t.validation_every == 0 or self.step == t.steps:
                    self.validate()
                if self.step % t.checkpoint_every == 0 or self.step == t.steps:
                    self.save()
                if stop is not None and stop():
                    self.save()
                    return
