"""Where the bundled data lives: the recipes (configs/), the toy prior (assets/toy_prior), the prompts (data/).

In a source checkout or an editable install they are the repository's top-level folders; a wheel
(non-editable install) carries them inside the package as `dreamfusion/configs` and
`dreamfusion/assets` and `dreamfusion/data` (setup.py maps the folders there), so the default run works without the
repository. Outputs go to ./outputs of the current folder unless --workspace says otherwise.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
DEFAULT_OUTPUTS = Path("outputs")


def data_dir(name: str) -> Path:
    """The folder `name` ('configs', 'assets' or 'data'): inside the installed package, else the repository's."""
    installed = PACKAGE / name
    return installed if installed.is_dir() else PACKAGE.parent / name


def bundled(relative: str | Path) -> Path | None:
    """A path relative to the repository root ('assets/toy_prior', 'configs/toy.yaml') resolved to the
    bundled copy, or None when it is not a bundled file."""
    parts = Path(relative).parts
    if not parts or parts[0] not in ("configs", "assets", "data"):
        return None
    path = data_dir(parts[0]).joinpath(*parts[1:])
    return path if path.exists() else None


def default_config() -> Path:
    """The recipe dream.py runs without --config: 3D Gaussians, then the DMTet, on the bundled prior.
    It beat the NeRF recipe (configs/toy.yaml) on every judged column of the toy suite (README)."""
    return data_dir("configs") / "toy-gaussians.yaml"
