"""3D Gaussian splatting as a representation (DreamGaussian / GaussianDreamer's coarse stage).

config.py the options (`representation: {type: gaussians, ...}`); model.py the parameters and
their geometry (covariances, normals); splat.py the differentiable renderer in pure PyTorch
(project, tile, sort by depth, composite front to back with early termination), gsplat_backend.py
gsplat's CUDA rasterizer behind a probe; densify.py clone / split / prune on a schedule;
volume.py the Gaussians as density and albedo queries (mesh export, turntable, the DMTet's
hand-over); scene.py the Representation the trainer sees.
"""
