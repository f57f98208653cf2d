"""The bundled latent prior: the toy world in Stable Diffusion's format (VAE + latent U-Net).

A standard diffusers `StableDiffusionPipeline` folder (model_index.json, vae/, unet/, text_encoder/,
tokenizer/, scheduler/), so the toolkit's Stable Diffusion guidance runs on it unchanged:

* vae: an `AutoencoderKL` with four levels (downsampling factor 8) and 4 latent channels,
  128 x 128 x 3 -> 16 x 16 x 4; its `scaling_factor` is 1 / std of the training latents, computed
  from the data as Stable Diffusion's 0.18215 was;
* unet: a `UNet2DConditionModel` on 16 x 16 x 4 latents with the camera input of the pixel prior
  (guidance/camera_conditioning.py, "projection" class embedding), here with azimuth harmonics
  up to 4 so the cube's four-fold yaw is one feature away;
* text_encoder / tokenizer: the pixel prior's frozen toy CLIP text encoder and word tokenizer;
* scheduler: Stable Diffusion's (scaled-linear betas 0.00085..0.012, epsilon prediction).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..guidance.camera_conditioning import camera_feature_dim
from .prior import TEXT_DIM
from .vae_codec import decode, encode  # noqa: F401 (the latent prior's codec: latent_prior.encode / decode)

IMAGE_RESOLUTION = 128
LATENT_CHANNELS = 4
LATENT_RESOLUTION = IMAGE_RESOLUTION // 8
CAMERA_HARMONICS = 4


def vae():
    """~1M parameters; channels 16/32/64/64, one ResNet a level, attention only in the 16 x 16 middle."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=IMAGE_RESOLUTION,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=8, scaling_factor=1.0,
    )


def unet(camera_harmonics: int = CAMERA_HARMONICS):
    """~3M parameters on 16 x 16 latents: cross-attention at 8 x 8, 4 x 4 and the middle."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_RESOLUTION, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(64, 64, 96), norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=camera_feature_dim(camera_harmonics),
    )


def scheduler():
    """Stable Diffusion 1.x/2.x's noise schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False, steps_offset=1)


def save_pipeline(folder: str | Path, vae_: Any, unet_: Any, text_encoder: Any, tokenizer: Any, scheduler_: Any) -> None:
    """Write the five components and model_index.json as `StableDiffusionPipeline.save_pretrained` does."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae_, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet_, scheduler=scheduler_,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
