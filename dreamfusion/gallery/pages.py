"""The HTML of the gallery: one page per asset (viewer, videos, strips, curves, config, figures) and
one page per suite (a sortable grid of every asset). Pages link files by paths relative to
themselves, so a folder can be moved or zipped whole and opened from file://."""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Sequence

from .charts import line_chart
from .collect import AssetRecord
from .viewer import VIEWER_BOOT, glb_payload, viewer_script

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:14px 22px;background:#fff;border-bottom:1px solid #ddd}
h1{font-size:20px;margin:0}h2{font-size:16px;margin:22px 0 8px}
main{padding:0 22px 30px}.sub{color:#666}.note{background:#fff4e0;border:1px solid #e8c48a;padding:10px 14px;margin:14px 0}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
model-viewer{width:480px;height:480px;background:#eef0f3;border:1px solid #ccc}
model-viewer::part(default-progress-bar){display:none}
video{width:320px;height:320px;background:#000}
figure{margin:0}figcaption{color:#666;font-size:12px}
.strips{display:flex;flex-wrap:wrap;gap:10px}.strips img{height:200px;display:block;image-rendering:pixelated}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none}th.sorted-up::after{content:" ▲"}th.sorted-down::after{content:" ▼"}
pre{background:#fff;border:1px solid #ddd;padding:10px;max-height:420px;overflow:auto;font-size:12px}
button{margin:6px 6px 0 0;padding:4px 10px;border:1px solid #999;background:#fff;cursor:pointer}button.on{background:#4a7fb5;color:#fff}
.chart .title{font-size:12px;font-weight:600}.chart .tick,.chart .legend{font-size:10px}.chart .frame{fill:#fff;stroke:#ccc}
.grid td img{width:96px;height:96px;object-fit:cover;display:block}.ok{color:#2a7a2a}.bad{color:#b03030;font-weight:600}
"""

SORT_SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  const heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, col) => th.addEventListener("click", () => {
    const up = !th.classList.contains("sorted-up");
    heads.forEach((h) => h.classList.remove("sorted-up", "sorted-down"));
    th.classList.add(up ? "sorted-up" : "sorted-down");
    const key = (row) => { const c = row.cells[col]; const v = c.dataset.value ?? c.textContent;
                           const n = parseFloat(v); return isNaN(n) ? v.toLowerCase() : n; };
    const rows = [...table.tBodies[0].rows].sort((a, b) => { const x = key(a), y = key(b);
      const c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1); return up ? c : -c; });
    for (const r of rows) table.tBodies[0].appendChild(r);
  }));
}
"""

CURVES = (("loss", "loss", True), ("sds", "SDS loss", True), ("t", "diffusion t", False), ("opacity_mean", "mean opacity", False))


def _rel(path: Path, page: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(page).resolve().parent)).as_posix()


def _page(title: str, body: str, scripts: Sequence[str] = ()) -> str:
    tags = "".join(f"<script>{s}</script>" for s in scripts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}{tags}</body></html>\n")


def format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def figures_table(figures: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(format_value(v))}</td></tr>"
                   for k, v in figures.items() if not isinstance(v, (dict, list)))
    return f"<table>{rows}</table>"


def _viewer(asset: AssetRecord) -> tuple[str, str]:
    """(the viewer's HTML with the embedded meshes, the script that boots it); empty without a mesh."""
    if not asset.meshes:
        return "", ""
    first = next(iter(asset.meshes))
    blocks = "".join(f'<script type="application/octet-stream" id="glb-{name}">{glb_payload(path)}</script>'
                     for name, path in asset.meshes.items())
    labels = {"result": "final mesh" if "coarse" not in asset.meshes else "fine mesh (result)", "coarse": "coarse mesh"}
    buttons = "".join(f'<button data-glb="glb-{name}">{labels[name]}</button>' for name in asset.meshes) if len(asset.meshes) > 1 else ""
    viewer = (f'<div><model-viewer data-glb="glb-{first}" camera-controls interaction-prompt="none" shadow-intensity="0.6" '
              f'exposure="1.0" camera-orbit="30deg 75deg auto" alt="{html.escape(asset.title)}"></model-viewer>'
              f'<div>{buttons}</div><div class="sub">drag to orbit, scroll to zoom (the GLB: +y up, front toward +z)</div></div>{blocks}')
    return viewer, VIEWER_BOOT


def asset_page(asset: AssetRecord, page: Path) -> str:
    """The page of one run, to be written at `page` (links are relative to it)."""
    s = asset.summary.to_dict() if asset.summary is not None else {}
    sub = f"seed {s.get('seed', '?')} · stages {', '.join(s.get('stages', [])) or '–'}"
    if s.get("wall_seconds") is not None:
        sub += f" · {s.get('train_seconds', 0):.0f} s training, {s.get('export_seconds', 0):.0f} s export"
    body = [f"<header><h1>{html.escape(asset.title)}</h1><div class='sub'>{html.escape(sub)} · {html.escape(str(asset.root))}</div></header><main>"]
    body += [f'<div class="note">{html.escape(n)}</div>' for n in asset.notes]
    viewer, boot = _viewer(asset)
    videos = "".join(f'<figure><video src="{html.escape(_rel(v, page))}" controls loop muted autoplay playsinline></video>'
                     f"<figcaption>{html.escape(v.stem.replace('_', ' '))}</figcaption></figure>" for v in asset.videos)
    if viewer or videos:
        body.append(f'<div class="row">{viewer}{videos}</div>')
    if asset.evaluation:
        body.append("<h2>Evaluation</h2>" + figures_table(asset.evaluation))
    for stage in asset.stages:
        steps = [float(r["step"]) for r in stage.metrics]
        charts = []
        for key, title, log_y in CURVES:
            values = [float(r[key]) if isinstance(r.get(key), (int, float)) else float("nan") for r in stage.metrics]
            if any(v == v for v in values):
                charts.append(line_chart(f"{title} ({stage.name})", {key: (steps, values)},
                                         smooth_window=25 if key != "t" else 1, log_y=log_y))
        strips = "".join(f'<figure><img src="{html.escape(_rel(p, page))}" alt="validation {p.stem}" loading="lazy">'
                         f"<figcaption>{html.escape(stage.name)} {html.escape(p.stem.replace('_', ' '))}</figcaption></figure>"
                         for p in stage.validation)
        body.append(f"<h2>{stage.name.capitalize()} stage: {len(stage.metrics)} steps</h2>"
                    f'<div class="row">{"".join(charts)}</div>'
                    + (f'<div class="strips">{strips}</div>' if strips else ""))
    if s:
        body.append("<h2>Run</h2>" + figures_table(s))
    if asset.config_text:
        body.append(f"<h2>Resolved config</h2><pre>{html.escape(asset.config_text)}</pre>")
    body.append("</main>")
    scripts = [viewer_script(), boot] if viewer else []
    return _page(asset.title, "".join(body), scripts)


def _cell(key: str, value: Any) -> str:
    sort = "" if value is None else f' data-value="{html.escape(str(float(value)) if isinstance(value, (int, float)) else str(value))}"'
    cls = ""
    if isinstance(value, bool):
        cls = ' class="ok"' if value else ' class="bad"'
    return f"<td{sort}{cls}>{html.escape(format_value(value))}</td>"


def suite_page(title: str, summary_lines: Sequence[str], rows: Sequence[dict], columns: Sequence[tuple[str, str]],
               links: dict[str, str], thumbs: dict[str, str]) -> str:
    """The grid of a suite: one row per asset (thumbnail, prompt linking to its page, figures)."""
    head = "<tr><th>asset</th>" + "".join(f"<th>{html.escape(h)}</th>" for k, h in columns) + "</tr>"
    body_rows = []
    for row in rows:
        ws = str(row.get("workspace", ""))
        thumb = f'<img src="{html.escape(thumbs[ws])}" alt="">' if ws in thumbs else ""
        first = f'<a href="{html.escape(links[ws])}">{thumb or "open"}</a>' if ws in links else thumb
        cells = "".join(_cell(k, row.get(k)) for k, _ in columns)
        body_rows.append(f"<tr><td>{first}</td>{cells}</tr>")
    lines = "".join(f"<li>{html.escape(line).replace('**', '')}</li>" for line in summary_lines)
    body = (f"<header><h1>{html.escape(title)}</h1></header><main><ul>{lines}</ul>"
            f'<p class="sub">Click a column to sort; click an asset to open its page.</p>'
            f'<table class="sortable grid"><thead>{head}</thead><tbody>{"".join(body_rows)}</tbody></table></main>')
    return _page(title, body, [SORT_SCRIPT])


def summary_lines(summary: dict, report: Path | None = None) -> list[str]:
    """The summary of a suite: the bullet lines of its Markdown report (evaluate.py's own wording),
    else the summary's scalar figures, one a line."""
    if report is not None and report.is_file():
        lines = []
        for line in report.read_text(encoding="utf-8").splitlines():
            if line.startswith("|"):
                break
            if line.startswith("- "):
                lines.append(line[2:])
        if lines:
            return lines
    return [f"{k.replace('_', ' ')}: {format_value(v)}" for k, v in summary.items() if not isinstance(v, (dict, list))]
