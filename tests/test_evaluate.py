"""scripts/evaluate.py: R-precision math, the CLIP path with a tiny CLIP, and the toy suite end to end."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from dreamfusion.cli.errors import run_cli
from dreamfusion.eval.rprecision import load_prompts, normalise_caption, r_precision
from dreamfusion.eval.suites import toy_prompts
from dreamfusion.guidance.tiny import save_tiny_pixel_model, tiny_tokenizer
from dreamfusion.scene import SceneConfig, build_scene
from dreamfusion.workspace import save_scene_workspace
from small_runs import FINE_SMALL, GAUSSIANS_SMALL

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "scripts" / "evaluate.py")
evaluate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate)


def run(argv):
    return run_cli(evaluate.main, argv, prog="evaluate")


def test_r_precision_on_hand_made_embeddings():
    text = torch.eye(3)  # three captions along the axes
    images = torch.tensor([[2.0, 0.1, 0.0], [0.0, 1.0, 0.3], [0.9, 0.0, 0.2], [0.1, 0.0, 5.0]])
    truth = torch.tensor([0, 1, 2, 2])  # image 2 points at caption 0: a miss
    assert r_precision(images, text, truth).tolist() == [1.0, 1.0, 0.0, 1.0]
    # cosine, not dot product: scaling an embedding changes nothing
    assert r_precision(images * torch.tensor([[10.0], [0.1], [3.0], [1.0]]), text, truth).mean() == 0.75


def test_coco_prompts_and_their_normalisation():
    prompts = load_prompts(REPO / "data" / "coco-object-centric-153.txt")
    assert len(prompts) == 153
    normalised = [normalise_caption(p) for p in prompts]
    assert all(p == p.lower() and p.endswith(".") and not p.endswith("..") and p == p.strip() for p in normalised)
    assert normalise_caption("A Bowl of soup ,. ") == "a bowl of soup."


def test_toy_prompt_lists():
    assert len(toy_prompts("all")) == 42 and len(set(toy_prompts("all"))) == 42
    assert [p.split()[-1] for p in toy_prompts("shapes")] == ["sphere", "cube", "cylinder", "cone", "torus", "cube"]
    assert toy_prompts("a red cube, a blue cone") == ["a red cube", "a blue cone"]


def save_tiny_clip(folder: Path) -> Path:
    """A randomly initialised CLIP with the tiny character tokenizer, saved like a Hub folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_clip_suite_end_to_end_with_a_tiny_clip(tmp_path):
    clip = save_tiny_clip(tmp_path / "clip")
    a = save_scene_workspace(tmp_path / "a", build_scene(SceneConfig()), {"prompt": "a ball"}).root
    b = save_scene_workspace(tmp_path / "b", build_scene(SceneConfig(), seed=3), {"prompt": "a wooden chair"}).root
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A ball\nan apple on a table \n")
    out = tmp_path / "out"
    assert run(["--suite", "clip", "--prompts", str(prompts), "--clip", str(clip), "--workspaces", str(a), str(b),
                "--views", "2", "--resolution", "48", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "clip_results.json").read_text())
    s = data["summary"]
    assert s["assets"] == 2 and s["candidates"] == 3  # 'a wooden chair.' joined the two file prompts
    for key in ("r_precision_colour", "r_precision_geometry"):
        assert 0.0 <= s[key] <= 1.0 and s[key] * 4 == round(s[key] * 4)  # 2 assets x 2 views
    assert [r["prompt"] for r in data["rows"]] == ["a ball", "a wooden chair"]
    assert (out / "clip_results.md").read_text().count("\n| ") == 3  # header + 2 rows
    assert (out / "clip_results.png").stat().st_size > 1000


def test_clip_views_render_the_finished_mesh_not_the_coarse_field(tmp_path):
    """A two-stage run's result is the refined mesh in mesh/; CLIP must score that, not the NeRF."""
    import trimesh

    from dreamfusion.eval.views import render_views
    from dreamfusion.export import ExportError

    ws = save_scene_workspace(tmp_path / "a", build_scene(SceneConfig()), {"prompt": "a red box"})
    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    box.visual.vertex_colors = [230, 20, 20, 255]
    ws.mesh_dir.mkdir()
    box.export(ws.mesh_dir / "model.ply")
    views = render_views(ws.root, n_views=2, resolution=32)
    rgb = views["rgb"].astype(float) / 255  # (2, 32, 32, 3)
    centre, corner = rgb[:, 16, 16], rgb[:, 0, 0]
    assert (centre[:, 0] > 0.5).all() and (centre[:, 1] < 0.2).all()  # the red box, lit
    assert (corner > 0.99).all()  # white around it
    tex = views["textureless"].astype(float) / 255
    assert (tex[:, 16, 16].std(-1) < 0.02).all()  # the same box without its colour
    # a refined stage whose export is missing is an error, never a silent render of the coarse field
    (ws.mesh_dir / "model.ply").unlink()
    (ws.root / "fine" / "checkpoints").mkdir(parents=True)
    (ws.root / "fine" / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(ExportError, match="no exported mesh"):
        render_views(ws.root, n_views=2, resolution=32)


def test_clip_suite_refuses_a_missing_model(tmp_path, capsys):
    ws = save_scene_workspace(tmp_path / "a", build_scene(SceneConfig()), {"prompt": "a ball"}).root
    assert run(["--suite", "clip", "--clip", str(tmp_path / "nope"), "--workspaces", str(ws), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "CLIP" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,message", [
    (["--suite", "toy", "--prompts", "a red dragon"], "not a toy-world prompt"),
    (["--suite", "toy", "--seeds", "0"], "--seeds"),
    (["--suite", "clip"], "--clip"),
])
def test_bad_arguments_are_one_line(argv, message, tmp_path, capsys):
    assert run([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_toy_suite_runs_two_prompts_then_reuses_them(tmp_path):
    prior = save_tiny_pixel_model(tmp_path / "prior", sample_size=16, camera=True)
    small = [f"guidance.model={prior}", "guidance.embedding_cache=null", "train.steps=3", "train.batch_size=1",
             "train.resolution=16", "render.n_samples=16", "train.validation_every=3", "train.checkpoint_every=3",
             "train.ambient_only_steps=1", "export.mesh_resolution=32", "export.texture_size=32",
             "export.video_frames=2", "export.video_resolution=32", *GAUSSIANS_SMALL, *FINE_SMALL]
    out = tmp_path / "eval"
    argv = ["--suite", "toy", "--prompts", "a red cube,a blue marked cube", "--out", str(out), "--quiet", *small]
    assert run([*argv, "--jobs", "2"]) == 0  # two runs side by side
    data = json.loads((out / "toy_results.json").read_text())
    rows, s = data["rows"], data["summary"]
    assert [r["prompt"] for r in rows] == ["a red cube", "a blue marked cube"]
    assert all(r["status"] in ("ran", "no mesh") and r["seconds"] > 0 for r in rows), rows
    assert s["assets"] == 2 and s["marked_assets"] == 1 and 0.0 <= s["accuracy"] <= 1.0
    for r in rows:  # a mesh that was exported is judged; a 3-step field may legitimately have none
        assert (r["status"] == "no mesh") or (r["shape"] and r["colour"])
        if r["status"] != "no mesh":  # and its geometry measured against the prompted shape
            assert r["genus_ok"] == (r["genus"] == 0) and r["components"] >= r["significant_components"] >= 1
            assert r["surface_distance"] >= 0.0 and 0.0 <= r["normal_angle"] <= 180.0 and isinstance(r["watertight"], bool)
    meshed = [r for r in rows if r["status"] != "no mesh"]
    assert s["genus_ok"] == sum(r["genus_ok"] for r in meshed) / 2  # an asset without a mesh counts as not ok
    assert s["one_component"] == sum(r["significant_components"] == 1 for r in meshed) / 2
    assert s["watertight"] == sum(r["watertight"] for r in meshed) / 2
    assert (s["median_surface_distance"] is None) == (s["median_normal_angle"] is None) == (not meshed)
    md = (out / "toy_results.md").read_text()
    assert "| genus | components | distance | normal° |" in md and "geometry against the prompted shape: genus right in" in md
    refined = [r for r in rows if "coarse" in r]  # both stages ran: the coarse mesh is judged too, side by side
    assert refined and all(r["coarse_ok"] == r["coarse"]["ok"] for r in refined)
    assert "coarse" in s and s["coarse"]["assets"] == len(refined) and "| result (fine DMTet) |" in md
    assert (out / "runs" / "a-red-cube-s0" / "run.json").is_file()
    assert (out / "toy_results.png").stat().st_size > 1000
    page = (out / "index.html").read_text()  # the suite's gallery: a row per asset, linking to its page
    for r in rows:
        name = Path(r["workspace"]).name
        assert f'href="runs/{name}/index.html"' in page and (out / "runs" / name / "index.html").is_file()
        assert json.loads((out / "runs" / name / "evaluation.json").read_text())["prompt"] == r["prompt"]
    assert run(argv) == 0  # the second call reuses both finished workspaces
    again = json.loads((out / "toy_results.json").read_text())["rows"]
    assert [r["status"] for r in again] == [("reused" if r["status"] == "ran" else r["status"]) for r in rows]


def test_toy_matrix_marks_what_came_out():
    from dreamfusion.eval.suites import toy_matrix

    rows = [
        {"prompt": "a red cube", "ok": False, "status": "ran", "shape": "cylinder", "colour": "red", "shape_ok": False, "colour_ok": True},
        {"prompt": "a blue cube", "ok": True, "status": "reused", "shape": "cube", "colour": "blue", "shape_ok": True, "colour_ok": True},
        {"prompt": "a red cone", "ok": False, "status": "no mesh", "shape_ok": False, "colour_ok": False},
        {"prompt": "a blue marked cube", "ok": True, "status": "ran", "shape": "cube", "colour": "blue", "shape_ok": True,
         "colour_ok": True, "janus": True},
    ]
    lines = toy_matrix(rows).splitlines()
    assert lines[0] == "| | red | blue |"
    assert lines[2:] == ["| cube | cylinder | ✓ |", "| cone | empty | – |", "| marked cube | – | ✓ (Janus) |"]


def test_a_resumed_run_reports_what_the_asset_cost_not_the_retry():
    from dreamfusion.batch.task import asset_seconds
    from dreamfusion.layout import RunSummary

    assert asset_seconds(RunSummary("p", wall_seconds=70.0, train_seconds=60.0, export_seconds=3.0)) == 70.0
    # a run that only retried its export: 7 s of wall, but 63 s of training and export in all
    assert asset_seconds(RunSummary("p", wall_seconds=7.0, train_seconds=60.0, export_seconds=3.0)) == 63.0
    assert asset_seconds(RunSummary("p")) is None


def test_a_refined_run_from_another_workspace_is_judged_on_that_sources_coarse_mesh(tmp_path):
    from dreamfusion.eval.suites import coarse_mesh_dir

    own, src, coarse_only = tmp_path / "own", tmp_path / "src", tmp_path / "coarse-only"
    (own / "coarse" / "mesh").mkdir(parents=True)
    assert coarse_mesh_dir(own) == own / "coarse" / "mesh"  # the coarse mesh beside the result
    (src / "coarse" / "mesh").mkdir(parents=True)
    (coarse_only / "mesh").mkdir(parents=True)
    for name, source in (("from-refined", src), ("from-coarse", coarse_only)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"prompt": "a red cube", "source": str(source)}))
    assert coarse_mesh_dir(tmp_path / "from-refined") == src / "coarse" / "mesh"  # --from a two-stage run
    assert coarse_mesh_dir(tmp_path / "from-coarse") == coarse_only / "mesh"  # --from a coarse-only run
