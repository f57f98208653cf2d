"""The truth as a fixed point (eval/fixed_point.py): a stage started from the true object reports
finite drifts, and a stage given renders the prior never saw (mismatched shading) fails loudly."""
import json
import math

import numpy as np

from dreamfusion.cli.errors import run_cli
from dreamfusion.cli.fixed_point import main as fixed_point_main
from dreamfusion.eval.fixed_point import MEASURES, run_fixed_point, true_fine_scene
from dreamfusion.run_config import load_run_config

# The fine stage at test size: a 24^3 DMTet, 32-pixel renders, a texture rate that shows drift in a few steps.
SMALL = ["fine.dmtet.resolution=24", "fine.train.resolution=32", "fine.train.batch_size=2", "fine.train.lr_texture=0.005",
         "fine.train.lambertian_prob=1.0", "fine.train.textureless_prob=0.0", "export.mesh_resolution=48",
         "export.texture_size=64", "guidance.embedding_cache=null"]
DARK_LIGHT = ["light.ambient=0.3", "light.diffuse=0.0"]  # every shaded render 0.3 x the albedo: far darker than the prior's
# For the check that can fail: lit renders that teach colour (so that a mismatched shading reaches it),
# read through the density's features. With the albedo's own grid at this 5x texture rate, matched
# lit renders alone drift the colour by dE 7.7 in 30 steps (dim ones 7.4), so drift would not tell them apart.
# Every timestep teaches (no colour gate): lit renders at t <= 0.25 alone darken the true cube here (dE 33 in 30 steps).
LIT_TEACHES_COLOUR = ["fine.train.lit_colour_gradient=true", "field.albedo_encoding=null",
                      "fine.train.colour_t_max={start: 1.0, end: 1.0}"]


def small_cfg(*extra):
    return load_run_config(None, [*SMALL, *extra], {"prompt": "a red cube"})


def test_the_true_dmtet_is_the_true_cube_in_the_palette_colour():
    cfg = small_cfg()
    rep = true_fine_scene(cfg, "cube", "red", "cpu", fit_steps=150)
    mesh = rep.mesh()
    assert mesh.faces.shape[0] > 100
    colours = rep.albedo(mesh.vertices).detach()
    assert (colours.mean(0) - colours.new_tensor([0.85, 0.12, 0.10])).abs().max() < 0.05


def test_the_true_density_is_meshed_on_the_true_surface():
    """The truth a coarse stage starts from has its skin, where meshes are placed, on the true
    surface: the true sphere is meshed at its radius, not a shell's softness outside it."""
    from dreamfusion.eval.fixed_point import true_density
    from dreamfusion.export.mesh import extract_mesh

    from analytic_fields import AnalyticField

    mesh, _ = extract_mesh(AnalyticField(lambda x: true_density(x.norm(dim=-1) - 0.4)), 128, smooth=0.0)
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(r) - 0.4) < 0.004, np.median(r)


def test_fixed_point_reports_finite_drifts_and_fails_loudly_on_mismatched_shading(tmp_path, capsys):
    matched = run_fixed_point(small_cfg(*LIT_TEACHES_COLOUR), "fine", 30, tmp_path / "matched", fit_steps=150)
    for key in MEASURES:
        assert math.isfinite(matched.drift[key]), key
    assert matched.before["delta_e"] < 3.0 and matched.before["genus"] == 0  # the truth, as the DMTet holds it
    assert json.loads((tmp_path / "matched" / "fixed_point.json").read_text())["stage"] == "fine"
    # The same check through the command, with renders the prior never saw: it names what drifted, exits 1
    code = fixed_point_main(["--prompt", "a red cube", "--stage", "fine", "--steps", "30", "--fit-steps", "150",
                             "--out", str(tmp_path / "dim"), *SMALL, *LIT_TEACHES_COLOUR, *DARK_LIGHT])
    captured = capsys.readouterr()
    dim = json.loads(captured.out.strip().splitlines()[-1])["fine"]
    assert code == 1 and "fixed point: fine: delta_e drifted" in captured.err
    # the prior sees a dim red cube and brightens its albedo, far more than from matched renders
    assert dim["drift"]["delta_e"] > matched.drift["delta_e"] + 5.0
    assert dim["drift"]["delta_lightness"] > matched.drift["delta_lightness"] + 3.0


def test_cli_refuses_a_prompt_whose_truth_is_unknown(tmp_path, capsys):
    assert run_cli(fixed_point_main, ["--prompt", "a dragon", "--out", str(tmp_path)], prog="fixed_point") == 2
    assert "toy-world prompt" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_the_default_recipes_gaussians_start_from_the_truth_and_hold_it(tmp_path, capsys):
    """The default coarse stage (3D Gaussians) as surfels on the true cube: its export is the cube
    in the palette red, and a few SDS steps from the end of the stage leave it within the tolerances."""
    from dreamfusion.eval.fixed_point import true_coarse_scene

    cfg = load_run_config(None, [], {"prompt": "a red cube"})
    rep = true_coarse_scene(cfg, "cube", "red", "cpu", start_step=597)
    assert type(rep).__name__ == "GaussianScene" and rep.count == cfg.representation["max_gaussians"]
    code = fixed_point_main(["--prompt", "a red cube", "--stage", "coarse", "--steps", "3", "--out", str(tmp_path),
                             "export.mesh_resolution=96", "export.texture_size=64", "guidance.embedding_cache=null"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["coarse"]
    truth = report["before"]  # the truth as the Gaussians hold it, exported and judged
    assert truth["genus"] == 0 and truth["delta_e"] < 1.0 and truth["surface_distance"] < 0.01, truth
    assert code == 0 and report["start_step"] == 597 and report["failures"] == []
    assert all(math.isfinite(v) for v in report["drift"].values())
