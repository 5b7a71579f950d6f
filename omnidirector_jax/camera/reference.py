"""The oracle: a NumPy/OpenCV renderer of the same camera grid, segment by segment with ``cv2.line``.

It shares only the scene (the room's 3D segments) with the JAX rasterizer; culling, clipping, projection
(``cv2.projectPoints`` / ``cv2.fisheye.projectPoints``) and drawing (``cv2.line`` with ``LINE_AA`` and
``shift=4``) are its own, in float64. Families are drawn in order X, Z, vertical.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from omnidirector_jax.camera.scene import DEFAULT_COLORS, GridConfig, Scene, build_scene, default_line_width
from omnidirector_jax.camera.trajectory import Trajectory

_SHIFT = 4


def _clip_rect(a: np.ndarray, b: np.ndarray, lo: float, hi_x: float, hi_y: float):
    """Liang–Barsky on arrays of 2D segments (N, 2); returns clipped ends and a keep mask."""
    d = b - a
    t0, t1 = np.zeros(len(a)), np.ones(len(a))
    keep = np.ones(len(a), bool)
    for axis, hi in ((0, hi_x), (1, hi_y)):
        da = d[:, axis]
        flat = np.abs(da) <= 1e-12
        keep &= ~flat | ((a[:, axis] >= lo) & (a[:, axis] <= hi))
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (lo - a[:, axis]) / da, (hi - a[:, axis]) / da
        t0 = np.where(flat, t0, np.maximum(t0, np.minimum(ta, tb)))
        t1 = np.where(flat, t1, np.minimum(t1, np.maximum(ta, tb)))
    keep &= t0 <= t1
    return a + d * t0[:, None], a + d * t1[:, None], keep


def _project(pts: np.ndarray, K: np.ndarray, dist: np.ndarray | None) -> np.ndarray:
    obj = pts.reshape(-1, 1, 3).astype(np.float64)
    zero = np.zeros(3)
    if dist is None:
        out, _ = cv2.projectPoints(obj, zero, zero, K.astype(np.float64), None)
    else:
        out, _ = cv2.fisheye.projectPoints(obj, zero, zero, K.astype(np.float64), dist.astype(np.float64))
    return out.reshape(pts.shape[:-1] + (2,))


def render_frame_reference(scene: Scene, w2c: np.ndarray, K: np.ndarray, dist: np.ndarray | None, shot: int,
                           height: int, width: int, line_width: float | None = None, near: float = 0.1,
                           fog_cutoff: float = 0.05, fisheye_pieces: int = 16,
                           colors: np.ndarray = DEFAULT_COLORS) -> np.ndarray:
    """One frame (H, W, 3) uint8; ``shot < 0`` gives a white cut frame."""
    img = np.zeros((height, width, 3), np.uint8)
    if shot < 0:
        return img + 255
    g, v = float(scene.spacing[shot]), float(scene.view[shot])
    base = line_width if line_width is not None else default_line_width(width)
    margin = math.ceil(base) + 3.0
    rot, trans = np.asarray(w2c[:3, :3], np.float64), np.asarray(w2c[:3, 3], np.float64)
    idx = np.flatnonzero(scene.valid & (scene.shot == shot))  # already in family (drawing) order
    cam = scene.segments[idx].astype(np.float64) @ rot.T + trans  # (N, 2, 3)
    mid = cam.mean(axis=1)
    dmid = np.linalg.norm(mid, axis=-1)
    fog = np.clip(1.0 - dmid / v, 0.0, 1.0)
    p0, p1 = cam[:, 0], cam[:, 1]
    keep = (mid[:, 2] > -max(g, 1.0)) & (dmid < v) & (fog >= fog_cutoff) & ((p0[:, 2] >= near) | (p1[:, 2] >= near))
    idx, p0, p1, fog = idx[keep], p0[keep], p1[keep], fog[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.clip((near - p0[:, 2]) / (p1[:, 2] - p0[:, 2]), 0.0, 1.0)[:, None]
    hit = p0 + (p1 - p0) * s
    p0 = np.where((p0[:, 2] < near)[:, None], hit, p0)
    p1 = np.where((p1[:, 2] < near)[:, None], hit, p1)
    pieces = 1 if dist is None else fisheye_pieces
    steps = np.linspace(0.0, 1.0, pieces + 1)[None, :, None]
    uv = _project(p0[:, None] + (p1 - p0)[:, None] * steps, K, dist)  # (N, pieces + 1, 2)
    a, b = uv[:, :-1].reshape(-1, 2), uv[:, 1:].reshape(-1, 2)
    a, b, inside = _clip_rect(a, b, -margin, width - 1 + margin, height - 1 + margin)
    thickness = np.maximum(1, np.round(base * fog)).astype(int)
    colour = np.round(fog[:, None] * 255.0 * colors[scene.family[idx]])
    inside = np.flatnonzero(inside)
    qa = np.round(a[inside] * (1 << _SHIFT)).astype(np.int64)
    qb = np.round(b[inside] * (1 << _SHIFT)).astype(np.int64)
    for j, k in enumerate(inside):
        i = k // pieces
        cv2.line(img, (int(qa[j, 0]), int(qa[j, 1])), (int(qb[j, 0]), int(qb[j, 1])),
                 tuple(float(c) for c in colour[i]), int(thickness[i]), cv2.LINE_AA, _SHIFT)
    return img


def render_grid_reference(traj: Trajectory, grid: GridConfig = GridConfig(), scene: Scene | None = None,
                          **kwargs) -> np.ndarray:
    """All frames (T, H, W, 3) uint8 with OpenCV; kwargs as in :func:`render_frame_reference`."""
    scene = scene or build_scene(traj, grid)
    K = traj.intrinsics()
    shot = traj.shot_index()
    return np.stack([
        render_frame_reference(scene, traj.w2c[t], K[t], None if traj.dist is None else traj.dist[t],
                               int(shot[t]), traj.height, traj.width, **kwargs)
        for t in range(traj.num_frames)])
