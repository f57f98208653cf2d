"""Training of the bundled latent prior (latent_prior.py): the VAE first, then the U-Net on its latents.

Seeded and resumable in legs. Each leg continues from `out/train_state.pt` (weights, EMA, optimizer
and generator: exact) or, when that file was lost with a machine, from the committed diffusers
folder itself (weights and step counts from training_info.json; fresh optimizer moments). A leg
ends at the requested totals or after `max_minutes`, and always writes the folder.

* VAE: L1 + MSE reconstruction of toy renders plus a small KL term (Stable Diffusion's VAE uses
  1e-6), random horizontal flips. Quality is the PSNR on renders it never saw.
* Latent scaling factor: 1 / std of the training latents (posterior means), computed from the
  data once the VAE is trained, as Stable Diffusion's 0.18215 was.
* U-Net: DDPM epsilon loss on posterior samples of those latents, captions dropped with p = 0.2
  and cameras with p = 0.15 (the pixel prior dropped them with 0.3 and learnt to ignore the yaw).
"""
from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import ConfigError
from ..paths import bundled
from ..guidance.camera_conditioning import camera_features
from ..guidance.loading import encode_texts
from ..utils import random
from . import latent_prior
from .dataset import ToyDataset, make_dataset
from .train_prior import cosine_lr, ema_update
from .vocabulary import vocabulary

STATE = "train_state.pt"
LATENTS = "train_latents.pt"  # cache of the encoded training set (rebuilt when missing)
PROGRESS_KEYS = ("vae_step", "step", "vae_seconds", "unet_seconds", "vae_losses", "losses", "scaling_factor")  # in STATE
IMAGES = "train_images.pt"  # cache of the rendered training set (uint8; ~15 minutes to render at 128)


@dataclass
class LatentPriorTrainConfig:
    vae_steps: int = 3000
    vae_batch_size: int = 8
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    steps: int = 8000  # U-Net steps
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    text_dropout: float = 0.2
    camera_dropout: float = 0.15
    camera_harmonics: int = latent_prior.CAMERA_HARMONICS
    n_per_class: int = 200
    held_out_per_class: int = 2
    resolution: int = latent_prior.IMAGE_RESOLUTION
    seed: int = 0
    checkpoint_every: int = 250
    text_from: str = ""  # folder with text_encoder/ and tokenizer/ to reuse (the pixel prior); "" = build fresh


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (measured on [0, 1])."""
    mse = (((a - b) / 2) ** 2).mean().item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def _text_models(cfg: LatentPriorTrainConfig):
    from transformers import CLIPTextModel, CLIPTokenizer

    from . import prior

    if cfg.text_from:
        folder = bundled(cfg.text_from) or Path(cfg.text_from)  # "assets/toy_prior": the bundled copy, wherever installed
        return CLIPTokenizer.from_pretrained(str(folder / "tokenizer")), CLIPTextModel.from_pretrained(str(folder / "text_encoder")).eval()
    torch.manual_seed(cfg.seed)
    tokenizer = prior.word_tokenizer()
    return tokenizer, prior.text_encoder(len(tokenizer)).eval()


class _Leg:
    """Stops a leg after `max_minutes` of wall time (None: never)."""

    def __init__(self, max_minutes: float | None):
        self.deadline = None if max_minutes is None else time.time() + 60.0 * max_minutes

    def over(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline


def _load_state(out: Path, vae, unet, ema_unet) -> dict:
    """Progress to resume from: the exact state file, else the committed folder, else a fresh start."""
    progress = {"vae_step": 0, "step": 0, "vae_seconds": 0.0, "unet_seconds": 0.0, "vae_losses": [], "losses": [],
                "scaling_factor": None, "state": None}
    try:
        if (out / STATE).is_file():
            state = load_checkpoint(out / STATE)
            vae.load_state_dict(state["vae"]), unet.load_state_dict(state["unet"]), ema_unet.load_state_dict(state["ema_unet"])
            progress.update({k: state[k] for k in PROGRESS_KEYS})
            progress["state"] = state
        elif (out / "training_info.json").is_file() and (out / "vae").is_dir():
            from diffusers import AutoencoderKL, UNet2DConditionModel

            info = json.loads((out / "training_info.json").read_text())
            vae.load_state_dict(AutoencoderKL.from_pretrained(str(out / "vae")).state_dict())
            progress.update(vae_step=info["vae_steps"], vae_seconds=info["vae_seconds"], scaling_factor=info["scaling_factor"])
            if info["steps"] > 0:
                weights = UNet2DConditionModel.from_pretrained(str(out / "unet")).state_dict()
                unet.load_state_dict(weights), ema_unet.load_state_dict(weights)
                progress.update(step=info["steps"], unet_seconds=info["unet_seconds"])
    except RuntimeError:  # tensor shapes differ
        raise ConfigError(f"{out} holds a latent prior of another layout (camera harmonics or sizes); "
                          "resume with the settings it was started with, or train into a new --out folder") from None
    return progress


def _save_state(out: Path, progress: dict, vae, unet, ema_unet, opts: dict, gen: torch.Generator) -> None:
    save_checkpoint(out / STATE, {
        **{k: progress[k] for k in PROGRESS_KEYS}, "vae": vae.state_dict(), "unet": unet.state_dict(), "ema_unet": ema_unet.state_dict(),
        "vae_optimizer": opts["vae"].state_dict(), "unet_optimizer": opts["unet"].state_dict(), "generator": gen.get_state(),
    })


def _optimizer_step(opt: torch.optim.Optimizer, module: torch.nn.Module, loss: torch.Tensor, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    opt.step()


def _record(progress: dict, phase: str, loss: torch.Tensor, start: float, bar) -> int:
    """Count a step of `phase` ("vae_" or "" for the U-Net) and its loss and time; returns the new step."""
    step_key, seconds_key = ("vae_step", "vae_seconds") if phase else ("step", "unet_seconds")
    losses = progress[f"{phase}losses"]
    progress[step_key] += 1
    progress[seconds_key] += time.time() - start
    losses.append(loss.item())
    bar.update(1)
    bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    return progress[step_key]


def _train_vae(cfg, vae, images, opt, gen, progress, save, leg, show) -> None:
    n = images.shape[0]
    vae.train()
    bar = tqdm(total=cfg.vae_steps, initial=progress["vae_step"], desc="training toy VAE", disable=not show)
    while progress["vae_step"] < cfg.vae_steps and not leg.over():
        start, step = time.time(), progress["vae_step"]
        idx = random.randint(0, n, (cfg.vae_batch_size,), gen)
        x = images[idx].float() / 127.5 - 1  # (B, 3, R, R)
        flip = random.rand((cfg.vae_batch_size,), gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * random.randn(dist.mean.shape, gen)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.vae_kl_weight * dist.kl().mean()
        _optimizer_step(opt, vae, loss, cosine_lr(cfg.vae_lr, cfg.warmup, cfg.vae_steps, step))
        if _record(progress, "vae_", loss, start, bar) % cfg.checkpoint_every == 0:
            save()
    bar.close()
    vae.eval()


@torch.no_grad()
def _encode_all(vae, images: torch.Tensor, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and stds (N, 4, r, r) of the uint8 images (N, 3, R, R), unscaled."""
    means, stds = [], []
    for i in range(0, images.shape[0], chunk):
        dist = vae.encode(images[i:i + chunk].float() / 127.5 - 1).latent_dist
        means.append(dist.mean), stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def _train_unet(cfg, unet, ema_unet, cache, tokenizer, encoder, sched, opt, gen, progress, save, leg, show) -> None:
    """`cache`: the encoded training set (means, stds (N, 4, r, r) unscaled) with its captions and cameras."""
    means, stds = cache["means"], cache["stds"]
    n, sf = means.shape[0], progress["scaling_factor"]
    alphas = sched.alphas_cumprod
    unet.train()
    bar = tqdm(total=cfg.steps, initial=progress["step"], desc="training toy latent U-Net", disable=not show)
    while progress["step"] < cfg.steps and not leg.over():
        start, step = time.time(), progress["step"]
        idx = random.randint(0, n, (cfg.batch_size,), gen)
        z0 = (means[idx] + stds[idx] * random.randn(means[idx].shape, gen)) * sf
        noise = random.randn(z0.shape, gen)
        t = random.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), gen)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        drop_text = random.rand((cfg.batch_size,), gen) < cfg.text_dropout
        keep_cam = random.rand((cfg.batch_size,), gen) >= cfg.camera_dropout
        captions = ["" if d else cache["captions"][i] for d, i in zip(drop_text.tolist(), idx.tolist())]
        cond = encode_texts(tokenizer, encoder, captions)  # the frozen toy text encoder, as in the pixel prior
        cam = camera_features(cache["elevation"][idx], cache["azimuth"][idx], keep_cam, cfg.camera_harmonics)
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=cond, class_labels=cam).sample, noise)
        _optimizer_step(opt, unet, loss, cosine_lr(cfg.lr, cfg.warmup, cfg.steps, step))
        ema_update(ema_unet, unet, step, cfg.ema_decay)
        if _record(progress, "", loss, start, bar) % cfg.checkpoint_every == 0:
            save()
    bar.close()


def _training_set(path: Path, cfg: LatentPriorTrainConfig, data_key: list, progress: bool):
    """(dataset without its float images, uint8 images (N, 3, R, R)), rendered once and cached in `path`."""
    cached = load_checkpoint(path) if path.is_file() else None
    if cached is not None and cached["data"] == data_key:
        data = ToyDataset(torch.empty(0), cached["captions"], cached["elevation"], cached["azimuth"])
        return data, cached["images"]
    data = make_dataset(cfg.n_per_class, cfg.resolution, cfg.seed, progress=progress)
    images = ((data.images + 1) * 127.5).round().to(torch.uint8)  # a quarter of the memory
    data.images = torch.empty(0)
    save_checkpoint(path, {"data": data_key, "images": images, "captions": data.captions,
                           "elevation": data.elevation, "azimuth": data.azimuth})
    return data, images


def _mean(values: list[float], first: bool) -> float | None:
    k = max(1, min(100, len(values) // 4))
    return None if not values else sum(values[:k] if first else values[-k:]) / k


def train_latent_prior(out: Path, cfg: LatentPriorTrainConfig, progress: bool = True, max_minutes: float | None = None,
                       log: Callable[[str], None] = print) -> dict:
    """Train (or resume) the latent prior into `out`; write the diffusers folder and training_info.json."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    tokenizer, encoder = _text_models(cfg)
    vae, unet = latent_prior.vae(), latent_prior.unet(cfg.camera_harmonics)
    ema_unet = copy.deepcopy(unet).eval()
    sched = latent_prior.scheduler()
    opts = {"vae": torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=1e-4),
            "unet": torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=1e-4)}
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    state = _load_state(out, vae, unet, ema_unet)
    exact = state.pop("state")
    if exact is not None:
        opts["vae"].load_state_dict(exact["vae_optimizer"]), opts["unet"].load_state_dict(exact["unet_optimizer"])
        gen.set_state(exact["generator"])
    elif state["vae_step"] or state["step"]:  # resumed from the folder: new draws, not a replay of the first steps
        gen.manual_seed(cfg.seed + 1 + state["vae_step"] + state["step"])
        log(f"no {STATE} in {out}: continuing from the saved weights (VAE step {state['vae_step']}, "
            f"U-Net step {state['step']}) with fresh optimizer moments")
    if state["step"] > 0 and cfg.vae_steps > state["vae_step"]:
        raise ConfigError(f"the U-Net in {out} was trained on the VAE at step {state['vae_step']}; "
                          f"--vae-steps can only grow before the U-Net starts (train into a new --out folder)")
    leg = _Leg(max_minutes)

    def save() -> None:
        _save_state(out, state, vae, unet, ema_unet, opts, gen)

    cache_path = out / LATENTS
    cache = load_checkpoint(cache_path) if cache_path.is_file() else None
    data_key = [cfg.n_per_class, cfg.resolution, cfg.seed]
    if cache is not None and (cache["vae_step"] != state["vae_step"] or cache["data"] != data_key):
        cache = None
    if state["vae_step"] < cfg.vae_steps or cache is None:
        data, images = _training_set(out / IMAGES, cfg, data_key, progress)
        _train_vae(cfg, vae, images, opts["vae"], gen, state, save, leg, progress)
        if state["vae_step"] >= cfg.vae_steps and not leg.over():
            means, stds = _encode_all(vae, images)
            cache = {"vae_step": state["vae_step"], "data": data_key, "means": means, "stds": stds, "captions": data.captions,
                     "elevation": data.elevation, "azimuth": data.azimuth}
            save_checkpoint(cache_path, cache)
        del images
    held = make_dataset(cfg.held_out_per_class, cfg.resolution, cfg.seed + 1000, progress=False).images
    held_psnr = psnr(torch.cat([latent_prior.decode(vae, latent_prior.encode(vae, held[i:i + 32])) for i in range(0, len(held), 32)]), held)
    if cache is not None and not leg.over():
        if state["step"] == 0:  # until the U-Net starts, the factor follows the VAE's latents as they are now
            state["scaling_factor"] = float(1.0 / cache["means"].std())
        _train_unet(cfg, unet, ema_unet, cache, tokenizer, encoder, sched, opts["unet"], gen, state, save, leg, progress)
    save()
    vae.register_to_config(scaling_factor=state["scaling_factor"] or 1.0)
    latent_prior.save_pipeline(out, vae, ema_unet, encoder, tokenizer, sched)
    info = {
        "vae_steps": state["vae_step"], "steps": state["step"], "vae_seconds": round(state["vae_seconds"], 1),
        "unet_seconds": round(state["unet_seconds"], 1), "scaling_factor": state["scaling_factor"],
        "held_out_psnr_db": round(held_psnr, 2), "vae_first_loss": _mean(state["vae_losses"], True),
        "vae_final_loss": _mean(state["vae_losses"], False), "first_loss": _mean(state["losses"], True),
        "final_loss": _mean(state["losses"], False),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "config": asdict(cfg), "vocabulary": vocabulary(),
    }
    (out / "training_info.json").write_text(json.dumps(info, indent=1))
    return info
