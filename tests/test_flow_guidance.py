"""Stable Diffusion 3 (rectified flow) as the prior: the schedule against diffusers' and the closed
form, and the adapter end to end on a tiny SD3 pipeline saved to disk and loaded through
`from_pretrained`."""
from __future__ import annotations

import pytest
import torch

from dreamfusion.cameras import make_cameras
from dreamfusion.guidance import GuidanceConfig, ModelLoadError, NoiseSchedule, StableDiffusion3Guidance, make_guidance
from dreamfusion.guidance.flow import pack_pooled
from dreamfusion.guidance.prompts import select_embeddings
from dreamfusion.guidance.sds import score_distillation
from dreamfusion.guidance.tiny import save_tiny_latent_model, save_tiny_sd3_model


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return save_tiny_sd3_model(tmp_path_factory.mktemp("sd3") / "sd3", sample_size=8)


@pytest.fixture(scope="module")
def sd3(sd3_folder):
    cfg = GuidanceConfig(type="flow", model=str(sd3_folder), embedding_cache=None, release_text_encoder=False,
                         guidance_scale=7.0)
    guidance = make_guidance(cfg, "cpu")
    guidance.prepare("a red cube")
    return guidance


def test_flow_schedule_is_diffusers_shifted_sigmas():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    sigmas = scheduler.sigmas.flip(0)  # diffusers lists them descending from 1
    assert schedule.prediction_type == "flow" and schedule.num_train_timesteps == 1000
    assert torch.allclose(schedule.noise, sigmas.float(), atol=1e-6)
    assert torch.allclose(schedule.signal + schedule.noise, torch.ones(1000))
    assert torch.allclose(schedule.model_time, scheduler.timesteps.flip(0).float(), atol=1e-3)  # sigma * T


def test_velocity_to_noise_is_exact():
    schedule = NoiseSchedule.rectified_flow(1000, shift=3.0)
    x, eps = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    t = torch.tensor([10, 500, 990])
    a, s = (c.view(-1, 1, 1, 1) for c in schedule.coefficients(t))
    x_t = a * x + s * eps
    assert torch.allclose(schedule.to_epsilon(eps - x, x_t, t), eps, atol=1e-5)


def test_flow_sds_gradient_matches_the_closed_form():
    """A model that knows the clean image is y predicts v = (x_t - y) / sigma; the SDS gradient on x is
    then sigma^2 (eps_hat - eps) = sigma (1 - sigma) (x - y) for any CFG scale. The fake model reads
    sigma from the time it is given, so this also checks that it is given sigma * T."""
    schedule = NoiseSchedule.rectified_flow(1000, shift=3.0)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    y = torch.randn(2, 4, 6, 6)

    def oracle(x_t, model_time, emb, labels):
        sigma = (model_time / 1000.0).view(-1, 1, 1, 1)
        return (x_t - y.repeat(x_t.shape[0] // 2, 1, 1, 1)) / sigma

    t, noise = torch.tensor([200, 700]), torch.randn(2, 4, 6, 6)
    emb = torch.randn(1, 2, 3, 8)
    out = score_distillation(x, oracle, schedule, emb[0], emb, t, 50.0, noise=noise)
    sigma = schedule.noise[t].view(-1, 1, 1, 1)
    assert torch.allclose(out.grad, sigma * (1 - sigma) * (x.detach() - y), atol=1e-4)
    assert torch.allclose(out.weight, schedule.noise[t] ** 2)
    out.loss.backward()
    assert torch.allclose(x.grad, out.grad / 2, atol=1e-6)


def test_sd3_backend_loads_and_its_gradient_matches_the_formula(sd3):
    assert isinstance(sd3, StableDiffusion3Guidance) and sd3.resolution == 16 and not sd3.uses_cameras
    assert sd3.schedule.prediction_type == "flow" and sd3.cfg.scale == 7.0
    assert sd3.embeddings.plain.shape == (77 + 256 + 1, 32)  # CLIP and T5 tokens, and the pooled row
    rgb = torch.rand(2, 20, 20, 3, requires_grad=True)
    c = make_cameras(torch.tensor([10.0, 30.0]), torch.tensor([0.0, 170.0]), torch.full((2,), 2.0), torch.full((2,), 50.0))
    t, noise = torch.tensor([150, 850]), torch.randn(2, 4, 8, 8)
    out = sd3(rgb, c, generator=torch.Generator().manual_seed(3), t=t, noise=noise)

    x = sd3.encode_render(rgb, torch.Generator().manual_seed(3)).detach()  # the same posterior sample
    sigma = sd3.schedule.noise[t].view(-1, 1, 1, 1)
    x_t = (1 - sigma) * x + sigma * noise
    emb = sd3.embeddings
    cond = select_embeddings(emb, c.elevation, c.azimuth, sd3.cfg.view_prompt)
    with torch.no_grad():
        v_u = sd3.unet(hidden_states=x_t, timestep=sigma.flatten() * 1000, encoder_hidden_states=emb.uncond[:-1].expand(2, -1, -1),
                       pooled_projections=emb.uncond[-1:, :32].expand(2, -1)).sample
        v_c = sd3.unet(hidden_states=x_t, timestep=sigma.flatten() * 1000, encoder_hidden_states=cond[:, :-1],
                       pooled_projections=cond[:, -1, :32]).sample
    eps_u, eps_c = x_t + (1 - sigma) * v_u, x_t + (1 - sigma) * v_c
    expected = sigma**2 * (eps_u + 7.0 * (eps_c - eps_u) - noise)
    assert torch.allclose(out.grad, expected, atol=1e-4, rtol=1e-4)
    out.loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    for module in sd3.frozen_modules():  # transformer, VAE, the three text encoders
        assert not module.training and all(not p.requires_grad and p.grad is None for p in module.parameters())


def test_sd3_embeddings_are_the_pipelines_own(sd3, sd3_folder):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(str(sd3_folder), transformer=None, vae=None)
    tokens, _, pooled, _ = pipe.encode_prompt(prompt=["a red cube"], prompt_2=None, prompt_3=None,
                                              do_classifier_free_guidance=False, max_sequence_length=256)
    assert torch.allclose(sd3.embeddings.plain, pack_pooled(tokens, pooled)[0], atol=1e-5)


def test_the_wrong_guidance_type_names_the_right_one(sd3_folder, tmp_path):
    with pytest.raises(ModelLoadError, match="guidance.type: flow"):
        make_guidance(GuidanceConfig(type="latent", model=str(sd3_folder)), "cpu")
    sd2 = save_tiny_latent_model(tmp_path / "sd2", sample_size=8)
    with pytest.raises(ModelLoadError, match="guidance.type: latent"):
        make_guidance(GuidanceConfig(type="flow", model=str(sd2)), "cpu")
