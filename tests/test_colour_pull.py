"""The colour pull (eval/colour_pull.py): the true geometry with one free albedo, scored by the run's
SDS. Its renders are the prior's training renders, and it tells matched shading from mismatched."""
import json

import pytest
import torch

from dreamfusion.cameras import sample_cameras
from dreamfusion.cli.colour_pull import main as colour_pull_main
from dreamfusion.cli.errors import run_cli
from dreamfusion.eval.colour_pull import shaded_geometry
from dreamfusion.toyworld.dataset import TOY_CAMERAS, TOY_LIGHTS
from dreamfusion.toyworld.scenes import ToyRenderConfig, render_object
from dreamfusion.toyworld.vocabulary import COLOURS

FAST = ["--steps", "60", "--lr", "0.1", "--lambertian-prob", "1.0", "guidance.embedding_cache=null"]
DARK_LIGHT = ["light.ambient=0.3", "light.diffuse=0.0"]  # every lit render 0.3 x the albedo: far darker than the prior's


@pytest.mark.parametrize("shape,colour", [("sphere", "blue"), ("cube", "red"), ("torus", "green")])
def test_the_pull_renders_exactly_what_the_prior_was_trained_on(shape, colour):
    cams = sample_cameras(TOY_CAMERAS, 4, torch.Generator().manual_seed(3))
    cfg = ToyRenderConfig(resolution=16, lambertian_prob=0.5)
    truth, _ = render_object(shape, colour, cams, cfg, TOY_LIGHTS, torch.Generator().manual_seed(7))
    ours = shaded_geometry(shape, cams, cfg, TOY_LIGHTS, torch.Generator().manual_seed(7)).image(torch.tensor(COLOURS[colour]))
    assert (ours - truth).abs().max() < 1e-5


def test_dim_shading_pulls_the_colour_away_and_the_command_says_so(capsys):
    matched_code = colour_pull_main(["--prompt", "a red cube", *FAST])
    matched = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    dim_code = colour_pull_main(["--prompt", "a red cube", *FAST, *DARK_LIGHT])
    captured = capsys.readouterr()
    dim = json.loads(captured.out.strip().splitlines()[-1])
    # the prior sees a dim red cube and brightens and saturates its albedo (ΔE 18 against 2 matched)
    assert dim["delta_lightness"] > matched["delta_lightness"] + 4.0 and dim["delta_e"] > matched["delta_e"] + 8.0
    assert dim_code == 1 and not dim["settled"] and "settles ΔE" in captured.err
    assert matched_code == (0 if matched["settled"] else 1)


def test_renders_scored_above_colour_t_max_leave_the_colour(capsys):
    """train.colour_t_max gates the harness as it gates a run: below the t range nothing teaches colour."""
    grey = ["--prompt", "a red cube", "--start", "0.5,0.5,0.5", "--steps", "20"]
    colour_pull_main([*grey, *FAST[2:], "train.colour_t_max={start: 0.01, end: 0.01}"])  # every t is drawn from [0.02, 0.98]
    gated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    colour_pull_main([*grey, *FAST[2:], "train.colour_t_max={start: 1.0, end: 1.0}"])
    taught = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert gated["final"] == gated["start"] == [0.5, 0.5, 0.5]
    assert max(abs(a - b) for a, b in zip(taught["final"], taught["start"])) > 0.05


def test_the_scan_shows_dim_shading_pulling_every_brightness_up(capsys):
    """--scan: the prior's mean pull along the palette colour; lit renders at 0.3 x the albedo look too
    dark at every k, so the prior pulls brighter than it does for matched renders."""
    scan = ["--prompt", "a red cube", "--scan", "--steps", "8", "--lambertian-prob", "1.0", "guidance.embedding_cache=null"]
    assert colour_pull_main(scan) == 0
    matched = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert colour_pull_main([*scan, *DARK_LIGHT]) == 0
    dim = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert matched["scales"] == [0.4, 0.6, 0.8, 0.9, 1.0, 1.1]
    assert all(d > m for d, m in zip(dim["pulls"], matched["pulls"])), (dim, matched)
    assert matched["pulls"][0] > 0 > matched["pulls"][-1]  # matched: brighter from below, darker from above


def test_the_scan_shows_the_prior_holding_a_red_cube_and_fading_a_white_one(capsys):
    """--scan's opacity pull: the bundled prior wants more of the exact red cube (positive) and less of
    the exact white cube (negative, at every brightness near its palette): it would rather show the grey
    background than a white cube, which is why runs lose white cubes (docs/toy-world.md)."""
    scan = ["--scan", "--steps", "8", "guidance.embedding_cache=null"]
    pulls = {}
    for prompt in ("a red cube", "a white cube"):
        assert colour_pull_main(["--prompt", prompt, *scan]) == 0
        out = capsys.readouterr().out
        assert "opacity:" in out
        pulls[prompt] = json.loads(out.strip().splitlines()[-1])["opacity_pulls"]
    near_palette = slice(2, 5)  # k = 0.8, 0.9, 1.0
    assert all(p > 0 for p in pulls["a red cube"][near_palette]), pulls
    assert all(p < 0 for p in pulls["a white cube"][near_palette]), pulls


def test_a_bad_start_colour_is_one_sentence(capsys):
    assert run_cli(colour_pull_main, ["--prompt", "a red cube", "--start", "red"], prog="colour_pull") == 2
    err = capsys.readouterr().err
    assert "--start must be palette, grey or three numbers" in err and "Traceback" not in err
