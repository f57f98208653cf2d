"""The representation seam: a representation written here, in the test, trains through the real
Trainer with the bundled prior, checkpoints, reloads through the registry and exports, with no
change anywhere in the package but one registry entry (added by the test)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import trimesh

from dreamfusion.cameras import Cameras, generate_rays
from dreamfusion.representation import RenderOutput, Representation
from dreamfusion.render.shading import shade


class ColouredSphere(torch.nn.Module, Representation):
    """A sphere at the origin with a radius and one colour, rendered with a soft silhouette."""

    bound = 1.0

    def __init__(self, radius: float = 0.3, colour: float = 0.5):
        torch.nn.Module.__init__(self)
        self.log_radius = torch.nn.Parameter(torch.tensor(radius).log())
        self.colour_logits = torch.nn.Parameter(torch.full((3,), colour).logit())

    @classmethod
    def build(cls, cfg, device) -> "ColouredSphere":
        return cls().to(device)

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.log_radius], "lr": 0.01, "name": "radius"},
                {"params": [self.colour_logits], "lr": 0.05, "name": "colour"}]

    def render(self, cameras: Cameras, height: int, width: int, shading: str = "albedo", light_positions=None,
               ambient: float = 0.1, diffuse: float = 0.9, generator=None, albedo_grad=True) -> RenderOutput:
        origins, dirs = generate_rays(cameras, height, width)  # (B, H, W, 3)
        t = -(origins * dirs).sum(-1, keepdim=True)  # closest approach to the centre
        closest = origins + t * dirs
        radius = self.log_radius.exp()
        miss = closest.norm(dim=-1, keepdim=True)
        opacity = torch.sigmoid((radius - miss) / 0.02) * (t > 0)
        depth = t - (radius**2 - miss.clamp(max=radius) ** 2).clamp_min(1e-8).sqrt()
        point = origins + depth * dirs
        normal = torch.nn.functional.normalize(point, dim=-1)
        albedo = torch.sigmoid(self.colour_logits).expand_as(point)
        if albedo_grad is not True:
            albedo = albedo.detach()
        lights = (light_positions if light_positions is not None else cameras.position)[:, None, None].expand_as(point)
        lit = shade(shading, albedo.reshape(-1, 3), normal.reshape(-1, 3), point.reshape(-1, 3), lights.reshape(-1, 3),
                    ambient, diffuse).view_as(point)
        rgb = opacity * lit + (1 - opacity) * 0.6
        return RenderOutput(rgb=rgb, opacity=opacity, depth=depth * opacity, normal=normal * opacity, albedo=albedo * opacity)

    def regularizers(self, out: RenderOutput) -> dict[str, torch.Tensor]:
        return {}

    def export_mesh(self, out_dir: str | Path, cfg: Any, progress: bool = True) -> Any:
        from dreamfusion.export import write_textured_mesh

        mesh = trimesh.creation.icosphere(subdivisions=2, radius=float(self.log_radius.detach().exp()))
        colour = torch.sigmoid(self.colour_logits).detach()
        return write_textured_mesh(mesh, lambda x, _n: colour.expand(x.shape[0], 3), torch.device("cpu"), out_dir, cfg, progress)


def test_a_representation_written_in_a_test_trains_checkpoints_reloads_and_exports(tmp_path, monkeypatch):
    from dreamfusion import registry
    from dreamfusion.config import to_dict
    from dreamfusion.export import ExportConfig
    from dreamfusion.guidance import make_guidance
    from dreamfusion.run_config import load_run_config
    from dreamfusion.stages import coarse_stage
    from dreamfusion.train import Trainer
    from dreamfusion.workspace import Workspace

    monkeypatch.setitem(registry.REPRESENTATIONS, "coloured_sphere", f"{__name__}:ColouredSphere")
    cfg = load_run_config(None, ["representation=coloured_sphere", "train.steps=40", "train.ambient_only_steps=40",
                                 "train.checkpoint_every=20", "train.validation_every=20", "guidance.embedding_cache=null"],
                          {"prompt": "a red sphere", "seed": 0})
    guidance = make_guidance(cfg.guidance, "cpu")
    guidance.prepare(cfg.prompt)
    ws = Workspace(tmp_path)
    ws.write_config(to_dict(cfg))
    trainer = Trainer(coarse_stage(cfg, "cpu"), ws, "cpu", guidance)
    assert isinstance(trainer.rep, ColouredSphere)
    trainer.run()
    r, g, b = torch.sigmoid(trainer.rep.colour_logits).tolist()
    assert r > g + 0.1 and r > b + 0.1, (r, g, b)  # the prior pulled the grey sphere toward red

    rep, state = ws.load_stage("coarse")  # through the registry and from_checkpoint
    assert isinstance(rep, ColouredSphere) and state["step"] == 40
    assert torch.equal(rep.colour_logits, trainer.rep.colour_logits)
    result = rep.export_mesh(tmp_path / "mesh", ExportConfig(texture_size=16), progress=False)
    assert (tmp_path / "mesh" / "model.obj").is_file() and result.n_faces == 320
