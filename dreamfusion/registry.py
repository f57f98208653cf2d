"""The representations a run config can name (`representation: {type: NAME}`), by name.

Each entry is "module:Class" and is imported only when a run names it, so the registry costs no
import (and no CUDA probe) for the representations a run does not use. A new representation is
one package implementing representation.Representation and one line here.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Mapping

from .config import ConfigError, build

if TYPE_CHECKING:
    from .representation import Representation

REPRESENTATIONS: dict[str, str] = {
    "nerf": "dreamfusion.scene:Scene",  # DreamFusion's coarse stage: hash-grid NeRF, volume rendered
    "dmtet": "dreamfusion.dmtet.scene:DMTetScene",  # Magic3D's fine stage: a textured DMTet mesh
    "gaussians": "dreamfusion.gaussians.scene:GaussianScene",  # DreamGaussian's: 3D Gaussian splatting
}
COARSE_DEFAULT = "nerf"
FINE_DEFAULT = "dmtet"


def representation_class(name: str) -> type["Representation"]:
    """The class registered as `name`; ConfigError naming the known ones otherwise."""
    if name not in REPRESENTATIONS:
        known = ", ".join(sorted(REPRESENTATIONS))
        raise ConfigError(f"representation.type must be one of {known}, got {name!r}")
    module, _, cls = REPRESENTATIONS[name].partition(":")
    return getattr(import_module(module), cls)


def representation_options(section: Mapping[str, Any] | None, prefix: str = "representation") -> tuple[type["Representation"], Any]:
    """(class, its options) of a config's representation section, `{type: NAME, ...options}` (the
    run config turns a bare NAME into that), the options built strictly into the class's
    `options_type` (an unknown key stops the run naming the nearest one). A representation without
    options (the NeRF, whose settings are the top-level field/render/background sections) refuses any."""
    data = dict(section or {})
    name = data.pop("type", COARSE_DEFAULT)
    cls = representation_class(name)
    if cls.options_type is None:
        if data:
            raise ConfigError(f"{prefix} '{name}' takes no options ({', '.join(map(str, data))}); "
                              f"its settings are the config's own sections (to switch to it, replace the whole section: {prefix}={name})")
        return cls, None
    return cls, build(cls.options_type, data, prefix=prefix)
