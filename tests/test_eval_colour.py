"""The evaluator sees colour as a person does: CIE Lab distance of the texture's mean to the truth."""
import numpy as np
import pytest
import torch
import trimesh

from dreamfusion.eval.colour import colour_difference, mean_texture_colour, srgb_to_lab, true_mean_albedo
from dreamfusion.eval.toy import evaluate_mesh
from dreamfusion.export import ExportConfig, write_textured_mesh
from dreamfusion.toyworld.vocabulary import COLOURS


def textured_sphere(folder, rgb):
    """A sphere exported through the real exporter (UV atlas, baked texture, obj/glb/ply) in one colour."""
    colour = torch.tensor(rgb, dtype=torch.float32)
    mesh = trimesh.creation.icosphere(3, 0.5)
    write_textured_mesh(mesh, lambda x, _n: colour.expand(x.shape[0], 3), torch.device("cpu"), folder,
                        ExportConfig(texture_size=128), progress=False)
    return folder


def test_lab_of_known_colours():
    assert np.allclose(srgb_to_lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=1e-3)
    assert np.allclose(srgb_to_lab(np.array([0.0, 0.0, 0.0])), [0, 0, 0], atol=1e-6)
    assert np.allclose(srgb_to_lab(np.array([1.0, 0.0, 0.0])), [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, D65


def test_exact_palette_texture_is_within_one_delta_e_and_half_brightness_is_far(tmp_path):
    red = np.array(COLOURS["red"])
    exact = evaluate_mesh(textured_sphere(tmp_path / "exact", red), "sphere", "red")
    assert exact.delta_e < 1.0 and exact.colour == "red"
    dark = evaluate_mesh(textured_sphere(tmp_path / "dark", red / 2), "sphere", "red")
    assert dark.delta_e > 20.0 and dark.delta_lightness < -15.0  # too dark, and the lightness says so
    assert dark.colour == "red"  # hue alone still calls it red: that is why ΔE is reported


def test_lightness_and_chroma_tell_dark_from_saturated():
    red = np.array(COLOURS["red"])
    saturated = colour_difference(np.array([0.95, 0.0, 0.0]), red)
    assert saturated.delta_chroma > 5.0 and abs(saturated.delta_lightness) < 5.0
    assert colour_difference(red * 0.4, red).delta_lightness < -20.0


def test_a_grey_is_not_judged_white(tmp_path):
    white = evaluate_mesh(textured_sphere(tmp_path / "white", COLOURS["white"]), "sphere", "white")
    grey = evaluate_mesh(textured_sphere(tmp_path / "grey", (0.46, 0.34, 0.38)), "sphere", "white")
    assert white.colour == "white" and white.delta_e < 1.0
    assert grey.colour == "grey" and grey.delta_e > 40.0


def test_texture_mean_reads_the_texture_not_the_vertices(tmp_path):
    """Half the sphere red, half blue: the mean is the area mix, from the baked texture."""
    red, blue = torch.tensor(COLOURS["red"]), torch.tensor(COLOURS["blue"])
    mesh = trimesh.creation.icosphere(4, 0.5)
    write_textured_mesh(mesh, lambda x, _n: torch.where(x[:, :1] > 0, red, blue), torch.device("cpu"), tmp_path,
                        ExportConfig(texture_size=256, formats=("obj",)), progress=False)
    assert np.allclose(mean_texture_colour(tmp_path), (red + blue).numpy() / 2, atol=0.02)


@pytest.mark.parametrize("shape", ["sphere", "marked cube"])
def test_true_mean_albedo(shape):
    mean = np.array(true_mean_albedo(shape, "blue"))
    if shape == "sphere":
        assert np.allclose(mean, COLOURS["blue"])
    else:  # the light mark covers part of one face: lighter than the body, still blue
        assert np.all(mean >= np.array(COLOURS["blue"]) - 1e-6) and 0 < colour_difference(mean, np.array(COLOURS["blue"])).delta_e < 15
