"""Training loop of the bundled prior: seeded, resumable, with an EMA of the weights.

Each step: a batch of toy renders, DDPM noise at a random t, epsilon loss. Captions are dropped to
"" with p = 0.2 (the unconditional branch that classifier-free guidance extrapolates from needs
real training: with 10% it broke at guidance >= 2) and camera features are dropped with p = 0.3
so the weights also serve text-only guidance.
"""
from __future__ import annotations

import copy
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import ConfigError
from ..guidance.camera_conditioning import camera_features
from ..guidance.loading import encode_texts
from ..utils import random
from . import prior
from .dataset import make_dataset
from .vocabulary import vocabulary


@dataclass
class PriorTrainConfig:
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    text_dropout: float = 0.2
    camera_dropout: float = 0.3
    camera_harmonics: int = 1  # azimuth harmonics in the camera input (1: the five-feature layout)
    n_per_class: int = 300
    resolution: int = 32
    seed: int = 0
    checkpoint_every: int = 250
    # The greys behind the objects: configs/toy.yaml's background.grey_range must be the same (a run
    # warns when they differ). Over darker greys whites survive SDS but colours darken (docs/toy-world.md)
    background_grey_range: tuple[float, float] = (0.3, 0.9)
    # colour -> its own grey range for half of that colour's images (e.g. white over dark greys,
    # beside the shared range): a lit white object averages the shared greys' mean (docs/toy-world.md)
    backdrops: dict[str, tuple[float, float]] = field(default_factory=dict)


def cosine_lr(lr: float, warmup: int, steps: int, step: int) -> float:
    """Linear warm-up to `lr`, then a cosine down to lr / 10 at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, live: torch.nn.Module, step: int, decay: float) -> None:
    """Exponential moving average of the weights, with the usual short warm-up of the decay."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pl in zip(ema.parameters(), live.parameters()):
        pe.lerp_(pl, 1 - d)


def _continue_from_weights(out: Path, unet, encoder, ema: dict) -> None:
    """A leg without the optimizer state (lost with a machine, or never committed): the live and EMA
    weights both start from the committed (EMA) weights; Adam starts afresh, and the caller takes
    the step count and training time from training_info.json, so --steps stays a total."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    try:
        weights = UNet2DConditionModel.from_pretrained(str(out / "unet")).state_dict()
        unet.load_state_dict(weights), ema["unet"].load_state_dict(weights)
        text = CLIPTextModel.from_pretrained(str(out / "text_encoder")).state_dict()
        encoder.load_state_dict(text), ema["encoder"].load_state_dict(text)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ConfigError(f"{out} holds weights of another model layout or an unreadable folder ({exc}); "
                          "train into a new --out folder") from None


def _read_info(out: Path) -> dict:
    """The folder's training_info.json ({} when there is none or it is unreadable)."""
    try:
        return json.loads((out / "training_info.json").read_text())
    except (OSError, ValueError):
        return {}


def _earlier_legs(info: dict, step: int) -> list[dict]:
    """The legs that made the weights this call starts from (training_info.json's, or one leg
    rebuilt from its config for a folder written before legs were recorded)."""
    if step == 0 or not info:
        return []
    if "legs" in info:
        return [leg for leg in info["legs"] if leg.get("to_step", 0) <= step]
    config = info.get("config", {})
    return [{"from_step": 0, "to_step": info.get("steps", step), "optimizer": "fresh",
             "background_grey_range": config.get("background_grey_range", [0.3, 0.9])}]


def train_prior(out: Path, cfg: PriorTrainConfig, progress: bool = True) -> dict:
    """Train (or resume) into `out`/train_state.pt, then write the diffusers folder into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    tokenizer = prior.word_tokenizer()
    encoder = prior.text_encoder(len(tokenizer))
    unet = prior.unet(cfg.resolution, cfg.camera_harmonics)
    sched = prior.scheduler()
    params = list(unet.parameters()) + list(encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    ema = {"unet": copy.deepcopy(unet).eval(), "encoder": copy.deepcopy(encoder).eval()}
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step, elapsed, losses = 0, 0.0, []
    fresh_adam_at = 0  # the step Adam (re)started at: its moments warm up again from there
    state_path = out / "train_state.pt"
    previous = _read_info(out)
    if state_path.is_file():
        state = load_checkpoint(state_path)
        try:
            unet.load_state_dict(state["unet"]), encoder.load_state_dict(state["encoder"])
            ema["unet"].load_state_dict(state["ema_unet"]), ema["encoder"].load_state_dict(state["ema_encoder"])
        except RuntimeError:  # tensor shapes differ: another resolution or camera layout
            raise ConfigError(
                f"{state_path} was trained with another model layout (resolution or camera harmonics); "
                "resume with the settings it was started with, or train into a new --out folder"
            ) from None
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
    elif (out / "unet").is_dir():
        _continue_from_weights(out, unet, encoder, ema)
        step, elapsed = int(previous.get("steps", 0)), float(previous.get("train_seconds", 0.0))
        fresh_adam_at = step
        gen.manual_seed(cfg.seed + 1 + step)  # a leg's batches are not the first leg's again
    legs = _earlier_legs(previous, step)
    legs.append({"from_step": step, "background_grey_range": list(cfg.background_grey_range),
                 **({"backdrops": {c: list(r) for c, r in cfg.backdrops.items()}} if cfg.backdrops else {}),
                 "optimizer": "fresh" if fresh_adam_at == step else "resumed"})
    data = make_dataset(cfg.n_per_class, cfg.resolution, cfg.seed, progress=progress,
                        background_grey_range=cfg.background_grey_range, backdrops=cfg.backdrops)
    n = data.images.shape[0]
    alphas = sched.alphas_cumprod
    unet.train(), encoder.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="training toy prior", disable=not progress)
    while step < cfg.steps:
        start = time.time()
        idx = random.randint(0, n, (cfg.batch_size,), gen)
        x0 = data.images[idx]
        noise = random.randn(x0.shape, gen)
        t = random.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        drop_text = random.rand((cfg.batch_size,), gen) < cfg.text_dropout
        keep_cam = random.rand((cfg.batch_size,), gen) >= cfg.camera_dropout
        captions = ["" if d else data.captions[i] for d, i in zip(drop_text.tolist(), idx.tolist())]
        # The text encoder stays at its seeded initialisation: encode_texts runs without gradients, and the
        # U-Net's cross-attention learns to read these fixed, distinct word features. The shipped weights
        # were trained this way; its optimizer entries get no gradients and never move.
        cond = encode_texts(tokenizer, encoder, captions)
        cam = camera_features(data.elevation[idx], data.azimuth[idx], keep_cam, cfg.camera_harmonics)
        pred = unet(xt, t, encoder_hidden_states=cond, class_labels=cam).sample
        loss = F.mse_loss(pred, noise)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(cfg.lr, cfg.warmup, cfg.steps, step) * min(1.0, (step - fresh_adam_at + 1) / cfg.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_update(ema["unet"], unet, step, cfg.ema_decay)
        ema_update(ema["encoder"], encoder, step, cfg.ema_decay)
        step += 1
        elapsed += time.time() - start
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(state_path, {
                "unet": unet.state_dict(), "encoder": encoder.state_dict(),
                "ema_unet": ema["unet"].state_dict(), "ema_encoder": ema["encoder"].state_dict(),
                "optimizer": opt.state_dict(), "generator": gen.get_state(), "step": step,
                "elapsed": elapsed, "losses": losses,
            })
    bar.close()
    ema["unet"].save_pretrained(str(out / "unet"))
    ema["encoder"].save_pretrained(str(out / "text_encoder"))
    tokenizer.save_pretrained(str(out / "tokenizer"))
    sched.save_pretrained(str(out / "scheduler"))
    k = max(1, min(100, len(losses) // 4))  # mean over the first and last quarter (at most 100 steps)
    legs[-1]["to_step"] = step
    info = {
        "steps": step, "train_seconds": round(elapsed, 1), "final_loss": sum(losses[-k:]) / k,
        "first_loss": sum(losses[:k]) / k, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "config": asdict(cfg), "legs": legs, "vocabulary": vocabulary(),
    }
    (out / "training_info.json").write_text(json.dumps(info, indent=1))
    return info
