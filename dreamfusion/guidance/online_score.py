"""VSD's online score model phi: a copy of the prior fitted, while the asset trains, to its renders.

ProlificDreamer (arXiv 2305.16213) replaces SDS's noise baseline by phi's prediction on the same
noised render, phi being the prior's U-Net fine-tuned online with the ordinary denoising loss on the
renders and conditioned on their cameras. The gradient then pulls the renders' distribution toward
the prior's instead of every render toward the prior's mode, which is what over-saturates and
smooths under SDS (sds.py has the formula; this file keeps phi, its optimizer and its state).

* `copy` trains every weight of a copy (the bundled priors have ~1.5M); `lora` adds LoRA layers
  (peft, through diffusers' adapter integration) to a copy's attention projections and trains only
  those, as threestudio and ProlificDreamer do with Stable Diffusion.
* A U-Net that already takes the camera (the bundled priors, camera_conditioning.py) gets it through
  its own input; any other gets a small camera embedding added to its time embedding, zero at the
  start so that phi begins as the prior itself.
* Its randomness comes from the run's generator and its weights and Adam moments travel in the run's
  checkpoints (`state_dict`), so a resumed VSD run ends where an uninterrupted one does.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..utils import random
from .config import VSDConfig
from .schedule import NoiseSchedule

# (model, dtype, x_t (N, C, h, w), model time (N,), text (N, L, D), camera (N, F) or None) -> output:
# the backend's own way of calling its prior (DiffusionGuidance.call_model)
ModelCall = Callable[[torch.nn.Module, torch.dtype, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def camera_embedding(features: int, width: int) -> torch.nn.Module:
    """Camera features (B, F) -> (B, width), added to a U-Net's time embedding: diffusers' own
    two-layer embedding MLP, its output layer zero so that phi starts as the prior."""
    from diffusers.models.embeddings import TimestepEmbedding

    embedding = TimestepEmbedding(features, width)
    torch.nn.init.zeros_(embedding.linear_2.weight)
    torch.nn.init.zeros_(embedding.linear_2.bias)
    return embedding


def _time_embed_dim(unet: torch.nn.Module) -> int:
    return int(unet.time_embedding.linear_2.out_features)


class OnlineScore:
    """phi for one stage: predict on noised renders, learn from each step's renders, save and restore."""

    def __init__(self, unet: torch.nn.Module, cfg: VSDConfig, call: ModelCall, camera_dim: int, own_camera_input: bool):
        self.cfg = cfg
        self.call = call
        self.net = copy.deepcopy(unet).float()  # trained in fp32 whatever the prior's dtype
        self.net.requires_grad_(False)
        # a U-Net without a camera input gets phi's own embedding of it; SD3's MM-DiT has no time
        # embedding to add one to, and its phi is conditioned on the text alone
        embeds_camera = not own_camera_input and hasattr(self.net, "time_embedding")
        if embeds_camera:
            self.net.class_embedding = camera_embedding(camera_dim, _time_embed_dim(self.net)).to(next(unet.parameters()).device)
        if cfg.model == "lora":
            self._add_lora(cfg.lora_rank)
            if embeds_camera:
                self.net.class_embedding.requires_grad_(True)
        else:
            self.net.requires_grad_(True)
        self.net.train()
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.names = [n for n, p in self.net.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.steps = 0  # Adam steps taken
        self.seen = 0  # batches of renders offered (observe)

    def _add_lora(self, rank: int) -> None:
        try:
            from peft import LoraConfig
        except ImportError as err:  # pragma: no cover - peft is a dependency
            raise RuntimeError("guidance.vsd.model lora needs the peft package (pip install peft)") from err
        targets = ["to_q", "to_k", "to_v", "to_out.0"]
        self.net.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets))

    # ---- use --------------------------------------------------------------------------------------

    def _forward(self, x_t: torch.Tensor, model_time: torch.Tensor, emb: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        return self.call(self.net, torch.float32, x_t, model_time, emb, camera)

    def predict(self, x_t: torch.Tensor, model_time: torch.Tensor, emb: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """phi's output at x_t (B, C, h, w), model times (B,), text (B, L, D) and camera features (B, F). No grad."""
        with torch.no_grad():
            return self._forward(x_t, model_time, emb, camera)

    def observe(self, x0: torch.Tensor, emb: torch.Tensor, camera: torch.Tensor, schedule: NoiseSchedule,
                generator: torch.Generator | None) -> float | None:
        """The renders of one optimization step: a train_step on every `train_every`-th batch (the
        first included), else nothing. Returns the loss when it trained."""
        self.seen += 1
        if (self.seen - 1) % self.cfg.train_every:
            return None
        return self.train_step(x0, emb, camera, schedule, generator)

    def train_step(self, x0: torch.Tensor, emb: torch.Tensor, camera: torch.Tensor, schedule: NoiseSchedule,
                   generator: torch.Generator | None) -> float:
        """One Adam step of the denoising loss on the renders x0 (B, C, h, w), detached, at fresh t and
        noise from `generator`; the camera is dropped (zeros) with probability camera_dropout."""
        B = x0.shape[0]
        T = schedule.num_train_timesteps
        lo, hi = self.cfg.train_t_range
        t = random.randint(int(lo * (T - 1)), int(hi * (T - 1)) + 1, (B,), generator, x0.device)
        noise = random.randn(x0.shape, generator, x0.device, torch.float32)
        keep = random.rand((B,), generator, x0.device) >= self.cfg.camera_dropout
        signal, sigma = (c.view(-1, 1, 1, 1) for c in schedule.coefficients(t))
        x_t = signal * x0.detach().float() + sigma * noise
        pred = schedule.to_epsilon(self._forward(x_t, schedule.model_time[t], emb, camera * keep.view(-1, 1)), x_t, t)
        loss = F.mse_loss(pred, noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return float(loss.detach())

    # ---- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"params": {n: p.detach().clone() for n, p in zip(self.names, self.params)},
                "optimizer": self.optimizer.state_dict(), "steps": self.steps, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = state["params"]
        if sorted(params) != sorted(self.names):
            raise ValueError("the saved online score model has other parameters than this config builds")
        with torch.no_grad():
            for n, p in zip(self.names, self.params):
                p.copy_(params[n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        self.seen = int(state.get("seen", self.steps))  # checkpoints before train_every trained on every batch
