"""CLIP R-precision (Dream Fields / DreamFusion): can CLIP pick a render's prompt out of all prompts?

For every rendered view, the caption with the highest cosine similarity among all evaluation
captions is retrieved; R-precision (R = 1) is the fraction of views whose retrieved caption is their
own. DreamFusion reports it for colour renders and for textureless ("geometry") renders.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..guidance.loading import ModelLoadError

# OpenAI CLIP's preprocessing statistics, used when the model folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalise_caption(text: str) -> str:
    """Dream Fields' normalisation of the COCO captions: lower case, trim ' .,', end with '.'."""
    return text.lower().strip(" .,") + "."


def load_prompts(path: str | Path) -> list[str]:
    """Prompts of a text file, one per line (blank lines and '#' comments skipped), in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompts")
    return prompts


def r_precision(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per image, 1.0 when its nearest caption (cosine) is its true one.

    image_embeddings (N, D), text_embeddings (P, D), truth (N,) caption index of each image → (N,)"""
    sim = F.normalize(image_embeddings.float(), dim=-1) @ F.normalize(text_embeddings.float(), dim=-1).T  # (N, P)
    return (sim.argmax(-1) == truth).float()


class ClipScorer:
    """A CLIP model loaded with transformers `from_pretrained` (Hub id or local folder), embedding
    captions and uint8 renders."""

    def __init__(self, model: str | Path, device: torch.device | str = "cpu") -> None:
        from transformers import AutoTokenizer, CLIPModel

        self.device = torch.device(device)
        source = str(model)
        try:
            self.model = CLIPModel.from_pretrained(source).to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"could not load a CLIP model from {source}: {str(err).splitlines()[0]}") from None
        self.image_size = int(self.model.config.vision_config.image_size)
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        try:
            from transformers import CLIPImageProcessor

            proc = CLIPImageProcessor.from_pretrained(source)
            self.mean, self.std = tuple(proc.image_mean), tuple(proc.image_std)
        except (OSError, ValueError):
            pass  # no preprocessor_config.json: OpenAI's statistics
        self.max_tokens = min(int(getattr(self.tokenizer, "model_max_length", 77)),
                              int(self.model.config.text_config.max_position_embeddings))

    @staticmethod
    def _features(out) -> torch.Tensor:
        return out if torch.is_tensor(out) else out.pooler_output  # transformers 4 returns a tensor, 5 an output

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """(P, D) caption embeddings."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt").to(self.device)
        return self._features(self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])).cpu()

    @torch.no_grad()
    def embed_images(self, images: np.ndarray, batch: int = 32) -> torch.Tensor:
        """(N, D) embeddings of uint8 images (N, H, W, 3): resized to CLIP's input, normalised."""
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        out = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).to(self.device).permute(0, 3, 1, 2).float() / 255
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True)
            out.append(self._features(self.model.get_image_features(pixel_values=((x.clamp(0, 1) - mean) / std))).cpu())
        return torch.cat(out)
