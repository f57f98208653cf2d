"""The real GPU flows at small sizes (marked `cuda`: skipped without a CUDA device).

benchmarks/gpu_check.sh runs this file on a GPU machine. Each test is what a GPU user does on the
first day: a short toy run with nerfacc and with the dense sampler, with tinycudann when it imports,
Ctrl-C then --resume, the GPU run's workspace exported and rendered on the CPU, render_demo, one
SDS step with the Stable Diffusion 2.1-base and DeepFloyd IF stage I architectures (random weights,
fp16), the field in bf16 and fp16, and a short run on the latent path.
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dreamfusion.checkpoint import load_checkpoint
from dreamfusion.cli.errors import run_cli
from dreamfusion.guidance.tiny import save_tiny_pixel_model
from small_runs import FINE_SMALL

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[1]
# imageio-ffmpeg's wheel (68 MB) does not travel to the GPU machine: without it the runs skip the mp4
# (the video is CPU code, tested everywhere else).
HAVE_FFMPEG = str(importlib.util.find_spec("imageio_ffmpeg") is not None).lower()


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"cuda_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    return save_tiny_pixel_model(tmp_path_factory.mktemp("prior"), sample_size=32, camera=True)


def small(prior: Path, steps: int, *extra: str) -> list[str]:  # a short two-stage run
    return [f"guidance.model={prior}", "guidance.embedding_cache=null", f"train.steps={steps}", "train.resolution=32",
            "train.checkpoint_every=10", "train.validation_every=10", "export.mesh_resolution=64",
            "export.texture_size=64", f"export.video={HAVE_FFMPEG}", "export.video_frames=4", "export.video_resolution=64", *FINE_SMALL, *extra]


def dream(argv: list[str]) -> int:
    return run_cli(load_script("dream").main, argv, prog="dream")


def checkpoint_field(ws: Path) -> dict:
    return load_checkpoint(ws / "checkpoints" / "last.pt")["scene"]


@pytest.mark.parametrize("backend", ["nerfacc", "dense"])
def test_toy_run_on_the_gpu(prior, tmp_path, backend):
    ws = tmp_path / backend
    code = dream(["--prompt", "a red cube", "--workspace", str(ws), "--device", "cuda", "--quiet",
                  *small(prior, 30, f"render.backend={backend}")])
    assert code == 0
    metrics = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 30 and all(m["loss"] is not None for m in metrics)
    assert (ws / "video").is_dir() == (HAVE_FFMPEG == "true") and json.loads((ws / "run.json").read_text())["finished"]
    state = checkpoint_field(ws)
    assert "table" in "".join(state["field"]) and set(state["renderer"]) == {"density", "occupied", "updates"}


def test_toy_run_with_tinycudann(prior, tmp_path):
    pytest.importorskip("tinycudann")
    from dreamfusion.utils.capabilities import tinycudann_available

    assert tinycudann_available(), "tinycudann imports but fails its probe on this GPU"
    ws = tmp_path / "tcnn"
    assert dream(["--prompt", "a red cube", "--workspace", str(ws), "--device", "cuda", "--quiet", "--no-export",
                  *small(prior, 30, "field.encoding_backend=tcnn")]) == 0
    assert "encoding.table" in checkpoint_field(ws)["field"]  # the canonical layout, loadable on the CPU
    scene, _ = __import__("dreamfusion.workspace", fromlist=["Workspace"]).Workspace(ws).load_scene("cpu")
    assert scene.field.encoding.table.device.type == "cpu"


def test_ctrl_c_then_resume_on_the_gpu(prior, tmp_path):
    ws = tmp_path / "ws"
    argv = ["--prompt", "a red cube", "--workspace", str(ws), "--device", "cuda", "--quiet", "--no-export", *small(prior, 60)]
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "dream.py"), *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = ws / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    saved = load_checkpoint(last)["step"]
    assert 10 <= saved < 60 and "cuda_rng" in load_checkpoint(last)
    command = shlex.split(err.split("Resume with: ")[1].strip())
    assert dream(command[2:]) == 0  # the printed command finishes the run on the GPU
    assert load_checkpoint(last)["step"] == 60
    steps = [json.loads(line)["step"] for line in (ws / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))


def test_gpu_workspace_exports_and_renders_on_the_cpu(prior, tmp_path):
    ws = tmp_path / "ws"
    assert dream(["--prompt", "a red cube", "--workspace", str(ws), "--device", "cuda", "--quiet", "--no-export",
                  *small(prior, 30)]) == 0
    export = load_script("export_mesh")
    video = load_script("render_video")
    code = export.main(["--workspace", str(ws), "--device", "cpu", "--resolution", "64", "--texture-size", "64",
                        "--threshold", "0.5", "--quiet"])
    assert code == 0  # the blob the field starts from is a surface at 30 steps (the same run on the CPU: 0)
    assert (ws / "mesh" / "model.obj").is_file()
    if HAVE_FFMPEG == "true":
        assert video.main(["--workspace", str(ws), "--device", "cpu", "--frames", "2", "--resolution", "32",
                           "--modes", "rgb", "--quiet"]) == 0


def test_render_demo_on_the_gpu(tmp_path):
    demo = load_script("render_demo")
    assert run_cli(demo.main, ["--out", str(tmp_path), "--device", "cuda", "--resolution", "32"], prog="render_demo") == 0
    assert len(list(tmp_path.glob("*.png"))) == 16


@pytest.mark.parametrize("make", ["sd21_base_random", "if_stage1_random"])
def test_sds_step_with_a_real_architecture_in_fp16(make):
    from dreamfusion.cameras import make_cameras
    from dreamfusion.guidance import tiny

    guidance = getattr(tiny, make)("cuda")
    assert guidance.dtype == torch.float16
    one = lambda v: torch.tensor([v], device="cuda")  # noqa: E731
    rgb = torch.rand(1, 64, 64, 3, device="cuda", requires_grad=True)
    out = guidance(rgb, make_cameras(one(15.0), one(30.0), one(2.0), one(50.0)), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_fine_rasterizer_backends_agree_on_the_gpu():
    """nvdiffrast (when it passes its probe) and the PyTorch rasterizer see the same mesh the same
    way: coverage, depth and interpolated normals, and both give silhouette gradients."""
    pytest.importorskip("nvdiffrast")
    import trimesh

    from dreamfusion.cameras import make_cameras
    from dreamfusion.render import nvdiffrast_raster, rasterizer
    from dreamfusion.utils.capabilities import nvdiffrast_available

    assert nvdiffrast_available(), "nvdiffrast imports but fails its probe on this GPU"
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    v = torch.tensor(sphere.vertices, dtype=torch.float32, device="cuda", requires_grad=True)
    f = torch.tensor(sphere.faces, dtype=torch.long, device="cuda")
    cams = make_cameras(torch.tensor([20.0, 60.0]), torch.tensor([0.0, 135.0]), torch.tensor([2.0, 2.0]), torch.tensor([50.0, 50.0])).to("cuda")
    out = {}
    for name, raster in (("torch", rasterizer), ("nvdiffrast", nvdiffrast_raster)):
        frags = raster.rasterize(v, f, cams, 96, 96)
        mask = raster.antialias((frags.face >= 0).float()[..., None], frags, v, f, cams, raster.topology(f))
        grad = torch.autograd.grad(mask.sum(), v)[0]
        out[name] = ((frags.face >= 0), frags.depth.detach(), grad)
    (ma, da, ga), (mb, db, gb) = out["torch"], out["nvdiffrast"]
    assert (ma != mb).float().mean() < 0.01  # pixel centres on an edge may fall either way
    both = ma & mb
    assert (da[both] - db[both]).abs().max() < 1e-3
    assert ga.abs().sum() > 0 and gb.abs().sum() > 0
    assert torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0) > 0.8


def test_two_stage_toy_run_on_the_gpu(prior, tmp_path):
    """The default two-stage recipe on CUDA: the fine stage's DMTet, rasterizer and export."""
    ws = tmp_path / "two"
    assert dream(["--prompt", "a red cube", "--workspace", str(ws), "--device", "cuda", "--quiet",
                  *small(prior, 30, "fine.train.steps=20")]) == 0
    summary = json.loads((ws / "run.json").read_text())
    assert summary["stages"] == ["coarse", "fine"] and (ws / "fine" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_field_precision_on_the_gpu(prior, tmp_path, precision):
    """train.field_precision autocasts the field (fp16 with the gradient scaler); the losses stay finite
    and the checkpoint resumes."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    ws = tmp_path / precision
    common = ["--prompt", "a red cube", "--workspace", str(ws), "--device", "cuda", "--quiet", "--no-export", "--stage", "coarse"]
    assert dream([*common, *small(prior, 10, f"train.field_precision={precision}")]) == 0
    assert dream([*common, "--resume", *small(prior, 20, f"train.field_precision={precision}")]) == 0
    metrics = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 21))
    assert all(m["loss"] is not None and m["loss"] == m["loss"] for m in metrics)  # finite, not NaN
    assert load_checkpoint(ws / "checkpoints" / "last.pt")["step"] == 20


def test_latent_path_on_the_gpu(tmp_path):
    """configs/toy-latent.yaml's code path (VAE-encoded renders, latent SDS, the gradient through the
    encoder) on CUDA with a tiny Stable-Diffusion-shaped model, both stages."""
    from dreamfusion.guidance.tiny import save_tiny_latent_model

    model = save_tiny_latent_model(tmp_path / "sd", sample_size=8)
    ws = tmp_path / "latent"
    assert dream(["--prompt", "a red cube", "--workspace", str(ws), "--device", "cuda", "--quiet", "--no-export",
                  "--config", str(REPO / "configs" / "toy-latent.yaml"), *small(model, 10)]) == 0
    summary = json.loads((ws / "run.json").read_text())
    assert summary["stages"] == ["coarse", "fine"] and summary["finished"]
    metrics = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 10 and all(m["loss"] == m["loss"] for m in metrics)


def _gaussian_scene(n: int = 200):
    from dreamfusion.cameras import make_cameras
    from dreamfusion.gaussians.model import covariances, random_ball

    g = random_ball(n, 0.5, 0.05, 0.6, 0.5, torch.Generator().manual_seed(0))
    g.quats = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    g.log_scales = g.log_scales + 0.5 * torch.rand(n, 3, generator=torch.Generator().manual_seed(2))
    cams = make_cameras(torch.tensor([20.0, 60.0]), torch.tensor([30.0, 200.0]), torch.tensor([1.8, 2.0]), torch.tensor([45.0, 50.0]))
    colours = torch.rand(2, n, 3, generator=torch.Generator().manual_seed(3))
    return g, covariances, cams, colours


def test_gaussian_torch_renderer_agrees_on_the_gpu_and_the_cpu():
    from dreamfusion.gaussians.splat import project, rasterize

    g, covariances, cams, colours = _gaussian_scene()
    images = []
    for device in ("cpu", "cuda"):
        proj = project(g.means.to(device), covariances(g.log_scales, g.quats).to(device), cams.to(device), 48, 48,
                       opacities=torch.sigmoid(g.opacity_logits).to(device))
        rgb, alpha = rasterize(proj, torch.sigmoid(g.opacity_logits).to(device), colours.to(device), 48, 48)
        images.append(torch.cat([rgb, alpha], -1).cpu())
    assert (images[0] - images[1]).abs().max() < 1e-4


def test_gsplat_agrees_with_the_torch_renderer():
    pytest.importorskip("gsplat")
    from dreamfusion.gaussians.gsplat_backend import gsplat_available, render_gsplat
    from dreamfusion.gaussians.splat import project, rasterize

    assert gsplat_available()
    g, covariances, cams, colours = _gaussian_scene()
    opacity = torch.sigmoid(g.opacity_logits)
    proj = project(g.means, covariances(g.log_scales, g.quats), cams, 48, 48, opacities=opacity)
    rgb, alpha = rasterize(proj, opacity, colours, 48, 48)
    c = lambda t: t.cuda()  # noqa: E731
    rgb_g, alpha_g, _, _ = render_gsplat(c(g.means), c(g.quats), c(g.log_scales), c(opacity), c(colours), cams.to("cuda"), 48, 48)
    # gsplat's radius is 3 sigma and its tiles 16 px: the images differ only in the faintest fringes
    assert (rgb_g.cpu() - rgb).abs().mean() < 2e-3 and (alpha_g.cpu() - alpha).abs().max() < 2e-2


def test_gaussian_toy_run_on_the_gpu(prior, tmp_path):
    ws = tmp_path / "ws"
    argv = ["--config", str(REPO / "configs" / "toy-gaussians.yaml"), "--prompt", "a red cube", "--workspace", str(ws),
            "--device", "cuda", "--quiet", *small(prior, 20, "representation.densify_from=5", "representation.densify_every=5")]
    assert dream(argv) == 0
    assert (ws / "mesh" / "model.glb").is_file() and (ws / "coarse" / "mesh" / "model.obj").is_file()
