"""Dolly zoom: focal ∝ subject distance, plus the overlays that make the effect readable.

The geometry belongs to the trajectory model (:func:`dolly_zoom_intrinsics`, the subject cube in
``scene.py``); the 2D field-of-view frame and the picture-in-picture tracking view are drawn on the host.
"""

from __future__ import annotations

import cv2
import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory

PIP_SIZE = (108, 192)  # (H, W) of the tracking view, bottom-right


def dolly_zoom_intrinsics(traj: Trajectory) -> np.ndarray:
    """(T, 3, 3): ``f_t = f_ref · d_t / d_0`` with d the camera–subject distance (d_0: first frame)."""
    subject = np.asarray(traj.effect.subject, dtype=np.float64)
    dist = np.linalg.norm(traj.centers() - subject, axis=-1)
    first = traj.shots()[0][0]
    focal = traj.effect.f_ref * dist / max(dist[first], 1e-9)
    K = traj.K.copy()
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal * traj.K[:, 1, 1] / traj.K[:, 0, 0]
    return K


def tracking_trajectory(traj: Trajectory) -> Trajectory:
    """The picture-in-picture cameras: same positions, looking at the subject, fixed focal (no zoom)."""
    h, w = PIP_SIZE
    subject = np.asarray(traj.effect.subject, dtype=np.float64)
    w2c = np.stack([poses.look_at_w2c(c, subject) for c in traj.centers()])
    K = poses.default_intrinsics(h, w, focal=traj.effect.f_ref * w / traj.width)
    return Trajectory.create(w2c, K, height=h, width=w, fps=traj.fps, cuts=traj.cuts)


def draw_dolly_overlays(frames: np.ndarray, traj: Trajectory, pip_frames: np.ndarray | None = None) -> np.ndarray:
    """Draw the field-of-view frame (scaled by f_t / f_ref) and paste the tracking view; returns a copy."""
    out = frames.copy()
    K = traj.intrinsics()
    h, w = traj.height, traj.width
    cut = traj.shot_index() < 0
    for t in range(len(out)):
        if cut[t]:
            continue
        scale = K[t, 0, 0] / traj.effect.f_ref
        half_w, half_h = 0.4 * w * scale, 0.4 * h * scale
        cx, cy = K[t, 0, 2], K[t, 1, 2]
        p0 = (int(round((cx - half_w) * 16)), int(round((cy - half_h) * 16)))
        p1 = (int(round((cx + half_w) * 16)), int(round((cy + half_h) * 16)))
        cv2.rectangle(out[t], p0, p1, (255, 255, 255), 1, cv2.LINE_AA, 4)
        if pip_frames is not None:
            ph, pw = pip_frames.shape[1:3]
            y0, x0 = h - ph - 8, w - pw - 8
            if y0 >= 0 and x0 >= 0:
                out[t, y0:y0 + ph, x0:x0 + pw] = pip_frames[t]
                cv2.rectangle(out[t], (x0 - 1, y0 - 1), (x0 + pw, y0 + ph), (255, 255, 255), 1)
    return out
