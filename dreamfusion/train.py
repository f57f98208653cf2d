"""The optimization loop of a stage: random cameras → shaded renders → SDS + regularizers → Adam.

A `Stage` bundles what one stage trains (a representation.Representation: the coarse NeRF, the
fine DMTet) with its loop settings and camera and light distributions; `Trainer` holds a stage,
the guidance and the optimizer, and `run()` steps until the configured count, writing metrics every
step, validation strips and checkpoints periodically. The loop never looks inside the
representation. All randomness flows from one seeded generator whose state is checkpointed, so a
resumed CPU run ends in the same state as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .cameras import CameraConfig, make_cameras, sample_cameras
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .config import ConfigError
from .render.colour_gate import AlbedoGrad, scored_below
from .render.shading import LightConfig, sample_lights
from .representation import Representation
from .run_config import LoopConfig
from .utils import random
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


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """() bool tensor: every entry of every tensor is finite. One reduction each, no host sync."""
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def match_state_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Reshape optimizer moments saved for a parameter of another layout but the same size (a hash
    table saved flat by tinycudann, resumed on the PyTorch grid, or back). Moments of another size
    raise ValueError: Adam would not check, and a representation that takes its size from the
    checkpoint (3D Gaussians) must not resume with another's moments."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                    if value.numel() != p.numel():
                        raise ValueError(f"optimizer {key} of shape {tuple(value.shape)} for a parameter of shape {tuple(p.shape)}")
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


@dataclass
class Stage:
    """One stage of a run: what it optimizes, how long and at what size, from which cameras."""

    name: str  # "coarse" or "fine"
    representation: Representation
    loop: LoopConfig  # also holds the stage's regularizer weights, lambda_<term> schedules
    camera: CameraConfig
    light: LightConfig
    seed: int
    config: dict[str, Any]  # the run's resolved config, saved in each checkpoint


class Trainer:
    def __init__(self, stage: Stage, workspace: Workspace, device: torch.device, guidance: Callable | None = None):
        self.stage, self.ws, self.device = stage, workspace, torch.device(device)
        self.rep = stage.representation
        self.guidance = guidance
        self.optimizer = self._make_optimizer()
        self.base_lr = {g["name"]: g["lr"] for g in self.optimizer.param_groups}  # the config's rates
        self.generator = torch.Generator(device="cpu").manual_seed(stage.seed)
        autocast_dtype, needs_scaler = field_autocast(stage.loop.field_precision, self.device)
        self.rep.set_precision(autocast_dtype)
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=2.0**12) if needs_scaler else None
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_in_a_row = 0

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # fused: one kernel for every parameter (the same Adam), 4x faster than the per-tensor loop on CPU
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(self.rep.parameter_groups(), betas=(0.9, 0.99), eps=1e-15, fused=fused)

    @property
    def scene(self) -> Representation:
        """The representation being trained (the name predates the fine stage)."""
        return self.rep

    # ---- checkpoints --------------------------------------------------------------------------------
    def state(self) -> dict:
        state = {
            "scene": self.rep.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "nonfinite_total": self.nonfinite_total,
            "config": self.stage.config,
        }
        if self.device.type == "cuda":  # nerfacc's stratified sampling draws from the global CUDA generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        guidance_state = self._guidance_state()
        if guidance_state:  # VSD's online model: trained alongside the representation
            state["guidance"] = guidance_state
        return state

    def _guidance_state(self) -> dict:
        get = getattr(self.guidance, "state_dict", None)
        return get() if get is not None else {}

    def save(self) -> None:
        self.rep.set_step(self.step)  # schedules as of self.step (e.g. the NeRF's blob) travel with the weights
        state = self.state()
        save_checkpoint(self.ws.last_checkpoint, state)
        if self.step % self.stage.loop.checkpoint_every == 0:
            save_checkpoint(self.ws.checkpoints / f"step_{self.step:06d}.pt", state)

    def resume(self) -> None:
        # Loaded on the CPU: RNG states must stay CPU tensors; modules and the optimizer copy the
        # rest onto their own device, and the layout is the same for every backend (tinycudann,
        # nerfacc or PyTorch), so a run may resume on another machine.
        state = load_checkpoint(self.ws.last_checkpoint, map_location="cpu")
        try:
            self.rep.load_state_dict(state["scene"])
            # the representation may hold other tensors now (3D Gaussians: as many as when saved)
            self.optimizer = self._make_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])
            match_state_shapes(self.optimizer)
            for group in self.optimizer.param_groups:  # the config's rates, e.g. lowered after a non-finite stop
                group["lr"] = self.base_lr[group["name"]]
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            if self.scaler is not None and "grad_scaler" in state:
                self.scaler.load_state_dict(state["grad_scaler"])
            if self._guidance_state():
                self.guidance.load_state_dict(state.get("guidance", {}))
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
        t, light = self.stage.loop, self.stage.light
        if self.step < t.ambient_only_steps:
            return "albedo", 1.0, 0.0
        u = random.rand((2,), self.generator).tolist()  # the CPU generator: no device sync
        if u[0] < t.lambertian_prob:
            return ("textureless" if u[1] < t.textureless_prob else "lambertian"), light.ambient, light.diffuse
        return "albedo", 1.0, 0.0

    def _colour_gate(self, shading: str) -> tuple[torch.Tensor | None, AlbedoGrad]:
        """(the step's SDS timesteps if drawn here, else None; which renders teach colour). Lit renders
        teach it only with lit_colour_gradient; with colour_t_max, only the renders scored at t below it."""
        t = self.stage.loop
        teach, t_max = shading != "lambertian" or t.lit_colour_gradient, t.colour_t_max(self.step)
        if not teach or t_max >= 1.0:
            return None, teach
        timesteps = self.guidance.sample_t(t.batch_size, self.step, self.generator)  # (B,) long
        return timesteps, scored_below(timesteps, t_max, self.guidance.num_train_timesteps)

    def train_step(self) -> StepResult:
        t = self.stage.loop
        start = time.perf_counter()
        self.rep.prepare_step(self.step, self.generator)
        scales, decay = self.rep.learning_rate_scales(self.step), t.lr_scale(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr[group["name"]] * scales.get(group["name"], 1.0) * decay
        cams = sample_cameras(self.stage.camera, t.batch_size, self.generator, device="cpu").to(self.device)
        lights = sample_lights(self.stage.light, cams.position.cpu(), self.generator).to(self.device)
        shading, ambient, diffuse = self._shading()
        timesteps, albedo_grad = self._colour_gate(shading)
        out = self.rep.render(cams, t.resolution, t.resolution, shading=shading, light_positions=lights,
                              ambient=ambient, diffuse=diffuse, generator=self.generator, albedo_grad=albedo_grad)
        factor = t.guidance_scale_factor(self.step)
        boost = {} if factor == 1.0 else {"scale": self.guidance.cfg.scale * factor}
        sds = self.guidance(out.rgb.float(), cams, step=self.step, generator=self.generator, t=timesteps, **boost)
        terms = self.rep.regularizers(out)
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
            self.rep.after_step(out, self.optimizer, self.step + 1)  # densify, prune: may change the parameters
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
            **({"samples": out.weights.numel()} if out.weights is not None else {}), "skipped_nonfinite": self.nonfinite_total,
            **{f"reg_{k}": v for k, v in zip(terms, scalars[6:])},
            **{f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups},
            **self.rep.metrics(),
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
        dist = sum(self.stage.camera.distance_range) / 2
        fovy = sum(self.stage.camera.fovy_range) / 2
        cams = make_cameras(full(15.0), torch.arange(n, device=self.device) * 90.0, full(dist), full(fovy))
        res = self.stage.loop.resolution
        out = self.rep.eval().render(cams, res, res, shading="albedo")
        rows = [torch.cat(list(out.rgb), 1), torch.cat(list(normal_to_rgb(out.normal, out.opacity)), 1),
                torch.cat(list(out.opacity.expand(-1, -1, -1, 3)), 1)]
        path = self.ws.validation_dir / f"step_{self.step:06d}.png"
        save_png(path, torch.cat(rows, 0))
        self.rep.train()
        return path

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self, on_step: Callable[[StepResult], None] | None = None, stop: Callable[[], bool] | None = None) -> None:
        t = self.stage.loop
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
