"""The noise schedules SDS noises a render with: DDPM's variance-preserving one and rectified flow's.

Both write the noised input at an integer timestep t in [0, T) as

    x_t = signal(t) x + noise(t) eps,

DDPM (Stable Diffusion 1.x/2.x, DeepFloyd IF, the bundled priors) with signal = sqrt(alpha_bar_t)
and noise = sqrt(1 - alpha_bar_t); rectified flow (Stable Diffusion 3.x) on the straight path
signal = 1 - sigma, noise = sigma. They differ in what the network predicts (a noise, a v, a
sample, or the flow's velocity v = eps - x) and in what it is told the time is (the index t, or
sigma * T). `to_epsilon` turns any of those into a noise prediction, so the one SDS formula in
sds.py serves every prior.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

PredictionType = Literal["epsilon", "v_prediction", "sample", "flow"]


@dataclass(frozen=True)
class NoiseSchedule:
    signal: torch.Tensor  # (T,) float32, the clean image's coefficient in x_t
    noise: torch.Tensor  # (T,) float32, the noise's coefficient
    model_time: torch.Tensor  # (T,) the timestep the network is given for index t (DDPM: t, long; flow: sigma T)
    prediction_type: PredictionType

    @property
    def num_train_timesteps(self) -> int:
        return int(self.signal.shape[0])

    @classmethod
    def variance_preserving(cls, alphas_cumprod: torch.Tensor, prediction_type: PredictionType = "epsilon") -> "NoiseSchedule":
        a = alphas_cumprod.float()
        return cls(a.sqrt(), (1.0 - a).sqrt(), torch.arange(len(a)), prediction_type)  # the U-Net takes the index itself

    @classmethod
    def rectified_flow(cls, num_train_timesteps: int = 1000, shift: float = 1.0) -> "NoiseSchedule":
        """sigma_t = shift u / (1 + (shift - 1) u) with u = (t + 1) / T: the shifted sigmas of diffusers'
        FlowMatchEulerDiscreteScheduler (SD3 uses shift 3, which spends more of t at high noise)."""
        u = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
        sigma = (shift * u / (1.0 + (shift - 1.0) * u)).float()
        return cls(1.0 - sigma, sigma, sigma * num_train_timesteps, "flow")

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> "NoiseSchedule":
        """The schedule of a diffusers scheduler: DDPM-family (alphas_cumprod) or FlowMatchEulerDiscrete."""
        config = scheduler.config
        if hasattr(scheduler, "alphas_cumprod"):
            return cls.variance_preserving(scheduler.alphas_cumprod, config.prediction_type)
        if type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler":
            if getattr(config, "use_dynamic_shifting", False):
                raise ValueError("flow schedulers with resolution-dependent shifting (FLUX) are not supported; SD3.x is")
            return cls.rectified_flow(int(config.num_train_timesteps), float(config.shift))
        raise ValueError(f"unsupported scheduler {type(scheduler).__name__}: need a DDPM-family or a flow-matching one")

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        return NoiseSchedule(self.signal.to(device), self.noise.to(device), self.model_time.to(device), self.prediction_type)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(signal, noise), each (B,), at the integer timesteps t (B,)."""
        return self.signal[t], self.noise[t]

    def to_epsilon(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A model output (N, C', h, w) at x_t (N, C, h, w) and timesteps t (N,) -> its noise prediction
        (N, C, h, w). A learned-variance output (IF: 2C channels) keeps its first C."""
        if pred.shape[1] == 2 * x_t.shape[1]:
            pred = pred[:, : x_t.shape[1]]
        a, s = (c.view(-1, 1, 1, 1).to(pred.dtype) for c in self.coefficients(t))
        if self.prediction_type == "epsilon":
            return pred
        if self.prediction_type == "v_prediction":
            return a * pred + s * x_t
        if self.prediction_type == "sample":
            return (x_t - a * pred) / s
        if self.prediction_type == "flow":  # v = eps - x and x_t = (1 - sigma) x + sigma eps give eps = x_t + (1 - sigma) v
            return x_t + a * pred
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
