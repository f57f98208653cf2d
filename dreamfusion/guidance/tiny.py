"""Tiny, randomly initialised diffusion priors saved as diffusers folders, for tests and benchmarks.

They take exactly the `from_pretrained` path a real checkpoint takes, so tests exercise the loading,
prompt and SDS code end to end in a second, without downloading anything. The pixel folder also
documents the bundled prior's layout: unet/, scheduler/, text_encoder/ (CLIPTextModel), tokenizer/.
`save_tiny_sd3_model` is Stable Diffusion 3's pipeline (MM-DiT, flow matching, three text encoders).
`save_tiny_if_model` is DeepFloyd IF stage I's layout and architecture in miniature: a T5 encoder
whose tokenizer is a real sentencepiece model (spiece.model, trained here on a few sentences), so
IF's tokenizer path (sentencepiece + protobuf) is exercised exactly as the Hub's folder is loaded.
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


# What the sentencepiece model of the tiny T5 tokenizer is trained on: the words our prompts use.
SPM_SENTENCES = [
    "a red cube, front view", "a blue sphere, side view", "a green torus, back view", "an orange cone, overhead view",
    "a yellow cylinder", "a purple marked cube", "a white cube", "a DSLR photo of a corgi", "a zoomed out photo of a hamburger",
]


def save_tiny_t5_tokenizer(folder: str | Path, vocab_size: int = 64) -> Path:
    """IF's tokenizer/ folder in miniature: spiece.model (a unigram sentencepiece model trained on
    SPM_SENTENCES) and a tokenizer_config.json naming T5Tokenizer, as DeepFloyd's Hub folders do."""
    import io

    import sentencepiece

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_SENTENCES * 8), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": 77, "extra_ids": 0,
              "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder


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


def if_unet(sample_size: int = 64, widths: tuple[int, ...] = (32, 64), text_dim: int = TEXT_DIM, layers_per_block: int = 1,
            head_dim: int = 8):
    """DeepFloyd IF stage I's U-Net architecture (diffusers' IF blocks: simple cross-attention with
    added K/V, a projection of the T5 states, text-pooled time embedding, learned variance: 6 output
    channels), at the given widths. The defaults are tiny; the GPU check uses IF-like widths."""
    from diffusers import UNet2DConditionModel

    n = len(widths)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=3, out_channels=6, layers_per_block=layers_per_block, block_out_channels=widths,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (n - 1),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D",) * (n - 1) + ("ResnetUpsampleBlock2D",),
        cross_attention_dim=widths[-1], encoder_hid_dim=text_dim, attention_head_dim=head_dim,
        addition_embed_type="text", addition_embed_type_num_heads=2, cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift", act_fn="gelu",
    )


def if_scheduler():
    """IF stage I's scheduler settings (cosine betas, learned-range variance)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="learned_range", prediction_type="epsilon",
                         thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0)


def save_tiny_if_model(folder: str | Path, sample_size: int = 16, seed: int = 0) -> Path:
    """An IF-stage-I folder (unet/, scheduler/, text_encoder/ T5, tokenizer/ sentencepiece)."""
    from transformers import AutoTokenizer, T5Config

    torch.manual_seed(seed)
    folder = Path(folder)
    save_tiny_t5_tokenizer(folder / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"), config=T5Config())  # needs sentencepiece
    tiny_t5_encoder(len(tokenizer)).save_pretrained(str(folder / "text_encoder"))
    if_unet(sample_size).save_pretrained(str(folder / "unet"))
    if_scheduler().save_pretrained(str(folder / "scheduler"))
    return folder


def tiny_vae(blocks: tuple[int, ...] = (8, 16)):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=blocks, layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * len(blocks), up_block_types=("UpDecoderBlock2D",) * len(blocks),
    )


def sd21_base_random(device: torch.device | str):  # -> StableDiffusionGuidance
    """Stable Diffusion 2.1-base's U-Net and VAE, randomly initialised, fp16, on `device`."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from . import GuidanceConfig, PromptEmbeddings, StableDiffusionGuidance

    device = torch.device(device)

    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
    for module in (unet, vae):
        module.half().eval().requires_grad_(False)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    cfg = GuidanceConfig(type="latent", model="random/sd-2-1-base", embedding_cache=None)
    guidance = StableDiffusionGuidance(cfg, unet, vae, scheduler, device)
    emb = torch.randn(6, 77, 1024, device=device, dtype=torch.float16)
    guidance.embeddings = PromptEmbeddings(uncond=emb[0], plain=emb[1], views=emb[2:6])
    return guidance


def if_stage1_random(device: torch.device | str, widths: tuple[int, ...] = (192, 384, 576, 768), text_dim: int = 4096):
    """A PixelGuidance with DeepFloyd IF stage I's U-Net architecture (IF blocks, T5-XXL-sized text
    states, learned variance) at IF-I-M-like widths, randomly initialised, fp16: the GPU check's IF step."""
    from . import GuidanceConfig, PixelGuidance, PromptEmbeddings

    device = torch.device(device)
    with torch.device(device):
        unet = if_unet(64, widths, text_dim=text_dim, layers_per_block=2, head_dim=64)
    unet.half().eval().requires_grad_(False)
    cfg = GuidanceConfig(type="pixel", model="random/if-stage-1", embedding_cache=None)
    guidance = PixelGuidance(cfg, unet, if_scheduler(), device)
    emb = torch.randn(6, 77, text_dim, device=device, dtype=torch.float16)
    guidance.embeddings = PromptEmbeddings(uncond=emb[0], plain=emb[1], views=emb[2:6])
    return guidance


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


def save_tiny_sd3_model(folder: str | Path, sample_size: int = 8, seed: int = 0) -> Path:
    """A Stable-Diffusion-3-shaped pipeline folder (resolution 2 * sample_size): an SD3 MM-DiT, a VAE
    with a shift factor, two CLIP encoders with projections and a T5 encoder whose tokenizer is a
    real sentencepiece model, and the flow-matching scheduler with SD3's shift of 3."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = tiny_tokenizer(77)

    def clip() -> CLIPTextModelWithProjection:
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=32, projection_dim=TEXT_DIM,
            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))

    with tempfile.TemporaryDirectory() as tmp:
        t5_tokenizer = AutoTokenizer.from_pretrained(str(save_tiny_t5_tokenizer(tmp)), config=T5Config())
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=2 * TEXT_DIM, d_kv=8, d_ff=32, num_layers=1,
                                 num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=1, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=2 * TEXT_DIM, caption_projection_dim=16,
        pooled_projection_dim=2 * TEXT_DIM, pos_embed_max_size=2 * sample_size,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip(), tokenizer=tokenizer, text_encoder_2=clip(), tokenizer_2=tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tokenizer,
    )
    pipe.save_pretrained(str(folder))
    return folder
