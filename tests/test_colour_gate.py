"""train.colour_t_max in the training loop: the renders scored above it shape the geometry and leave
the colour; below it they teach both."""
import torch

from dreamfusion.guidance import make_guidance
from dreamfusion.run_config import load_run_config
from dreamfusion.stages import coarse_stage
from dreamfusion.train import Trainer
from dreamfusion.workspace import Workspace
from small_runs import NERF_CONFIG

# Albedo renders only (the warm-up), at test size, with the bundled prior.
SMALL = ["train.resolution=16", "train.batch_size=2", "render.n_samples=16", "train.ambient_only_steps=10",
         "guidance.embedding_cache=null"]


def _steps(tmp_path, gate: str, steps: int = 3):
    cfg = load_run_config(NERF_CONFIG, [*SMALL, f"train.colour_t_max={gate}"], {"prompt": "a red cube", "seed": 0})
    guidance = make_guidance(cfg.guidance, "cpu")
    guidance.prepare(cfg.prompt)
    trainer = Trainer(coarse_stage(cfg, "cpu"), Workspace(tmp_path), "cpu", guidance)
    field = trainer.rep.field
    colour = [*field.albedo_head.parameters(), *field.albedo_encoding.parameters(), *field.albedo_trunk.parameters()]
    shape = [*field.density_head.parameters(), *field.encoding.parameters()]
    before = [p.detach().clone() for p in colour + shape]
    for _ in range(steps):
        trainer.train_step()
    moved = [not torch.equal(b, p.detach()) for b, p in zip(before, colour + shape)]
    return any(moved[:len(colour)]), any(moved[len(colour):])


def test_renders_scored_above_the_gate_shape_the_field_and_leave_its_colour(tmp_path):
    colour_moved, shape_moved = _steps(tmp_path / "gated", "{start: 0.01, end: 0.01}")  # every t is >= 0.02
    assert shape_moved and not colour_moved
    colour_moved, shape_moved = _steps(tmp_path / "open", "{start: 1.0, end: 1.0}")
    assert shape_moved and colour_moved
