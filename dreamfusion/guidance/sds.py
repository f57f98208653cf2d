"""Score distillation sampling (SDS): THE math, shared by every guidance backend.

DreamFusion (arXiv 2209.14988, eq. 3): for an image x = g(theta) the prior does not score,

    grad_theta L_SDS = E_{t, eps} [ w(t) (eps_hat(x_t; y, t) - eps) dx/dtheta ],
    x_t = signal_t x + noise_t eps,

with (signal, noise) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for DDPM priors and (1 - sigma_t,
sigma_t) for rectified-flow priors (schedule.py, which also turns every kind of model output into a
noise prediction), and where eps_hat is the classifier-free-guided noise prediction. The U-Net Jacobian is dropped, so the
U-Net runs under `no_grad` and the gradient is injected into x through the surrogate

    loss = 0.5 * || x - stopgrad(x - grad) ||^2 / B,      d loss / dx = grad / B.

A backend only has to turn the render into x (a VAE latent, or resized pixels in [-1, 1]) and
provide a `UNetFn`; timesteps, noising, CFG (plain or Perp-Neg), w(t), clipping and the loss live
here, once, for every schedule.

The distillation rules that followed SDS differ from it only in what the guided prediction is
compared with, so they are one formula here, grad = w(t) (eps_cfg(x_t; y) - baseline):

    sds   baseline = eps, the noise that made x_t                          (DreamFusion)
    csd   baseline = eps(x_t; empty): only the classifier term s (eps_y - eps_empty) is left
    nfsd  baseline = 0 for t < small_t T, else eps(x_t; negative): the classifier term plus a
          denoising term at small t, the negative prompt's direction at large t (Katzir et al.)
    ism   baseline = eps(x_s; empty, s), with x_s reached from x by DDIM inversion and x_t one DDIM
          inversion step on from x_s, not by fresh noise (LucidDreamer's interval score matching)
    vsd   baseline = eps_phi(x_t; y, camera), a copy of the prior trained online on the renders
          (ProlificDreamer; online_score.py)
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch

from ..utils import random

from .config import Distillation, ISMConfig, NFSDConfig
from .schedule import NoiseSchedule, PredictionType

Weighting = Literal["sds", "uniform", "fantasia3d"]

# (x_t (N, C, h, w), the model's time (N,) (the index t, or sigma * T for a flow), text embeddings
# (N, L, D), class labels (N, F) or None) -> model output (N, C', h, w)
UNetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
# VSD's online model: (x_t (B, C, h, w), the model's time (B,)) -> its output (B, C', h, w), with the
# text and camera it is conditioned on already bound
OnlineFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SDSOutput:
    """What one SDS step returns: the loss to add, plus diagnostics for logging."""

    loss: torch.Tensor  # () differentiable surrogate; its gradient w.r.t. x is grad / B
    t: torch.Tensor  # (B,) long, the sampled timesteps
    t_frac: torch.Tensor  # (B,) float, t / num_train_timesteps
    grad_norm: torch.Tensor  # () L2 norm of the injected gradient (after weighting and clipping)
    weight: torch.Tensor  # (B,) w(t)
    grad: torch.Tensor  # (B, C, h, w) detached injected gradient, in the prior's space (latent or pixels)
    nonfinite: torch.Tensor  # () long, entries of the gradient that were NaN/inf and were zeroed


# ---- timesteps ---------------------------------------------------------------------------------

def t_max_at(step: int, t_max: float, schedule: tuple[float, int] | None) -> float:
    """t_max lowered linearly from `t_max` to `schedule[0]` over `schedule[1]` steps (then held).

    Large t shapes coarse geometry, small t refines detail; lowering t_max late in a run (as
    DreamTime and threestudio's annealing do) stops high-noise updates from undoing detail.
    """
    if schedule is None:
        return t_max
    final, steps = schedule
    frac = min(max(step, 0) / max(steps, 1), 1.0)
    return t_max + (final - t_max) * frac


def sample_timesteps(
    batch: int,
    num_train_timesteps: int,
    t_range: tuple[float, float],
    step: int = 0,
    schedule: tuple[float, int] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """t ~ U{round(T t_min), ..., round(T t_max(step))}, one per sample: (B,) long on `device`."""
    t_min = t_range[0]
    t_max = max(t_max_at(step, t_range[1], schedule), t_min)
    lo = min(int(round(num_train_timesteps * t_min)), num_train_timesteps - 1)
    hi = min(max(int(round(num_train_timesteps * t_max)), lo), num_train_timesteps - 1)
    return random.randint(lo, hi + 1, (batch,), generator, device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise shaped like x, drawn on the generator's device (a CPU generator works for CUDA x)."""
    return random.randn(x.shape, generator, x.device, torch.float32).to(x.dtype)


# ---- pieces of the formula ---------------------------------------------------------------------

def sds_weight(signal: torch.Tensor, noise: torch.Tensor, weighting: Weighting) -> torch.Tensor:
    """w(t) per sample (B,) from the schedule's coefficients at t: `sds` = noise^2 (1 - alpha_bar,
    DreamFusion / stable-dreamfusion; sigma^2 on a flow's path), `uniform` = 1, `fantasia3d` =
    signal noise^2 (threestudio's name)."""
    if weighting == "sds":
        return noise**2
    if weighting == "uniform":
        return torch.ones_like(noise)
    if weighting == "fantasia3d":
        return signal * noise**2
    raise ValueError(f"unknown SDS weighting {weighting!r}; use 'sds', 'uniform' or 'fantasia3d'")


def perpendicular(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample component of x orthogonal to y (both (B, ...)), as Perp-Neg uses."""
    dims = tuple(range(1, x.dim()))
    coef = (x * y).sum(dims, keepdim=True) / (y * y).sum(dims, keepdim=True).clamp_min(1e-6)
    return x - coef * y


def guided_noise(
    eps_uncond: torch.Tensor,
    eps_cond: torch.Tensor,
    guidance_scale: float,
    cond_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Classifier-free guidance, plain or Perp-Neg (arXiv 2304.04968), in one formula.

    eps_uncond: (B, C, h, w); eps_cond: (K, B, C, h, w), the first of the K prompts is the main
    positive one; cond_weights: (K, B) or None (plain CFG, K = 1).

        eps_hat = eps_u + s * ( w_0 d_0 + sum_{k>0} w_k perp(d_k, d_0) ),   d_k = eps_k - eps_u

    With K = 1 and w_0 = 1 this is eps_u + s (eps_c - eps_u). Perp-Neg's negative w_k push the
    sample away from the other views' prompts only along directions that don't fight the main one.
    """
    delta = eps_cond - eps_uncond.unsqueeze(0)  # (K, B, C, h, w)
    if cond_weights is None:
        if delta.shape[0] != 1:
            raise ValueError("several conditional predictions need cond_weights (Perp-Neg)")
        return eps_uncond + guidance_scale * delta[0]
    w = cond_weights.to(delta.dtype).view(*cond_weights.shape, 1, 1, 1)  # (K, B, 1, 1, 1)
    main = delta[0]
    guided = w[0] * main
    for k in range(1, delta.shape[0]):
        guided = guided + w[k] * perpendicular(delta[k], main)
    return eps_uncond + guidance_scale * guided


def sds_surrogate_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 ||x - stopgrad(x - grad)||^2 / B: a scalar whose gradient w.r.t. x is exactly grad / B."""
    x = x.float()
    target = (x - grad.float()).detach()
    return 0.5 * ((x - target) ** 2).sum() / x.shape[0]


def ddim_move(schedule: NoiseSchedule, x: torch.Tensor, eps: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM step (eta 0) from timestep t_from to t_to (B,), forward (inversion) or
    back: x_to = signal_to x0_hat + noise_to eps with x0_hat = (x - noise_from eps) / signal_from.
    On a flow's straight path this is the Euler step; on DDPM's it is DDIMScheduler's update."""
    a0, s0 = (c.view(-1, 1, 1, 1) for c in schedule.coefficients(t_from))
    a1, s1 = (c.view(-1, 1, 1, 1) for c in schedule.coefficients(t_to))
    x0_hat = (x - s0 * eps) / a0
    return a1 * x0_hat + s1 * eps


def ism_noised(
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    unet_fn: UNetFn,
    schedule: NoiseSchedule,
    uncond_embeddings: torch.Tensor,
    class_labels: torch.Tensor | None,
    cfg: ISMConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LucidDreamer's x_t and its baseline: (x_t (B, C, h, w), eps(x_s; empty, s) (B, C, h, w)).

    s = t - interval T; x_s comes from x0 by DDIM inversion with the unconditional prediction, in
    steps of inversion_stride T (at most inversion_steps of them, starting from x0 noised to where
    they must begin); x_t is one more inversion step, from s to t, with eps(x_s; empty, s). Each
    sample stops at its own s; the U-Net runs only on the samples still moving. No grad.
    """
    T = schedule.num_train_timesteps
    s = (t - int(round(cfg.interval * T))).clamp_min(0)
    stride = max(int(round(cfg.inversion_stride * T)), 1)
    current = (s - stride * cfg.inversion_steps).clamp_min(0)
    signal, sigma = schedule.coefficients(current)
    x = signal.view(-1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1) * noise

    def eps_at(idx: torch.Tensor, x_at: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        labels = class_labels[idx] if class_labels is not None else None
        pred = unet_fn(x_at.to(x0.dtype), schedule.model_time[times], uncond_embeddings[idx], labels)
        return schedule.to_epsilon(pred.float(), x_at, times)

    while bool((current < s).any()):
        moving = (current < s).nonzero().flatten()
        now, nxt = current[moving], torch.minimum(current[moving] + stride, s[moving])
        eps = eps_at(moving, x[moving], now)
        x = x.index_copy(0, moving, ddim_move(schedule, x[moving], eps, now, nxt))
        current = current.index_copy(0, moving, nxt)
    every = torch.arange(x.shape[0], device=x.device)
    eps_s = eps_at(every, x, s)
    return ddim_move(schedule, x, eps_s, s, t), eps_s


# ---- the SDS step --------------------------------------------------------------------------------

def score_distillation(
    x: torch.Tensor,
    unet_fn: UNetFn,
    schedule: NoiseSchedule | torch.Tensor,
    uncond_embeddings: torch.Tensor,
    cond_embeddings: torch.Tensor,
    t: torch.Tensor,
    guidance_scale: float,
    cond_weights: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    weighting: Weighting = "sds",
    grad_clip: float | None = None,
    prediction_type: PredictionType = "epsilon",
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    distillation: Distillation = "sds",
    negative_embeddings: torch.Tensor | None = None,
    online: OnlineFn | None = None,
    nfsd: NFSDConfig | None = None,
    ism: ISMConfig | None = None,
) -> SDSOutput:
    """One score-distillation step on x (B, C, h, w), which carries the gradient back to the render.

    schedule: a NoiseSchedule, or a DDPM alphas_cumprod (T,) read with `prediction_type`;
    uncond_embeddings: (B, L, D) (negative prompt or empty text); cond_embeddings: (K, B, L, D);
    t: (B,) long; class_labels: (B, F) camera features or None, given to every branch;
    noise: (B, C, h, w) or None to draw it from `generator`.
    The U-Net runs once on the batch [uncond, cond_1 .. cond_K] of (1 + K) B samples, without grad.

    `distillation` picks the baseline (the module's docstring). uncond_embeddings are the empty
    text's for csd, nfsd and ism (their unconditional prediction is a score, not a negative prompt's);
    nfsd's negative_embeddings (B, L, D), or None for an empty negative prompt (its large-t term is
    then zero), join the U-Net's batch; vsd needs `online`; ism runs its DDIM inversion first.
    """
    if not isinstance(schedule, NoiseSchedule):
        schedule = NoiseSchedule.variance_preserving(schedule, prediction_type)
    schedule = schedule.to(x.device)
    B = x.shape[0]
    K = cond_embeddings.shape[0]
    signal, sigma = schedule.coefficients(t)  # (B,) each
    if noise is None:
        noise = randn_like(x, generator)
    if distillation not in typing.get_args(Distillation):
        raise ValueError(f"unknown distillation {distillation!r}; use one of {', '.join(typing.get_args(Distillation))}")
    if distillation == "vsd" and online is None:
        raise ValueError("VSD needs the online score model (online=...)")
    with torch.no_grad():
        if distillation == "ism":
            x_t, ism_baseline = ism_noised(x.detach().float(), noise.float(), t, unet_fn, schedule, uncond_embeddings,
                                           class_labels, ism or ISMConfig())
        else:
            x_t = signal.view(-1, 1, 1, 1) * x.detach().float() + sigma.view(-1, 1, 1, 1) * noise.float()  # (B, C, h, w)
        negative = distillation == "nfsd" and negative_embeddings is not None
        branches = [uncond_embeddings.unsqueeze(0), cond_embeddings] + ([negative_embeddings.unsqueeze(0)] if negative else [])
        n = 1 + K + int(negative)
        x_in = x_t.to(x.dtype).repeat(n, 1, 1, 1)  # (n B, C, h, w)
        t_in = t.repeat(n)
        emb = torch.cat(branches, dim=0).flatten(0, 1)  # (n B, L, D): [uncond, cond_1 .. cond_K, (negative)]
        labels = class_labels.repeat(n, 1) if class_labels is not None else None
        pred = unet_fn(x_in, schedule.model_time[t_in], emb, labels)
        eps = schedule.to_epsilon(pred.float(), x_t.repeat(n, 1, 1, 1), t_in)
        eps = eps.view(n, B, *eps.shape[1:])
        eps_hat = guided_noise(eps[0], eps[1:1 + K], guidance_scale, cond_weights)  # (B, C, h, w)

        if distillation == "sds":
            baseline = noise.float()
        elif distillation == "csd":
            baseline = eps[0]
        elif distillation == "nfsd":
            small = t < int(round((nfsd or NFSDConfig()).small_t * schedule.num_train_timesteps))  # (B,)
            large_t = eps[-1] if negative else eps[0]
            baseline = torch.where(small.view(-1, 1, 1, 1), torch.zeros_like(large_t), large_t)
        elif distillation == "ism":
            baseline = ism_baseline
        else:  # vsd
            baseline = schedule.to_epsilon(online(x_t.to(x.dtype), schedule.model_time[t]).float(), x_t, t)

        weight = sds_weight(signal, sigma, weighting)  # (B,)
        grad = weight.view(-1, 1, 1, 1) * (eps_hat - baseline)
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
        nonfinite = (~torch.isfinite(grad)).sum()  # stays on the device: no sync per step
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)  # never let NaN/inf reach the field
    loss = sds_surrogate_loss(x, grad)
    return SDSOutput(
        loss=loss,
        t=t,
        t_frac=t.float() / schedule.num_train_timesteps,
        grad_norm=grad.norm().detach(),
        weight=weight.detach(),
        grad=grad.detach(),
        nonfinite=nonfinite,
    )
