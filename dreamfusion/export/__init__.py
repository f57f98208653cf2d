"""Export a trained field: textured mesh files (mesh.py, texture.py) and turntable videos (video.py).

`export_mesh(field, out_dir, ExportConfig(...))` runs the whole pipeline: density grid →
marching cubes at an automatic (or given) iso-level → floater removal → optional decimation →
vertex normals → charts packed by xatlas → albedo texture baked on CPU → model.obj + model.mtl +
albedo.png, model.glb, model.ply (vertex colours) and export.json, each written atomically and
only after every step has succeeded, so a failure leaves no partial files.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import trimesh

from ..checkpoint import atomic_write
from ..layout import MESH_FILES
from ..render.surface_colour import rendered_albedo
from ..render.volume import SURFACE_OPTICAL_DEPTH
from .mesh import DEFAULT_SMOOTH, ExportError, evaluate_points, field_device, grid_lookup, mesh_at_level, surface_grid
from .texture import UVMesh, bake_albedo_texture, texture_at_vertices

FORMATS = ("obj", "glb", "ply")
UP_AXES = ("z", "y")
# Each file's up axis by default: upright where it is opened with default settings. glTF defines +y
# up with the front toward +z; Blender reads OBJ as +y up and PLY as +z up (docs/conventions.md).
DEFAULT_UP = {"glb": "y", "obj": "y", "ply": "z"}

__all__ = [
    "ExportConfig",
    "ExportError",
    "ExportResult",
    "FORMATS",
    "export_mesh",
    "write_textured_mesh",
    "load_exported_mesh",
    "to_up_axis",
    "file_up_axis",
]


@dataclass
class ExportConfig:
    resolution: int = 256  # marching-cubes grid points per axis
    threshold: float | None = None  # density iso-level; None = automatic (mesh.auto_level)
    texture_size: int = 1024
    formats: tuple[str, ...] = FORMATS
    decimate: int | None = None  # target face count
    up: Literal["z", "y"] | None = None  # OBJ and PLY: None = DEFAULT_UP; "y" = +y up, front (+x) toward +z. GLB is always +y
    min_component_ratio: float = 0.05  # floaters: components with less area than this x the largest
    smooth: float = DEFAULT_SMOOTH  # std (world units) of the Gaussian on the density grid before marching cubes; 0 = off
    surface_optical_depth: float = SURFACE_OPTICAL_DEPTH  # the automatic level: where a head-on ray's optical depth reaches this
    chunk: int = 65536  # points per field call

    def validate(self) -> None:
        if self.resolution < 8:
            raise ExportError(f"--resolution must be at least 8, got {self.resolution}")
        if self.texture_size < 8:
            raise ExportError(f"--texture-size must be at least 8, got {self.texture_size}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ExportError(f"--formats must be a comma-separated subset of {','.join(FORMATS)}, got {','.join(self.formats)}")
        if self.up is not None and self.up not in UP_AXES:
            raise ExportError(f"--up must be z or y, got {self.up}")
        if not self.surface_optical_depth > 0:
            raise ExportError(f"--optical-depth (export.surface_optical_depth) must be > 0 (0.693 puts the surface at the "
                              f"median of a render's weights), got {self.surface_optical_depth}")
        if not self.smooth >= 0:
            raise ExportError(f"--smooth must be >= 0 (world units), got {self.smooth}")
        if self.decimate is not None and self.decimate < 4:
            raise ExportError(f"--decimate must be at least 4 faces, got {self.decimate}")


@dataclass
class ExportResult:
    files: list[Path]
    level: float
    n_vertices: int  # of the welded mesh (ply); the textured mesh has extra seam vertices
    n_faces: int
    n_charts: int
    seconds: dict[str, float] = dc_field(default_factory=dict)


def write_file(path: Path, data: bytes) -> None:
    """Atomically: a kill mid-write leaves the previous file."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def up_axes(cfg: ExportConfig) -> dict[str, str]:
    """Each format's up axis: glTF's +y always; OBJ and PLY as --up says, else DEFAULT_UP."""
    return {fmt: "y" if fmt == "glb" else cfg.up or DEFAULT_UP[fmt] for fmt in FORMATS}


def file_up_axis(meta: dict, name: str) -> str:
    """The up axis of file `name` (model.glb, ...) from its export.json: a mapping by format, or one
    letter for every file (files written before GLB followed glTF), +z when nothing is recorded."""
    up = meta.get("up", "z")
    return up.get(Path(name).suffix.lstrip("."), "z") if isinstance(up, dict) else up


def to_up_axis(points: np.ndarray, up: str) -> np.ndarray:
    """Our +z-up coordinates to the requested convention ('y': (x, y, z) -> (y, z, x), a rotation
    that puts +z up to +y and the front (+x, azimuth 0) toward +z)."""
    return points[:, [1, 2, 0]] if up == "y" else points


def from_up_axis(points: np.ndarray, up: str) -> np.ndarray:
    return points[:, [2, 0, 1]] if up == "y" else points


def _textured_mesh(uvm: UVMesh, normals: np.ndarray, image: np.ndarray, up: str, pbr: bool) -> trimesh.Trimesh:
    import PIL.Image

    img = PIL.Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    if pbr:
        material = trimesh.visual.material.PBRMaterial(
            name="albedo", baseColorTexture=img, metallicFactor=0.0, roughnessFactor=1.0
        )
    else:
        white, black = [255, 255, 255, 255], [0, 0, 0, 255]
        material = trimesh.visual.material.SimpleMaterial(image=img, diffuse=white, ambient=white, specular=black, name="albedo")
    mesh = trimesh.Trimesh(
        to_up_axis(uvm.vertices, up),
        uvm.faces,
        vertex_normals=to_up_axis(normals[uvm.source_vertex], up),
        visual=trimesh.visual.TextureVisuals(uv=uvm.uvs, material=material),
        process=False,
    )
    return mesh


def export_mesh(field: object, out_dir: str | Path, cfg: ExportConfig | None = None, bound: float | None = None, progress: bool = True) -> ExportResult:
    """Export `field` (anything with density(x) and forward(x).albedo) as mesh files into out_dir,
    coloured with what a render shows at each surface point (render/surface_colour.py).

    Raises ExportError (one sentence with the likely fix) when there is no surface; nothing is
    written then.
    """
    cfg = cfg or ExportConfig()
    cfg.validate()
    bound = float(bound if bound is not None else getattr(getattr(field, "cfg", None), "bound", 1.0))
    start = time.perf_counter()
    grid, level = surface_grid(field, cfg.resolution, bound, cfg.threshold, cfg.chunk, optical_depth=cfg.surface_optical_depth)
    mesh = mesh_at_level(grid, level, bound, cfg.smooth, cfg.min_component_ratio, cfg.decimate)
    # What a render shows at each surface point, composited through the raw density grid just
    # sampled (trilinear; the field itself is read only for the albedo of the samples that count).
    volume = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None].to(field_device(field))
    density = lambda x: grid_lookup(volume, x, bound)[:, 0]  # noqa: E731
    albedo = getattr(field, "albedo", None) or (lambda x: field(x).albedo)
    shown = lambda x, n: rendered_albedo(density, albedo, x, n)  # noqa: E731
    return write_textured_mesh(mesh, shown, field_device(field), out_dir, cfg, progress,
                               level=level, seconds={"mesh": time.perf_counter() - start})


def write_textured_mesh(
    mesh: trimesh.Trimesh,
    colour: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],  # world points (N, 3), outward normals (N, 3) -> colours (N, 3) in [0, 1]
    device: torch.device,
    out_dir: str | Path,
    cfg: ExportConfig | None = None,
    progress: bool = True,
    level: float = float("nan"),
    seconds: dict[str, float] | None = None,
) -> ExportResult:
    """A mesh (+z up, world units) and its colour function as textured files in out_dir: UV atlas,
    baked texture, obj/mtl/png, glb, ply (vertex colours) and export.json. Everything is built in
    memory first and each file written atomically, so a failure writes nothing. Both stages use it:
    the NeRF's marching-cubes mesh and the DMTet's own mesh."""
    from tqdm.auto import tqdm

    cfg = cfg or ExportConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    seconds = dict(seconds or {})
    bar = tqdm(total=4, desc="export", unit="step", disable=not progress, leave=False)

    def stage(name: str, start: float) -> float:
        now = time.perf_counter()
        seconds[name] = now - start
        bar.update(1)
        bar.set_postfix_str(name)
        return now

    t = time.perf_counter()
    try:  # everything in memory first: a failure here writes nothing
        normals = np.asarray(mesh.vertex_normals, np.float64)
        need_texture = "obj" in cfg.formats or "glb" in cfg.formats
        uvm, image = bake_albedo_texture(colour, mesh, cfg.texture_size, cfg.chunk, device) if need_texture else (None, None)
        t = stage("texture", t)
        if uvm is not None:  # the texture's colour at each vertex: the same colours, not computed twice
            vertex_colors = texture_at_vertices(image, uvm, len(mesh.vertices))
        else:
            vertex_colors = evaluate_points(colour, np.asarray(mesh.vertices), cfg.chunk, device, normals)
        t = stage("vertex colours", t)
        payload = _encode_files(mesh, normals, vertex_colors, uvm, image, cfg)
        t = stage("encode", t)
    except BaseException:
        bar.close()
        raise
    files = []
    for name, data in payload.items():
        files.append(out_dir / name)
        write_file(files[-1], data)
    result = ExportResult(files, level, len(mesh.vertices), len(mesh.faces), uvm.n_charts if uvm else 0, seconds)
    meta = {
        "level": level if np.isfinite(level) else None,
        "up": {fmt: axis for fmt, axis in up_axes(cfg).items() if fmt in cfg.formats},
        "vertices": result.n_vertices,
        "faces": result.n_faces,
        "charts": result.n_charts,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "files": [p.name for p in files],
    }
    write_file(out_dir / "export.json", json.dumps(meta, indent=2).encode("utf-8"))
    files.append(out_dir / "export.json")
    stage("write", t)
    bar.close()
    return result


def _encode_files(mesh, normals, vertex_colors, uvm, image, cfg: ExportConfig) -> dict[str, bytes]:
    """All output files as bytes, built in memory first (nothing touches the disk on failure)."""
    from trimesh.exchange.gltf import export_glb
    from trimesh.exchange.obj import export_obj
    from trimesh.exchange.ply import export_ply

    out: dict[str, bytes] = {}
    up = up_axes(cfg)
    if "obj" in cfg.formats:
        text, extra = export_obj(
            _textured_mesh(uvm, normals, image, up["obj"], pbr=False),
            include_normals=True,
            include_texture=True,
            return_texture=True,
            mtl_name="model.mtl",
            header="dreamfusion export",
        )
        out["model.obj"] = text.encode("utf-8")
        out.update({k: bytes(v) for k, v in extra.items()})
    if "glb" in cfg.formats:
        out["model.glb"] = export_glb(trimesh.Scene(_textured_mesh(uvm, normals, image, up["glb"], pbr=True)), include_normals=True)
    if "ply" in cfg.formats:
        rgba = np.concatenate([np.clip(vertex_colors, 0, 1) * 255 + 0.5, np.full((len(vertex_colors), 1), 255.0)], 1).astype(np.uint8)
        ply = trimesh.Trimesh(
            to_up_axis(np.asarray(mesh.vertices), up["ply"]),
            np.asarray(mesh.faces),
            vertex_normals=to_up_axis(normals, up["ply"]),
            vertex_colors=rgba,
            process=False,
        )
        out["model.ply"] = export_ply(ply, encoding="binary", vertex_normal=True)
    return out


def load_exported_mesh(mesh_dir: str | Path) -> trimesh.Trimesh:
    """The exported textured mesh (model.glb, else model.obj, else model.ply) back in +z-up coordinates."""
    mesh_dir = Path(mesh_dir)
    meta_path = mesh_dir / "export.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    for name in MESH_FILES:
        path = mesh_dir / name
        if path.is_file():
            loaded = trimesh.load(path, force="mesh", process=False)
            mesh = loaded.copy()
            mesh.vertices = from_up_axis(np.asarray(loaded.vertices), file_up_axis(meta, name))
            return mesh
    raise ExportError(f"no exported mesh in {mesh_dir}; run scripts/export_mesh.py first")
