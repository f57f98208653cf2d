from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="dreamfusion",
    version="0.1.0",
    description="Text-to-3D by score distillation (DreamFusion), CPU first, CUDA when present.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The recipes, the bundled prior and the prompt lists travel inside the package (dreamfusion/paths.py
    # finds them there when installed, in the repository's top-level folders otherwise).
    packages=find_packages(include=["dreamfusion", "dreamfusion.*"]) + ["dreamfusion.configs", "dreamfusion.assets", "dreamfusion.data"],
    package_dir={"dreamfusion.configs": "configs", "dreamfusion.assets": "assets", "dreamfusion.data": "data"},
    package_data={
        "dreamfusion.configs": ["*.yaml"],
        "dreamfusion.assets": [f"{prior}/{pattern}" for prior in ("toy_prior", "toy_latent_prior")
                               for pattern in ("*.json", "*/*.json", "*/*.txt", "*/*.safetensors")],
        "dreamfusion.data": ["*.txt", "*.md"],
        "dreamfusion.gallery": ["vendor/*"],
    },
    entry_points={"console_scripts": [
        "dreamfusion-dream = dreamfusion.cli.dream:console_main",
        "dreamfusion-export = dreamfusion.cli.export_mesh:console_main",
        "dreamfusion-video = dreamfusion.cli.render_video:console_main",
        "dreamfusion-evaluate = dreamfusion.cli.evaluate:console_main",
        "dreamfusion-demo = dreamfusion.cli.render_demo:console_main",
        "dreamfusion-train-prior = dreamfusion.cli.train_toy_prior:console_main",
        "dreamfusion-check-prior = dreamfusion.cli.check_toy_prior:console_main",
        "dreamfusion-gallery = dreamfusion.cli.gallery:console_main",
        "dreamfusion-batch = dreamfusion.cli.batch:console_main",
        "dreamfusion-fixed-point = dreamfusion.cli.fixed_point:console_main",
        "dreamfusion-colour-pull = dreamfusion.cli.colour_pull:console_main",
    ]},
    install_requires=[
        # torch is deliberately unpinned here; install the build for your machine first (README).
        "torch>=2.1",
        "numpy",
        "nerfacc>=0.5.3",
        "diffusers>=0.29",  # 0.29: Stable Diffusion 3 (SD3Transformer2DModel, FlowMatchEulerDiscreteScheduler)
        "transformers>=4.36",
        "peft>=0.10",  # LoRA layers for VSD's online score model on large priors (guidance.vsd.model: lora)
        "sentencepiece>=0.1.99",  # T5 tokenizers (DeepFloyd IF) are sentencepiece models ...
        "protobuf>=3.20",  # ... which transformers converts through protobuf
        "imageio>=2.30",
        "imageio-ffmpeg>=0.4.9",
        "trimesh>=4.0",
        "xatlas>=0.0.8",
        "PyYAML>=6",
        "tqdm>=4.60",
        "safetensors>=0.4",
        "Pillow>=9",
        "matplotlib>=3.5",  # evaluation plots
        "scipy>=1.9",
        "scikit-image>=0.19",  # marching cubes
        "fast-simplification>=0.1.7",  # quadric edge-collapse decimation (export --decimate)
        "ray>=2.9",  # batch runs and evaluation suites: a local instance, or a cluster (dreamfusion/batch)
    ],
    # selenium drives Debian's chromium in the gallery's browser tests; 4.52 wants a certifi newer
    # than the package index here has
    extras_require={"test": ["pytest>=7", "selenium>=4.20,<4.52"]},
)
