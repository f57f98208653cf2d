"""3D Gaussians as a Representation: what the trainer, the stages and the exporters call.

Rendering: each Gaussian is shaded once per camera (albedo, lambertian or textureless, with its
shortest axis turned toward the camera as its normal), then splatted with its albedo, normal and
distance as extra channels, over the scene's background. After each step the view-space gradient
of the screen means is accumulated, and every `densify_every` steps the Gaussians are cloned,
split and pruned (densify.py), swapping the parameters in the optimizer. The whole state, the
gradient statistics included, is the checkpoint, so a resumed run matches an uninterrupted one.
The Gaussians live in the run's box (field.bound); set_precision is accepted and ignored (the
splatting stays in fp32: its transmittance is a running product).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..cameras import Cameras, generate_rays
from ..render.background import Background
from ..render.colour_gate import AlbedoGrad
from ..render.shading import shade
from ..representation import RenderOutput, Representation
from ..utils.optimizer_surgery import replace_rows
from .config import GaussianConfig
from .densify import densify_and_prune
from .gsplat_backend import gsplat_available, render_gsplat
from .model import FIELDS, GaussianParams, covariances, random_ball, shortest_axes, surfels
from .splat import project, rasterize
from .volume import GaussianVolume

if TYPE_CHECKING:
    from ..run_config import RunConfig, TrainConfig

GROUPS = {"means": "position", "log_scales": "scale", "quats": "rotation", "opacity_logits": "opacity", "albedo_logits": "albedo"}


def choose_backend(name: str, device: torch.device) -> str:
    """'gsplat' on CUDA when it passes its probe (or when asked, else a ConfigError), 'torch' otherwise."""
    from ..config import ConfigError

    if name == "torch" or (name == "auto" and device.type != "cuda"):
        return "torch"
    if gsplat_available():
        return "gsplat"
    if name == "gsplat":
        from ..utils.capabilities import failure_reason

        raise ConfigError(f"representation.backend 'gsplat' cannot be used: {failure_reason('gsplat') or 'it needs a CUDA device'}; "
                          "use 'torch' or 'auto'")
    return "torch"


class GaussianScene(nn.Module, Representation):
    options_type = GaussianConfig

    def __init__(self, cfg: GaussianConfig, params: GaussianParams, background: Background, bound: float,
                 loop: "TrainConfig | None" = None, seed: int = 0, device: torch.device | str = "cpu"):
        nn.Module.__init__(self)
        self.cfg, self.loop, self.seed, self._bound = cfg, loop, int(seed), float(bound)
        self.device_ = torch.device(device)
        for name, value in params.tensors().items():
            setattr(self, name, nn.Parameter(value.to(self.device_).float().contiguous()))
        self.register_buffer("grad_sum", torch.zeros(params.count, device=self.device_))  # view-space gradient norms
        self.register_buffer("grad_count", torch.zeros(params.count, device=self.device_))  # renders that saw each one
        self.background = background
        self.backend = choose_backend(cfg.backend, self.device_)
        self.last_round: dict[str, int] = {}
        self._volume: tuple[torch.Tensor, GaussianVolume] | None = None  # (the parameters it was built of, flat; it)

    # ---- construction ----------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: "RunConfig", device: torch.device | str) -> "GaussianScene":
        """DreamGaussian's start: random points in a ball, small, faint and alike (init_albedo)."""
        _, opts = cfg.representation_options()
        gen = torch.Generator().manual_seed(cfg.seed)
        params = random_ball(opts.num_points, opts.init_radius, opts.init_scale, opts.init_opacity, opts.init_albedo, gen, device)
        return cls(opts, params, Background(cfg.background).to(device), cfg.field.bound, cfg.train, cfg.seed, device)

    @classmethod
    def from_surface(cls, cfg: "RunConfig", points: torch.Tensor, normals: torch.Tensor, albedo: torch.Tensor,
                     device: torch.device | str) -> "GaussianScene":
        """Surfels on a given surface (the fixed point's true object): representation.max_gaussians
        of the points (the first ones, an even subset), opaque, flat along the normals."""
        _, opts = cfg.representation_options()
        k = min(opts.max_gaussians, points.shape[0])
        params = surfels(points[:k], normals[:k], albedo[:k])
        return cls(opts, params, Background(cfg.background).to(device), cfg.field.bound, cfg.train, cfg.seed, device)

    @property
    def bound(self) -> float:
        return self._bound

    @property
    def count(self) -> int:
        return self.means.shape[0]

    # ---- training -----------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        c = self.cfg
        lr = {"position": c.lr_position, "scale": c.lr_scale, "rotation": c.lr_rotation, "opacity": c.lr_opacity, "albedo": c.lr_albedo}
        groups = [{"params": [getattr(self, name)], "lr": lr[group], "name": group} for name, group in GROUPS.items()]
        lr_background = self.loop.lr_background if self.loop is not None else 1e-3
        return groups + [{"params": list(self.background.parameters()), "lr": lr_background, "name": "background"}]

    def render(self, cameras: Cameras, height: int, width: int, shading: str = "albedo",
               light_positions: torch.Tensor | None = None, ambient: float = 0.1, diffuse: float = 0.9,
               generator: torch.Generator | None = None, albedo_grad: AlbedoGrad = True) -> RenderOutput:
        B, N = cameras.batch_size, self.count
        cams = cameras.to(self.device_)
        opacity = torch.sigmoid(self.opacity_logits)
        albedo = torch.sigmoid(self.albedo_logits).expand(B, N, 3)
        if albedo_grad is not True:  # per image: the albedo as a constant where the gate is off
            gate = torch.as_tensor(albedo_grad, device=self.device_).reshape(-1, 1, 1).expand(B, 1, 1)
            albedo = torch.where(gate, albedo, albedo.detach())
        to_camera = cams.position[:, None] - self.means[None]  # (B, N, 3)
        axis = shortest_axes(self.log_scales, self.quats)[None].expand(B, N, 3)
        normal = torch.where((axis * to_camera).sum(-1, keepdim=True) < 0, -axis, axis)
        lights = (light_positions if light_positions is not None else cams.position).to(self.means)
        shaded = shade(shading, albedo.reshape(-1, 3), normal.reshape(-1, 3), self.means.expand(B, N, 3).reshape(-1, 3),
                       lights[:, None].expand(B, N, 3).reshape(-1, 3), ambient, diffuse).view(B, N, 3)
        features = torch.cat([shaded, albedo, normal, to_camera.norm(dim=-1, keepdim=True)], -1)  # (B, N, 10)
        if self.backend == "gsplat":
            image, alpha, means2d, radii = render_gsplat(self.means, self.quats, self.log_scales, opacity, features, cams,
                                                         height, width, self.cfg.near, self.cfg.eps2d)
        else:
            proj = project(self.means, covariances(self.log_scales, self.quats), cams, height, width, self.cfg.near, self.cfg.eps2d,
                           opacity)
            means2d, radii = proj.means2d, proj.radii
            image, alpha = rasterize(proj, opacity, features, height, width)
        if means2d.requires_grad:
            means2d.retain_grad()  # densification reads its gradient
        _, dirs = generate_rays(cams, height, width)
        bg = self.background(dirs, generator).to(image.dtype)
        rgb = image[..., :3] + (1.0 - alpha) * bg
        return RenderOutput(rgb=rgb, opacity=alpha, depth=image[..., 9:10], normal=image[..., 6:9], albedo=image[..., 3:6],
                            extras={"means2d": means2d, "radii": radii})

    def regularizers(self, out: RenderOutput) -> dict[str, torch.Tensor]:
        from ..scene import nerf_regularizers  # the opacity terms of an image, shared with the NeRF

        return nerf_regularizers(out)

    @torch.no_grad()
    def after_step(self, out: RenderOutput, optimizer: torch.optim.Optimizer, step: int) -> None:
        c = self.cfg
        means2d = out.extras.get("means2d")
        if means2d is None or means2d.grad is None or step > c.densify_until:
            return
        height, width = out.rgb.shape[1:3]
        seen = (out.extras["radii"] > 0).float()  # (B, N)
        ndc = means2d.grad.norm(dim=-1) * 0.5 * max(height, width)  # 3DGS's gradient of the NDC means
        self.grad_sum += (ndc * seen).sum(0)
        self.grad_count += seen.sum(0)
        if step >= c.densify_from and step % c.densify_every == 0:
            self.densify(optimizer, step)

    @torch.no_grad()
    def densify(self, optimizer: torch.optim.Optimizer | None, step: int) -> dict[str, int]:
        """One round of clone / split / prune; the optimizer's parameters and moments follow."""
        grad = self.grad_sum / self.grad_count.clamp_min(1.0)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)  # the same draws on resume
        old = {name: getattr(self, name) for name in FIELDS}
        new, source, counts = densify_and_prune(old, grad, self.cfg, 2 * self.bound, gen)
        for name in FIELDS:
            param = nn.Parameter(new[name].contiguous())
            if optimizer is not None:
                replace_rows(optimizer, old[name], param, source)
            setattr(self, name, param)
        self.grad_sum = torch.zeros(self.count, device=self.device_)
        self.grad_count = torch.zeros(self.count, device=self.device_)
        self.last_round = counts
        return counts

    def metrics(self) -> dict[str, float]:
        return {"gaussians": self.count}

    # ---- state and export -------------------------------------------------------------------------------
    def load_state_dict(self, state: dict[str, Any], strict: bool = True):
        """Resizes the parameters to the checkpoint's count first (it changes with densification)."""
        n = state["means"].shape[0]
        for name in FIELDS:
            setattr(self, name, nn.Parameter(torch.empty_like(state[name], device=self.device_)))
        self.grad_sum = torch.zeros(n, device=self.device_)
        self.grad_count = torch.zeros(n, device=self.device_)
        return nn.Module.load_state_dict(self, state, strict)

    def volume(self) -> GaussianVolume:
        """The density grid, built once per state of the parameters: a run's export and its hand-over
        to the DMTet read the same one (a 128^3 grid of 5,000 Gaussians takes about a second). The
        state is compared by value (70,000 numbers): fused Adam changes parameters in place without
        bumping their version counters."""
        state = torch.cat([getattr(self, name).detach().reshape(-1) for name in FIELDS])
        if self._volume is not None and torch.equal(self._volume[0], state):
            return self._volume[1]
        with torch.no_grad():
            volume = GaussianVolume(self.means, covariances(self.log_scales, self.quats), self.log_scales,
                                    torch.sigmoid(self.opacity_logits), torch.sigmoid(self.albedo_logits), self.bound,
                                    self.cfg.volume_resolution)
        self._volume = (state, volume)
        return volume

    def export_mesh(self, out_dir: str | Path, cfg: Any, progress: bool = True) -> Any:
        """DreamGaussian's extraction: the density on a grid, marching cubes, cleanup, UV atlas, baked texture."""
        from ..export import export_mesh

        return export_mesh(self.volume(), out_dir, cfg, bound=self.bound, progress=progress)
