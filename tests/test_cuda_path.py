"""The parts of the CUDA path a CPU can check: one checkpoint layout for every backend, random
draws on the generator's device, probed accelerators and their fallback, the IF tokenizer, the
renamed regularizers, mixed precision and host synchronisations in the training step.
(The GPU runs themselves are in test_cuda.py, marked `cuda`.)"""
from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from dreamfusion.config import ConfigError
from dreamfusion.field.encoding import HashGridConfig, HashGridEncoding
from dreamfusion.field.nerf import FieldConfig, NeRFField
from dreamfusion.render.occupancy import NerfaccOccupancy, OccupancyConfig, OccupancyGrid
from dreamfusion.utils import capabilities

REPO = Path(__file__).resolve().parents[1]
SMALL_GRID = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0)


# ---- one checkpoint layout -----------------------------------------------------------------------

class FakeTcnnEncoding(nn.Module):
    """tinycudann.Encoding's shape without CUDA: one flat `params` vector, in tinycudann's memory
    layout, evaluated through our PyTorch grid (which copies that layout)."""

    def __init__(self, n_input_dims, config, seed=1337):
        super().__init__()
        cfg = HashGridConfig(**{k: v for k, v in config.items() if k != "otype"})
        self.grid = [HashGridEncoding(cfg, seed=seed)]  # a list: not a registered child, as in tinycudann
        self.params = nn.Parameter(torch.randn(self.grid[0].table.numel()) * 1e-2)

    def forward(self, x):
        grid = self.grid[0]
        with torch.no_grad():
            grid.table.copy_(self.params.view_as(grid.table))
        return grid(x)


@pytest.fixture
def fake_tinycudann(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Encoding=FakeTcnnEncoding))


def test_tinycudann_state_uses_the_pytorch_grids_layout(fake_tinycudann):
    from dreamfusion.field.encoding import TcnnHashGridEncoding

    tcnn_enc = TcnnHashGridEncoding(SMALL_GRID, seed=0)
    state = tcnn_enc.state_dict()
    assert list(state) == ["table"]  # not tinycudann's flat "encoding.params"
    torch_enc = HashGridEncoding(SMALL_GRID, seed=5)
    torch_enc.load_state_dict(state)
    x = torch.rand(64, 3)
    assert torch.allclose(torch_enc(x), tcnn_enc(x))  # same features: the layouts are one reshape apart
    # ... and back: a CPU-trained table loads into the tinycudann encoding
    torch_enc.table.data.mul_(3.0)
    tcnn_enc.load_state_dict(torch_enc.state_dict())
    assert torch.allclose(tcnn_enc(x), torch_enc(x))


def test_a_checkpoint_in_tinycudanns_own_layout_loads_without_tinycudann():
    """A field saved with tinycudann's keys (flat encoding.encoding.params) loads into the PyTorch grid."""
    cfg = FieldConfig(encoding=SMALL_GRID, hidden_dim=16, encoding_backend="torch")
    trained = NeRFField(cfg, seed=0)
    state = trained.state_dict()
    state["encoding.encoding.params"] = state.pop("encoding.table").reshape(-1)  # what tinycudann writes
    field = NeRFField(cfg, seed=1)
    field.load_state_dict(state)
    assert torch.equal(field.encoding.table, trained.encoding.table)
    bad = dict(state, **{"encoding.encoding.params": torch.zeros(7)})
    with pytest.raises(ValueError, match="tinycudann parameters"):
        NeRFField(cfg, seed=1).load_state_dict(bad)


def _ball(x: torch.Tensor) -> torch.Tensor:
    return 50.0 * (x.norm(dim=-1) < 0.5).float()


def test_nerfacc_occupancy_saves_the_pytorch_grids_layout():
    """nerfacc's estimator is plain tensors on the CPU (only its sampling needs CUDA), so both ways
    can be checked here; its update also works in eval mode (render_demo, bench_export call it so)."""
    cfg = OccupancyConfig(resolution=8, warmup_steps=10)
    step = 2 * 3**0.5 / 32
    nerfacc_grid = NerfaccOccupancy(cfg, 1.0, step).eval()
    nerfacc_grid.update(_ball, step=0)  # eval mode: nerfacc alone would refuse
    state = nerfacc_grid.state_dict()
    assert set(state) == {"density", "occupied", "updates"}
    ours = OccupancyGrid(cfg, 1.0, step)
    assert set(ours.state_dict()) == set(state)
    ours.load_state_dict(state)
    assert ours.ready and torch.equal(ours.occupied, nerfacc_grid.estimator.binaries[0])
    assert ours.occupied[4, 4, 4] and not ours.occupied[0, 0, 0]
    back = NerfaccOccupancy(cfg, 1.0, step)
    back.load_state_dict(ours.state_dict())
    assert torch.equal(back.estimator.binaries, nerfacc_grid.estimator.binaries)
    assert torch.allclose(back.estimator.occs, nerfacc_grid.estimator.occs)


def test_optimizer_moments_follow_a_reshaped_parameter():
    from dreamfusion.train import match_state_shapes

    flat = nn.Parameter(torch.zeros(12))
    opt = torch.optim.Adam([flat])
    flat.grad = torch.ones(12)
    opt.step()
    state = opt.state_dict()
    table = nn.Parameter(torch.zeros(6, 2))
    opt2 = torch.optim.Adam([table])
    opt2.load_state_dict(state)
    match_state_shapes(opt2)
    table.grad = torch.ones(6, 2)
    opt2.step()  # would raise on a (12,) moment for a (6, 2) parameter
    assert opt2.state[table]["exp_avg"].shape == (6, 2)


# ---- random draws ----------------------------------------------------------------------------------

RANDOM_FUNCTIONS = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal",
                    "bernoulli", "multinomial", "poisson"}
RANDOM_METHODS = {"uniform_", "normal_", "random_", "exponential_", "geometric_", "cauchy_", "log_normal_", "bernoulli_"}


def test_every_seeded_draw_goes_through_utils_random():
    """A generator passed straight to a torch random function fills a tensor on the generator's
    device or fails (CPU generator, CUDA tensor). utils/random.py draws on the generator's device and
    moves the result; nothing else in the package may pass a generator to torch."""
    offenders = []
    for path in sorted((REPO / "dreamfusion").rglob("*.py")):
        if path.name == "random.py" and path.parent.name == "utils":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not any(k.arg == "generator" for k in node.keywords):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in RANDOM_FUNCTIONS | RANDOM_METHODS:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not offenders, offenders


def test_draws_land_on_the_requested_device_from_a_cpu_generator():
    from dreamfusion.utils import random

    gen = torch.Generator().manual_seed(0)
    for fn, args in ((random.rand, ((3, 2),)), (random.randn, ((3, 2),)), (random.randint, (0, 5, (3, 2)))):
        out = fn(*args, gen, "meta")  # another device than the generator's: no error
        assert out.device.type == "meta" and out.shape == (3, 2)
    a = random.rand((4,), torch.Generator().manual_seed(1), "cpu")
    b = torch.rand(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)  # on the CPU the same numbers as torch's own call


# ---- probes and fallbacks -----------------------------------------------------------------------

@pytest.fixture
def fresh_probes():
    capabilities.reset_probes()
    yield
    capabilities.reset_probes()


def test_a_failing_probe_falls_back_with_one_warning(fresh_probes, capsys):
    def broken():
        raise RuntimeError("Error building extension 'nerfacc_cuda'\nninja: build stopped")

    assert capabilities.probe("nerfacc", broken, "Install nvcc and ninja.") is False
    assert capabilities.probe("nerfacc", broken, "Install nvcc and ninja.") is False  # cached: runs once
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nerfacc failed its check" in err[0] and "Error building extension" in err[0]
    assert "using the PyTorch path instead" in err[0] and "Install nvcc" in err[0]
    assert "nerfacc" in capabilities.failure_reason("nerfacc")


def test_a_disabled_accelerator_is_never_probed(fresh_probes, monkeypatch, capsys):
    """The GPU check disables a build that failed once, so no later process builds it again."""
    monkeypatch.setenv("DREAMFUSION_DISABLE", "nerfacc, tinycudann")
    assert capabilities.probe("nerfacc", lambda: pytest.fail("probed"), "") is False
    assert capabilities.failure_reason("nerfacc") == "nerfacc is disabled by DREAMFUSION_DISABLE"
    assert capsys.readouterr().err == ""
    assert capabilities.probe("nvdiffrast", lambda: None, "") is True  # the others still probe


def test_the_tinycudann_probe_needs_a_second_order_backward(fresh_probes, monkeypatch, capsys):
    """Analytic normals differentiate the encoding twice: a build whose backward is not itself
    differentiable must fail the probe (here a stand-in encoding whose backward is first-order only)."""
    class FirstOrderOnly(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight):
            ctx.save_for_backward(x, weight)
            return x @ weight

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            return grad @ weight.T, x.T @ grad

    class Encoding(nn.Module):
        def __init__(self, n_input_dims, config):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(n_input_dims, 4))

        def forward(self, x):
            return FirstOrderOnly.apply(x, self.weight)

    monkeypatch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Encoding=Encoding))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch, "rand", lambda *shape, device=None, **kw: torch.ones(*shape, **kw))  # "cuda" tensors on the CPU
    assert capabilities.tinycudann_available() is False
    assert "tinycudann failed its check" in capsys.readouterr().err


def test_an_accelerator_that_is_not_installed_fails_silently(fresh_probes, capsys):
    def missing():
        import a_package_that_is_not_there  # noqa: F401

    assert capabilities.probe("tinycudann", missing, "") is False
    assert capsys.readouterr().err == ""


def test_renderer_falls_back_to_dense_when_nerfacc_fails_its_probe(fresh_probes, monkeypatch, capsys):
    """On a "GPU" whose nerfacc kernels cannot build (here: no GPU at all, so the real probe's first
    CUDA call fails), 'auto' renders with the PyTorch sampler and 'nerfacc' is refused with the reason."""
    from dreamfusion.render import renderer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert renderer.choose_backend(renderer.RenderConfig(), torch.device("cuda")) == "dense"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nerfacc failed its check" in err and "render.backend=dense" in err
    with pytest.raises(ConfigError, match="nerfacc' cannot be used: nerfacc failed its check"):
        renderer.choose_backend(renderer.RenderConfig(backend="nerfacc"), torch.device("cuda"))
    assert renderer.choose_backend(renderer.RenderConfig(), torch.device("cpu")) == "dense"


def test_encoding_falls_back_to_pytorch_when_tinycudann_fails_its_probe(fresh_probes, monkeypatch, capsys):
    from dreamfusion.field.encoding import make_encoding

    class Broken(nn.Module):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Encoding=Broken))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert capabilities.tinycudann_available() is False
    assert "no kernel image" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="tinycudann failed its check"):
        make_encoding(SMALL_GRID, "cuda", backend="tcnn")


# ---- DeepFloyd IF's tokenizer ---------------------------------------------------------------------

def test_if_layout_loads_its_sentencepiece_t5_tokenizer(tmp_path):
    """IF's tokenizer/ is a sentencepiece model (spiece.model): loading it needs sentencepiece and
    protobuf, which the package declares; the whole guidance path then runs on an IF-shaped folder."""
    from dreamfusion.cameras import make_cameras
    from dreamfusion.guidance import GuidanceConfig, make_guidance
    from dreamfusion.guidance.tiny import save_tiny_if_model

    folder = save_tiny_if_model(tmp_path / "if", sample_size=16)
    assert (folder / "tokenizer" / "spiece.model").is_file()
    guidance = make_guidance(GuidanceConfig(type="pixel", model=str(folder), embedding_cache=None, release_text_encoder=False), "cpu")
    emb = guidance.prepare("a red cube")
    tokenizer, encoder = guidance._text
    assert type(tokenizer).__name__.startswith("T5Tokenizer") and type(encoder).__name__ == "T5EncoderModel"
    ids = tokenizer("a red cube, front view").input_ids
    assert tokenizer.unk_token_id not in ids  # the words are in the trained sentencepiece vocabulary
    assert emb.views.shape[1] == 77  # IF encodes 77 T5 tokens
    one = lambda v: torch.tensor([v])  # noqa: E731
    rgb = torch.rand(1, 16, 16, 3, requires_grad=True)
    out = guidance(rgb, make_cameras(one(10.0), one(0.0), one(2.0), one(50.0)))
    out.loss.backward()
    assert out.grad.shape == (1, 3, 16, 16) and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_the_package_declares_what_it_imports():
    text = (REPO / "setup.py").read_text()
    for name in ("sentencepiece", "protobuf"):
        assert f'"{name}' in text
    assert "omegaconf" not in text.lower()
    assert ("PyMCubes" in text) + ("scikit-image" in text) == 1  # one marching-cubes library


# ---- regularizer names -----------------------------------------------------------------------------

@pytest.mark.parametrize("old, hint", [("lambda_sparsity", "lambda_opacity_dreamfusion"), ("lambda_opacity", "lambda_opacity_dreamfusion"),
                                       ("lambda_entropy", "lambda_opacity_entropy")])
def test_renamed_regularizers_are_refused_with_a_hint(old, hint):
    from dreamfusion.run_config import load_run_config

    with pytest.raises(ConfigError, match=f"'train.{old}' was renamed: use train.{hint}"):
        load_run_config(None, [f"train.{old}=1"])


def test_real_model_recipes_use_dreamfusions_opacity_term_and_a_progressive_grid():
    from dreamfusion.run_config import load_run_config

    for name in ("dreamfusion-sd", "dreamfusion-if"):
        cfg = load_run_config(REPO / "configs" / f"{name}.yaml")
        t = cfg.train
        assert t.lambda_opacity_dreamfusion(0) == 1.0 and t.lambda_opacity_mean(0) == 0.0
        n = cfg.field.encoding.n_levels
        assert t.active_levels(0, n) == 8 and t.active_levels(2500, n) == 9 and t.active_levels(t.steps, n) == n


def test_each_regularizer_term_has_its_weight():
    from dreamfusion.representation import RenderOutput
    from dreamfusion.run_config import TrainConfig
    from dreamfusion.scene import nerf_regularizers as regularizers

    n = 5
    out = RenderOutput(rgb=torch.rand(1, 2, 2, 3), opacity=torch.zeros(1, 2, 2, 1), depth=torch.zeros(1, 2, 2, 1),
                       normal=torch.zeros(1, 2, 2, 3), albedo=torch.zeros(1, 2, 2, 3), weights=torch.rand(n),
                       ray_indices=torch.zeros(n, dtype=torch.long), sample_normals=torch.randn(n, 3),
                       sample_predicted_normals=torch.randn(n, 3), sample_dirs=torch.randn(n, 3))
    terms = regularizers(out)
    assert all(hasattr(TrainConfig, f"lambda_{k}") or f"lambda_{k}" in TrainConfig.__dataclass_fields__ for k in terms)
    assert terms["opacity_mean"] == 0.0 and abs(float(terms["opacity_dreamfusion"]) - 0.1) < 1e-6  # sqrt(0 + 0.01) on empty rays


# ---- the training step: precision and host syncs ---------------------------------------------------

def _trainer(tmp_path, *overrides):
    from dreamfusion.guidance import make_guidance
    from dreamfusion.guidance.tiny import save_tiny_pixel_model
    from dreamfusion.run_config import load_run_config
    from dreamfusion.stages import coarse_stage
    from dreamfusion.train import Trainer
    from dreamfusion.workspace import Workspace

    prior = save_tiny_pixel_model(tmp_path / "prior", sample_size=16, camera=True)
    cfg = load_run_config(REPO / "configs" / "toy.yaml", [f"guidance.model={prior}", "guidance.embedding_cache=null", "train.resolution=16",
                                 "train.batch_size=1", "render.n_samples=16", "field.encoding.n_levels=4",
                                 "field.encoding.log2_hashmap_size=12", "train.ambient_only_steps=0", *overrides],
                          {"prompt": "a red cube"})
    guidance = make_guidance(cfg.guidance, "cpu")
    guidance.prepare(cfg.prompt)
    return Trainer(coarse_stage(cfg, "cpu"), Workspace(tmp_path / "ws"), torch.device("cpu"), guidance)


def test_bf16_autocast_trains_the_field(tmp_path):
    trainer = _trainer(tmp_path, "train.field_precision=bf16")
    before = trainer.scene.field.encoding.table.detach().clone()
    for _ in range(3):
        result = trainer.train_step()
        assert not result.skipped
    assert trainer.scene.field.encoding.table.dtype == torch.float32  # weights stay fp32; only the arithmetic is bf16
    assert not torch.equal(before, trainer.scene.field.encoding.table)


def test_fp16_needs_a_gpu(tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        _trainer(tmp_path, "train.field_precision=fp16")


def test_a_training_step_syncs_with_the_host_once(tmp_path, monkeypatch):
    """On a GPU every .item() / bool(tensor) waits for the device; the step collects its metrics and
    the finiteness of loss and gradients in one tensor read once (occupancy refresh steps aside)."""
    trainer = _trainer(tmp_path)
    trainer.train_step()  # step 0 refreshes the occupancy grid
    calls = {"item": 0, "bool": 0, "tolist": 0}
    for name, key in (("item", "item"), ("__bool__", "bool"), ("tolist", "tolist")):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _key=key, **k):
            if "dreamfusion" in sys._getframe(1).f_code.co_filename:  # ours, not torch.optim's CPU step counters
                calls[_key] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    trainer.train_step()
    monkeypatch.undo()
    assert calls["item"] == 0 and calls["bool"] == 0, calls
    assert calls["tolist"] <= 2, calls  # the metrics, and the shading draw of the CPU generator
