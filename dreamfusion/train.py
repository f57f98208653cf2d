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
from .config import ConfigError, to_dict
from .field.nerf import normal_consistency_loss
from .render.renderer import RenderOutput
from .render.shading import sample_lights
from .run_config import RunConfig
from .scene import Scene, build_scene
from .utils.faults import fault_point
from .utils import random
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
    """Unweighted regularizer terms of one render, keyed like TrainConfig's lambda_<key>."""
    opacity = out.opacity.float()
    clamped = opacity.clamp(1e-5, 1 - 1e-5)
    terms = {
        "opacity_dreamfusion": torch.sqrt(opacity.square() + 0.01).mean(),
        "opacity_mean": opacity.mean(),
        "opacity_entropy": -(clamped * clamped.log() + (1 - clamped) * (1 - clamped).log()).mean(),
    }
    if out.sample_normals is not None:
        facing_away = (out.sample_normals * out.sample_dirs).sum(-1).clamp_min(0).square()
        terms["orientation"] = (out.weights.detach() * facing_away).sum() / n_rays
        if out.sample_predicted_normals is not None:
            terms["normal"] = normal_consistency_loss(out.weights, out.sample_predicted_normals, out.sample_normals)
    return terms


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """() bool tensor: every entry of every tensor is finite. One reduction each, no host sync."""
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def match_state_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Reshape optimizer moments saved for a parameter of another layout but the same size (a hash
    table saved flat by tinycudann, resumed on the PyTorch grid, or back)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape and value.numel() == p.numel():
                    optimizer.state[p][key] = value.reshape(p.shape)


def field_autocast(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a gradient scaler is needed) for train.field_precision."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return None, False
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.field_precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    return (torch.bfloat16, False) if precision == "bf16" else (torch.float16, True)


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
        self.autocast_dtype, needs_scaler = field_autocast(t.field_precision, torch.device(device))
        self.scaler = torch.amp.GradScaler(torch.device(device).type, init_scale=2.0**12) if needs_scaler else None
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_in_a_row = 0

    # ---- checkpoints --------------------------------------------------------------------------------
    def state(self) -> dict:
        state = {
            "scene": self.scene.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "nonfinite_total": self.nonfinite_total,
            "config": to_dict(self.cfg),
        }
        if self.device.type == "cuda":  # nerfacc's stratified sampling draws from the global CUDA generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def save(self) -> None:
        self._apply_schedules()  # the field's blob and active levels as of self.step travel with it
        state = self.state()
        save_checkpoint(self.ws.last_checkpoint, state)
        if self.step % self.cfg.train.checkpoint_every == 0:
            save_checkpoint(self.ws.checkpoints / f"step_{self.step:06d}.pt", state)

    def resume(self) -> None:
        # Loaded on the CPU: RNG states must stay CPU tensors; modules and the optimizer copy the
        # rest onto their own device, and the layout is the same for every backend (tinycudann,
        # nerfacc or PyTorch), so a run may resume on another machine.
        state = load_checkpoint(self.ws.last_checkpoint, map_location="cpu")
        try:
            self.scene.load_state_dict(state["scene"])
            configured = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
            self.optimizer.load_state_dict(state["optimizer"])
            match_state_shapes(self.optimizer)
            for group in self.optimizer.param_groups:  # the config's rates, e.g. lowered after a non-finite stop
                group["lr"] = configured[group["name"]]
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            if self.scaler is not None and "grad_scaler" in state:
                self.scaler.load_state_dict(state["grad_scaler"])
            self.step = int(state["step"])
            self.nonfinite_total = int(state.get("nonfinite_total", 0))
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"checkpoint {self.ws.last_checkpoint} does not match this config ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:160] if str(err) else ''}); start a new workspace or pass --overwrite"
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
        u = random.rand((2,), self.generator).tolist()  # the CPU generator: no device sync
        if u[0] < t.lambertian_prob:
            return ("textureless" if u[1] < t.textureless_prob else "lambertian"), light.ambient, light.diffuse
        return "albedo", 1.0, 0.0

    def _apply_schedules(self) -> None:
        t, field = self.cfg.train, self.scene.field
        field.blob_scale = t.blob_scale(self.step)
        field.active_levels = t.active_levels(self.step, self.cfg.field.encoding.n_levels)

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
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            out = renderer(cams, t.resolution, t.resolution, shading=shading, light_positions=lights,
                           ambient=ambient, diffuse=diffuse, generator=self.generator)
        sds = self.guidance(out.rgb.float(), cams, step=self.step, generator=self.generator)
        terms = regularizers(out, t.batch_size * t.resolution**2)
        weights = {k: getattr(t, f"lambda_{k}")(self.step) for k in terms}
        loss = sds.loss + sum(weights[k] * v.float() for k, v in terms.items() if weights[k] > 0)
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()  # a non-finite loss gives non-finite grads
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        # Everything the step reports, in one tensor: a single host sync per step (GPU friendly).
        scalars = torch.stack([all_finite([loss, *grads]).float(), loss.detach().float(), sds.loss.detach().float(),
                               sds.t_frac.float().mean(), torch.as_tensor(sds.grad_norm).float(),
                               out.opacity.detach().float().mean(), *(v.detach().float() for v in terms.values())]).tolist()
        finite = scalars[0] == 1.0
        if finite:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            self.nonfinite_in_a_row = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_total += 1
            self.nonfinite_in_a_row += 1
        if self.scaler is not None:
            self.scaler.update()
        self.step += 1
        metrics = {
            "step": self.step, "loss": scalars[1] if finite else float("nan"), "sds": scalars[2], "t": scalars[3],
            "grad_norm": scalars[4], "shading": shading, "opacity_mean": scalars[5],
            "samples": out.weights.numel(), "skipped_nonfinite": self.nonfinite_total,
            **{f"reg_{k}": v for k, v in zip(terms, scalars[6:])},
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
