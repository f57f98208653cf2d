"""The latent (Stable Diffusion-format) toy prior: its training, its folder, and SDS through it."""
from pathlib import Path

import pytest
import torch

from dreamfusion.cameras import sample_cameras
from dreamfusion.config import ConfigError
from dreamfusion.toyworld.dataset import TOY_CAMERAS, make_dataset
from dreamfusion.toyworld.train_latent_prior import LatentPriorTrainConfig, psnr, train_latent_prior

REPO = Path(__file__).resolve().parents[1]
PIXEL_PRIOR = REPO / "assets" / "toy_prior"
LATENT_PRIOR = REPO / "assets" / "toy_latent_prior"
SHIPPED = (LATENT_PRIOR / "unet").is_dir() and (LATENT_PRIOR / "vae").is_dir()


def tiny_cfg(**kw) -> LatentPriorTrainConfig:
    base = dict(vae_steps=4, steps=4, vae_batch_size=2, batch_size=4, n_per_class=1, held_out_per_class=1, warmup=1,
                checkpoint_every=2, resolution=32, text_from=str(PIXEL_PRIOR))
    return LatentPriorTrainConfig(**{**base, **kw})


def quiet(_):
    return None


@pytest.fixture(scope="module")
def smoke_prior(tmp_path_factory):
    out = tmp_path_factory.mktemp("latent") / "prior"
    train_latent_prior(out, tiny_cfg(), progress=False, log=quiet)
    return out


def test_folder_is_a_standard_stable_diffusion_pipeline(smoke_prior):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from dreamfusion.guidance.camera_conditioning import camera_input

    pipe = StableDiffusionPipeline.from_pretrained(str(smoke_prior))
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DDPMScheduler)
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.in_channels == 4
    with camera_input(pipe.unet, 20.0, 0.0):  # the U-Net needs its camera: README shows these lines
        image = pipe("a red cube, front view", height=128, width=128, num_inference_steps=2, guidance_scale=2.0,
                     output_type="np").images
    assert image.shape == (1, 128, 128, 3) and (image >= 0).all() and (image <= 1).all()
    with pytest.raises(ValueError, match="class_labels"):  # without it diffusers refuses, so the hint matters
        pipe("a red cube", height=128, width=128, num_inference_steps=1, output_type="np")


def latent_std(folder: Path) -> float:
    """Std of the scaled latents of the whole (tiny) training set under the folder's VAE."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(folder / "vae"))
    with torch.no_grad():
        return (vae.encode(make_dataset(1, 32, 0, progress=False).images).latent_dist.mean * vae.config.scaling_factor).std().item()


def test_scaling_factor_is_computed_from_the_data(smoke_prior, tmp_path):
    import json

    assert json.loads((smoke_prior / "training_info.json").read_text())["scaling_factor"] != 1.0
    assert latent_std(smoke_prior) == pytest.approx(1.0, abs=1e-3)  # unit variance, as SD's 0.18215 gives
    # a VAE trained further in a second leg, before the U-Net starts, gets its own factor
    train_latent_prior(tmp_path / "p", tiny_cfg(vae_steps=2, steps=0), progress=False, log=quiet)
    train_latent_prior(tmp_path / "p", tiny_cfg(vae_steps=4, steps=2), progress=False, log=quiet)
    assert latent_std(tmp_path / "p") == pytest.approx(1.0, abs=1e-3)


def test_our_guidance_loads_it_and_gives_a_gradient_through_the_encoder(smoke_prior):
    from dreamfusion.guidance import GuidanceConfig, StableDiffusionGuidance, make_guidance

    guidance = make_guidance(GuidanceConfig(type="latent", model=str(smoke_prior), embedding_cache=None, guidance_scale=5.0), "cpu")
    assert isinstance(guidance, StableDiffusionGuidance) and guidance.resolution == 128 and guidance.camera_harmonics == 4
    guidance.prepare("a red marked cube")
    rgb = torch.rand(2, 64, 64, 3, requires_grad=True)
    out = guidance(rgb, sample_cameras(TOY_CAMERAS, 2, torch.Generator().manual_seed(0)), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_training_resumes_exactly_and_from_the_committed_weights(tmp_path):
    from diffusers import UNet2DConditionModel

    straight = tmp_path / "straight"
    train_latent_prior(straight, tiny_cfg(vae_steps=4, steps=6), progress=False, log=quiet)
    legs = tmp_path / "legs"
    train_latent_prior(legs, tiny_cfg(vae_steps=4, steps=0), progress=False, log=quiet)  # leg 1: the VAE alone
    info = train_latent_prior(legs, tiny_cfg(vae_steps=4, steps=6), progress=False, log=quiet)
    assert (info["vae_steps"], info["steps"]) == (4, 6)
    a = UNet2DConditionModel.from_pretrained(str(straight / "unet")).state_dict()
    b = UNet2DConditionModel.from_pretrained(str(legs / "unet")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the optimizer state lost with a machine: the next leg continues from the folder's weights
    (legs / "train_state.pt").unlink()
    said = []
    info = train_latent_prior(legs, tiny_cfg(vae_steps=4, steps=8), progress=False, log=said.append)
    assert info["steps"] == 8 and "continuing from the saved weights" in said[0]
    c = UNet2DConditionModel.from_pretrained(str(legs / "unet")).state_dict()
    assert any(not torch.equal(b[k], c[k]) for k in b)
    with pytest.raises(ConfigError, match="can only grow before the U-Net starts"):
        train_latent_prior(legs, tiny_cfg(vae_steps=6, steps=8), progress=False, log=quiet)


def test_training_cli_smoke_and_bad_flags(tmp_path, capsys):
    from dreamfusion.cli.errors import run_cli
    from dreamfusion.cli.train_toy_prior import main

    assert run_cli(main, ["--latent", "--vae-steps", "0", "--out", str(tmp_path / "p")], prog="train_toy_prior") == 2
    assert "--vae-steps" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert run_cli(main, ["--max-minutes", "5"], prog="train_toy_prior") == 2
    assert run_cli(main, ["--background-range", "0.5,0.2", "--out", str(tmp_path / "q")], prog="train_toy_prior") == 2
    assert "LO <= HI" in capsys.readouterr().err and not (tmp_path / "q").exists()
    assert run_cli(main, ["--latent", "--background-range", "0,0.25", "--out", str(tmp_path / "q")], prog="train_toy_prior") == 2
    assert "pixel prior only" in capsys.readouterr().err and not (tmp_path / "q").exists()
    for bad, message in (("grey=0,0.2", "--backdrop takes COLOUR=LO,HI"), ("white=0.3", "--backdrop takes two greys")):
        assert run_cli(main, ["--backdrop", bad, "--out", str(tmp_path / "q")], prog="train_toy_prior") == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and not (tmp_path / "q").exists()


@pytest.mark.skipif(not SHIPPED, reason="the latent prior is not in assets/ (scripts/train_toy_prior.py --latent)")
def test_shipped_vae_round_trips_toy_renders_within_30_db():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(LATENT_PRIOR / "vae")).eval()
    held = make_dataset(1, 128, seed=4242, progress=False).images[::3]  # renders it never saw (another seed)
    with torch.no_grad():
        rec = vae.decode(vae.encode(held).latent_dist.mean).sample.clamp(-1, 1)
    assert psnr(rec, held) >= 30.0
    total = sum(f.stat().st_size for f in (REPO / "assets").rglob("*") if f.is_file() and not f.name.startswith("train_"))
    assert total <= 30 * 2**20


@pytest.mark.skipif(not SHIPPED, reason="the latent prior is not in assets/")
def test_short_run_with_the_latent_recipe_writes_every_artifact(tmp_path):
    from dreamfusion.cli.dream import main
    from dreamfusion.cli.errors import run_cli

    from small_runs import FINE_SMALL

    ws = tmp_path / "ws"
    argv = ["--prompt", "a red cube", "--config", str(REPO / "configs" / "toy-latent.yaml"), "--workspace", str(ws), "--quiet",
            "guidance.embedding_cache=null", "train.steps=6", "train.batch_size=1", "train.resolution=32",
            "render.n_samples=16", "train.validation_every=3", "train.checkpoint_every=3", "export.mesh_resolution=48",
            "export.texture_size=32", "export.video_frames=2", "export.video_resolution=32", *FINE_SMALL]
    assert run_cli(main, argv, prog="dream") == 0
    assert (ws / "config.yaml").is_file() and (ws / "checkpoints" / "last.pt").is_file()
    assert (ws / "metrics.jsonl").is_file() and any((ws / "video").glob("*.mp4"))
    assert sorted(p.name for p in (ws / "validation").iterdir())[-1] == "step_000006.png"


@pytest.mark.skipif(not SHIPPED, reason="the latent prior is not in assets/")
def test_a_pixel_coarse_run_is_refined_with_the_latent_prior_at_128_px(tmp_path, monkeypatch):
    """Magic3D's split: the coarse stage on the 32-pixel prior, the fine stage scored by another
    model (fine.guidance names it) at its own 128 px; the bundled folder is found from any folder."""
    from dreamfusion.cli.dream import main
    from dreamfusion.cli.errors import run_cli

    from small_runs import small_run

    prior = REPO / "assets" / "toy_prior"
    ws = tmp_path / "ws"
    assert run_cli(main, ["--prompt", "a red cube", "--workspace", str(ws), "--quiet", "--stage", "coarse",
                          *small_run(prior, 4)], prog="dream") == 0
    monkeypatch.chdir(tmp_path)  # the relative model path below resolves to the bundled copy
    latent = ["fine.guidance.type=latent", "fine.guidance.model=assets/toy_latent_prior", "fine.train.resolution=128"]
    assert run_cli(main, ["--from", str(ws), "--workspace", str(tmp_path / "fine"), "--quiet",
                          *small_run(prior, 4), *latent], prog="dream") == 0
    import yaml

    config = yaml.safe_load((tmp_path / "fine" / "config.yaml").read_text())
    assert config["fine"]["guidance"]["model"] == str(REPO / "assets" / "toy_latent_prior")
    assert config["fine"]["train"]["resolution"] == 128
    metrics = (tmp_path / "fine" / "fine" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4 and (tmp_path / "fine" / "mesh" / "model.glb").is_file()
