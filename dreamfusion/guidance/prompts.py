"""View-dependent prompts: their text, how a camera picks (or blends) their embeddings, Perp-Neg
weights, and an on-disk cache so each (model, text) is encoded once.

DreamFusion appends the view to the prompt so the prior is asked for the side it is shown; without
it every view is scored as the canonical front and the object grows faces all round (Janus).
Text follows docs/conventions.md: f"{prompt}, {label} view" with labels VIEW_LABELS.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch

from ..cameras import VIEW_LABELS, view_label_indices, wrap_azimuth

ViewPromptMode = Literal["nearest", "interpolate", "none"]
DEFAULT_CACHE_DIR = "~/.cache/dreamfusion/embeddings"
OVERHEAD_ELEVATION = 60.0  # degrees, as in view_label_indices

_FRONT, _SIDE, _BACK, _OVERHEAD = range(4)


def view_prompt(prompt: str, label: str) -> str:
    """The text for one view: 'a corgi' + 'side' -> 'a corgi, side view'."""
    if label not in VIEW_LABELS:
        raise ValueError(f"unknown view label {label!r}; expected one of {VIEW_LABELS}")
    return f"{prompt}, {label} view"


@dataclass
class PromptEmbeddings:
    """Text embeddings of one prompt, on the guidance's device and dtype."""

    uncond: torch.Tensor  # (L, D) negative prompt, or the empty text
    plain: torch.Tensor  # (L, D) the prompt without a view suffix
    views: torch.Tensor  # (4, L, D) in VIEW_LABELS order: front, side, back, overhead
    empty: torch.Tensor | None = None  # (L, D) the empty text when a negative prompt took `uncond`'s place


def prompt_texts(prompt: str, negative: str) -> list[str]:
    """Every text a prompt needs, in PromptEmbeddings order: [negative, plain, front, side, back,
    overhead], and the empty text last when the negative is not empty (the score rules that need
    the unconditional prediction itself, sds.py)."""
    return [negative, prompt] + [view_prompt(prompt, label) for label in VIEW_LABELS] + ([""] if negative else [])


def embeddings_from_texts(encoded: torch.Tensor) -> PromptEmbeddings:
    """(6 or 7, L, D) encoded in `prompt_texts` order -> PromptEmbeddings."""
    return PromptEmbeddings(uncond=encoded[0], plain=encoded[1], views=encoded[2:6],
                            empty=encoded[6] if encoded.shape[0] > 6 else None)


# ---- choosing a view embedding per camera --------------------------------------------------------

def nearest_view_weights(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
    """(B,) angles -> (B, 4) one-hot weights over VIEW_LABELS (DreamFusion's labels)."""
    idx = view_label_indices(elevation_deg, azimuth_deg)
    return torch.nn.functional.one_hot(idx, len(VIEW_LABELS)).float()


def interpolated_view_weights(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
    """(B,) angles -> (B, 4) blending weights over VIEW_LABELS (stable-dreamfusion style).

    |azimuth| in [0, 90]: front -> side linearly; [90, 180]: side -> back; elevation > 60: overhead.
    Blending removes the jump at 45/135 degrees, where the nearest label switches abruptly.
    """
    a = wrap_azimuth(azimuth_deg.float()).abs()  # (B,) in [0, 180]
    r_front = (a / 90.0).clamp(0.0, 1.0)  # 0 at front, 1 at side
    r_back = ((a - 90.0) / 90.0).clamp(0.0, 1.0)  # 0 at side, 1 at back
    w = torch.zeros(a.shape[0], len(VIEW_LABELS), device=a.device)
    first_half = a <= 90.0
    w[:, _FRONT] = torch.where(first_half, 1.0 - r_front, torch.zeros_like(a))
    w[:, _SIDE] = torch.where(first_half, r_front, 1.0 - r_back)
    w[:, _BACK] = torch.where(first_half, torch.zeros_like(a), r_back)
    overhead = elevation_deg.float() > OVERHEAD_ELEVATION
    w = torch.where(overhead.unsqueeze(-1), torch.zeros_like(w), w)
    w[:, _OVERHEAD] = overhead.float()
    return w


def view_weights(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, mode: ViewPromptMode) -> torch.Tensor | None:
    """(B, 4) weights over the view embeddings, or None for mode 'none' (use the plain prompt)."""
    if mode == "nearest":
        return nearest_view_weights(elevation_deg, azimuth_deg)
    if mode == "interpolate":
        return interpolated_view_weights(elevation_deg, azimuth_deg)
    if mode == "none":
        return None
    raise ValueError(f"unknown view_prompt mode {mode!r}")


def select_embeddings(
    emb: PromptEmbeddings, elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, mode: ViewPromptMode
) -> torch.Tensor:
    """The conditional embedding per camera: (B, L, D)."""
    w = view_weights(elevation_deg, azimuth_deg, mode)
    if w is None:
        return emb.plain.unsqueeze(0).expand(elevation_deg.shape[0], -1, -1)
    return torch.einsum("bv,vld->bld", w.to(emb.views.device, emb.views.dtype), emb.views)


# ---- Perp-Neg ------------------------------------------------------------------------------------

def perp_neg_weights(
    elevation_deg: torch.Tensor,
    azimuth_deg: torch.Tensor,
    negative_weight: float = -2.0,
    front_decay: float = 2.0,
    side_decay: float = 10.0,
) -> torch.Tensor:
    """(B,) angles -> (B, 2) weights of the [front, side] prompts used as negatives (arXiv 2304.04968).

    Follows stable-dreamfusion: with |az| in [0, 90), r = 1 - |az|/90 (how frontal the view is),
    front is pushed away once r <= 0.8 and side once r >= 0.2, each weight decaying exponentially;
    with |az| in [90, 180], r = 1 - (|az| - 90)/90 (how sideways), front is always pushed away with
    the full negative weight and side (halved) once r <= 0.8. Overhead views get no negatives.
    """
    a = wrap_azimuth(azimuth_deg.float()).abs()
    first_half = a < 90.0
    r1 = 1.0 - a / 90.0
    r2 = 1.0 - (a - 90.0) / 90.0
    zero = torch.zeros_like(a)
    front_first = torch.where(r1 > 0.8, zero, torch.exp(-r1 * front_decay) * negative_weight)
    side_first = torch.where(r1 < 0.2, zero, torch.exp(-(1.0 - r1) * side_decay) * negative_weight)
    front_second = torch.full_like(a, negative_weight)
    side_second = torch.where(r2 > 0.8, zero, torch.exp(-r2 * side_decay) * negative_weight / 2.0)
    w = torch.stack(
        [torch.where(first_half, front_first, front_second), torch.where(first_half, side_first, side_second)], dim=-1
    )
    overhead = elevation_deg.float() > OVERHEAD_ELEVATION
    return torch.where(overhead.unsqueeze(-1), torch.zeros_like(w), w)


def perp_neg_conditioning(
    emb: PromptEmbeddings,
    elevation_deg: torch.Tensor,
    azimuth_deg: torch.Tensor,
    mode: ViewPromptMode,
    negative_weight: float = -2.0,
    front_decay: float = 2.0,
    side_decay: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional embeddings (3, B, L, D) = [view prompt, front, side] and their weights (3, B) = [1, w_front, w_side]."""
    B = elevation_deg.shape[0]
    positive = select_embeddings(emb, elevation_deg, azimuth_deg, mode)  # (B, L, D)
    front = emb.views[_FRONT].unsqueeze(0).expand(B, -1, -1)
    side = emb.views[_SIDE].unsqueeze(0).expand(B, -1, -1)
    neg = perp_neg_weights(elevation_deg, azimuth_deg, negative_weight, front_decay, side_decay)  # (B, 2)
    weights = torch.cat([torch.ones(B, 1, device=neg.device), neg], dim=-1).t()  # (3, B)
    return torch.stack([positive, front, side], dim=0), weights


# ---- on-disk cache -------------------------------------------------------------------------------

def model_key(model: str) -> str:
    """The identity of a model for the cache: the hub id, or for a local folder its absolute path plus
    the size and modification time of every text_encoder/ and tokenizer/ file, so retraining or
    replacing the weights in place never serves stale embeddings."""
    path = Path(os.path.expanduser(model))
    if not path.exists():
        return model
    stamps = []
    for sub in ("text_encoder", "tokenizer"):
        for f in sorted((path / sub).iterdir()) if (path / sub).is_dir() else []:
            if f.is_file():
                st = f.stat()
                stamps.append(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}")
    return "\0".join([str(path.resolve()), *stamps])


class EmbeddingCache:
    """Text embeddings on disk, one safetensors file per (model, text), so a prompt is encoded once.

    Encoding needs the text encoder (T5-XXL for IF: ~10 GB in fp16); with every text cached, it is
    never loaded. `folder=None` keeps embeddings in memory only.
    """

    def __init__(self, folder: str | os.PathLike | None = DEFAULT_CACHE_DIR):
        self.folder = Path(os.path.expanduser(str(folder))) if folder else None
        self._memory: dict[str, torch.Tensor] = {}

    @staticmethod
    def key(model: str, text: str) -> str:
        return hashlib.sha256(f"{model_key(model)}\0{text}".encode("utf-8")).hexdigest()[:40]

    def path(self, model: str, text: str) -> Path | None:
        return self.folder / f"{self.key(model, text)}.safetensors" if self.folder else None

    def load(self, model: str, text: str) -> torch.Tensor | None:
        key = self.key(model, text)
        if key in self._memory:
            return self._memory[key]
        path = self.path(model, text)
        if path is None or not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            tensor = load_file(str(path))["embedding"]
        except Exception:  # a truncated or foreign file: recompute rather than fail the run
            return None
        self._memory[key] = tensor
        return tensor

    def save(self, model: str, text: str, embedding: torch.Tensor) -> None:
        key = self.key(model, text)
        tensor = embedding.detach().float().cpu().contiguous()
        self._memory[key] = tensor
        path = self.path(model, text)
        if path is None:
            return
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"embedding": tensor}, str(tmp), metadata={"model": model_key(model), "text": text})
        os.replace(tmp, path)  # atomic: a concurrent run never reads half a file

    def get_or_compute(
        self, model: str, texts: Sequence[str], encode: Callable[[list[str]], torch.Tensor]
    ) -> torch.Tensor:
        """(N, L, D) float32 CPU embeddings of `texts`, encoding only the ones not cached (in one batch)."""
        found = {text: self.load(model, text) for text in dict.fromkeys(texts)}
        missing = [text for text, emb in found.items() if emb is None]
        if missing:
            encoded = encode(missing)  # (M, L, D)
            for text, emb in zip(missing, encoded):
                self.save(model, text, emb)
                found[text] = self._memory[self.key(model, text)]
        return torch.stack([found[text] for text in texts], dim=0)

