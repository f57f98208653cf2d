"""How much does a camera-conditioned prior actually use the camera? A denoising-error probe.

The toy world's only azimuth-dependent objects are the cubes: every other shape is symmetric
about +z. So a prior that uses its camera input must (a) denoise true renders better with the
camera than without it, and (b) denoise a cube at its trained pose (faces toward azimuth 0, 90,
...) better than the same cube turned by 45 degrees while the camera input keeps the true azimuth.
If neither gap exists, score distillation cannot learn the cube's yaw or the marked face from
this prior: the camera carries no gradient. Both gaps are relative changes of the mean
squared noise-prediction error, per band of diffusion time, on the same noise draws.
"""
from __future__ import annotations


import torch

from ..cameras import make_cameras, sample_cameras
from ..guidance.camera_conditioning import camera_features, camera_harmonics
from ..guidance.loading import encode_texts
from ..utils import random
from .dataset import TOY_CAMERAS, TOY_LIGHTS
from .prior import LoadedPrior
from .scenes import ToyRenderConfig, render_object
from .vocabulary import caption

T_BANDS = {"low": (0.02, 0.3), "mid": (0.3, 0.6), "high": (0.6, 0.98)}


@torch.no_grad()
def _denoising_errors(unet, x: torch.Tensor, cond: torch.Tensor, cams_features: torch.Tensor,
                      alphas_cumprod: torch.Tensor, draws: int, seed: int) -> dict[str, float]:
    """Mean squared noise-prediction error per time band for the U-Net's inputs x (B, C, r, r)."""
    gen = torch.Generator().manual_seed(seed)  # the same t and noise for every call with this seed
    n_t = alphas_cumprod.shape[0]
    out = {}
    for band, (lo, hi) in T_BANDS.items():
        err = 0.0
        for _ in range(draws):
            t = random.randint(int(lo * n_t), int(hi * n_t), (x.shape[0],), gen, x.device)
            noise = random.randn(x.shape, gen, x.device)
            a = alphas_cumprod[t].view(-1, 1, 1, 1)
            eps = unet(a.sqrt() * x + (1 - a).sqrt() * noise, t, encoder_hidden_states=cond, class_labels=cams_features).sample
            err += ((eps - noise) ** 2).mean().item() / draws
        out[band] = err
    return out


def camera_use(prior: LoadedPrior, colour: str = "red", n: int = 64, draws: int = 4, seed: int = 0) -> dict[str, dict[str, float]]:
    """Relative error gaps per shape ("cube", "marked cube") and time band; positive = the camera helps.

    camera_gain: err(no camera) / err(camera) - 1, on renders at the trained pose.
    pose_gain: err(turned 45 deg) / err(trained pose) - 1, both with the camera input.
    For a latent prior the renders are encoded by its VAE and the errors are those of the latents.
    """
    unet, alphas_cumprod = prior.unet, prior.scheduler.alphas_cumprod
    cams = sample_cameras(TOY_CAMERAS, n, torch.Generator().manual_seed(seed))
    feats = camera_features(cams.elevation, cams.azimuth, True, camera_harmonics(unet.config) or 1)  # (n, F)
    result: dict[str, dict[str, float]] = {}
    for shape in ("cube", "marked cube"):
        cond = encode_texts(prior.tokenizer, prior.encoder, [f"{caption(colour, shape)}, {v} view" for v in cams.view_labels()])

        def errors(yaw: float, features: torch.Tensor) -> dict[str, float]:
            # the object turned by +yaw is the camera turned by -yaw; the features keep the true azimuth
            seen = make_cameras(cams.elevation, cams.azimuth - yaw, cams.distance, cams.fovy)
            cfg = ToyRenderConfig(resolution=prior.image_resolution, background_grey_range=prior.backgrounds)
            img = render_object(shape, colour, seen, cfg, TOY_LIGHTS, torch.Generator().manual_seed(seed))[0]
            x = prior.to_model(img.permute(0, 3, 1, 2) * 2 - 1)
            return _denoising_errors(unet, x, cond, features, alphas_cumprod, draws, seed + 1)

        trained = errors(0.0, feats)
        blind = errors(0.0, torch.zeros_like(feats))
        turned = errors(45.0, feats)
        for band in T_BANDS:
            result.setdefault("camera_gain", {})[f"{shape}/{band}"] = blind[band] / trained[band] - 1
            result.setdefault("pose_gain", {})[f"{shape}/{band}"] = turned[band] / trained[band] - 1
    return result
