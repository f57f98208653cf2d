"""Run-time detection of optional accelerators (tinycudann, nerfacc's kernels, nvdiffrast).

CUDA packages are never imported at module top level: a CPU user must be able to import every
module of the toolkit. An accelerator that imports is not yet one that works: nerfacc compiles its
CUDA kernels on first use (it needs nvcc matching PyTorch's CUDA and ninja), a tinycudann wheel may
be built for another GPU architecture. So each accelerator is *probed* once per process by a tiny
real call on the GPU; if the probe fails, the toolkit falls back to its PyTorch path and prints
one warning line that says what failed and how to fix it.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import torch

from ..config import ConfigError

_warned: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, once per process for the same message."""
    if message not in _warned:
        _warned.add(message)
        print(f"dreamfusion: warning: {message}", file=sys.stderr)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


_results: dict[str, bool] = {}  # accelerator -> did its probe pass
_failures: dict[str, str] = {}  # accelerator -> why its probe failed


def probe(name: str, check: Callable[[], None], fix: str) -> bool:
    """Run `check` (a tiny real call of the accelerator) once; on failure warn and remember why.

    An accelerator that is simply not installed (ImportError) fails silently: that is the normal CPU
    or minimal install. Anything else (a kernel build error, a wrong GPU architecture) is reported.
    """
    if name in _results:
        return _results[name]
    if name in disabled_accelerators():
        _failures[name] = f"{name} is disabled by {DISABLE_ENV}"
        _results[name] = False
        return False
    try:
        check()
        ok = True
    except ImportError as err:
        _failures[name] = f"{name} is not installed ({_first_line(err)})"
        ok = False
    except Exception as err:  # noqa: BLE001 - any failure of the probe means: do not use it
        _failures[name] = f"{name} failed its check ({_first_line(err)})"
        warn(f"{_failures[name]}; using the PyTorch path instead. {fix}")
        ok = False
    _results[name] = ok
    return ok


DISABLE_ENV = "DREAMFUSION_DISABLE"  # e.g. "nerfacc,tinycudann": never probe or use these


def disabled_accelerators() -> set[str]:
    """Accelerators turned off for every process by the environment: a build that failed once (the
    GPU check records it there) is not retried by each later process, nerfacc's JIT build alone
    costing about a minute."""
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


def failure_reason(name: str) -> str | None:
    """Why `name`'s probe failed (None if it passed or never ran)."""
    return _failures.get(name)


def reset_probes() -> None:
    """Forget every probe result (tests)."""
    _results.clear()
    _failures.clear()
    _warned.clear()


# ---- the probes --------------------------------------------------------------------------------------

def _check_tinycudann() -> None:
    import tinycudann as tcnn

    enc = tcnn.Encoding(3, {"otype": "HashGrid", "n_levels": 2, "n_features_per_level": 2, "log2_hashmap_size": 8,
                            "base_resolution": 4, "per_level_scale": 2.0})
    x = torch.rand(16, 3, device="cuda", requires_grad=True)
    features = enc(x).float()
    # analytic normals differentiate the density's gradient w.r.t. x again: the second-order backward
    (grad_x,) = torch.autograd.grad(features.square().sum(), x, create_graph=True)
    (features.sum() + grad_x.square().sum()).backward()
    if not all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters()):
        raise RuntimeError("tinycudann's second-order backward gave no finite parameter gradient")
    torch.cuda.synchronize()


def _check_nerfacc() -> None:
    import nerfacc

    est = nerfacc.OccGridEstimator(roi_aabb=torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=8, levels=1).cuda()
    est.train()
    est.update_every_n_steps(step=0, occ_eval_fn=lambda x: torch.ones_like(x[:, 0]), occ_thre=0.01, n=1)
    origins = torch.zeros(4, 3, device="cuda") + torch.tensor([0.0, 0.0, -2.0], device="cuda")
    dirs = torch.tensor([[0.0, 0.0, 1.0]], device="cuda").expand(4, 3).contiguous()
    ray_indices, t_starts, t_ends = est.sampling(origins, dirs, render_step_size=0.1)
    sigma = torch.ones_like(t_starts, requires_grad=True)
    weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigma, ray_indices=ray_indices, n_rays=4)
    weights.sum().backward()
    torch.cuda.synchronize()


def _check_nvdiffrast() -> None:
    from ..render.nvdiffrast_raster import check_nvdiffrast

    check_nvdiffrast()


_FIX_BUILD = "It builds CUDA code: install nvcc matching torch.version.cuda ({cuda}) and ninja, then rerun"


def tinycudann_available() -> bool:
    """tinycudann imports and runs a tiny hash-grid forward/backward on this GPU."""
    if not torch.cuda.is_available():
        return False
    fix = ("Rebuild it for this GPU (TCNN_CUDA_ARCHITECTURES) as README's GPU section says, "
           "or set field.encoding_backend=torch to silence this.")
    return probe("tinycudann", _check_tinycudann, fix)


def nerfacc_cuda_available() -> bool:
    """nerfacc imports and its CUDA kernels build and run (sampling + weights, forward and backward)."""
    if not torch.cuda.is_available():
        return False
    fix = _FIX_BUILD.format(cuda=torch.version.cuda) + ", or set render.backend=dense to silence this."
    return probe("nerfacc", _check_nerfacc, fix)


def nvdiffrast_available() -> bool:
    """nvdiffrast imports and rasterizes a triangle on this GPU."""
    if not torch.cuda.is_available():
        return False
    fix = _FIX_BUILD.format(cuda=torch.version.cuda) + ", or set fine.dmtet.rasterizer=torch to silence this."
    return probe("nvdiffrast", _check_nvdiffrast, fix)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → cuda when available, else cpu. Asking for cuda where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
