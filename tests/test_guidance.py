"""Score-distillation guidance: the shared SDS math, prompts, caching, loading, and both backends
end to end on tiny models saved to disk and loaded through `from_pretrained`."""
from __future__ import annotations

import math

import pytest
import torch

from dreamfusion.cameras import VIEW_LABELS, make_cameras
from dreamfusion.config import ConfigError, build
from dreamfusion.guidance import (
    GuidanceConfig,
    ModelLoadError,
    PixelGuidance,
    StableDiffusionGuidance,
    camera_feature_dim,
    camera_features,
    camera_harmonics,
    is_camera_conditioned,
    make_guidance,
)
from dreamfusion.guidance.prompts import (
    EmbeddingCache,
    PromptEmbeddings,
    interpolated_view_weights,
    nearest_view_weights,
    perp_neg_conditioning,
    perp_neg_weights,
    prompt_texts,
    select_embeddings,
    view_prompt,
)
from dreamfusion.guidance.sds import (
    guided_noise,
    perpendicular,
    sample_timesteps,
    score_distillation,
    sds_weight,
    t_max_at,
)
from dreamfusion.guidance.tiny import save_tiny_latent_model, save_tiny_pixel_model

PROMPT = "a corgi"


def cams(elevation, azimuth):
    n = len(elevation)
    return make_cameras(torch.tensor(elevation, dtype=torch.float32), torch.tensor(azimuth, dtype=torch.float32),
                        torch.full((n,), 2.0), torch.full((n,), 50.0))


# ---- fixtures: tiny models on disk -------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    return {
        "latent": save_tiny_latent_model(root / "sd", sample_size=8),
        "pixel": save_tiny_pixel_model(root / "prior", sample_size=16, camera=True, learned_variance=True),
        "cache": root / "embeddings",
    }


@pytest.fixture(scope="module")
def latent(models):
    cfg = GuidanceConfig(type="latent", model=str(models["latent"]), embedding_cache=str(models["cache"]),
                         release_text_encoder=False)
    guidance = make_guidance(cfg, "cpu")
    guidance.prepare(PROMPT)
    return guidance


@pytest.fixture(scope="module")
def pixel(models):
    cfg = GuidanceConfig(type="pixel", model=str(models["pixel"]), embedding_cache=str(models["cache"]),
                         guidance_scale=7.5)
    guidance = make_guidance(cfg, "cpu")
    guidance.prepare(PROMPT)
    return guidance


def direct_grad(guidance, x, cameras, t, noise):
    """w(t) (eps_hat - eps) computed here step by step, with separate U-Net calls (no batching)."""
    emb = guidance.embeddings
    cond = select_embeddings(emb, cameras.elevation, cameras.azimuth, guidance.cfg.view_prompt)
    uncond = emb.uncond.expand_as(cond)
    labels = camera_features(cameras.elevation, cameras.azimuth, guidance.cfg.camera_conditioning) if guidance.camera_input else None
    a = guidance.schedule.signal[t].view(-1, 1, 1, 1) ** 2  # alpha_bar_t
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    with torch.no_grad():
        e_u = guidance.unet_fn(x_t, t, uncond, labels)[:, : x.shape[1]]
        e_c = guidance.unet_fn(x_t, t, cond, labels)[:, : x.shape[1]]
    eps_hat = e_u + guidance.cfg.scale * (e_c - e_u)
    return (1 - a) * (eps_hat - noise), e_u, e_c


# ---- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ({"guidance_scale": -1.0}, "guidance.guidance_scale"),
    ({"t_range": [0.0, 0.9]}, "guidance.t_range"),
    ({"t_range": [0.5, 1.2]}, "guidance.t_range"),
    ({"t_range": [0.9, 0.1]}, "guidance.t_range"),
    ({"t_max_schedule": [0.99, 100]}, "guidance.t_max_schedule"),
    ({"t_max_schedule": [0.5, 0]}, "guidance.t_max_schedule"),
    ({"grad_clip": 0.0}, "guidance.grad_clip"),
    ({"view_prompt": "none", "perp_neg": True}, "guidance.perp_neg"),
    ({"weighting": "sigma"}, "guidance.weighting"),
    ({"guidance_scal": 10.0}, "guidance_scale"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(GuidanceConfig, override, prefix="guidance")


def test_config_defaults_and_recipe_scales():
    assert build(GuidanceConfig, {"type": "latent"}).scale == 100.0
    assert build(GuidanceConfig, {"type": "pixel"}).scale == 20.0
    assert build(GuidanceConfig, {"type": "pixel", "guidance_scale": 5}).scale == 5.0
    assert GuidanceConfig().torch_dtype(torch.device("cpu")) == torch.float32


# ---- the SDS math --------------------------------------------------------------------------------

def test_timesteps_range_and_schedule():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(4096, 1000, (0.02, 0.98), generator=g)
    assert t.min() >= 20 and t.max() <= 980 and t.max() > 950 and t.dtype == torch.long
    assert t_max_at(0, 0.98, (0.5, 100)) == 0.98
    assert t_max_at(50, 0.98, (0.5, 100)) == pytest.approx(0.74)
    assert t_max_at(500, 0.98, (0.5, 100)) == 0.5
    late = sample_timesteps(4096, 1000, (0.02, 0.98), step=200, schedule=(0.5, 100), generator=g)
    assert late.max() <= 500 and late.min() >= 20


def test_weightings():
    ab = torch.tensor([0.25, 0.81])
    signal, noise = ab.sqrt(), (1 - ab).sqrt()
    assert torch.allclose(sds_weight(signal, noise, "sds"), 1 - ab)
    assert torch.allclose(sds_weight(signal, noise, "uniform"), torch.ones(2))
    assert torch.allclose(sds_weight(signal, noise, "fantasia3d"), ab.sqrt() * (1 - ab))


def _fake_unet(x_t, t, emb, labels):  # eps depends on x_t, t, and the embedding
    return 0.3 * x_t + emb.mean(dim=(1, 2)).view(-1, 1, 1, 1) + 1e-3 * t.view(-1, 1, 1, 1)


def _sds_inputs(B=2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 3, 8, 8, generator=g, requires_grad=True)
    ac = torch.linspace(0.999, 0.01, 1000)
    uncond = torch.zeros(B, 5, 4)
    cond = torch.randn(1, B, 5, 4, generator=g)
    noise = torch.randn(B, 3, 8, 8, generator=g)
    t = torch.tensor([100, 700])[:B]
    return x, ac, uncond, cond, noise, t


def test_sds_gradient_matches_formula_and_loss_injects_it():
    x, ac, uncond, cond, noise, t = _sds_inputs()
    out = score_distillation(x, _fake_unet, ac, uncond, cond, t, 7.5, noise=noise)
    a = ac[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x.detach() + (1 - a).sqrt() * noise
    e_u, e_c = _fake_unet(x_t, t, uncond, None), _fake_unet(x_t, t, cond[0], None)
    expected = (1 - a) * (e_u + 7.5 * (e_c - e_u) - noise)
    assert torch.allclose(out.grad, expected, atol=1e-5)
    out.loss.backward()
    assert torch.allclose(x.grad, expected / x.shape[0], atol=1e-5)
    assert out.grad_norm == pytest.approx(expected.norm().item(), rel=1e-5)
    assert torch.equal(out.t, t) and out.t_frac.tolist() == pytest.approx([0.1, 0.7])


def test_cfg_scale_changes_gradient_as_the_formula_says():
    x, ac, uncond, cond, noise, t = _sds_inputs()
    grads = {s: score_distillation(x, _fake_unet, ac, uncond, cond, t, s, noise=noise).grad for s in (0.0, 1.0, 10.0)}
    a = ac[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x.detach() + (1 - a).sqrt() * noise
    delta = _fake_unet(x_t, t, cond[0], None) - _fake_unet(x_t, t, uncond, None)
    assert torch.allclose(grads[10.0] - grads[1.0], (1 - a) * 9.0 * delta, atol=1e-4)
    assert torch.allclose(grads[0.0], (1 - a) * (_fake_unet(x_t, t, uncond, None) - noise), atol=1e-5)


def test_clipping_and_nonfinite_never_reach_the_input():
    x, ac, uncond, cond, noise, t = _sds_inputs()
    clipped = score_distillation(x, _fake_unet, ac, uncond, cond, t, 100.0, noise=noise, grad_clip=0.05)
    assert clipped.grad.abs().max() <= 0.05 + 1e-7

    def nan_unet(x_t, t, emb, labels):
        out = _fake_unet(x_t, t, emb, labels)
        out[:, 0, 0, 0] = float("nan")
        out[:, 1, 0, 0] = float("inf")
        return out

    out = score_distillation(x, nan_unet, ac, uncond, cond, t, 10.0, noise=noise)
    assert torch.isfinite(out.grad).all() and int(out.nonfinite) == 4
    out.loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(out.loss)


def test_perp_neg_combination():
    g = torch.Generator().manual_seed(2)
    e_u = torch.randn(2, 3, 4, 4, generator=g)
    e_c = torch.randn(3, 2, 3, 4, 4, generator=g)
    plain = guided_noise(e_u, e_c[:1], 5.0)
    zero_neg = guided_noise(e_u, e_c, 5.0, torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(plain, zero_neg, atol=1e-6)
    d = e_c - e_u
    p = perpendicular(d[1], d[0])
    assert torch.allclose((p * d[0]).sum(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4)
    w = torch.tensor([[1.0, 1.0], [-2.0, -0.5], [0.0, -1.0]])
    expected = e_u + 5.0 * (d[0] + w[1].view(-1, 1, 1, 1) * p + w[2].view(-1, 1, 1, 1) * perpendicular(d[2], d[0]))
    assert torch.allclose(guided_noise(e_u, e_c, 5.0, w), expected, atol=1e-5)


# ---- prompts -------------------------------------------------------------------------------------

def test_view_prompt_text_and_nearest_labels():
    assert view_prompt("a corgi", "side") == "a corgi, side view"
    assert prompt_texts("a corgi", "blurry")[:3] == ["blurry", "a corgi", "a corgi, front view"]
    w = nearest_view_weights(torch.tensor([10.0, 10.0, 10.0, 10.0, 75.0]), torch.tensor([0.0, 90.0, 180.0, -100.0, 0.0]))
    assert w.argmax(-1).tolist() == [0, 1, 2, 1, 3]
    assert [VIEW_LABELS[i] for i in w.argmax(-1).tolist()] == ["front", "side", "back", "side", "overhead"]


def test_interpolated_view_weights():
    w = interpolated_view_weights(torch.tensor([0.0] * 6 + [80.0]), torch.tensor([0.0, 45.0, 90.0, 135.0, 180.0, -135.0, 30.0]))
    expected = torch.tensor([
        [1, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 1, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 1],
    ], dtype=torch.float32)
    assert torch.allclose(w, expected, atol=1e-6)
    emb = PromptEmbeddings(uncond=torch.zeros(3, 2), plain=torch.full((3, 2), 9.0),
                           views=torch.arange(4.0).view(4, 1, 1).expand(4, 3, 2))
    sel = select_embeddings(emb, torch.tensor([0.0, 0.0]), torch.tensor([45.0, 180.0]), "interpolate")
    assert sel[:, 0, 0].tolist() == pytest.approx([0.5, 2.0])
    assert torch.equal(select_embeddings(emb, torch.tensor([0.0]), torch.tensor([90.0]), "none")[0], emb.plain)


def test_perp_neg_weights_follow_the_view():
    w = perp_neg_weights(torch.tensor([0.0, 0.0, 0.0, 70.0]), torch.tensor([0.0, 90.0, 180.0, 90.0]))
    assert w[0].tolist() == [0.0, -2.0]  # front view: push away from the side, not from itself
    assert w[2, 0] == pytest.approx(-2.0)  # back view: push away from the front
    assert w[1, 0] < 0 and w[3].tolist() == [0.0, 0.0]  # side pushes away from front; overhead: none
    emb = PromptEmbeddings(torch.zeros(3, 2), torch.zeros(3, 2), torch.arange(4.0).view(4, 1, 1).expand(4, 3, 2))
    cond, weights = perp_neg_conditioning(emb, torch.tensor([0.0]), torch.tensor([180.0]), "nearest")
    assert cond.shape == (3, 1, 3, 2) and cond[:, 0, 0, 0].tolist() == [2.0, 0.0, 1.0]
    assert weights[:, 0].tolist() == pytest.approx([1.0, -2.0, -1.0])  # back: full front, half side


def test_embedding_cache_on_disk(tmp_path):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.stack([torch.full((3, 2), float(len(t))) for t in texts])

    cache = EmbeddingCache(tmp_path / "emb")
    out = cache.get_or_compute("org/model", ["ab", "abc"], encode)
    assert out.shape == (2, 3, 2) and calls == [["ab", "abc"]]
    assert len(list((tmp_path / "emb").glob("*.safetensors"))) == 2
    again = EmbeddingCache(tmp_path / "emb").get_or_compute("org/model", ["abc", "ab", "x"], encode)
    assert calls[-1] == ["x"] and torch.equal(again[1], out[0])
    assert cache.key("org/model", "ab") != cache.key("org/other", "ab")


def test_camera_features_spec():
    f = camera_features(torch.tensor([30.0, 0.0]), torch.tensor([90.0, -180.0]))
    assert torch.allclose(f[0], torch.tensor([0.5, math.sqrt(3) / 2, 1.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(f[1], torch.tensor([0.0, 1.0, 0.0, -1.0, 1.0]), atol=1e-6)
    assert torch.equal(camera_features(torch.zeros(2), torch.zeros(2), False), torch.zeros(2, 5))
    masked = camera_features(torch.zeros(2), torch.zeros(2), torch.tensor([True, False]))
    assert masked[0, 4] == 1.0 and torch.equal(masked[1], torch.zeros(5))
    assert is_camera_conditioned({"class_embed_type": "projection", "projection_class_embeddings_input_dim": 5})
    assert not is_camera_conditioned({"class_embed_type": None})


def test_camera_features_with_azimuth_harmonics():
    az = torch.tensor([30.0, 90.0, -120.0])
    f = camera_features(torch.zeros(3), az, True, max_harmonic=4)  # (3, 11)
    assert f.shape == (3, camera_feature_dim(4)) == (3, 11)
    assert torch.equal(f[:, :5], camera_features(torch.zeros(3), az))  # the base layout comes first, unchanged
    rad = torch.deg2rad(az)
    for k in (2, 3, 4):
        assert torch.allclose(f[:, 5 + 2 * (k - 2)], (k * rad).sin(), atol=1e-6)
        assert torch.allclose(f[:, 6 + 2 * (k - 2)], (k * rad).cos(), atol=1e-6)
    # a cube looks the same every 90 degrees: cos(4 az) cannot tell 0 from 90, cos(az) can
    g = camera_features(torch.zeros(2), torch.tensor([0.0, 90.0]), True, 4)
    assert torch.allclose(g[0, 10], g[1, 10]) and not torch.allclose(g[0, 3], g[1, 3])
    assert torch.equal(camera_features(torch.zeros(2), torch.zeros(2), torch.tensor([False, False]), 4), torch.zeros(2, 11))
    projection = {"class_embed_type": "projection"}
    assert camera_harmonics({**projection, "projection_class_embeddings_input_dim": 5}) == 1
    assert camera_harmonics({**projection, "projection_class_embeddings_input_dim": 11}) == 4
    for dim in (4, 6, None):  # fewer than the base five, or an odd number of extra columns: not our layout
        assert camera_harmonics({**projection, "projection_class_embeddings_input_dim": dim}) is None


# ---- loading -------------------------------------------------------------------------------------

def test_missing_folder_is_one_clear_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ModelLoadError, match="not found") as err:
        make_guidance(GuidanceConfig(type="pixel", model=str(missing)), "cpu")
    assert str(missing) in str(err.value) and isinstance(err.value, ConfigError)


def test_wrong_model_type_names_the_path(models, tmp_path):
    with pytest.raises(ModelLoadError, match="guidance.type: latent") as err:
        make_guidance(GuidanceConfig(type="pixel", model=str(models["latent"])), "cpu")
    assert str(models["latent"]) in str(err.value)
    with pytest.raises(ModelLoadError, match="guidance.type: pixel") as err:
        make_guidance(GuidanceConfig(type="latent", model=str(models["pixel"])), "cpu")
    assert str(models["pixel"]) in str(err.value)
    junk = tmp_path / "junk"
    (junk / "text_encoder").mkdir(parents=True)
    (junk / "text_encoder" / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="not a diffusers model folder") as err:
        make_guidance(GuidanceConfig(type="latent", model=str(junk)), "cpu")
    assert str(junk) in str(err.value)


# ---- backends end to end -------------------------------------------------------------------------

def test_latent_backend_gradient(latent):
    assert isinstance(latent, StableDiffusionGuidance) and latent.resolution == 16 and not latent.uses_cameras
    rgb = torch.rand(2, 24, 24, 3, requires_grad=True)  # resized down to 16, encoded to 8x8 latents
    c = cams([10.0, 20.0], [0.0, 120.0])
    t, noise = torch.tensor([300, 800]), torch.randn(2, 4, 8, 8)
    out = latent(rgb, c, generator=torch.Generator().manual_seed(5), t=t, noise=noise)
    x = latent.encode_render(rgb, torch.Generator().manual_seed(5)).detach()  # the same posterior sample
    expected, _, _ = direct_grad(latent, x, c, t, noise)
    assert torch.allclose(out.grad, expected, atol=1e-4, rtol=1e-4)
    out.loss.backward()
    assert rgb.grad.shape == rgb.shape and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    frozen = latent.frozen_modules()
    assert len(frozen) == 3  # U-Net, VAE and (kept here) text encoder
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())


def test_pixel_backend_gradient_is_exact(pixel):
    assert isinstance(pixel, PixelGuidance) and pixel.resolution == 16 and pixel.uses_cameras
    assert pixel._text is None  # released after prepare
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)
    c = cams([10.0, 30.0], [-30.0, 150.0])
    t, noise = torch.tensor([50, 900]), torch.randn(2, 3, 16, 16)
    out = pixel(rgb, c, t=t, noise=noise)
    x = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    expected, _, _ = direct_grad(pixel, x, c, t, noise)
    assert torch.allclose(out.grad, expected, atol=1e-5)
    out.loss.backward()
    # d/d rgb of 0.5||x - sg(x - g)||^2 / B with x = 2 rgb - 1 is 2 g / B, in (B, H, W, 3) layout
    assert torch.allclose(rgb.grad, 2 * expected.permute(0, 2, 3, 1) / 2, atol=1e-5)
    assert all(p.grad is None for p in pixel.unet.parameters())


def test_pixel_backend_random_draws_are_seeded(pixel):
    rgb = torch.rand(3, 24, 24, 3)
    c = cams([0.0, 0.0, 70.0], [0.0, 90.0, 0.0])
    a = pixel(rgb, c, step=10, generator=torch.Generator().manual_seed(3))
    b = pixel(rgb, c, step=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.t, b.t) and torch.equal(a.grad, b.grad) and a.grad.shape == (3, 3, 16, 16)


def test_each_view_label_selects_its_embedding(pixel, monkeypatch):
    seen = []
    original = pixel.unet_fn

    def spy(x_t, t, emb, labels):
        seen.append((emb.clone(), None if labels is None else labels.clone()))
        return original(x_t, t, emb, labels)

    monkeypatch.setattr(pixel, "unet_fn", spy)
    c = cams([10.0, 10.0, 10.0, 80.0], [0.0, 90.0, 180.0, 45.0])
    pixel(torch.rand(4, 16, 16, 3), c, t=torch.full((4,), 500))
    emb, labels = seen[-1]
    assert emb.shape[0] == 8  # one batched call: 4 unconditional + 4 conditional
    for i in range(4):
        assert torch.equal(emb[i], pixel.embeddings.uncond)
        assert torch.equal(emb[4 + i], pixel.embeddings.views[i])  # front, side, back, overhead
    assert torch.allclose(labels[:4], camera_features(c.elevation, c.azimuth)) and torch.equal(labels[:4], labels[4:])
    # the cached view embeddings are the encodings of "<prompt>, <label> view"
    for i, label in enumerate(VIEW_LABELS):
        cached = pixel.cache.load(pixel.model_id, view_prompt(PROMPT, label))
        assert torch.equal(cached, pixel.embeddings.views[i].float())
    # camera conditioning off: zeros go to the camera input
    monkeypatch.setattr(pixel.cfg, "camera_conditioning", False)
    pixel(torch.rand(4, 16, 16, 3), c, t=torch.full((4,), 500))
    assert torch.equal(seen[-1][1], torch.zeros(8, 5)) and not pixel.uses_cameras


def test_interpolate_and_perp_neg_through_the_backend(models, pixel):  # pixel: fills the cache
    cfg = GuidanceConfig(type="pixel", model=str(models["pixel"]), embedding_cache=str(models["cache"]),
                         view_prompt="interpolate", perp_neg=True, guidance_scale=20.0)
    guidance = make_guidance(cfg, "cpu")
    guidance._text_loader = None  # every embedding must come from the disk cache: no encoder is loaded
    guidance.prepare(PROMPT)
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)
    out = guidance(rgb, cams([0.0, 0.0], [45.0, 170.0]), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert out.grad.shape == (2, 3, 16, 16) and torch.isfinite(rgb.grad).all()


def test_hub_id_loads_offline_from_the_cache(models, tmp_path):
    """A Hub id resolves through huggingface_hub's cache; HF_HUB_OFFLINE=1 and HF_HUB_CACHE are honoured."""
    import os
    import shutil
    import subprocess
    import sys

    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-prior" / "snapshots" / ("0" * 40)
    shutil.copytree(models["pixel"], snapshot)
    (snapshot / "model_index.json").write_text(
        '{"_class_name": "IFPipeline", "unet": ["diffusers", "UNet2DConditionModel"], '
        '"scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"], '
        '"tokenizer": ["transformers", "CLIPTokenizer"]}'
    )
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    code = (
        "from dreamfusion.guidance import GuidanceConfig, make_guidance\n"
        "g = make_guidance(GuidanceConfig(type='pixel', model='tiny-org/tiny-prior', embedding_cache=None), 'cpu')\n"
        "g.prepare('a corgi')\n"
        "print('OK', g.resolution, g.uses_cameras)\n"
        "try:\n"
        "    make_guidance(GuidanceConfig(type='pixel', model='tiny-org/not-cached'), 'cpu')\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "OK 16 True" in result.stdout, result.stderr[-2000:]
    assert "ModelLoadError" in result.stdout and "tiny-org/not-cached" in result.stdout and "HF_HUB_OFFLINE" in result.stdout


def test_text_encoder_class_comes_from_the_folder(tmp_path):
    folder = save_tiny_pixel_model(tmp_path / "if_like", sample_size=16, text_encoder="t5")
    guidance = make_guidance(GuidanceConfig(type="pixel", model=str(folder), embedding_cache=None,
                                            release_text_encoder=False), "cpu")
    emb = guidance.prepare(PROMPT)
    assert type(guidance._text[1]).__name__ == "T5EncoderModel"
    assert emb.views.shape == (4, 64, 16) and not torch.equal(emb.views[0], emb.views[1])
    out = guidance(torch.rand(1, 16, 16, 3), cams([0.0], [0.0]))
    assert torch.isfinite(out.grad).all()


def test_embedding_cache_key_changes_when_the_text_encoder_is_replaced(tmp_path):
    """Retraining a local prior in place must not serve embeddings of the old text encoder."""
    import os

    from dreamfusion.guidance.prompts import EmbeddingCache

    (tmp_path / "text_encoder").mkdir()
    weights = tmp_path / "text_encoder" / "model.safetensors"
    weights.write_bytes(b"old")
    before = EmbeddingCache.key(str(tmp_path), "a red cube")
    weights.write_bytes(b"new weights")
    os.utime(weights, ns=(1, 1))
    assert EmbeddingCache.key(str(tmp_path), "a red cube") != before
    assert EmbeddingCache.key("org/hub-model", "a red cube") == EmbeddingCache.key("org/hub-model", "a red cube")
