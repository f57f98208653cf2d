"""The full config of a text-to-3D run: scene sections + guidance + training + export, from YAML.

`load_run_config(yaml_path, overrides)` reads a YAML file, applies dotted `key=value` overrides
(values parsed as YAML, so `train.steps=200` is an int and `camera.fovy_range=[40,60]` a list) and
builds the typed config strictly: an unknown key stops the run before any work, naming the nearest
valid key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from .config import ConfigError, build, require_nonnegative, require_positive, to_dict
from .dmtet.config import FineConfig
from .guidance.config import GuidanceConfig
from .loop import LoopConfig, Schedule, constant  # noqa: F401 (Schedule re-exported)
from .paths import DEFAULT_OUTPUTS, bundled, data_dir, default_config  # noqa: F401 (DEFAULT_OUTPUTS re-exported)
from .render.volume import SURFACE_OPTICAL_DEPTH
from .scene import SceneConfig


@dataclass
class TrainConfig(LoopConfig):
    """The coarse NeRF stage: learning rates, DreamFusion's regularizers, the field's schedules."""

    # Old keys that meant something else than their name says in the peers' configs.
    RENAMED: ClassVar[dict[str, str]] = {
        "lambda_opacity": "lambda_opacity_dreamfusion (DreamFusion's sqrt(opacity^2 + 0.01))",
        "lambda_sparsity": ("lambda_opacity_dreamfusion for threestudio's lambda_sparsity (DreamFusion's "
                            "sqrt(opacity^2 + 0.01)), or lambda_opacity_mean for the plain mean opacity"),
        "lambda_entropy": "lambda_opacity_entropy (binary entropy of the opacity; threestudio's lambda_opaque)",
    }

    lr_encoding: float = 1e-2
    lr_network: float = 1e-3
    lr_background: float = 1e-3
    # Regularizers, each named after what it computes (the peers' names disagree; see RENAMED):
    lambda_orientation: Schedule = dataclasses.field(default_factory=lambda: Schedule(1e-4, 1e-2, 0, 300))  # DreamFusion's orientation loss
    lambda_opacity_dreamfusion: Schedule = dataclasses.field(default_factory=lambda: constant(0.0))  # mean sqrt(opacity^2 + 0.01): DreamFusion's; threestudio's "sparsity"
    lambda_opacity_mean: Schedule = dataclasses.field(default_factory=lambda: constant(0.0))  # mean opacity (L1; its gradient is 1 even on empty rays)
    lambda_opacity_entropy: Schedule = dataclasses.field(default_factory=lambda: constant(0.0))  # binary entropy of opacity: threestudio's "opaque"
    lambda_normal: Schedule = dataclasses.field(default_factory=lambda: constant(0.0))  # predicted vs analytic normals
    # spread of the weights along opaque rays (threestudio's z-variance): a surface, not a fog
    lambda_depth_variance: Schedule = dataclasses.field(default_factory=lambda: constant(0.0))
    blob_scale: Schedule = dataclasses.field(default_factory=lambda: constant(1.0))  # fade the density blob
    # Progressive hash grid (smooth analytic normals early, detail later): start with
    # progressive_start_levels levels, then from step progressive_begin unmask one more every
    # progressive_levels steps (0: all levels from the start).
    progressive_levels: int = 0
    progressive_start_levels: int = 1
    progressive_begin: int = 0

    def validate(self, prefix: str = "") -> None:
        super().validate(prefix)
        require_positive(prefix, "progressive_start_levels", self.progressive_start_levels)
        for name in ("lr_encoding", "lr_network", "lr_background", "progressive_levels", "progressive_begin"):
            require_nonnegative(prefix, name, getattr(self, name))

    def active_levels(self, step: int, n_levels: int) -> int | None:
        """Hash-grid levels in use at `step` (None: all)."""
        if self.progressive_levels <= 0:
            return None
        added = max(0, step - self.progressive_begin) // self.progressive_levels
        return min(n_levels, self.progressive_start_levels + added)


@dataclass
class FinalExportConfig:
    """What dream.py writes at the end (scripts/export_mesh.py and render_video.py offer more)."""

    mesh: bool = True
    mesh_resolution: int = 128
    mesh_smooth: float = 0.025  # see ExportConfig.smooth
    surface_optical_depth: float = SURFACE_OPTICAL_DEPTH  # see ExportConfig.surface_optical_depth
    texture_size: int = 512
    video: bool = True
    video_frames: int = 60
    video_resolution: int = 256
    video_modes: tuple[str, ...] = ("rgb", "normal")
    # "mesh": the turntable shows the exported file (clean normals, 5-10x faster); the field is the
    # fallback when no mesh was written. "field": the soft volume the optimizer saw.
    video_source: Literal["mesh", "field"] = "mesh"

    def validate(self, prefix: str = "") -> None:
        for name in ("mesh_resolution", "texture_size", "video_frames", "video_resolution"):
            require_positive(prefix, name, getattr(self, name))
        require_nonnegative(prefix, "mesh_smooth", self.mesh_smooth)
        require_positive(prefix, "surface_optical_depth", self.surface_optical_depth)


MAX_SEED = 2**63 - 1  # every generator the run seeds takes it (torch's and numpy's), and seed + k stays in range


def require_utf8(key: str, text: str) -> None:
    """Text from the command line arrives with undecodable bytes as surrogates; refuse it in one sentence."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        char = text[err.start]
        byte = f"byte 0x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"character U+{ord(char):04X}"
        raise ConfigError(f"the {key.replace('_', ' ')} is not valid UTF-8 text ({byte} at character {err.start}); "
                          "check the terminal's or the file's encoding") from None


@dataclass
class RunConfig(SceneConfig):
    """A run: the scene sections (SceneConfig's field, background, render, camera, light: declared
    once, in scene.py, with their top-level YAML keys) plus the prompt, guidance, training and export."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The coarse stage's representation, by its registry name (registry.py), with its own options:
    # {type: nerf} (its settings are the field/render/background sections) or {type: gaussians, ...}.
    representation: dict[str, Any] = dataclasses.field(default_factory=lambda: {"type": "nerf"})
    guidance: GuidanceConfig = dataclasses.field(default_factory=GuidanceConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: FinalExportConfig = dataclasses.field(default_factory=FinalExportConfig)
    # The fine stage (Magic3D): the coarse NeRF refined as a textured DMTet mesh. A config with
    # this section runs both stages by default (dream.py --stage all|coarse|fine).
    fine: FineConfig | None = None

    def validate(self, prefix: str = "") -> None:
        if isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer from 0 to 2^63 - 1, got {self.seed}")
        for key in ("prompt", "negative_prompt"):
            require_utf8(key, getattr(self, key))
        self.guidance.validate("guidance")
        if isinstance(self.representation, str):  # representation: gaussians
            self.representation = {"type": self.representation}
        if not isinstance(self.representation, dict):
            raise ConfigError(f"representation must be a name or a mapping with a type, got {self.representation!r}")
        self.representation_options()  # strict: an unknown representation or option stops here
        if self.fine is not None:
            if not isinstance(self.fine.guidance, dict):
                raise ConfigError(f"fine.guidance must be a mapping of guidance keys, got {self.fine.guidance!r}")
            self.fine_guidance()  # strict: an unknown key under fine.guidance stops here

    def representation_options(self):  # -> (type[Representation], its options dataclass or None)
        """The coarse stage's representation class and its options (registry.py)."""
        from .registry import representation_options

        return representation_options(self.representation)

    def fine_guidance(self) -> GuidanceConfig:
        """The fine stage's guidance: the run's guidance section with fine.guidance's keys over it."""
        if self.fine is None:
            return self.guidance
        return build(GuidanceConfig, {**to_dict(self.guidance), **self.fine.guidance}, prefix="fine.guidance")

    def mesh_export_config(self):  # -> export.ExportConfig (imported here: export/ loads trimesh)
        """The export settings of the mesh written at the end of a run."""
        from .export import ExportConfig

        e = self.export
        return ExportConfig(resolution=e.mesh_resolution, texture_size=e.texture_size, smooth=e.mesh_smooth,
                            surface_optical_depth=e.surface_optical_depth)

    def video_config(self):  # -> export.video.VideoConfig
        """The turntable written at the end of a run, framed by the run's camera ranges."""
        from .export.video import VideoConfig, orbit_of

        e = self.export
        return VideoConfig(frames=e.video_frames, resolution=e.video_resolution, modes=tuple(e.video_modes), **orbit_of(self.camera))


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.steps=200)")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has no key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def resolve_model_path(data: dict[str, Any]) -> None:
    """A relative model folder becomes absolute: relative to the current folder when it exists there,
    else the bundled copy (guidance.model: assets/toy_prior), wherever the command runs from; the
    same for the fine stage's own model (fine.guidance.model). Hub ids ('org/name') exist in neither
    place and stay as they are."""
    fine = data.get("fine")
    for section in (data.get("guidance"), fine.get("guidance") if isinstance(fine, dict) else None):
        model = section.get("model") if isinstance(section, dict) else None
        if isinstance(model, str) and model and not Path(model).is_absolute():
            found = Path(model).resolve() if Path(model).exists() else bundled(model)
            if found is not None:  # absolute, so the workspace's config.yaml works from any folder
                section["model"] = str(found)


def config_path(path: str | Path | None) -> Path:
    """The YAML file a --config names: a path, or a bundled recipe ('configs/toy.yaml', or just 'toy')."""
    if path is None:
        return default_config()
    path = Path(path)
    if path.exists():
        return path
    found = bundled(path) or (bundled(Path("configs") / f"{path.name}.yaml") if path.suffix == "" and len(path.parts) == 1 else None)
    return found or path  # a missing file is reported by read_yaml


def load_run_config(path: str | Path | None, overrides: list[str] | None = None, extra: dict[str, Any] | None = None) -> RunConfig:
    data = read_yaml(config_path(path))
    for key, value in (extra or {}).items():
        data[key] = value
    apply_overrides(data, list(overrides or []))
    resolve_model_path(data)
    return build(RunConfig, data)
