"""The HTML gallery: what a run's page and a suite's page show, how they fail, and, in a real
headless Chromium, that the 3D viewer draws the mesh from file:// and turns when dragged."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from browser import console_errors, open_browser
from dreamfusion.cli.errors import run_cli
from dreamfusion.gallery import write_gallery
from dreamfusion.guidance.tiny import save_tiny_pixel_model
from small_runs import small_run

REPO = Path(__file__).resolve().parents[1]


def dream(argv: list[str]) -> int:
    from dreamfusion.cli.dream import main

    return run_cli(main, argv, prog="dream")


def gallery(argv: list[str]) -> int:
    from dreamfusion.cli.gallery import main

    return main(argv)


@pytest.fixture(scope="module")
def prior(tmp_path_factory) -> Path:
    return save_tiny_pixel_model(tmp_path_factory.mktemp("prior"), sample_size=16, camera=True)


@pytest.fixture(scope="module")
def run_ws(prior, tmp_path_factory) -> Path:
    """A finished two-stage run (8 coarse steps, 4 fine) whose mesh is guaranteed: the initial
    density blob has a surface, and 8 steps leave it."""
    ws = tmp_path_factory.mktemp("runs") / "a-red-cube"
    assert dream(["--prompt", "a red cube", "--workspace", str(ws), "--quiet", *small_run(prior, 8)]) == 0
    return ws


def test_a_run_writes_its_page_with_every_part(run_ws):
    page = run_ws / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "<title>a red cube</title>" in text
    # the viewer is inlined (no network, no module script from file://) with the mesh's bytes
    assert "customElements.define(\"model-viewer\"" in text or "model-viewer" in text
    assert re.search(r'<script type="application/octet-stream" id="glb-result">[A-Za-z0-9+/=]{1000,}</script>', text)
    assert "<script src=" not in text and "https://" not in text.split("<script>")[0]
    # videos and validation strips linked relatively, and the files are there
    links = re.findall(r'(?:src)="([^"]+\.(?:mp4|png))"', text)
    assert any(link.endswith(".mp4") for link in links) and any("validation/" in link for link in links)
    assert all((run_ws / link).is_file() for link in links), links
    assert "fine/validation/" in text  # both stages' strips
    # loss and t curves of both stages, the resolved config, the run summary
    assert text.count("<svg") >= 4 and "diffusion t (coarse)" in text and "SDS loss (fine)" in text
    assert "Resolved config" in text and "guidance:" in text and "train_seconds" in text


def test_a_run_without_a_mesh_says_so_on_its_page(prior, tmp_path):
    ws = tmp_path / "empty"
    emptied = ["representation.init_opacity=0.001", "--stage", "coarse"]  # Gaussians too faint to mesh
    assert dream(["--prompt", "a red cube", "--workspace", str(ws), "--quiet", *small_run(prior, 4), *emptied]) == 1
    summary = json.loads((ws / "run.json").read_text())
    assert summary["exported"] is False and summary["export_skipped"]
    text = (ws / "index.html").read_text()
    assert "No mesh: mesh export skipped:" in text and "<model-viewer" not in text
    assert f"scripts/export_mesh.py --workspace {ws}" in text
    assert "diffusion t (coarse)" in text  # the rest of the page is there


def test_what_a_page_says_of_a_missing_mesh_follows_run_json(tmp_path):
    """Read through the one layout module: unfinished, --no-export, and an export that found nothing."""
    from dreamfusion.gallery.collect import collect_asset
    from dreamfusion.layout import RunSummary, WorkspaceLayout

    ws = WorkspaceLayout(tmp_path / "ws")
    ws.write_config({"prompt": "a red cube", "seed": 0})
    assert collect_asset(ws.root).prompt == "a red cube"  # from config.yaml while there is no run.json
    assert "has not finished" in collect_asset(ws.root).notes[0]
    RunSummary(prompt="a blue cube", stages=["coarse"], exported=False, export_skipped=[]).write(ws.summary_path)
    asset = collect_asset(ws.root)
    assert asset.prompt == "a blue cube" and asset.summary == ws.read_summary()
    assert "not exported (--no-export)" in asset.notes[0]
    RunSummary(prompt="a blue cube", exported=False, export_skipped=["mesh export skipped: the field is empty"]).write(ws.summary_path)
    assert "No mesh: mesh export skipped: the field is empty" in collect_asset(ws.root).notes[0]
    ws.summary_path.write_text('{"prompt": "a blue cube", "a_key_of_a_later_version": 1, "wall_seconds": 3.5}')
    assert ws.read_summary() == RunSummary(prompt="a blue cube", wall_seconds=3.5)  # unknown keys dropped
    ws.summary_path.write_text("{not json")
    assert ws.read_summary() is None


def test_a_suite_page_links_every_asset_and_sorts(run_ws, tmp_path):
    out = tmp_path / "suite"
    out.mkdir()
    rows = [{"prompt": "a red cube", "seed": 0, "status": "ran", "workspace": str(run_ws), "shape": "cube", "colour": "red",
             "shape_ok": True, "colour_ok": True, "genus": 0, "normal_angle": 12.5, "seconds": 30.0},
            {"prompt": "a lost run", "seed": 0, "status": "failed", "workspace": str(tmp_path / "gone"), "shape_ok": False}]
    (out / "toy_results.json").write_text(json.dumps({"summary": {"assets": 2, "accuracy": 0.5}, "rows": rows}))
    (out / "toy_results.md").write_text("# Toy-world suite\n\n- 2 assets; 1 failed\n- shape and colour correct: **50%**\n\n| x |\n")
    page = write_gallery(out)
    text = page.read_text()
    assert page == out / "index.html" and 'class="sortable grid"' in text
    assert "2 assets; 1 failed" in text and "shape and colour correct: 50%" in text
    link = re.search(r'href="([^"]+/index.html)"', text).group(1)
    assert (out / link).resolve() == (run_ws / "index.html").resolve()
    assert "a lost run" in text and text.count("<tr>") == 3  # the failed run has its row, without a link
    assert re.search(r'<img src="[^"]+turntable_rgb.png"', text) and (run_ws / "video" / "turntable_rgb.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["/no/such/folder"], "is not a folder"),
    (["{tmp}"], "is neither a dream.py workspace"),
    (["{tmp}", "--bogus"], "unrecognized arguments"),
])
def test_bad_folders_are_one_sentence_and_exit_2(argv, message, tmp_path, capsys):
    assert gallery([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_script_writes_the_page(run_ws, tmp_path, capsys):
    assert gallery([str(run_ws), "--out", str(tmp_path / "page.html")]) == 0
    assert "wrote" in capsys.readouterr().out
    text = (tmp_path / "page.html").read_text()
    links = re.findall(r'src="([^"]+\.mp4)"', text)
    assert links and all((tmp_path / link).is_file() for link in links)  # relative to where the page is


def _screenshot(driver) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(np.int16)


@pytest.mark.browser
def test_the_viewer_draws_the_mesh_and_turns_in_a_real_browser(run_ws):
    driver = open_browser()
    try:
        from selenium.webdriver.common.action_chains import ActionChains

        driver.get((run_ws / "index.html").resolve().as_uri())
        viewer = driver.find_element("css selector", "model-viewer")
        deadline = time.time() + 60
        while viewer.get_attribute("data-loaded") != "yes" and time.time() < deadline:
            time.sleep(0.25)
        assert viewer.get_attribute("data-loaded") == "yes", console_errors(driver)
        time.sleep(1.0)  # the first frames after load
        box = viewer.rect
        cx, cy = int(box["x"] + box["width"] / 2), int(box["y"] + box["height"] / 2)
        before = _screenshot(driver)
        background = before[int(box["y"]) + 5, int(box["x"]) + 5]
        centre = before[cy - 20: cy + 20, cx - 20: cx + 20]
        assert np.abs(centre - background).sum(-1).mean() > 30, "the viewer's centre looks like its background"
        ActionChains(driver).move_to_element(viewer).click_and_hold().move_by_offset(150, 40).release().perform()
        time.sleep(1.5)
        after = _screenshot(driver)
        region = (slice(int(box["y"]), int(box["y"] + box["height"])), slice(int(box["x"]), int(box["x"] + box["width"])))
        changed = (np.abs(after[region] - before[region]).sum(-1) > 30).mean()
        assert changed > 0.01, f"a drag changed only {changed:.2%} of the viewer"
        assert console_errors(driver) == []
    finally:
        driver.quit()


@pytest.mark.browser
def test_the_suite_page_sorts_in_a_real_browser(run_ws, tmp_path):
    out = tmp_path / "suite"
    out.mkdir()
    rows = [{"prompt": p, "workspace": str(run_ws), "normal_angle": a} for p, a in (("b", 30.0), ("a", 5.0), ("c", 12.0))]
    (out / "clip_results.json").write_text(json.dumps({"summary": {}, "rows": rows}))
    from dreamfusion.gallery import write_suite_page

    write_suite_page(out)
    driver = open_browser()
    try:
        driver.get((out / "index.html").resolve().as_uri())
        prompt_header = [th for th in driver.find_elements("css selector", "th") if th.text == "prompt"][0]
        prompt_header.click()
        cells = [tr.find_elements("css selector", "td")[1].text for tr in driver.find_elements("css selector", "tbody tr")]
        assert cells == ["a", "b", "c"]
        prompt_header.click()
        cells = [tr.find_elements("css selector", "td")[1].text for tr in driver.find_elements("css selector", "tbody tr")]
        assert cells == ["c", "b", "a"]
        assert console_errors(driver) == []
    finally:
        driver.quit()
