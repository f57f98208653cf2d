"""Closed vocabularies: a prior trained on a few words (the bundled toy prior) says which.

A model folder that holds `training_info.json` with a "vocabulary" list was trained only on those
words; a prompt with any other word would be scored as noise, so the run refuses it up front
(dream.py --force overrides). Open-vocabulary models (Stable Diffusion, IF, Hub ids) have no such
file and accept any prompt.
"""
from __future__ import annotations

import json
import re
from pathlib import Path


def closed_vocabulary(model: str | Path) -> list[str] | None:
    """The words `model` was trained on, or None when it does not say (an open-vocabulary model)."""
    info = Path(model) / "training_info.json"
    if not info.is_file():
        return None
    try:
        words = json.loads(info.read_text(encoding="utf-8")).get("vocabulary")
    except (OSError, ValueError, AttributeError):
        return None
    return sorted(str(w).lower() for w in words) if isinstance(words, list) else None


def unknown_words(prompt: str, vocabulary: list[str]) -> list[str]:
    """Words of `prompt` outside `vocabulary`, in prompt order, each once (case and punctuation ignored)."""
    known = set(vocabulary)
    words = re.findall(r"[a-z0-9']+", prompt.lower())
    return list(dict.fromkeys(w for w in words if w not in known))
