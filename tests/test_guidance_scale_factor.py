"""train.guidance_scale_factor: a schedule on the CFG scale, applied by the loop step by step."""
import dataclasses

import torch

from dreamfusion.cameras import make_cameras
from dreamfusion.guidance import make_guidance
from dreamfusion.run_config import load_run_config
from dreamfusion.stages import coarse_stage
from dreamfusion.train import Trainer
from dreamfusion.workspace import Workspace

SMALL = ["train.resolution=16", "train.batch_size=1", "render.n_samples=16", "train.ambient_only_steps=2",
         "guidance.embedding_cache=null"]


def test_a_step_scored_at_another_scale_is_the_guidance_configured_with_it():
    cfg = load_run_config(None, SMALL, {"prompt": "a red cube"})
    cams = make_cameras(torch.tensor([20.0]), torch.tensor([30.0]), torch.tensor([1.8]), torch.tensor([50.0]))
    rgb = torch.rand(1, 16, 16, 3)
    grads = []
    for guidance_cfg, scale in ((cfg.guidance, 12.0), (dataclasses.replace(cfg.guidance, guidance_scale=12.0), None)):
        guidance = make_guidance(guidance_cfg, "cpu")
        guidance.prepare(cfg.prompt)
        x = rgb.clone().requires_grad_(True)
        guidance(x, cams, t=torch.tensor([500]), noise=torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                 **({} if scale is None else {"scale": scale})).loss.backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_the_loop_scales_the_cfg_by_the_schedule(tmp_path):
    cfg = load_run_config(None, [*SMALL, "train.guidance_scale_factor={start: 8, end: 1, begin: 1, finish: 3}"],
                          {"prompt": "a red cube", "seed": 0})
    guidance = make_guidance(cfg.guidance, "cpu")
    guidance.prepare(cfg.prompt)
    seen = []

    class Recording:  # the guidance, noting the scale of every call
        def __getattr__(self, name):
            return getattr(guidance, name)

        def __call__(self, *args, **kwargs):
            seen.append(kwargs.get("scale"))
            return guidance(*args, **kwargs)

    trainer = Trainer(coarse_stage(cfg, "cpu"), Workspace(tmp_path), "cpu", Recording())
    for _ in range(4):
        trainer.train_step()
    base = cfg.guidance.scale  # 4 in configs/toy.yaml
    assert seen == [8 * base, 8 * base, 4.5 * base, None]  # step 3 is at the end (factor 1): the config's own scale
