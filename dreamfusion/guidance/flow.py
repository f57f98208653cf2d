"""Stable Diffusion 3.x as the prior: SDS on a rectified-flow model, in its VAE's latent space.

SD3 predicts a velocity v = eps - x on the straight path x_t = (1 - sigma) x + sigma eps, with an
MM-DiT (`SD3Transformer2DModel`) instead of a U-Net and three text encoders (two CLIPs and T5).
Only three things differ from Stable Diffusion 1.x/2.x, and they live here:

* the schedule: diffusers' `FlowMatchEulerDiscreteScheduler` read as a `NoiseSchedule` (schedule.py:
  sigma shifted as the model was trained, eps_hat = x_t + (1 - sigma) v_hat); timesteps, CFG,
  w(t) = sigma^2 and the loss are the one SDS function's (sds.py);
* the latents: (VAE sample - shift_factor) * scaling_factor, 16 channels (Stable Diffusion's VAE path,
  whose shift factor is 0);
* the text: the pipeline's own `encode_prompt` gives token states (N, 77 + T5 tokens, D) and a pooled
  vector (N, P). So that view prompts, Perp-Neg and the embedding cache keep handling one tensor per
  text, the pooled vector rides along as one extra token row (zero-padded from P to D) and
  `unet_fn` splits it off again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from .base import TextLoader
from .config import GuidanceConfig
from .latent import StableDiffusionGuidance
from .loading import ModelKind, ModelLoadError, _hub_components, _read_config, check_hub_model, freeze, load_vae, resolve_source

T5_TOKENS = 256  # the SD3 pipeline's default max_sequence_length for T5


class StableDiffusion3Guidance(StableDiffusionGuidance):
    """The VAE path (encoding, resolution, frozen modules) is Stable Diffusion's; the schedule comes
    from the scheduler; what is SD3's own is loading, the text and the MM-DiT call."""

    kind: ClassVar[ModelKind] = "flow"

    def __init__(self, cfg: GuidanceConfig, transformer: torch.nn.Module, vae: torch.nn.Module, scheduler: Any,
                 device: torch.device | str, text_loader: TextLoader | None = None, model_id: str | None = None):
        super().__init__(cfg, transformer, vae, scheduler, device, text_loader, model_id)
        self.pooled_dim = int(transformer.config.pooled_projection_dim)
        if self.pooled_dim > int(transformer.config.joint_attention_dim):
            raise ModelLoadError("this SD3 transformer's pooled vector is wider than its token states; not supported")

    @classmethod
    def from_pretrained(cls, cfg: GuidanceConfig, device: torch.device | str) -> "StableDiffusion3Guidance":
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

        from .loading import ModelInfo, _from_pretrained, diffusers_dtype_key

        device = torch.device(device)
        source, is_local, vae_config = inspect_flow_model(cfg.model, cfg.cache_dir)
        dtype = cfg.torch_dtype(device)
        info = ModelInfo(source, is_local, "flow", {}, "", None, vae_config)
        transformer = freeze(_from_pretrained(SD3Transformer2DModel, info, "transformer", dtype, cfg.cache_dir, diffusers_dtype_key())).to(device)
        vae = load_vae(info, dtype, cfg.cache_dir).to(device)
        try:
            scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler", cache_dir=cfg.cache_dir)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"could not load scheduler/ of the guidance model {source}: {err}") from err

        def text_loader() -> tuple[Any, torch.nn.Module]:
            """The pipeline without its transformer and VAE: tokenizers and the three text encoders."""
            try:
                pipe = StableDiffusion3Pipeline.from_pretrained(
                    source, transformer=None, vae=None, cache_dir=cfg.cache_dir, **{diffusers_dtype_key(): dtype})
            except (OSError, ValueError) as err:
                raise ModelLoadError(f"could not load the text encoders of the guidance model {source}: {err}") from err
            encoders = [e for e in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3) if e is not None]
            pipe.to(device)
            return pipe, freeze(torch.nn.ModuleList(encoders))

        def tokenizer_loader() -> tuple[Any, int]:
            """T5's tokenizer and window where the pipeline has T5 (the longest reader), else CLIP's."""
            from transformers import AutoTokenizer

            has_t5 = (Path(source) / "tokenizer_3").is_dir() if is_local else True
            subfolder, window = ("tokenizer_3", T5_TOKENS) if has_t5 else ("tokenizer", 77)
            try:
                return AutoTokenizer.from_pretrained(source, subfolder=subfolder, cache_dir=cfg.cache_dir), window
            except (OSError, ValueError) as err:
                raise ModelLoadError(f"could not load {subfolder}/ of the guidance model {source}: {err}") from err

        guidance = cls(cfg, transformer, vae, scheduler, device, text_loader, source)
        guidance.tokenizer_loader = tokenizer_loader
        return guidance

    def call_model(self, model: torch.nn.Module, dtype: torch.dtype, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                   labels: torch.Tensor | None) -> torch.Tensor:
        """The MM-DiT on a batch: x_t (N, C, h, w), t (N,) = sigma * T, emb (N, L + 1, D) -> velocity (N, C, h, w).
        It takes no camera (labels are ignored)."""
        tokens, pooled = emb[:, :-1], emb[:, -1, : self.pooled_dim]
        return model(
            hidden_states=x_t.to(dtype), timestep=t.to(dtype),
            encoder_hidden_states=tokens.to(dtype), pooled_projections=pooled.to(dtype),
        ).sample

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (N, L + 1, D): the pipeline's token states with the pooled vector as a last row."""
        pipe, _ = self._text_components()
        with torch.no_grad():
            tokens, _, pooled, _ = pipe.encode_prompt(
                prompt=texts, prompt_2=None, prompt_3=None, device=self.device,
                do_classifier_free_guidance=False, max_sequence_length=T5_TOKENS,
            )
        return pack_pooled(tokens, pooled)


def pack_pooled(tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """tokens (N, L, D), pooled (N, P) with P <= D -> (N, L + 1, D), pooled zero-padded as the last row."""
    row = tokens.new_zeros(tokens.shape[0], 1, tokens.shape[2])
    row[:, 0, : pooled.shape[1]] = pooled.to(tokens.dtype)
    return torch.cat([tokens, row], dim=1)


def inspect_flow_model(model: str, cache_dir: str | None = None) -> tuple[str, bool, dict[str, Any]]:
    """(source, is_local, vae config) of a Stable Diffusion 3.x pipeline, checked before any weights load."""
    source, is_local = resolve_source(model)
    if not is_local:
        check_hub_model(source, cache_dir)
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    where = source if is_local else f"'{source}'"
    components = None if is_local else _hub_components(source, cache_dir)

    def has(subfolder: str) -> bool:
        return subfolder in components if components is not None else (Path(source) / subfolder).is_dir()

    transformer = _read_config(SD3Transformer2DModel, source, is_local, "transformer", cache_dir) if has("transformer") else None
    if transformer is None:
        hint = "; it has a unet/: set guidance.type: latent (or pixel without a vae/)" if has("unet") else ""
        raise ModelLoadError(f"{where} is not a Stable Diffusion 3 pipeline: no transformer/config.json{hint}")
    if transformer.get("_class_name") != "SD3Transformer2DModel":
        raise ModelLoadError(f"{where}: transformer/ holds a {transformer.get('_class_name')}, not an SD3Transformer2DModel "
                             "(supported flow-matching priors: Stable Diffusion 3.x)")
    vae = _read_config(AutoencoderKL, source, is_local, "vae", cache_dir) if has("vae") else None
    if vae is None:
        raise ModelLoadError(f"{where} has no vae/ (expected transformer/, vae/, scheduler/, text_encoder*/, tokenizer*/)")
    return source, is_local, vae
