"""scripts/dream.py end to end with a tiny camera-conditioned prior and small sizes."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from dreamfusion.cli.errors import run_cli
from dreamfusion.guidance.tiny import save_tiny_pixel_model
from small_runs import NERF_CONFIG, small_run

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("dream_script", REPO / "scripts" / "dream.py")
dream = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dream)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return save_tiny_pixel_model(tmp_path_factory.mktemp("prior"), sample_size=16, camera=True)


small = small_run  # the default recipe (3D Gaussians, then the DMTet) at test sizes


def run(argv):
    return run_cli(dream.main, argv, prog="dream")


def test_short_run_writes_every_artifact(tiny_prior, tmp_path):
    ws = tmp_path / "ws"
    assert run(["--prompt", "a red cube", "--workspace", str(ws), "--quiet", "--seed", "1", *small(tiny_prior, 8)]) == 0
    assert (ws / "config.yaml").is_file() and (ws / "checkpoints" / "last.pt").is_file()
    assert (ws / "checkpoints" / "step_000004.pt").is_file()
    assert sorted(p.name for p in (ws / "validation").iterdir()) == ["step_000004.png", "step_000008.png"]
    lines = [json.loads(l) for l in (ws / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 9))
    assert {"loss", "sds", "t", "lr_albedo", "lr_position", "gaussians", "seconds"} <= set(lines[0])  # the Gaussians' own figures
    assert (ws / "video").is_dir() and any((ws / "video").glob("*.mp4"))
    assert (ws / "mesh" / "model.obj").is_file()  # exit 0 promises an asset (a run without a mesh exits 1)
    # both stages: the fine stage's own folder, the coarse mesh kept beside the result, the summary and the page
    assert (ws / "fine" / "checkpoints" / "last.pt").is_file() and (ws / "fine" / "metrics.jsonl").is_file()
    assert (ws / "coarse" / "mesh" / "model.obj").is_file()
    summary = json.loads((ws / "run.json").read_text())
    assert summary["stages"] == ["coarse", "fine"] and summary["result"] == "fine" and summary["finished"] and summary["exported"]
    assert summary["prompt"] == "a red cube" and summary["export_skipped"] == []
    page = (ws / "index.html").read_text()
    assert "a red cube" in page and "<model-viewer" in page


def test_resume_matches_an_uninterrupted_run(tiny_prior, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--prompt", "a blue cone", "--quiet", "--no-export", "--seed", "3"]
    assert run([*common, "--workspace", str(a), *small(tiny_prior, 8)]) == 0
    assert run([*common, "--workspace", str(b), *small(tiny_prior, 4)]) == 0
    assert run([*common, "--workspace", str(b), "--resume", *small(tiny_prior, 8)]) == 0
    ma = (a / "metrics.jsonl").read_text().splitlines()
    mb = (b / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in lines]  # noqa: E731
    assert strip(ma) == strip(mb)
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)["scene"]
    sb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["scene"]
    assert sa.keys() == sb.keys() and "means" in sa
    assert all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k] for k in sa)


@pytest.mark.parametrize(
    "extra,message",
    [(["train.stepz=5"], "did you mean 'steps'"), (["train.resolution=0"], "train.resolution"),
     (["guidance.t_range=[0.9,0.1]"], "t_range"), (["--device", "tpu"], "device")],
)
def test_bad_config_stops_before_any_work(tiny_prior, tmp_path, capsys, extra, message):
    ws = tmp_path / "ws"
    code = run(["--prompt", "a red cube", "--workspace", str(ws), *small(tiny_prior, 4), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not ws.exists()


def test_existing_run_is_not_overwritten(tiny_prior, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert run(["--prompt", "a red cube", "--workspace", str(ws), "--quiet", "--no-export", *small(tiny_prior, 4)]) == 0
    before = (ws / "checkpoints" / "last.pt").read_bytes()
    assert run(["--prompt", "a green torus", "--workspace", str(ws), *small(tiny_prior, 4)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (ws / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("overrides, source", [([], "mesh"), (["export.video_source=field"], "field"), (["export.mesh=false"], "field")])
def test_turntable_shows_the_exported_mesh_when_there_is_one(tmp_path, capsys, overrides, source):
    """The end-of-run video renders the written mesh by default; the field when asked, or when no mesh was written."""
    from dreamfusion.run_config import load_run_config
    from dreamfusion.scene import build_scene
    from dreamfusion.workspace import Workspace

    cfg = load_run_config(NERF_CONFIG, ["export.mesh_resolution=32", "export.texture_size=32", "export.video_frames=2",
                                 "export.video_resolution=32", *overrides])
    from dreamfusion.pipeline import export_results

    scene = build_scene(cfg)  # the initial density blob: a soft ball with a surface
    ws = Workspace(tmp_path)
    assert export_results(scene, cfg, ws, quiet=True) == []
    assert f"(from the {source})" in capsys.readouterr().out
    assert sorted(p.name for p in ws.video_dir.iterdir()) == ["turntable_normal.mp4", "turntable_rgb.mp4"]
    assert ws.mesh_dir.is_dir() == ("export.mesh=false" not in overrides)


def test_lr_scale_decays_every_rate_of_both_stages(tiny_prior, tmp_path):
    """train.lr_scale / fine.train.lr_scale multiply every group's rate by their schedule at the step."""
    ws = tmp_path / "ws"
    decay = ["train.lr_scale={start: 1.0, end: 0.1, begin: 2, finish: 6}", "fine.train.lr_scale={start: 0.5, end: 0.5}"]
    assert run(["--prompt", "a red cube", "--workspace", str(ws), "--quiet", "--no-export", *small(tiny_prior, 8, *decay)]) == 0
    coarse = [json.loads(l) for l in (ws / "metrics.jsonl").read_text().splitlines()]
    rates = [m["lr_albedo"] / 0.1 for m in coarse]  # the default recipe's representation.lr_albedo
    assert rates[:3] == pytest.approx([1.0, 1.0, 1.0]) and rates[4] == pytest.approx(0.55) and rates[6:] == pytest.approx([0.1, 0.1])
    fine = [json.loads(l) for l in (ws / "fine" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["lr_texture"] == pytest.approx(0.5e-3) and m["lr_sdf"] == pytest.approx(0.5e-3) for m in fine)
