"""dreamfusion: text-to-3D by score distillation, CPU first, CUDA when present."""

__version__ = "0.1.0"
