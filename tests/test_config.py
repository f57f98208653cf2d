import pytest

from dreamfusion.cameras import generate_rays, turntable
from dreamfusion.config import ConfigError, build
from dreamfusion.render.renderer import RenderConfig
from dreamfusion.scene import SceneConfig


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"Unknown config key 'render\.n_sample'; did you mean 'n_samples'\?"):
        build(SceneConfig, {"render": {"n_sample": 32}})


@pytest.mark.parametrize(
    "data,key",
    [({"render": {"n_samples": 0}}, "render.n_samples"),
     ({"render": {"occupancy": {"resolution": -4}}}, "render.occupancy.resolution"),
     ({"field": {"encoding": {"base_resolution": 0}}}, "field.encoding.base_resolution"),
     ({"field": {"encoding": {"otype": "Frequency"}}}, "field.encoding.otype"),
     ({"field": {"hidden_dim": "wide"}}, "field.hidden_dim"),
     ({"light": {"distance_range": [2.0, 1.0]}}, "light.distance_range")],
)
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(SceneConfig, data)


def test_non_positive_image_size_is_refused():
    with pytest.raises(ConfigError, match="image size"):
        generate_rays(turntable(1), 0, 16)


def test_round_trip_through_plain_data():
    from dreamfusion.config import to_dict

    cfg = build(SceneConfig, {"render": {"n_samples": 48}, "camera": {"fovy_range": [30, 40]}})
    again = build(SceneConfig, to_dict(cfg))
    assert again == cfg and again.camera.fovy_range == (30.0, 40.0)
    assert build(RenderConfig, {}).n_samples == 64


def test_a_colour_gate_outside_the_timesteps_is_refused():
    from dreamfusion.run_config import load_run_config

    with pytest.raises(ConfigError, match=r"train\.colour_t_max\.end must be in \(0, 1\]"):
        load_run_config(None, ["train.colour_t_max={start: 1.0, end: 0.0}"], {"prompt": "a red cube"})
