"""From a :class:`Trajectory` to camera-grid frames: the host-side entry point of the JAX rasterizer."""

from __future__ import annotations

import numpy as np

from omnidirector_jax.camera import raster
from omnidirector_jax.camera.scene import DEFAULT_COLORS, GridConfig, Scene, build_scene, scene_arrays
from omnidirector_jax.camera.trajectory import Trajectory


def camera_arrays(traj: Trajectory, scene: Scene) -> dict[str, np.ndarray]:
    """Per-frame camera inputs of :func:`raster.render_frames` (float32 / int32 host arrays)."""
    shot = traj.shot_index()
    safe = np.maximum(shot, 0)
    dist = traj.dist if traj.dist is not None else np.zeros((traj.num_frames, 4))
    return {"w2c": traj.w2c.astype(np.float32), "K": traj.intrinsics().astype(np.float32),
            "dist": dist.astype(np.float32), "shot": shot.astype(np.int32),
            "spacing": scene.spacing[safe].astype(np.float32), "view": scene.view[safe].astype(np.float32)}


def render_grid(traj: Trajectory, *, grid: GridConfig = GridConfig(), cfg: raster.RasterConfig | None = None,
                colors: np.ndarray | None = None, scene: Scene | None = None,
                return_overflow: bool = False):
    """Render the camera grid of ``traj`` at its own size → (T, H, W, 3) uint8 (JAX rasterizer).

    Use ``traj.resized(h, w)`` for another size. Dolly-zoom overlays are added by
    :func:`omnidirector_jax.camera.effects.draw_dolly_overlays`, not here.
    """
    cfg = cfg or raster.RasterConfig()
    scene = scene or build_scene(traj, grid)
    colors = DEFAULT_COLORS if colors is None else np.asarray(colors, np.float32)
    frames, overflow = raster.render_frames(scene_arrays(scene), camera_arrays(traj, scene), colors,
                                            height=traj.height, width=traj.width, cfg=cfg,
                                            fisheye=traj.is_fisheye)
    out = np.asarray(raster.to_uint8(frames))
    return (out, np.asarray(overflow)) if return_overflow else out


def render_trajectory(traj: Trajectory, *, backend: str = "jax", grid: GridConfig = GridConfig(),
                      cfg: raster.RasterConfig | None = None, scene: Scene | None = None) -> np.ndarray:
    """Camera-grid video of ``traj`` with its effect overlays: (T, H, W, 3) uint8.

    ``backend``: ``jax`` (the rasterizer) or ``opencv`` (the NumPy/OpenCV reference renderer).
    """
    scene = scene or build_scene(traj, grid)
    if backend == "jax":
        frames = render_grid(traj, cfg=cfg, scene=scene)
    elif backend == "opencv":
        from omnidirector_jax.camera.reference import render_grid_reference

        line_width = None if cfg is None else cfg.line_width
        frames = render_grid_reference(traj, scene=scene, line_width=line_width)
    else:
        raise ValueError(f"unknown backend {backend!r} (expected 'jax' or 'opencv')")
    if traj.effect is None:
        return frames
    from omnidirector_jax.camera import effects

    pip = effects.tracking_trajectory(traj)
    pip_frames = render_grid(pip, scene=scene) if backend == "jax" else render_trajectory(
        pip, backend=backend, scene=scene)
    return effects.draw_dolly_overlays(frames, traj, pip_frames)
