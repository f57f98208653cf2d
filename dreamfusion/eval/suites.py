"""The evaluation suites behind scripts/evaluate.py.

* toy: every toy-world prompt through dream.py with the bundled prior, each exported mesh judged by
  the toy evaluator (shape, colour, Janus mark count, and geometry against the prompted shape:
  genus, pieces, closedness, surface distance, normal angle). Ground truth is exact, so this is
  the end-to-end check of the whole stack.
* clip: CLIP R-precision as DreamFusion reports it, for runs on real models.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import ConfigError
from ..export import ExportError
from ..toyworld.vocabulary import ALL_SHAPES, COLOURS, VIEW_MARKED_SHAPES, all_captions, caption
from ..layout import WorkspaceLayout
from .rprecision import ClipScorer, normalise_caption, r_precision
from ..batch import Resources, RunRecord, RunSettings, RunSpec, run_batch, workspace_for
from .report import CLIP_COLUMNS, SUITE_COLUMNS, TOY_COLUMNS  # noqa: F401 (re-exported)
from .toy import evaluate_mesh, parse_toy_prompt, score
from .views import render_views

Progress = Callable[[str], None]  # called with each prompt once its asset is done
GEOMETRY_KEYS = ("genus", "genus_ok", "watertight", "components", "significant_components", "surface_distance", "normal_angle")
COLOUR_KEYS = ("mean_albedo", "delta_e", "delta_lightness", "delta_chroma")


def toy_prompts(spec: str) -> list[str]:
    """'all' (every shape × colour), 'shapes' (each shape once, colours rotating) or 'a red cube,a blue cone'."""
    if spec == "all":
        return all_captions()
    if spec == "shapes":
        colours = list(COLOURS)
        return [caption(colours[i % len(colours)], shape) for i, shape in enumerate(ALL_SHAPES)]
    prompts = [p.strip() for p in spec.split(",") if p.strip()]
    if not prompts:
        raise ConfigError("--prompts is empty; use all, shapes, or a comma-separated list like 'a red cube,a blue cone'")
    for prompt in prompts:
        try:
            parse_toy_prompt(prompt)
        except ValueError:
            raise ConfigError(f"--prompts: {prompt!r} is not a toy-world prompt 'a <colour> <shape>' "
                              f"(colours: {', '.join(COLOURS)}; shapes: {', '.join(ALL_SHAPES)})") from None
    return prompts


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fraction(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def run_all(prompts: Sequence[str], seeds: int, runs_dir: Path, settings: RunSettings | None = None, fresh: bool = False,
            progress: Progress | None = None, resources: Resources | None = None, address: str | None = None) -> list[RunRecord]:
    """Every (prompt, seed) run in runs_dir/<slug>-s<seed>, as Ray tasks (dreamfusion/batch: a local
    instance unless `address` names a cluster); each run's output goes to runs_dir/logs/. Records
    come back in prompt order."""
    runs_dir = Path(runs_dir)
    specs = []
    for prompt in prompts:
        for seed in range(seeds):
            ws = workspace_for(runs_dir, prompt, seed)
            specs.append(RunSpec(prompt, seed, ws.root, settings or RunSettings(), fresh, log=runs_dir / "logs" / f"{ws.root.name}.log"))

    def done(record: RunRecord) -> None:
        if progress is not None:
            progress(record.prompt if seeds == 1 else f"{record.prompt} (seed {record.seed})")

    return run_batch(specs, address, resources, done)


def judge(prompt: str, mesh_dir: Path, wanted_shape: str) -> dict:
    """The toy judge's figures of one exported mesh, or {"status": "no mesh", ...} when there is none."""
    try:
        result = score(prompt, evaluate_mesh(mesh_dir, wanted_shape, parse_toy_prompt(prompt)[1]))
    except ExportError as err:  # the run finished but exported no mesh (an empty field)
        return {"status": "no mesh", "message": str(err), "shape_ok": False, "colour_ok": False, "ok": False}
    row = {k: result[k] for k in ("shape", "colour", "shape_ok", "colour_ok", "marked_faces", "mark_views", "janus", *GEOMETRY_KEYS, *COLOUR_KEYS)}
    row["ok"] = bool(row["shape_ok"] and row["colour_ok"])
    return row


def summarize(rows: Sequence[dict], wanted: Sequence[str]) -> dict:
    """Accuracy, Janus and geometry figures of judged rows. The geometry fractions count every asset
    (one without a mesh is not ok); the medians only those with one."""
    marked = [r for r, shape in zip(rows, wanted) if shape in VIEW_MARKED_SHAPES]
    return {
        "assets": len(rows),
        "shape_accuracy": _fraction([r["shape_ok"] for r in rows]),
        "colour_accuracy": _fraction([r["colour_ok"] for r in rows]),
        "accuracy": _fraction([r["ok"] for r in rows]),
        "marked_assets": len(marked),
        "marked_one_side": _fraction([r.get("marked_faces") == 1 for r in marked]),  # in the texture
        "mark_seen_one_side": _fraction([r.get("mark_views") == 1 for r in marked]),  # in renders of the file
        "janus": _fraction([bool(r.get("janus")) for r in marked]),
        "genus_ok": _fraction([bool(r.get("genus_ok")) for r in rows]),
        "one_component": _fraction([r.get("significant_components") == 1 for r in rows]),
        "watertight": _fraction([bool(r.get("watertight")) for r in rows]),
        "median_surface_distance": _median([r.get("surface_distance") for r in rows]),
        "median_normal_angle": _median([r.get("normal_angle") for r in rows]),
        "median_delta_e": _median([r.get("delta_e") for r in rows]),
        "max_delta_e": max((r["delta_e"] for r in rows if r.get("delta_e") is not None), default=None),
        "median_delta_lightness": _median([r.get("delta_lightness") for r in rows]),
        "median_delta_chroma": _median([r.get("delta_chroma") for r in rows]),
        "per_shape_accuracy": {s: _fraction([r["ok"] for r, shape in zip(rows, wanted) if shape == s])
                               for s in ALL_SHAPES if s in wanted},
    }


def coarse_mesh_dir(ws: Path) -> Path:
    """Where a refined run's coarse mesh is: beside its result (WORKSPACE/coarse/mesh), or, for a run
    that refined another workspace (dream.py --from), in that source's coarse export."""
    layout = WorkspaceLayout(ws)
    own = layout.coarse_result().mesh_dir
    summary = layout.read_summary()
    if own.is_dir() or summary is None or not summary.source:
        return own
    source = WorkspaceLayout(summary.source)
    return source.coarse_result().mesh_dir if source.coarse_result().mesh_dir.is_dir() else source.mesh_dir


def toy_suite(prompts: Sequence[str], seeds: int, runs_dir: Path, settings: RunSettings | None = None, fresh: bool = False,
              progress: Progress | None = None, resources: Resources | None = None,
              address: str | None = None) -> tuple[list[dict], dict]:
    """Per-asset rows and a summary: shape / colour / both accuracy, Janus, geometry, time per asset.

    A two-stage run is judged on its result (WORKSPACE/mesh, the fine stage's) and on its coarse
    stage's mesh (WORKSPACE/coarse/mesh): each row's coarse figures sit under "coarse", and the
    summary's under "coarse" too, so one suite run shows both stages side by side."""
    rows, wanted, coarse_rows = [], [], []
    for rec in run_all(prompts, seeds, runs_dir, settings, fresh, progress, resources, address):
        wanted_shape, _ = parse_toy_prompt(rec.prompt)
        wanted.append(wanted_shape)
        row = {"prompt": rec.prompt, "seed": rec.seed, "status": rec.status, "seconds": rec.seconds,
               "workspace": str(rec.workspace), "message": rec.message}
        if rec.status != "failed":
            row.update(judge(rec.prompt, Path(rec.workspace) / "mesh", wanted_shape))
            if (Path(rec.workspace) / "fine").is_dir():  # refined: the coarse mesh beside it (absent: the coarse emptied)
                row["coarse"] = judge(rec.prompt, coarse_mesh_dir(Path(rec.workspace)), wanted_shape)
                row.update({f"coarse_{k}": row["coarse"].get(k) for k in ("ok", "genus", "surface_distance", "normal_angle", "delta_e")})
        row.setdefault("shape_ok", False)
        row.setdefault("colour_ok", False)
        row["ok"] = bool(row["shape_ok"] and row["colour_ok"])
        rows.append(row)
        coarse_rows.append(row.get("coarse"))
    summary = {**summarize(rows, wanted),
               "failed": sum(r["status"] in ("failed", "no mesh") for r in rows),
               "median_seconds": _median([r["seconds"] for r in rows])}
    if any(c is not None for c in coarse_rows):  # the same figures for the coarse stage of the refined runs
        pairs = [(c, w) for c, w in zip(coarse_rows, wanted) if c is not None]
        summary["coarse"] = summarize([c for c, _ in pairs], [w for _, w in pairs])
    return rows, summary


def stage_table(summary: dict) -> str:
    """Markdown: the same figures for the coarse stage and for the result (the fine stage), side by side."""
    stages = [("coarse (NeRF)", summary["coarse"]), ("result (fine DMTet)", summary)] if "coarse" in summary else [("result", summary)]
    pct = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    num = lambda v, fmt: "–" if v is None else format(v, fmt)  # noqa: E731
    lines = ["| stage | shape+colour | median ΔE | max ΔE | median ΔL* | median ΔC* | genus right | one piece | watertight "
             "| median distance | median normal° |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in stages:
        lines.append(f"| {name} | {pct(s['accuracy'])} | {num(s.get('median_delta_e'), '.1f')} | {num(s.get('max_delta_e'), '.1f')} | "
                     f"{num(s.get('median_delta_lightness'), '+.1f')} | {num(s.get('median_delta_chroma'), '+.1f')} | "
                     f"{pct(s['genus_ok'])} | {pct(s['one_component'])} | {pct(s['watertight'])} | "
                     f"{num(s['median_surface_distance'], '.3f')} | {num(s['median_normal_angle'], '.1f')} |")
    return "\n".join(lines) + "\n"


def toy_matrix(rows: Sequence[dict]) -> str:
    """Shapes × colours Markdown grid of the toy rows: ✓ both right, else what came out (e.g. 'cylinder')."""
    cells: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        shape, colour = parse_toy_prompt(r["prompt"])
        if r["ok"]:
            mark = "✓"
        elif r["status"] in ("failed", "no mesh"):
            mark = "empty" if r["status"] == "no mesh" else "failed"
        else:
            mark = " ".join(w for w, ok in ((r.get("colour"), r["colour_ok"]), (r.get("shape"), r["shape_ok"])) if not ok)
        if r.get("janus"):
            mark += " (Janus)"
        cells.setdefault((shape, colour), []).append(mark)
    shapes = [s for s in ALL_SHAPES if any(k[0] == s for k in cells)]
    colours = [c for c in COLOURS if any(k[1] == c for k in cells)]
    lines = ["| | " + " | ".join(colours) + " |", "|---|" + "---|" * len(colours)]
    for shape in shapes:
        lines.append(f"| {shape} | " + " | ".join(", ".join(cells.get((shape, c), ["–"])) for c in colours) + " |")
    return "\n".join(lines) + "\n"


def clip_suite(prompts: Sequence[str], clip_model: str, runs_dir: Path, workspaces: Sequence[str] = (),
               settings: RunSettings | None = None, n_views: int = 8, resolution: int = 224, device: str = "cpu",
               fresh: bool = False, progress: Progress | None = None, resources: Resources | None = None,
               address: str | None = None) -> tuple[list[dict], dict]:
    """CLIP R-precision of each asset's renders (30° elevation, `n_views` azimuths) among all prompts.

    Assets come from `workspaces` when given (their prompts join the candidates if the file lacks
    them), else from dream.py runs of every prompt."""
    candidates = list(dict.fromkeys(normalise_caption(p) for p in prompts))  # the runs use these exact strings
    if workspaces:
        records = []
        for folder in workspaces:
            ws = WorkspaceLayout(folder)
            config = ws.read_config()
            if not config.get("prompt"):
                raise ConfigError(f"{folder}: its config.yaml names no prompt")
            records.append(RunRecord(config["prompt"], int(config.get("seed", 0)), ws.root, "given", None))
    else:
        records = run_all(candidates, 1, runs_dir, settings, fresh, progress, resources, address)
    for rec in records:
        if normalise_caption(rec.prompt) not in candidates:
            candidates.append(normalise_caption(rec.prompt))
    scorer = ClipScorer(clip_model, device)
    text = scorer.embed_texts(candidates)
    rows, hits = [], {"rgb": [], "textureless": []}
    for rec in records:
        row = {"prompt": rec.prompt, "status": rec.status, "seconds": rec.seconds, "workspace": str(rec.workspace),
               "message": rec.message}
        if rec.status != "failed":
            views = render_views(rec.workspace, n_views=n_views, resolution=resolution, device=device)
            truth = torch.full((n_views,), candidates.index(normalise_caption(rec.prompt)))
            for mode, key in (("rgb", "colour"), ("textureless", "geometry")):
                correct = r_precision(scorer.embed_images(views[mode]), text, truth)
                hits[mode].extend(correct.tolist())
                row[f"r_precision_{key}"] = float(correct.mean())
        rows.append(row)
        if workspaces and progress is not None:  # given workspaces: the scoring is what takes time
            progress(rec.prompt)
    summary = {
        "assets": len(rows), "candidates": len(candidates), "views_per_asset": n_views, "clip": str(clip_model),
        "r_precision_colour": _fraction(hits["rgb"]), "r_precision_geometry": _fraction(hits["textureless"]),
        "failed": sum(r["status"] == "failed" for r in rows), "median_seconds": _median([r["seconds"] for r in rows]),
    }
    return rows, summary


__all__ = ["toy_prompts", "toy_suite", "toy_matrix", "stage_table", "clip_suite"]
