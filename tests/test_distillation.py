"""The score-distillation rules beyond SDS (CSD, NFSD, ISM, VSD): each gradient against its formula
recomputed here step by step, on every backend (tiny models saved to disk), and VSD's online model
through a resumed run."""
from __future__ import annotations

import json

import pytest
import torch

from dreamfusion.cameras import make_cameras
from dreamfusion.config import build
from dreamfusion.guidance import GuidanceConfig, make_guidance
from dreamfusion.guidance.config import ISMConfig, NFSDConfig
from dreamfusion.guidance.schedule import NoiseSchedule
from dreamfusion.guidance.sds import ddim_move, ism_noised, score_distillation, sds_weight
from dreamfusion.guidance.tiny import save_tiny_latent_model, save_tiny_pixel_model, save_tiny_sd3_model

RULES = ["sds", "csd", "nfsd", "ism", "vsd"]


def _unet(x_t, t, emb, labels):
    """A stand-in noise predictor that depends on x_t, t and the text (nonlinearly, so that DDIM
    inversion and the branches can be told apart)."""
    return torch.tanh(0.5 * x_t) + emb.mean(dim=(1, 2)).view(-1, 1, 1, 1) + 1e-3 * t.view(-1, 1, 1, 1).float()


def _inputs(B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, 8, 8, generator=g, requires_grad=True)
    schedule = NoiseSchedule.variance_preserving(torch.linspace(0.9999, 0.01, 1000))
    uncond = torch.zeros(B, 5, 4)
    cond = torch.randn(1, B, 5, 4, generator=g)
    noise = torch.randn(B, 3, 8, 8, generator=g)
    return x, schedule, uncond, cond, noise


def _x_t(schedule, x, noise, t):
    a, s = (c.view(-1, 1, 1, 1) for c in schedule.coefficients(t))
    return a * x.detach() + s * noise


def _cfg(e_u, e_c, scale):
    return e_u + scale * (e_c - e_u)


# ---- each rule against its formula -----------------------------------------------------------------

def test_csd_is_the_classifier_term_alone():
    x, schedule, uncond, cond, noise = _inputs()
    t = torch.tensor([150, 700])
    out = score_distillation(x, _unet, schedule, uncond, cond, t, 1.0, noise=noise, distillation="csd")
    x_t = _x_t(schedule, x, noise, t)
    w = sds_weight(*schedule.coefficients(t), "sds").view(-1, 1, 1, 1)
    expected = w * (_unet(x_t, t, cond[0], None) - _unet(x_t, t, uncond, None))  # w(t) (eps_y - eps_empty), exactly
    assert torch.allclose(out.grad, expected, atol=1e-6)
    scaled = score_distillation(x, _unet, schedule, uncond, cond, t, 7.5, noise=noise, distillation="csd")
    assert torch.allclose(scaled.grad, 7.5 * expected, atol=1e-5)
    # and SDS is CSD plus the denoising term w(t) (eps_empty - eps)
    sds = score_distillation(x, _unet, schedule, uncond, cond, t, 7.5, noise=noise)
    assert torch.allclose(sds.grad - scaled.grad, w * (_unet(x_t, t, uncond, None) - noise), atol=1e-5)


def test_nfsd_denoises_at_small_t_and_pushes_from_the_negative_above():
    x, schedule, uncond, cond, noise = _inputs()
    negative = torch.full_like(uncond, 0.7)
    t = torch.tensor([150, 700])  # one below the paper's 200, one above
    out = score_distillation(x, _unet, schedule, uncond, cond, t, 7.5, noise=noise, distillation="nfsd",
                             negative_embeddings=negative, nfsd=NFSDConfig(small_t=0.2))
    x_t = _x_t(schedule, x, noise, t)
    e_u, e_c, e_n = _unet(x_t, t, uncond, None), _unet(x_t, t, cond[0], None), _unet(x_t, t, negative, None)
    w = sds_weight(*schedule.coefficients(t), "sds").view(-1, 1, 1, 1)
    classifier = 7.5 * (e_c - e_u)
    domain = torch.stack([e_u[0], (e_u - e_n)[1]])  # delta_D: eps_empty at t < 200, eps_empty - eps_negative above
    assert torch.allclose(out.grad, w * (domain + classifier), atol=1e-5)
    # without a negative prompt, the large-t term vanishes: CSD there
    bare = score_distillation(x, _unet, schedule, uncond, cond, t, 7.5, noise=noise, distillation="nfsd")
    assert torch.allclose(bare.grad[1], (w * classifier)[1], atol=1e-5)
    assert torch.allclose(bare.grad[0], (w * (e_u + classifier))[0], atol=1e-5)


def test_ddim_move_is_diffusers_ddim_step_both_ways():
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    kwargs = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=False)
    forward, inverse = DDIMScheduler(**kwargs), DDIMInverseScheduler(**kwargs)
    forward.set_timesteps(1000)
    inverse.set_timesteps(1000)
    schedule = NoiseSchedule.from_scheduler(forward)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 3, 4, 4, generator=g), torch.randn(1, 3, 4, 4, generator=g)
    t = torch.tensor([400])
    assert torch.allclose(ddim_move(schedule, x, eps, t, t - 1), forward.step(eps, 400, x, eta=0.0).prev_sample, atol=1e-5)
    # the inverse scheduler's step at timestep t moves from t - 1 to t
    assert torch.allclose(ddim_move(schedule, x, eps, t - 1, t), inverse.step(eps, 400, x).prev_sample, atol=1e-5)


def test_ism_inverts_to_s_and_steps_on_to_t():
    x, schedule, uncond, cond, noise = _inputs(B=1)
    cfg = ISMConfig(interval=0.08, inversion_stride=0.2, inversion_steps=5)
    t = torch.tensor([530])
    out = score_distillation(x, _unet, schedule, uncond, cond, t, 7.5, noise=noise, distillation="ism", ism=cfg)

    # by hand: x_0 (noised to index 0) -> 200 -> 400 -> 450 (= s) by DDIM inversion with eps_empty, then s -> t
    eps_at = lambda z, k: _unet(z, torch.tensor([k]), uncond, None)  # noqa: E731
    z = _x_t(schedule, x, noise, torch.tensor([0]))
    for a, b in [(0, 200), (200, 400), (400, 450)]:
        z = ddim_move(schedule, z, eps_at(z, a), torch.tensor([a]), torch.tensor([b]))
    eps_s = eps_at(z, 450)
    x_t = ddim_move(schedule, z, eps_s, torch.tensor([450]), t)
    w = sds_weight(*schedule.coefficients(t), "sds").view(-1, 1, 1, 1)
    expected = w * (_cfg(_unet(x_t, t, uncond, None), _unet(x_t, t, cond[0], None), 7.5) - eps_s)
    assert torch.allclose(out.grad, expected, atol=1e-5)

    # a batch whose samples stop at different s matches each sample run alone
    xb, schedule, ub, cb, nb = _inputs(B=3, seed=4)
    tb = torch.tensor([30, 530, 980])
    both = ism_noised(xb.detach(), nb, tb, _unet, schedule, ub, None, cfg)
    for i in range(3):
        one = ism_noised(xb.detach()[i:i + 1], nb[i:i + 1], tb[i:i + 1], _unet, schedule, ub[i:i + 1], None, cfg)
        assert torch.allclose(both[0][i:i + 1], one[0], atol=1e-5) and torch.allclose(both[1][i:i + 1], one[1], atol=1e-5)


def test_vsd_against_phi_and_zero_when_phi_is_the_prior_at_cfg_1():
    x, schedule, uncond, cond, noise = _inputs()
    t = torch.tensor([150, 700])
    phi = lambda x_t, time: 0.5 * _unet(x_t, time, cond[0], None)  # noqa: E731
    out = score_distillation(x, _unet, schedule, uncond, cond, t, 7.5, noise=noise, distillation="vsd", online=phi)
    x_t = _x_t(schedule, x, noise, t)
    w = sds_weight(*schedule.coefficients(t), "sds").view(-1, 1, 1, 1)
    expected = w * (_cfg(_unet(x_t, t, uncond, None), _unet(x_t, t, cond[0], None), 7.5) - phi(x_t, t))
    assert torch.allclose(out.grad, expected, atol=1e-5)
    same = score_distillation(x, _unet, schedule, uncond, cond, t, 1.0, noise=noise, distillation="vsd",
                              online=lambda x_t, time: _unet(x_t, time, cond[0], None))
    assert same.grad.abs().max() < 1e-7  # eps_u + 1 (eps_y - eps_u) is eps_y up to rounding


def test_sds_stays_the_default_and_unchanged():
    x, schedule, uncond, cond, noise = _inputs()
    t = torch.tensor([150, 700])
    a = score_distillation(x, _unet, schedule, uncond, cond, t, 7.5, noise=noise)
    b = score_distillation(x, _unet, schedule, uncond, cond, t, 7.5, noise=noise, distillation="sds")
    x_t = _x_t(schedule, x, noise, t)
    w = sds_weight(*schedule.coefficients(t), "sds").view(-1, 1, 1, 1)
    assert torch.equal(a.grad, b.grad)
    assert torch.allclose(a.grad, w * (_cfg(_unet(x_t, t, uncond, None), _unet(x_t, t, cond[0], None), 7.5) - noise), atol=1e-5)


# ---- every backend ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    return {
        "pixel": save_tiny_pixel_model(root / "prior", sample_size=16, camera=True),
        "if": save_tiny_pixel_model(root / "if", sample_size=16, camera=False, learned_variance=True),
        "latent": save_tiny_latent_model(root / "sd", sample_size=8),
        "flow": save_tiny_sd3_model(root / "sd3", sample_size=8),
    }


def _cams(n):
    return make_cameras(torch.linspace(5, 40, n), torch.linspace(-150, 150, n), torch.full((n,), 2.0), torch.full((n,), 50.0))


@pytest.mark.parametrize("backend", ["pixel", "if", "latent", "flow"])
@pytest.mark.parametrize("rule", RULES)
def test_every_rule_runs_on_every_backend(models, backend, rule):
    kind = {"pixel": "pixel", "if": "pixel", "latent": "latent", "flow": "flow"}[backend]
    cfg = GuidanceConfig(type=kind, model=str(models[backend]), embedding_cache=None, guidance_scale=7.5,
                         distillation=rule, negative_prompt="blurry" if rule == "nfsd" else "")
    guidance = make_guidance(cfg, "cpu")
    guidance.prepare("a red cube")
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    out = guidance(rgb, _cams(2), generator=g, t=torch.tensor([120, 640]))
    out.loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in guidance.unet.parameters())  # the prior never trains
    state = guidance.state_dict()
    if rule == "vsd":  # phi took one Adam step on these renders, and its state is what a checkpoint keeps
        assert state["online_score"]["steps"] == 1 and state["online_score"]["optimizer"]["state"]
        moved = [n for n, p in state["online_score"]["params"].items()
                 if not torch.equal(p, dict(guidance.unet.named_parameters()).get(n, p + 1))]
        assert moved
    else:
        assert state == {}


def test_vsd_lora_trains_only_its_adapters_and_a_camera_embedding(models):
    cfg = build(GuidanceConfig, {"type": "latent", "model": str(models["latent"]), "embedding_cache": None,
                                 "distillation": "vsd", "vsd": {"model": "lora", "lora_rank": 2}})
    guidance = make_guidance(cfg, "cpu")
    guidance.prepare("a red cube")
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)
    t = torch.tensor([300, 800])
    noise = torch.randn(2, 4, 8, 8)
    phi = guidance.online_score()
    names = phi.names
    assert names and all("lora" in n or n.startswith("class_embedding") for n in names)
    assert any(n.startswith("class_embedding") for n in names)  # SD takes no camera: phi embeds its own
    # phi starts as the prior: the camera embedding's output layer and LoRA's B matrices are zero
    first = guidance(rgb, _cams(2), generator=torch.Generator().manual_seed(1), t=t, noise=noise)
    assert torch.isfinite(first.grad).all()
    second = guidance(rgb, _cams(2), generator=torch.Generator().manual_seed(1), t=t, noise=noise)
    assert not torch.equal(first.grad, second.grad)  # phi learned between the two calls


# ---- config and runs ---------------------------------------------------------------------------------

def test_a_bad_rule_is_one_sentence_and_exit_2(models, tmp_path, capsys):
    from dreamfusion.cli.dream import main
    from dreamfusion.cli.errors import run_cli

    ws = tmp_path / "ws"
    code = run_cli(main, ["--prompt", "a red cube", "--workspace", str(ws), f"guidance.model={models['pixel']}",
                          "guidance.distillation=vds"], prog="dream")
    err = capsys.readouterr().err
    assert code == 2 and "guidance.distillation must be one of" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not ws.exists()


def test_vsd_train_every_must_be_positive():
    from dreamfusion.config import ConfigError

    with pytest.raises(ConfigError, match="vsd.train_every must be >= 1"):
        build(GuidanceConfig, {"model": "x", "vsd": {"train_every": 0}}, prefix="guidance").validate()


@pytest.mark.parametrize("every", [1, 3])
def test_a_resumed_vsd_run_ends_where_an_uninterrupted_one_does(models, tmp_path, every):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_dream import run, small

    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--prompt", "a blue cone", "--quiet", "--no-export", "--seed", "3", "--stage", "coarse",
              "guidance.distillation=vsd", "guidance.vsd.lr=0.01", f"guidance.vsd.train_every={every}"]
    assert run([*common, "--workspace", str(a), *small(models["pixel"], 8)]) == 0
    assert run([*common, "--workspace", str(b), *small(models["pixel"], 4)]) == 0
    assert run([*common, "--workspace", str(b), "--resume", *small(models["pixel"], 8)]) == 0
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in p.read_text().splitlines()]  # noqa: E731
    assert strip(a / "metrics.jsonl") == strip(b / "metrics.jsonl")
    sa, sb = (torch.load(w / "checkpoints" / "last.pt", weights_only=True) for w in (a, b))
    torch.testing.assert_close(sa["scene"], sb["scene"], rtol=0, atol=0)  # every tensor, bit for bit
    pa, pb = sa["guidance"]["online_score"], sb["guidance"]["online_score"]
    assert pa["seen"] == pb["seen"] == 8 and pa["steps"] == pb["steps"] == {1: 8, 3: 3}[every]  # steps 1, 4 and 7 of 8
    assert all(torch.equal(pa["params"][k], pb["params"][k]) for k in pa["params"])
