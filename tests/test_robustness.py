"""Issue 8: bad input, interruption, non-finite values and empty scenes give one clear line and lose nothing.

Each bad input goes through a script's command line (in process, through run_cli, like a user's shell
would see it) against a finished run's workspace where that makes sense, and checks the exit code
(2: usage, 1: runtime), a single error line on stderr without a traceback, and that every file of the
workspace is byte-identical afterwards. Signals and SIGKILL need real processes: those tests start
scripts/dream.py as a subprocess (dreamfusion/utils/faults.py picks where SIGKILL lands).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest
import torch

from dreamfusion.checkpoint import CheckpointError, load_checkpoint
from dreamfusion.cli.errors import run_cli
from dreamfusion.export import load_exported_mesh
from dreamfusion.guidance.tiny import save_tiny_pixel_model
from dreamfusion.workspace import Workspace
from small_runs import NERF_RECIPE, nerf_small_run, small_run

REPO = Path(__file__).resolve().parents[1]
BUNDLED_PRIOR = REPO / "assets" / "toy_prior"
PROMPT = "a red cube"
# Tiny tensors on a busy 2-core machine: extra BLAS threads spin against each other and make a 0.05 s
# step take seconds. One thread everywhere (also in subprocesses) keeps this file fast and deterministic.
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ONE_THREAD_ENV.pop("DREAMFUSION_FAULT", None)


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"robustness_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dream, export_mesh, render_video = (load_script(n) for n in ("dream", "export_mesh", "render_video"))


def small(prior: Path, steps: int, *extra: str) -> list[str]:
    """The NeRF recipe, small: most damage here is done to a NeRF's field (its checkpoint's
    `field`, its density); the default recipe (3D Gaussians) is run where marked `recipe`."""
    return [*NERF_RECIPE, *nerf_small_run(prior, steps, *extra)]


RECIPES = {"nerf": small, "gaussians": small_run}  # the default recipe is the Gaussian one


def dream_cli(argv: list[str]) -> int:
    return run_cli(dream.main, argv, prog="dream")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path: 'nothing overwritten or deleted' means this is unchanged."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(err: str, *phrases: str) -> str:
    """stderr holds exactly one line, an error naming the problem, and no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert ": error: " in lines[0], lines[0]
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def assert_same_state(a: Any, b: Any, where: str = "") -> None:
    """Nested checkpoint data equal exactly (tensors bit for bit)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def metrics_without_time(ws: Path) -> list[dict]:
    lines = (ws / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    return save_tiny_pixel_model(tmp_path_factory.mktemp("prior"), sample_size=16, camera=True)


@pytest.fixture(scope="module")
def finished(tiny_prior, tmp_path_factory) -> Path:
    """A finished 4-step run with its mesh, video and run.json: what a bad command must not damage."""
    root = tmp_path_factory.mktemp("finished") / "ws"
    assert dream_cli(["--prompt", PROMPT, "--workspace", str(root), "--quiet", *small(tiny_prior, 4)]) == 0
    assert (root / "run.json").is_file() and (root / "video").is_dir()
    if not (root / "mesh" / "model.obj").is_file():  # 4 steps may leave the field too faint for auto
        assert export_mesh.main(["--workspace", str(root), "--resolution", "32", "--texture-size", "32", "--quiet"]) == 0
    return root


@pytest.fixture
def ws(finished, tmp_path) -> Path:
    """A private copy of the finished run, so one test's damage cannot leak into another."""
    return Path(shutil.copytree(finished, tmp_path / "ws"))


def resume_args(ws: Path, prior: Path, *extra: str) -> list[str]:
    """A --resume of the finished run: everything about it would be accepted but the one thing under test."""
    return ["--prompt", PROMPT, "--workspace", str(ws), "--resume", "--quiet", "--no-export", *small(prior, 6), *extra]


# ---- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["", "  \t "])
def test_empty_prompt_is_refused(ws, tiny_prior, capsys, prompt):
    before = snapshot(ws)
    code = dream_cli(["--prompt", prompt, "--workspace", str(ws), *small(tiny_prior, 4)])
    assert code == 2
    one_error_line(capsys.readouterr().err, "--prompt is empty", '--prompt "a red cube"')
    assert snapshot(ws) == before


@pytest.mark.parametrize("flag,key", [("--prompt", "prompt"), ("--negative", "negative prompt")])
def test_a_prompt_that_is_not_utf8_is_refused(ws, tiny_prior, capsys, flag, key):
    """Undecodable bytes on the command line reach Python as surrogates (os.fsdecode): b'\\xff' -> '\\udcff'."""
    before = snapshot(ws)
    args = resume_args(ws, tiny_prior)
    bad = f"a red {chr(0xDCFF)} cube"
    if flag == "--prompt":
        args[args.index("--prompt") + 1] = bad
    else:
        args += ["--negative", bad]
    assert dream_cli(args) == 2
    one_error_line(capsys.readouterr().err, f"the {key} is not valid UTF-8 text (byte 0xff at character 6)")
    assert snapshot(ws) == before


def test_a_prompt_past_the_text_encoders_window_warns_once_where_it_is_cut(tiny_prior, tmp_path, capsys):
    ws = tmp_path / "long"
    prompt = "a red cube on a " + "very " * 20 + "tall blue table"  # the tiny tokenizer reads 64 characters
    assert dream_cli(["--prompt", prompt, "--workspace", str(ws), "--quiet", "--no-export", *small(tiny_prior, 1)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("dream: warning: the prompt is ") and "the text encoder reads 64" in warnings[0]
    assert "'...very very very very' is cut" in warnings[0] and "view suffixes" in warnings[0]


def test_unseen_words_are_refused_and_the_vocabulary_listed(tmp_path, capsys):
    new = tmp_path / "corgi"
    code = dream_cli(["--prompt", "a corgi on a red cube", "--workspace", str(new)])
    assert code == 2
    line = one_error_line(capsys.readouterr().err, "'corgi'", "'on'", "--force")
    vocabulary = json.loads((BUNDLED_PRIOR / "training_info.json").read_text())["vocabulary"]
    assert all(word in line.split("knows only:")[1] for word in vocabulary)
    assert not new.exists()


def test_force_runs_an_unseen_prompt_anyway(tmp_path, capsys):
    new = tmp_path / "corgi"
    tiny = [a for a in small(BUNDLED_PRIOR, 1) if not a.startswith("guidance.model=")]  # the bundled prior itself
    assert dream_cli(["--prompt", "a corgi", "--workspace", str(new), "--force", "--quiet", "--no-export", *tiny]) == 0
    assert "never seen 'corgi'; running anyway" in capsys.readouterr().err
    assert load_checkpoint(new / "checkpoints" / "last.pt")["step"] == 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["train.stepz=5"], "Unknown config key 'train.stepz'; did you mean 'steps'?"),
        (["train.steps=ten"], "train.steps must be an integer"),
        (["--steps", "0"], "train.steps must be positive, got 0"),
        (["train.steps=-3"], "train.steps must be positive"),
        (["train.resolution=0"], "train.resolution must be positive"),
        (["guidance.guidance_scale=-1"], "guidance.guidance_scale must be >= 0"),
        (["guidance.t_range=[0.0,0.5]"], "guidance.t_range must lie inside (0, 1)"),
        (["guidance.t_range=[0.5,1.2]"], "guidance.t_range must lie inside (0, 1)"),
        (["guidance.t_range=[0.9,0.1]"], "guidance.t_range is reversed"),
        (["--device", "tpu"], "device must be one of 'auto', 'cpu', 'cuda'"),
        (["--seed", str(2**64)], "seed must be an integer from 0 to 2^63 - 1, got 18446744073709551616"),
        (["--seed", "-1"], "seed must be an integer from 0 to 2^63 - 1, got -1"),
        (["guidance.resolution=20"], "guidance.resolution must be a positive multiple of 16"),
        pytest.param(["--device", "cuda"], "no CUDA GPU is visible; use --device cpu",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")),
    ],
    ids=["unknown-key", "wrong-type", "steps-0", "steps-negative", "resolution-0", "negative-guidance-scale",
         "t-range-low", "t-range-high", "t-range-reversed", "unknown-device", "seed-past-63-bits", "seed-negative",
         "guidance-resolution", "cuda-without-gpu"],
)
def test_bad_config_is_refused_before_the_workspace_is_touched(ws, tiny_prior, capsys, extra, message):
    before = snapshot(ws)
    assert dream_cli(resume_args(ws, tiny_prior, *extra)) == 2
    one_error_line(capsys.readouterr().err, message)
    assert snapshot(ws) == before


@pytest.mark.parametrize("kind,message", [
    ("missing", "guidance model folder not found"),
    ("a-file", "is a file; expected a diffusers model folder"),
    ("empty-folder", "is not a diffusers model folder: no unet/config.json"),
    ("unet-only", "has no text_encoder/"),
])
def test_bad_model_path_is_refused(ws, tiny_prior, tmp_path, capsys, kind, message):
    model = tmp_path / "model"
    if kind == "a-file":
        model.write_text("not a model")
    elif kind == "empty-folder":
        model.mkdir()
    elif kind == "unet-only":
        shutil.copytree(tiny_prior / "unet", model / "unet")
    before = snapshot(ws)
    assert dream_cli(resume_args(ws, tiny_prior, f"guidance.model={model}")) == 2
    one_error_line(capsys.readouterr().err, message, str(model))
    assert snapshot(ws) == before


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_unwritable_workspace_is_refused(tiny_prior, tmp_path, capsys, where):
    blocker = tmp_path / "file.txt"  # we may run as root, where chmod blocks nothing: a file in the path does
    blocker.write_text("keep me")
    target = blocker / "ws" if where == "under-a-file" else blocker
    assert dream_cli(["--prompt", PROMPT, "--workspace", str(target), *small(tiny_prior, 4)]) == 2
    one_error_line(capsys.readouterr().err, "choose another --workspace")
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("flags,message", [
    ([], "already holds a run (prompt 'a red cube'); pass --resume to continue it, --overwrite to replace it"),
    (["--resume"], "holds a run for 'a red cube', not 'a green torus'"),
])
def test_another_prompts_run_is_refused(ws, tiny_prior, capsys, flags, message):
    before = snapshot(ws)
    assert dream_cli(["--prompt", "a green torus", "--workspace", str(ws), *flags, *small(tiny_prior, 4)]) == 2
    one_error_line(capsys.readouterr().err, message)
    assert snapshot(ws) == before


def damage_checkpoint(path: Path, kind: str) -> None:
    """The ways a checkpoint goes bad: garbage, cut short by a full disk, another layout or version."""
    if kind == "corrupt":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "missing-keys":
        state = torch.load(path, weights_only=True)
        torch.save({"step": state["step"]}, path)
    elif kind == "wrong-shapes":  # a field of another size
        state = torch.load(path, weights_only=True)
        scene = state["scene"]
        if "field" in scene:  # the coarse NeRF
            scene["field"] = {k: v[:1] if torch.is_tensor(v) else v for k, v in scene["field"].items()}
        else:  # the fine DMTet: its grid tensors
            state["scene"] = {k: v[:1] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in scene.items()}
        torch.save(state, path)
    elif kind == "not-a-dict":
        torch.save([1, 2, 3], path)
    else:
        raise AssertionError(kind)


BAD_CHECKPOINTS = {
    "corrupt": "is corrupt, cut short or not a dreamfusion checkpoint",
    "truncated": "is corrupt, cut short or not a dreamfusion checkpoint",
    "missing-keys": "does not match",
    "wrong-shapes": "does not match",
    "not-a-dict": "is not a dreamfusion checkpoint",
}


@pytest.fixture(scope="module")
def finished_default(tiny_prior, tmp_path_factory) -> Path:
    """A finished 4-step run of the default recipe (3D Gaussians, then the DMTet)."""
    root = tmp_path_factory.mktemp("finished_default") / "ws"
    assert dream_cli(["--prompt", PROMPT, "--workspace", str(root), "--quiet", "--no-export", *small_run(tiny_prior, 4)]) == 0
    return root


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_stops_resume_and_loses_nothing(finished, finished_default, tmp_path, tiny_prior, capsys, kind, recipe):
    ws = Path(shutil.copytree(finished if recipe == "nerf" else finished_default, tmp_path / "ws"))
    last = ws / "checkpoints" / "last.pt"
    damage_checkpoint(last, kind)
    before = snapshot(ws)
    resume = ["--prompt", PROMPT, "--workspace", str(ws), "--resume", "--quiet", "--no-export", *RECIPES[recipe](tiny_prior, 6)]
    assert dream_cli(resume) == 1
    one_error_line(capsys.readouterr().err, str(last), BAD_CHECKPOINTS[kind])
    assert snapshot(ws) == before  # run.json, metrics, mesh, video and the damaged file itself all kept


def test_checkpoint_of_another_config_stops_resume(ws, tiny_prior, capsys):
    before = snapshot(ws)
    assert dream_cli(resume_args(ws, tiny_prior, "field.hidden_dim=16")) == 1
    one_error_line(capsys.readouterr().err, "does not match this config", "--overwrite")
    assert snapshot(ws) == before


@pytest.mark.parametrize("stage", ["coarse", "fine"])
@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_stops_export_and_loses_nothing(ws, capsys, kind, stage):
    last = (ws / "fine" if stage == "fine" else ws) / "checkpoints" / "last.pt"
    damage_checkpoint(last, kind)
    before = snapshot(ws)
    assert export_mesh.main(["--workspace", str(ws), "--stage", stage, "--resolution", "32", "--texture-size", "32", "--quiet"]) == 1
    one_error_line(capsys.readouterr().err, str(last), BAD_CHECKPOINTS[kind])
    if stage == "coarse":  # the field's volume render reads the checkpoint (the fine stage's video renders its mesh file)
        assert render_video.main(["--workspace", str(ws), "--stage", "coarse", "--frames", "2", "--resolution", "32", "--quiet"]) == 1
        one_error_line(capsys.readouterr().err, str(last), BAD_CHECKPOINTS[kind])
    assert snapshot(ws) == before


def test_resume_without_checkpoint_is_refused(ws, tiny_prior, capsys):
    shutil.rmtree(ws / "checkpoints")
    before = snapshot(ws)
    assert dream_cli(resume_args(ws, tiny_prior)) == 2
    one_error_line(capsys.readouterr().err, "has no checkpoint to resume from; drop --resume")
    assert snapshot(ws) == before


@pytest.mark.parametrize("script", ["export_mesh", "render_video"])
def test_export_without_checkpoint_is_refused(ws, capsys, script):
    shutil.rmtree(ws / "checkpoints")
    shutil.rmtree(ws / "fine")  # no stage left at all
    before = snapshot(ws)
    main = export_mesh.main if script == "export_mesh" else render_video.main
    assert main(["--workspace", str(ws), "--resolution", "32", "--quiet"]) == 1
    one_error_line(capsys.readouterr().err, "has no checkpoint", "run scripts/dream.py first")
    assert snapshot(ws) == before


@pytest.mark.parametrize("value", ["0", "-0.1"])
def test_export_refuses_a_surface_at_no_optical_depth(ws, capsys, value):
    before = snapshot(ws)
    code = export_mesh.main(["--workspace", str(ws), "--stage", "coarse", "--resolution", "32", "--quiet", "--optical-depth", value])
    assert code == 2
    one_error_line(capsys.readouterr().err, "--optical-depth (export.surface_optical_depth) must be > 0")
    assert snapshot(ws) == before


def poison_field(ws: Path) -> None:
    """A checkpoint that loads but whose field is NaN everywhere (a diverged run saved before the guard)."""
    path = ws / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    for value in state["scene"]["field"].values():
        if torch.is_tensor(value) and value.is_floating_point():
            value.fill_(float("nan"))
    torch.save(state, path)


@pytest.mark.parametrize("case,message", [
    ("nan-field", "NaN or infinite densities"),
    ("threshold-above-the-peak", "pass a --threshold inside that range"),
    ("nan-field-video", "no opaque surface to render"),
])
def test_degenerate_field_export_says_what_to_do(ws, capsys, case, message):
    if case.startswith("nan-field"):
        poison_field(ws)
    before = snapshot(ws)
    if case == "nan-field-video":
        code = render_video.main(["--workspace", str(ws), "--stage", "coarse", "--frames", "2", "--resolution", "32", "--quiet", "--cache-resolution", "32"])
    else:
        flags = ["--threshold", "1e9"] if case == "threshold-above-the-peak" else []
        code = export_mesh.main(["--workspace", str(ws), "--stage", "coarse", "--resolution", "32", "--texture-size", "32", "--quiet", *flags])
    assert code == 1
    line = one_error_line(capsys.readouterr().err, message)
    assert "Vertex matrix" not in line
    assert snapshot(ws) == before  # the previous export is still there, untouched


@pytest.mark.parametrize("recipe,empty", [("nerf", "field.blob=none"), ("gaussians", "representation.init_opacity=0.001")])
def test_empty_field_at_the_end_of_a_run_exits_1_and_keeps_the_run(tiny_prior, tmp_path, capsys, recipe, empty):
    ws = tmp_path / "empty"
    args = ["--prompt", PROMPT, "--workspace", str(ws), "--quiet", *RECIPES[recipe](tiny_prior, 2, empty)]
    assert dream_cli(args) == 1  # trained, but no asset: not a success for whoever scripts it
    err = capsys.readouterr().err
    assert "mesh export skipped: the field has no opaque surface" in err and "scripts/export_mesh.py --workspace" in err
    assert "video skipped:" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("dream: the run made no mesh (the field has no opaque surface")
    assert json.loads((ws / "run.json").read_text())["exported"] is False
    assert load_checkpoint(ws / "checkpoints" / "last.pt")["step"] == 2


# ---- checkpoints never run pickled code ------------------------------------------------------------------

class Payload:
    """Unpickling this runs os.mkdir(marker): proof that a loader executed code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoint_with_pickled_code_is_refused_and_never_runs(ws, tiny_prior, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"scene": Payload(marker), "step": 1}, evil)
    torch.load(evil, weights_only=False)  # the payload is live: an unsafe loader would run it
    assert marker.is_dir()
    marker.rmdir()

    with pytest.raises(CheckpointError, match="not a dreamfusion checkpoint"):
        load_checkpoint(evil)
    shutil.copy(evil, ws / "checkpoints" / "last.pt")
    shutil.copy(evil, ws / "fine" / "checkpoints" / "last.pt")
    assert export_mesh.main(["--workspace", str(ws), "--stage", "coarse", "--resolution", "32", "--quiet"]) == 1
    assert export_mesh.main(["--workspace", str(ws), "--resolution", "32", "--quiet"]) == 1  # the fine stage's
    assert dream_cli(resume_args(ws, tiny_prior)) == 1
    err = capsys.readouterr().err
    assert err.count("is corrupt, cut short or not a dreamfusion checkpoint") == 3 and "Traceback" not in err
    assert not marker.exists()


# ---- non-finite steps ----------------------------------------------------------------------------------

class Poisoned:
    """The real guidance, but with a NaN loss at some steps and a NaN gradient (finite loss) at others."""

    def __init__(self, inner: Any, nan_loss: set[int], nan_grad: set[int]):
        self.inner, self.nan_loss, self.nan_grad = inner, nan_loss, nan_grad

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, rgb: torch.Tensor, cameras: Any, step: int, generator: torch.Generator, t: torch.Tensor | None = None):
        if step in self.nan_grad:
            rgb.register_hook(lambda grad: grad * float("nan"))
        out = self.inner(rgb, cameras, step=step, generator=generator, t=t)
        if step in self.nan_loss:
            out = dataclasses.replace(out, loss=out.loss * float("nan"))
        return out


def poison_guidance(monkeypatch, nan_loss: set[int], nan_grad: set[int] = frozenset()) -> None:
    import dreamfusion.guidance as guidance

    real = guidance.make_guidance
    monkeypatch.setattr(guidance, "make_guidance", lambda cfg, device: Poisoned(real(cfg, device), set(nan_loss), set(nan_grad)))


def all_tensors(state: Any) -> Iterator[torch.Tensor]:
    if torch.is_tensor(state):
        yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from all_tensors(value)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_nonfinite_steps_are_skipped_and_counted(tiny_prior, tmp_path, monkeypatch, recipe):
    poison_guidance(monkeypatch, nan_loss={2}, nan_grad={5})  # the 3rd and the 6th step
    ws = tmp_path / "ws"
    assert dream_cli(["--prompt", PROMPT, "--workspace", str(ws), "--quiet", "--no-export", *RECIPES[recipe](tiny_prior, 8)]) == 0
    metrics = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped_nonfinite"] for m in metrics] == [0, 0, 1, 1, 1, 2, 2, 2]
    assert [m["step"] for m in metrics if m["loss"] is None] == [3, 6]
    state = load_checkpoint(ws / "checkpoints" / "last.pt")
    assert state["step"] == 8 and state["nonfinite_total"] == 2
    assert all(torch.isfinite(v).all() for v in all_tensors(state["scene"]) if v.is_floating_point())


def test_many_nonfinite_steps_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(tiny_prior, tmp_path, monkeypatch, capsys):
    poison_guidance(monkeypatch, nan_loss=set(range(5, 100)))  # from the 6th step on, every loss is NaN
    ws = tmp_path / "ws"
    args = ["--prompt", PROMPT, "--workspace", str(ws), "--quiet", "--no-export",
            *small(tiny_prior, 12, "train.max_nonfinite_in_a_row=3")]
    assert dream_cli(args) == 1
    one_error_line(capsys.readouterr().err, "3 steps in a row gave a non-finite loss or gradient",
                   str(ws / "checkpoints" / "last.pt"), "Lower the learning rates")
    scene, state = Workspace(ws).load_scene()  # the last good checkpoint loads and holds a finite field
    assert state["step"] == 4
    assert all(torch.isfinite(p).all() for p in scene.field.parameters())
    assert [json.loads(line)["skipped_nonfinite"] for line in (ws / "metrics.jsonl").read_text().splitlines()][-2:] == [1, 2]
    assert not (ws / "run.json").exists()

    monkeypatch.undo()  # the advice of the message: a lower learning rate, then --resume
    assert dream_cli([*args, "--resume", "train.lr_encoding=0.005"]) == 0
    metrics = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert {m["lr_encoding"] for m in metrics[4:]} == {0.005}


# ---- interruption ----------------------------------------------------------------------------------------

def start_dream(argv: list[str], fault: str | None = None) -> subprocess.Popen:
    env = dict(ONE_THREAD_ENV, **({"DREAMFUSION_FAULT": fault} if fault else {}))
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "dream.py"), *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_prints_the_resume_command(tiny_prior, tmp_path, signum):
    ws = tmp_path / "ws"
    proc = start_dream(["--prompt", PROMPT, "--workspace", str(ws), "--quiet", "--no-export", "--seed", "2",
                        *small(tiny_prior, 40)])
    last = ws / "checkpoints" / "last.pt"
    deadline = time.time() + 180
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    code, _, err = finish(proc)
    assert code == 130, err
    assert f"dream: {signal.Signals(signum).name} received; saved step" in err and "Traceback" not in err
    saved = load_checkpoint(last)["step"]
    assert 4 <= saved < 40
    assert len((ws / "metrics.jsonl").read_text().splitlines()) == saved

    command = shlex.split(err.split("Resume with: ")[1].strip())
    assert command[:2] == ["python", "scripts/dream.py"] and "--resume" in command
    assert dream_cli(command[2:]) == 0  # the printed command, verbatim, finishes the run
    assert load_checkpoint(last)["step"] == 40
    assert [json.loads(line)["step"] for line in (ws / "metrics.jsonl").read_text().splitlines()] == list(range(1, 41))


def test_sigkill_anywhere_then_resume_ends_exactly_like_an_uninterrupted_run(tiny_prior, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--prompt", "a blue cone", "--quiet", "--no-export", "--seed", "5", *small(tiny_prior, 12)]
    uninterrupted = start_dream([*common, "--workspace", str(a)])  # runs alongside the killed ones

    # 1. killed mid-step between checkpoints: after step 6's metrics, with the checkpoint of step 4 on disk
    code, _, err = finish(start_dream([*common, "--workspace", str(b)], fault="train_step:6"))
    assert code == -signal.SIGKILL, err
    assert load_checkpoint(b / "checkpoints" / "last.pt")["step"] == 4
    assert len((b / "metrics.jsonl").read_text().splitlines()) == 6

    # 2. resumed, then killed while writing last.pt at step 8 (writes: metrics cut back, config.yaml, last.pt)
    code, _, err = finish(start_dream([*common, "--workspace", str(b), "--resume"], fault="atomic_write:3"))
    assert code == -signal.SIGKILL, err
    assert load_checkpoint(b / "checkpoints" / "last.pt")["step"] == 4  # the previous file, intact
    assert list((b / "checkpoints").glob(".last.pt.*.tmp"))  # the half-written temporary the kill left

    # 3. resumed to the end
    code, out, err = finish(start_dream([*common, "--workspace", str(b), "--resume"]))
    assert code == 0, err
    assert "resuming" in out and "at coarse step 4" in out
    code, _, err = finish(uninterrupted)
    assert code == 0, err

    assert_same_state(torch.load(a / "checkpoints" / "last.pt", weights_only=True)["scene"],
                      torch.load(b / "checkpoints" / "last.pt", weights_only=True)["scene"], "scene")
    assert metrics_without_time(a) == metrics_without_time(b)
    assert sorted(p.name for p in (b / "checkpoints").iterdir()) == sorted(p.name for p in (a / "checkpoints").iterdir())
    assert not list(b.rglob("*.tmp"))  # the killed run's temporaries are cleared on resume


def test_sigkill_during_mesh_export_leaves_the_previous_files(ws):
    before = snapshot(ws / "mesh")
    argv = [sys.executable, str(REPO / "scripts" / "export_mesh.py"), "--workspace", str(ws),
            "--resolution", "32", "--texture-size", "32", "--quiet"]
    killed = subprocess.run(argv, env=dict(ONE_THREAD_ENV, DREAMFUSION_FAULT="atomic_write:2"), capture_output=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = {name: data for name, data in snapshot(ws / "mesh").items() if not name.endswith(".tmp")}
    assert after.keys() == before.keys()
    assert sum(after[name] != before[name] for name in before) <= 1  # at most the first file replaced, whole
    assert len(load_exported_mesh(ws / "mesh").faces) > 0  # what is there still loads
    assert export_mesh.main(["--workspace", str(ws), "--resolution", "32", "--texture-size", "32", "--quiet"]) == 0
