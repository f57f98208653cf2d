"""The bundled prior: a small camera-aware text-to-image diffusion model of the toy world.

Diffusers format (unet/, scheduler/, text_encoder/ CLIPTextModel, tokenizer/), loaded by the same
pixel-space adapter as DeepFloyd IF. The tokenizer is a CLIP BPE tokenizer whose merges spell out
each toy-world word, so known words are single tokens and unknown text still tokenizes.
The U-Net adds camera features (guidance/camera_conditioning.py) to its time embedding through
diffusers' "projection" class embedding, as MVDream does; they are zeroed at random in training
so the same weights also work text-only.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..guidance.camera_conditioning import camera_feature_dim
from .vae_codec import decode, encode
from .vocabulary import vocabulary

MAX_TOKENS = 16
TEXT_DIM = 64


def word_tokenizer():
    """CLIPTokenizer with one token per toy-world word (plus characters as a fallback)."""
    from transformers import CLIPTokenizer

    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789,.-'!?"))
    vocab: dict[str, int] = {}
    for tok in ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]:
        vocab.setdefault(tok, len(vocab))
    merges: list[str] = []
    for word in vocabulary():
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merges.append(f"{pieces[0]} {pieces[1]}")
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=MAX_TOKENS)


def text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))


def unet(resolution: int = 32, camera_harmonics: int = 1):
    """~1.5M parameters: channels 32/64/64, cross-attention only at 8x8 and the middle (CPU time).

    The camera input takes azimuth harmonics 1..camera_harmonics (guidance/camera_conditioning.py).
    """
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=resolution, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(32, 64, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=camera_feature_dim(camera_harmonics),
    )


def scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", clip_sample=True)


@dataclass
class LoadedPrior:
    """A saved toy prior, pixel (vae None) or latent, in eval mode, for sampling and probes."""

    unet: Any
    tokenizer: Any
    encoder: Any
    scheduler: Any
    vae: Any = None
    backgrounds: tuple[float, float] = (0.3, 0.9)  # the grey range of its training backgrounds

    @property
    def image_resolution(self) -> int:
        return int(self.unet.config.sample_size) * (8 if self.vae is not None else 1)

    def to_model(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, R, R) in [-1, 1] -> what the U-Net denoises (the images, or their scaled latents)."""
        return images if self.vae is None else encode(self.vae, images)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net's space -> images (B, 3, R, R) in [-1, 1]."""
        return x.clamp(-1, 1) if self.vae is None else decode(self.vae, x)


def load_prior(folder: str | Path, scheduler_class: str = "DDPMScheduler") -> LoadedPrior:
    """The prior saved in `folder`; a vae/ subfolder makes it a latent prior."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    unet_ = diffusers.UNet2DConditionModel.from_pretrained(str(folder / "unet")).eval()
    tok = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    enc = CLIPTextModel.from_pretrained(str(folder / "text_encoder")).eval()
    sched = getattr(diffusers, scheduler_class).from_pretrained(str(folder / "scheduler"))
    vae = diffusers.AutoencoderKL.from_pretrained(str(folder / "vae")).eval() if (folder / "vae").is_dir() else None
    return LoadedPrior(unet_, tok, enc, sched, vae, training_backgrounds(folder))


def training_backgrounds(folder: str | Path) -> tuple[float, float]:
    """The grey range of the backgrounds a toy prior was trained on (its training_info.json); the
    range of the priors trained before it was recorded, (0.3, 0.9), when the file does not say."""
    import json

    path = Path(folder) / "training_info.json"
    try:
        lo, hi = json.loads(path.read_text())["config"]["background_grey_range"]
        return (float(lo), float(hi))
    except (OSError, ValueError, KeyError, TypeError):
        return (0.3, 0.9)
