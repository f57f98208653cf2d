"""Tiny, randomly initialised diffusion priors saved as diffusers folders, for tests and benchmarks.

They take exactly the `from_pretrained` path a real checkpoint takes, so tests exercise the loading,
prompt and SDS code end to end in a second, without downloading anything. The pixel folder also
documents the bundled prior's layout: unet/, scheduler/, text_encoder/ (CLIPTextModel), tokenizer/.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789,.-'!?")
TEXT_DIM = 16
MAX_TOKENS = 64


def tiny_tokenizer(max_tokens: int = MAX_TOKENS):
    """A CLIPTokenizer over single characters (no merges): every prompt tokenizes, nothing is downloaded."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for token in ["<|startoftext|>", "<|endoftext|>"] + _CHARS + [c + "</w>" for c in _CHARS]:
        vocab[token] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=max_tokens)


def tiny_text_encoder(vocab_size: int, max_tokens: int = MAX_TOKENS):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=max_tokens, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return CLIPTextModel(config)


def tiny_t5_encoder(vocab_size: int):
    """A one-layer T5 encoder, to exercise DeepFloyd IF's text path (T5 with an attention mask)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      pad_token_id=1, eos_token_id=1, decoder_start_token_id=1)
    return T5EncoderModel(config)


def tiny_unet(in_channels: int, sample_size: int, out_channels: int | None = None, camera: bool = False):
    """A two-level cross-attention U-Net (~40k parameters)."""
    from diffusers import UNet2DConditionModel

    extra = dict(class_embed_type="projection", projection_class_embeddings_input_dim=5) if camera else {}
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels or in_channels,
        layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
        # cross-attention only at the coarse level: full-resolution attention dominates CPU time
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=4, **extra,
    )


def tiny_vae(blocks: tuple[int, ...] = (8, 16)):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=blocks, layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * len(blocks), up_block_types=("UpDecoderBlock2D",) * len(blocks),
    )


def save_tiny_latent_model(folder: str | Path, sample_size: int = 16, vae_blocks: tuple[int, ...] = (8, 16), seed: int = 0) -> Path:
    """A Stable-Diffusion-shaped pipeline folder (resolution sample_size * 2**(len(vae_blocks)-1))."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(vae_blocks), text_encoder=tiny_text_encoder(len(tokenizer)), tokenizer=tokenizer,
        unet=tiny_unet(4, sample_size),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))
    return Path(folder)


def save_tiny_pixel_model(
    folder: str | Path,
    sample_size: int = 32,
    camera: bool = False,
    learned_variance: bool = False,
    text_encoder: str = "clip",
    seed: int = 0,
) -> Path:
    """An IF-stage-I-shaped folder; with the CLIP text encoder it has the bundled prior's layout,
    with text_encoder="t5" IF's (a T5 encoder; the tokenizer stays the tiny character one)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    tiny_unet(3, sample_size, out_channels=6 if learned_variance else 3, camera=camera).save_pretrained(str(folder / "unet"))
    encoder = tiny_t5_encoder(len(tokenizer)) if text_encoder == "t5" else tiny_text_encoder(len(tokenizer))
    encoder.save_pretrained(str(folder / "text_encoder"))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(str(folder / "scheduler"))
    return folder
