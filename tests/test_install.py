"""A non-editable install runs the default: the recipes and the bundled prior travel in the wheel,
and the console commands exist."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built as a wheel and unpacked into a folder of its own (no repository around it)."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("dreamfusion-*.whl"))
    target = root / "site"
    zipfile.ZipFile(wheel).extractall(target)
    return wheel, target


def test_the_wheel_carries_the_recipes_the_prior_and_the_commands(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"dreamfusion/configs/toy-gaussians.yaml", "dreamfusion/configs/toy.yaml", "dreamfusion/configs/dreamfusion-sd.yaml",
            "dreamfusion/assets/toy_prior/unet/diffusion_pytorch_model.safetensors",
            "dreamfusion/assets/toy_prior/tokenizer/tokenizer.json", "dreamfusion/data/coco-object-centric-153.txt",
            "dreamfusion/gallery/vendor/model-viewer-umd.min.js", "dreamfusion/gallery/vendor/LICENSE.model-viewer",
            "dreamfusion/gallery/vendor/LICENSE.three"} <= names
    if (REPO / "assets" / "toy_latent_prior" / "vae").is_dir():
        assert {"dreamfusion/assets/toy_latent_prior/model_index.json", "dreamfusion/configs/toy-latent.yaml",
                "dreamfusion/assets/toy_latent_prior/vae/diffusion_pytorch_model.safetensors"} <= names
    assert not any(n.endswith((".png", ".pt")) for n in names)  # README images and training state stay out
    for command in ("dreamfusion-dream", "dreamfusion-export", "dreamfusion-video", "dreamfusion-evaluate", "dreamfusion-gallery"):
        assert command in entry_points


def test_the_installed_package_runs_the_default_recipe_from_anywhere(installed, tmp_path):
    """From a folder with no repository in sight: the default config and the bundled prior are found
    inside the package, and a short run of the default recipe trains both stages."""
    _, target = installed
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    code = ("import dreamfusion, sys; from dreamfusion.cli.dream import console_main; "
            "assert dreamfusion.__file__.startswith(sys.argv[1]), dreamfusion.__file__; "
            "sys.argv = ['dreamfusion-dream'] + sys.argv[2:]; sys.exit(console_main())")
    argv = [sys.executable, "-c", code, str(target), "--prompt", "a red cube", "--steps", "3", "--no-export", "--quiet",
            "--workspace", str(tmp_path / "ws"), "guidance.embedding_cache=null", "train.validation_every=3",
            "fine.train.steps=2", "fine.train.validation_every=2", "fine.dmtet.resolution=32"]
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    config = (tmp_path / "ws" / "config.yaml").read_text()
    assert f"model: {target / 'dreamfusion' / 'assets' / 'toy_prior'}" in config
    assert "type: gaussians" in config  # the default recipe, found inside the package
    assert (tmp_path / "ws" / "fine" / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "ws" / "checkpoints" / "last.pt").is_file()
    assert "<model-viewer" not in (tmp_path / "ws" / "index.html").read_text()  # its page, with no mesh (--no-export)
    assert "gallery page was not written" not in result.stderr
