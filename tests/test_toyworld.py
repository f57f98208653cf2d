from pathlib import Path

import pytest
import torch

from dreamfusion.cameras import make_cameras, sample_cameras
from dreamfusion.render.shading import LightConfig
from dreamfusion.toyworld.classify import SilhouetteBank, classify_colour, foreground, same_shape, shows_mark
from dreamfusion.toyworld.dataset import TOY_CAMERAS, TOY_LIGHTS, make_dataset
from dreamfusion.toyworld.prior import training_backgrounds
from dreamfusion.toyworld.scenes import ToyRenderConfig, render_object
from dreamfusion.toyworld.train_prior import PriorTrainConfig, train_prior
from dreamfusion.toyworld.vocabulary import ALL_SHAPES, COLOURS, SHAPES, vocabulary

REPO = Path(__file__).resolve().parents[1]
PRIOR = REPO / "assets" / "toy_prior"


def test_generator_is_deterministic_for_a_seed():
    a = make_dataset(2, 16, seed=5, progress=False)
    b = make_dataset(2, 16, seed=5, progress=False)
    c = make_dataset(2, 16, seed=6, progress=False)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)


def test_captions_match_what_was_drawn():
    data = make_dataset(2, 32, seed=0, progress=False)
    imgs = (data.images.permute(0, 2, 3, 1) + 1) / 2
    mask = foreground(imgs)
    colours = classify_colour(imgs, mask)
    shapes = SilhouetteBank(resolution=32, elevation_step=10.0, n_sizes=10, azimuth_step=15.0).classify(mask)
    names, palette = list(ALL_SHAPES), list(COLOURS)
    colour_ok = shape_ok = 0
    for i, text in enumerate(data.captions):
        shape, colour = names[data.shape_index[i]], palette[data.colour_index[i]]
        assert text.startswith(f"a {colour} {shape}, ") and text.endswith(" view")
        colour_ok += colours[i] == colour
        shape_ok += same_shape(shapes[i], shape)
    n = len(data.captions)
    assert colour_ok / n > 0.95 and shape_ok / n > 0.95, (colour_ok / n, shape_ok / n)


def test_marked_cube_shows_its_mark_only_from_the_front():
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    imgs = []
    for az in (0.0, 180.0):
        cam = make_cameras(t(10.0), t(az), t(1.8), t(45.0))
        img, _ = render_object("marked cube", "red", cam, ToyRenderConfig(lambertian_prob=0.0), LightConfig(), torch.Generator().manual_seed(0))
        imgs.append(img[0])
    whiteness = [(im.amin(-1) > 0.9).float().mean().item() for im in imgs]
    assert whiteness[0] > 0.05 and whiteness[1] < 0.01


def test_mark_detector_on_true_renders():
    """shows_mark fires on marks seen from the front and never on a plain cube or a back view."""
    n = 24
    gen = torch.Generator().manual_seed(3)
    el, dist, fovy = 40 * torch.rand(n, generator=gen), 1.5 + 0.5 * torch.rand(n, generator=gen), 40 + 20 * torch.rand(n, generator=gen)
    front = make_cameras(el, 60 * torch.rand(n, generator=gen) - 30, dist, fovy)
    back = make_cameras(el, 150 + 60 * torch.rand(n, generator=gen), dist, fovy)
    colours = [c for c in COLOURS if c != "white"]
    rates = {}
    for name, shape, cams in (("marked front", "marked cube", front), ("plain front", "cube", front), ("marked back", "marked cube", back)):
        imgs = torch.cat([render_object(shape, colours[i % len(colours)], cams[i], ToyRenderConfig(), TOY_LIGHTS,
                                        torch.Generator().manual_seed(i))[0] for i in range(n)])
        rates[name] = shows_mark(imgs).float().mean().item()
    assert rates["marked front"] > 0.6 and rates["plain front"] == 0.0 and rates["marked back"] == 0.0, rates


def test_vocabulary_lists_every_caption_word():
    words = set(vocabulary())
    assert {"a", "view", "front", "overhead"} <= words
    assert set(COLOURS) <= words and set(SHAPES) <= words


def test_smoke_training_reduces_loss(tmp_path):
    cfg = PriorTrainConfig(steps=16, batch_size=8, n_per_class=1, warmup=2, checkpoint_every=8, lr=3e-3)
    info = train_prior(tmp_path / "prior", cfg, progress=False)
    assert info["final_loss"] < info["first_loss"]
    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / "prior" / sub).is_dir()
    # resumable: asking for more steps continues from the saved state
    cfg.steps = 20
    assert train_prior(tmp_path / "prior", cfg, progress=False)["steps"] == 20


def test_a_leg_continues_from_the_committed_weights_without_the_optimizer_state(tmp_path):
    import json

    from diffusers import UNet2DConditionModel

    cfg = PriorTrainConfig(steps=4, batch_size=4, n_per_class=1, warmup=1, checkpoint_every=4, background_grey_range=(0.3, 0.9))
    train_prior(tmp_path / "prior", cfg, progress=False)
    committed = UNet2DConditionModel.from_pretrained(str(tmp_path / "prior" / "unet")).state_dict()
    (tmp_path / "prior" / "train_state.pt").unlink()  # lost with the machine
    cfg.steps, cfg.background_grey_range = 7, (0.0, 0.25)
    info = train_prior(tmp_path / "prior", cfg, progress=False)
    assert info["steps"] == 7  # totals: 3 more steps, not 7 from scratch
    legs = json.loads((tmp_path / "prior" / "training_info.json").read_text())["legs"]
    assert legs == [{"from_step": 0, "to_step": 4, "background_grey_range": [0.3, 0.9], "optimizer": "fresh"},
                    {"from_step": 4, "to_step": 7, "background_grey_range": [0.0, 0.25], "optimizer": "fresh"}]
    after = UNet2DConditionModel.from_pretrained(str(tmp_path / "prior" / "unet")).state_dict()
    moved = max((after[k] - committed[k]).abs().max().item() for k in committed)
    assert 0 < moved < 0.05  # it went on from the committed weights (3 small steps), not from a new initialisation


def test_backgrounds_come_from_the_range_asked_for():
    data = make_dataset(1, 16, seed=0, progress=False, background_grey_range=(0.0, 0.25))
    corners = (data.images[:, :, 0, 0] + 1) / 2  # (N, 3): one grey per image, nothing in the corners
    assert torch.all(corners <= 0.25 + 1e-6) and torch.allclose(corners[:, 0], corners[:, 2])


def test_a_backdrop_gives_half_of_one_colours_images_its_own_greys():
    data = make_dataset(4, 16, seed=0, progress=False, background_grey_range=(0.5, 0.9), backdrops={"white": (0.0, 0.1)})
    corners = (data.images[:, 0, 0, 0] + 1) / 2  # (N,): each image's background grey
    white = data.colour_index == list(COLOURS).index("white")
    assert torch.all(corners[~white] >= 0.5 - 1e-6)  # every other colour keeps the shared greys
    dark = corners[white] <= 0.1 + 1e-6
    assert dark.sum().item() == white.sum().item() // 2  # half of the white images, the rest on the shared greys
    assert torch.all(corners[white][~dark] >= 0.5 - 1e-6)
    assert all(data.captions[i].startswith("a white ") for i in torch.nonzero(white).flatten().tolist())


def test_prior_with_azimuth_harmonics_trains_loads_and_guides(tmp_path):
    from dreamfusion.config import ConfigError
    from dreamfusion.guidance import GuidanceConfig, camera_features, make_guidance

    cfg = PriorTrainConfig(steps=4, batch_size=4, n_per_class=1, warmup=1, checkpoint_every=4, camera_harmonics=4)
    train_prior(tmp_path / "prior", cfg, progress=False)
    guidance = make_guidance(GuidanceConfig(type="pixel", model=str(tmp_path / "prior"), embedding_cache=None), "cpu")
    assert guidance.camera_harmonics == 4 and guidance.unet.config.projection_class_embeddings_input_dim == 11
    seen = []
    guidance.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["class_labels"]), with_kwargs=True)
    guidance.prepare("a red marked cube")
    cams = sample_cameras(TOY_CAMERAS, 2, torch.Generator().manual_seed(0))
    out = guidance(torch.rand(2, 32, 32, 3, requires_grad=True), cams, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    expected = camera_features(cams.elevation, cams.azimuth, True, 4)  # (2, 11)
    assert torch.allclose(seen[0][:2], expected)
    # resuming that state with the five-feature layout stops with a sentence, not a shape-mismatch traceback
    with pytest.raises(ConfigError, match="another model layout"):
        train_prior(tmp_path / "prior", PriorTrainConfig(steps=6, batch_size=4, n_per_class=1, warmup=1), progress=False)


@pytest.mark.skipif(not (PRIOR / "unet").is_dir(), reason="bundled prior not present")
def test_shipped_prior_loads_offline_and_gives_finite_sds(monkeypatch):
    from dreamfusion.guidance import GuidanceConfig, make_guidance

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    guidance = make_guidance(GuidanceConfig(type="pixel", model=str(PRIOR), embedding_cache=None, guidance_scale=5.0), "cpu")
    guidance.prepare("a red cube")
    cams = sample_cameras(TOY_CAMERAS, 2, torch.Generator().manual_seed(0))
    rgb = torch.rand(2, 64, 64, 3, requires_grad=True)
    out = guidance(rgb, cams, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    total = sum(f.stat().st_size for f in PRIOR.rglob("*") if f.is_file() and f.name != "train_state.pt")
    assert total < 30 * 2**20


def test_camera_probe_sees_the_shipped_prior_use_its_camera():
    """The shipped prior denoises with its camera better than without (elevation alone shapes the silhouette)."""
    from dreamfusion.toyworld.camera_probe import T_BANDS, camera_use
    from dreamfusion.toyworld.prior import load_prior

    gaps = camera_use(load_prior(PRIOR), n=32, draws=1)
    assert set(gaps) == {"camera_gain", "pose_gain"}
    assert len(gaps["pose_gain"]) == 2 * len(T_BANDS)
    assert all(abs(v) < 1.0 for values in gaps.values() for v in values.values())
    assert sum(gaps["camera_gain"].values()) > 0  # about +1.5% per entry for the shipped prior


def test_a_run_over_greys_its_prior_never_saw_is_warned_about(tmp_path, capsys):
    import json

    from dreamfusion.pipeline import check_backgrounds
    from dreamfusion.run_config import load_run_config

    prior = tmp_path / "prior"
    prior.mkdir()
    (prior / "training_info.json").write_text(json.dumps({"config": {"background_grey_range": [0.0, 0.25]}}))
    check_backgrounds(load_run_config(REPO / "configs" / "toy.yaml", [f"guidance.model={prior}", "background.grey_range=[0.0,0.25]"]))
    assert capsys.readouterr().err == ""  # the run draws the prior's greys
    check_backgrounds(load_run_config(REPO / "configs" / "toy.yaml", [f"guidance.model={prior}"]))  # the recipe's [0.3, 0.9]
    err = capsys.readouterr().err
    assert "trained on greys in [0, 0.25]" in err and "[0.3, 0.9]" in err
    # the shipped recipes draw the greys their priors were trained on
    for recipe in (REPO / "configs" / "toy.yaml", REPO / "configs" / "toy-latent.yaml"):
        cfg = load_run_config(recipe)
        assert tuple(cfg.background.grey_range) == training_backgrounds(cfg.guidance.model), recipe
