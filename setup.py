from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="dreamfusion",
    version="0.1.0",
    description="Text-to-3D by score distillation (DreamFusion), CPU first, CUDA when present.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["dreamfusion", "dreamfusion.*"]),
    install_requires=[
        # torch is deliberately unpinned here; install the build for your machine first (README).
        "torch>=2.1",
        "numpy",
        "nerfacc>=0.5.3",
        "diffusers>=0.25",
        "transformers>=4.36",
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
    ],
    extras_require={"test": ["pytest>=7"]},
)
