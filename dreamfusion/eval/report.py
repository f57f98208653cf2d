"""Writing an evaluation: a Markdown table, the same rows as JSON, and a PNG plot for the README."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..utils.atomic import atomic_write


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """rows → a Markdown table with `columns` as (key, header) pairs."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, stem: str, title: str, summary: dict, rows: Sequence[dict],
                 columns: Sequence[tuple[str, str]], summary_lines: Sequence[str], overview: str = "") -> tuple[Path, Path]:
    """<stem>.md (summary lines, an optional overview table, then the per-asset table) and <stem>.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = f"# {title}\n\n" + "".join(f"- {line}\n" for line in summary_lines) + "\n"
    md += (overview + "\n" if overview else "") + markdown_table(rows, columns)
    data = json.dumps({"summary": summary, "rows": list(rows)}, indent=1, default=str)
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    atomic_write(md_path, lambda tmp: Path(tmp).write_text(md, encoding="utf-8"))
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(data, encoding="utf-8"))
    return md_path, json_path


# The columns of each suite's per-asset table (Markdown report and gallery page), as (key, header).
TOY_COLUMNS = [("prompt", "prompt"), ("seed", "seed"), ("shape", "shape"), ("colour", "colour"), ("shape_ok", "shape ok"),
               ("colour_ok", "colour ok"), ("delta_e", "ΔE"), ("delta_lightness", "ΔL*"), ("delta_chroma", "ΔC*"),
               ("coarse_delta_e", "coarse ΔE"), ("marked_faces", "marked faces"), ("mark_views", "mark seen from"),
               ("genus", "genus"), ("significant_components", "components"), ("surface_distance", "distance"),
               ("normal_angle", "normal°"), ("coarse_genus", "coarse genus"), ("coarse_surface_distance", "coarse distance"),
               ("coarse_normal_angle", "coarse normal°"), ("seconds", "seconds"), ("status", "run")]
CLIP_COLUMNS = [("prompt", "prompt"), ("r_precision_colour", "R@1 colour"), ("r_precision_geometry", "R@1 geometry"),
                ("seconds", "seconds"), ("status", "run")]
SUITE_COLUMNS = {"toy_results": TOY_COLUMNS, "clip_results": CLIP_COLUMNS}

EVALUATION_FILE = "evaluation.json"  # each asset's row of figures, in its workspace (the gallery shows it)


def write_asset_evaluations(rows: Sequence[dict]) -> None:
    """Each asset's row into its own workspace (WORKSPACE/evaluation.json), for its gallery page."""
    for row in rows:
        folder = Path(str(row.get("workspace") or ""))
        if row.get("workspace") and folder.is_dir():
            text = json.dumps({k: v for k, v in row.items() if k != "workspace"}, indent=1, default=str)
            atomic_write(folder / EVALUATION_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def plot_accuracy_and_time(path: str | Path, title: str, accuracy: dict[str, float], seconds: Sequence[float],
                           accuracy_label: str = "fraction correct") -> Path:
    """Two panels: accuracy bars (one per named figure) and a histogram of wall time per asset."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    names = list(accuracy)
    bars = left.bar(range(len(names)), [accuracy[n] for n in names], color="#4a7fb5")
    left.bar_label(bars, labels=[f"{accuracy[n]:.0%}" for n in names], fontsize=8)
    left.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    left.set_ylim(0, 1.1)
    left.set_ylabel(accuracy_label)
    left.set_title(title, fontsize=10)
    times = [s / 60 for s in seconds if s is not None]
    if times:
        right.hist(times, bins=min(10, max(1, len(times))), color="#b5834a")
        right.axvline(sorted(times)[len(times) // 2], color="k", lw=1, ls="--", label="median")
        right.legend(fontsize=8)
    right.set_xlabel("minutes per asset")
    right.set_ylabel("assets")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path
