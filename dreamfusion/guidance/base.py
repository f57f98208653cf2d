"""What every guidance backend shares: loading, prompts and embeddings, and the call into SDS.

A backend (latent.py, pixel.py) only says how a render becomes the prior's input x; everything
else (timesteps, view prompts, Perp-Neg, camera features, CFG, w(t)) is here or in sds.py, so the
two backends cannot drift apart.
"""
from __future__ import annotations

import functools
import gc
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from ..cameras import Cameras
from .camera_conditioning import camera_feature_dim, camera_features, camera_harmonics
from .config import GuidanceConfig
from .loading import ModelInfo, ModelKind, ModelLoadError, encode_texts, inspect_model, load_scheduler, load_text_encoder, load_unet
from .online_score import OnlineScore
from .prompts import (
    EmbeddingCache,
    PromptEmbeddings,
    embeddings_from_texts,
    perp_neg_conditioning,
    prompt_texts,
    select_embeddings,
)
from .schedule import NoiseSchedule
from .sds import SDSOutput, sample_timesteps, score_distillation

TextLoader = Callable[[], tuple[Any, torch.nn.Module]]  # () -> (tokenizer, frozen text encoder on the device)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), bilinear; antialiased when shrinking so fine detail doesn't alias."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=shrink)


def _sample_size(config: Any) -> int:
    size = config.sample_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


class DiffusionGuidance:
    """SDS guidance from a text-conditioned diffusion U-Net. See dreamfusion.guidance for the interface."""

    kind: ClassVar[ModelKind]

    def __init__(
        self,
        cfg: GuidanceConfig,
        unet: torch.nn.Module,
        scheduler: Any,
        device: torch.device | str,
        text_loader: TextLoader | None = None,
        model_id: str | None = None,
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        self.unet = unet
        self.dtype = next(unet.parameters()).dtype
        self.schedule = NoiseSchedule.from_scheduler(scheduler).to(self.device)  # DDPM's or a flow's
        self.num_train_timesteps = self.schedule.num_train_timesteps
        self.camera_harmonics = camera_harmonics(unet.config)  # None, or K: the U-Net takes class_labels (B, 5 + 2 (K - 1))
        self.camera_input = self.camera_harmonics is not None
        self.model_id = model_id or cfg.model
        self.cache = EmbeddingCache(cfg.embedding_cache)
        self.embeddings: PromptEmbeddings | None = None
        self.prompt: str | None = None
        self._text_loader = text_loader
        self._text: tuple[Any, torch.nn.Module] | None = None
        # () -> (tokenizer, tokens its encoder reads), for the prompt-length warning; None: no check
        self.tokenizer_loader: Callable[[], tuple[Any, int]] | None = None
        self._online: OnlineScore | None = None  # VSD's phi (online_score.py), built on first use
        self._optimize_memory(unet)

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    def load_common(cls, cfg: GuidanceConfig, device: torch.device) -> tuple[ModelInfo, torch.dtype, torch.nn.Module, Any, TextLoader]:
        """Inspect the model folder/id, then load the U-Net and scheduler; the text encoder loads lazily."""
        info = inspect_model(cfg.model, cls.kind, cfg.cache_dir)
        dtype = cfg.torch_dtype(device)
        unet = load_unet(info, dtype, cfg.cache_dir).to(device)
        scheduler = load_scheduler(info, cfg.cache_dir)

        def text_loader() -> tuple[Any, torch.nn.Module]:
            tokenizer, encoder = load_text_encoder(info, dtype, cfg.cache_dir)
            return tokenizer, encoder.to(device)

        return info, dtype, unet, scheduler, text_loader

    def _optimize_memory(self, module: torch.nn.Module) -> None:
        """Sliced attention on CUDA (else PyTorch's SDPA, diffusers' default), and channels_last on any
        device (oneDNN's convolutions skip a layout reorder: the toy U-Net's forward is ~10% faster on CPU)."""
        if self.device.type == "cuda" and self.cfg.attention == "sliced" and hasattr(module, "set_attention_slice"):
            module.set_attention_slice("auto")
        if self.cfg.channels_last:
            module.to(memory_format=torch.channels_last)

    # ---- the interface -------------------------------------------------------------------------

    @property
    def resolution(self) -> int:
        """Side of the square image the prior scores; renders are resized to it (guidance.resolution,
        else the size the model was trained at)."""
        return self.cfg.resolution or self.native_resolution

    @property
    def native_resolution(self) -> int:
        raise NotImplementedError

    @property
    def uses_cameras(self) -> bool:
        """True when the prior itself is conditioned on the camera (view prompts use the angles regardless)."""
        return self.camera_input and self.cfg.camera_conditioning

    def encode_render(self, rgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1] -> the prior's input x (B, C, h, w), differentiable."""
        raise NotImplementedError

    def prepare(self, prompt: str, negative: str | None = None) -> PromptEmbeddings:
        """Compute (or read from the cache) the embeddings of a prompt; None uses cfg.negative_prompt."""
        negative = self.cfg.negative_prompt if negative is None else negative
        texts = prompt_texts(prompt, negative)
        encoded = self.cache.get_or_compute(self.model_id, texts, self._encode_texts)  # (6, L, D) CPU float32
        self.embeddings = embeddings_from_texts(encoded.to(self.device, self.dtype))
        self.prompt = prompt
        if self.cfg.release_text_encoder:
            self.release_text_encoder()
        return self.embeddings

    def sample_t(self, batch: int, step: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
        """The timesteps (batch,) long of one SDS step, as __call__ draws them when it is given none."""
        cfg = self.cfg
        return sample_timesteps(batch, self.num_train_timesteps, cfg.t_range, step, cfg.t_max_schedule, generator, self.device)

    def __call__(
        self,
        rgb: torch.Tensor,
        cameras: Cameras,
        step: int = 0,
        generator: torch.Generator | None = None,
        *,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        scale: float | None = None,
    ) -> SDSOutput:
        """One SDS step on renders rgb (B, H, W, 3) seen from `cameras` (B); t/noise fix the draw (tests);
        `scale` replaces the config's CFG scale for this step (the loop's guidance_scale_factor)."""
        if self.embeddings is None:
            raise RuntimeError("guidance.prepare(prompt) must be called before the first SDS step")
        cfg, emb = self.cfg, self.embeddings
        B = rgb.shape[0]
        x = self.encode_render(rgb, generator)  # (B, C, h, w)
        elevation, azimuth = cameras.elevation.to(self.device), cameras.azimuth.to(self.device)
        if t is None:
            t = self.sample_t(B, step, generator)
        if cfg.perp_neg:
            cond, weights = perp_neg_conditioning(
                emb, elevation, azimuth, cfg.view_prompt,
                cfg.perp_neg_weight, cfg.perp_neg_front_decay, cfg.perp_neg_side_decay,
            )  # (3, B, L, D), (3, B)
        else:
            cond, weights = select_embeddings(emb, elevation, azimuth, cfg.view_prompt).unsqueeze(0), None  # (1, B, L, D)
        rule = cfg.distillation
        # csd, nfsd and ism read the unconditional prediction as a score: the empty text's, even where
        # a negative prompt stands in for it in sds and vsd (nfsd gives the negative its own branch)
        plain_uncond = emb.empty if emb.empty is not None and rule in ("csd", "nfsd", "ism") else emb.uncond
        uncond = plain_uncond.unsqueeze(0).expand(B, -1, -1)  # (B, L, D)
        negative = emb.uncond.unsqueeze(0).expand(B, -1, -1) if rule == "nfsd" and emb.empty is not None else None
        labels = (
            camera_features(elevation, azimuth, cfg.camera_conditioning, self.camera_harmonics) if self.camera_input else None
        )
        online, phi_camera = None, None
        if rule == "vsd":
            phi = self.online_score()
            phi_camera = camera_features(elevation, azimuth, True, self.camera_harmonics or 1)  # phi always sees the camera
            online = functools.partial(phi.predict, emb=cond[0], camera=phi_camera)
        out = score_distillation(
            x, self.unet_fn, self.schedule, uncond, cond, t.to(self.device), cfg.scale if scale is None else scale,
            cond_weights=weights, class_labels=labels, weighting=cfg.weighting, grad_clip=cfg.grad_clip,
            noise=noise, generator=generator, distillation=rule, negative_embeddings=negative, online=online,
            nfsd=cfg.nfsd, ism=cfg.ism,
        )
        if rule == "vsd":  # phi learns from this step's renders after scoring them, as ProlificDreamer's loop
            self.online_score().observe(x.detach(), cond[0], phi_camera, self.schedule, generator)
        return out

    # ---- VSD's online model: the guidance's only trained state ----------------------------------------

    def online_score(self) -> OnlineScore:
        """VSD's phi, built from the prior on first use."""
        if self._online is None:
            camera_dim = camera_feature_dim(self.camera_harmonics or 1)
            self._online = OnlineScore(self.unet, self.cfg.vsd, self.call_model, camera_dim, own_camera_input=self.camera_input)
        return self._online

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for a resumed run to continue exactly: phi under VSD, else nothing."""
        return {} if self.cfg.distillation != "vsd" else {"online_score": self.online_score().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.cfg.distillation == "vsd":
            if "online_score" not in state:
                raise ValueError("the checkpoint holds no VSD online score model (the run was not trained with vsd)")
            self.online_score().load_state_dict(state["online_score"])

    def prompt_length_warning(self, prompt: str, negative: str | None = None) -> str | None:
        """One sentence when a text is longer than the text encoder reads (it is cut there, as every
        diffusion pipeline does); None when everything fits or there is no tokenizer to count with."""
        if self.tokenizer_loader is None:
            return None
        try:
            tokenizer, window = self.tokenizer_loader()
        except ModelLoadError:  # a warning never stops a run whose embeddings are ready
            return None
        negative = self.cfg.negative_prompt if negative is None else negative
        texts = prompt_texts(prompt, negative)  # the negative, the plain prompt, then its four view prompts
        ids = [tokenizer(text, truncation=False)["input_ids"] for text in texts]
        lengths = [len(i) for i in ids]
        if lengths[1] > window:
            kept = tokenizer.decode(ids[1][:window], skip_special_tokens=True)
            last = " ".join(kept.split()[-4:])
            return (f"the prompt is {lengths[1]} tokens long and the text encoder reads {window}: everything after "
                    f"'...{last}' is cut, the view suffixes (', front view', ...) too")
        if max(lengths[2:6]) > window:
            return (f"the prompt with its view suffix is {max(lengths[2:6])} tokens long and the text encoder reads {window}: "
                    "the suffix is cut, so the view-dependent prompts fight the Janus problem less; shorten the prompt")
        if lengths[0] > window:
            return f"the negative prompt is {lengths[0]} tokens long and the text encoder reads {window}: the rest is cut"
        return None

    def with_config(self, cfg: GuidanceConfig) -> "DiffusionGuidance":
        """The same loaded model and embeddings, scored with other SDS settings (t range, CFG scale,
        ...): the fine stage's guidance when it keeps the coarse stage's model. `cfg` must name the same model."""
        import copy

        shared = copy.copy(self)
        shared.cfg = cfg
        shared._online = None  # a stage that distils with VSD fits its own phi, from the prior
        return shared

    # ---- pieces ------------------------------------------------------------------------------

    def unet_fn(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The U-Net on a batch: x_t (N, C, h, w), t (N,), emb (N, L, D), labels (N, 5) | None -> (N, C', h, w)."""
        return self.call_model(self.unet, self.dtype, x_t, t, emb, labels)

    def call_model(self, model: torch.nn.Module, dtype: torch.dtype, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                   labels: torch.Tensor | None) -> torch.Tensor:
        """`model` (the prior's U-Net, or VSD's copy of it) called as this backend calls its prior, in `dtype`."""
        kwargs = {} if labels is None else {"class_labels": labels.to(dtype)}
        x_t = x_t.to(dtype)
        if self.cfg.channels_last:  # the layout the weights were given (_optimize_memory)
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        return model(x_t, t, encoder_hidden_states=emb.to(dtype), **kwargs).sample

    def _text_components(self) -> tuple[Any, torch.nn.Module]:
        """The text loader's (tokenizer or pipeline, encoders), loaded on first use."""
        if self._text is None:
            if self._text_loader is None:
                raise RuntimeError("this guidance was built without a text encoder; set guidance.embeddings directly")
            self._text = self._text_loader()
        return self._text

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokenizer, encoder = self._text_components()
        return encode_texts(tokenizer, encoder, texts)  # (N, L, D)

    def release_text_encoder(self) -> None:
        """Free the text encoder (T5-XXL is ~10 GB in fp16); it is reloaded if a new prompt needs it."""
        if self._text is None:
            return
        self._text = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def frozen_modules(self) -> list[torch.nn.Module]:
        """Every network of the prior currently loaded (for checks that none of them is trained)."""
        modules = [self.unet]
        if self._text is not None:
            modules.append(self._text[1])
        return modules
