"""Parametric camera moves (dolly, pan, orbit, truck, multi-shot) for synthetic videos and tests.

All in the OpenCV convention (+Y down, +Z forward) with the default intrinsics of the design
(``f = 0.8 · max(W, H)``), world units in metres.
"""

from __future__ import annotations

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory


def _w2c(rotations: np.ndarray, centers: np.ndarray) -> np.ndarray:
    trans = -np.einsum("tij,tj->ti", rotations, centers)
    return np.concatenate([rotations, trans[..., None]], axis=-1)


def dolly(num: int = 49, distance: float = 2.0, tilt_deg: float = 0.0) -> np.ndarray:
    """Straight forward move along the optical axis (optionally looking slightly down)."""
    rot = np.repeat(poses.rotation_from_euler_deg(tilt_deg, 0.0, 0.0)[None], num, 0)
    forward = rot[0][2]
    centers = np.linspace(0.0, distance, num)[:, None] * forward
    return _w2c(rot, centers)


def pan(num: int = 49, degrees: float = 30.0) -> np.ndarray:
    """Rotation about the vertical axis at a fixed position (no translation at all)."""
    rot = np.stack([poses.rotation_from_euler_deg(0.0, a, 0.0) for a in np.linspace(0.0, degrees, num)])
    return _w2c(rot, np.zeros((num, 3)))


def truck(num: int = 49, distance: float = 1.5) -> np.ndarray:
    """Sideways move to the right, looking forward."""
    centers = np.linspace(0.0, distance, num)[:, None] * np.array([1.0, 0.0, 0.0])
    return _w2c(np.repeat(np.eye(3)[None], num, 0), centers)


def orbit(num: int = 49, degrees: float = 50.0, radius: float = 3.0, height: float = -0.3) -> np.ndarray:
    """Arc around a target ``radius`` ahead of the first camera, always looking at it."""
    target = np.array([0.0, 0.0, radius])
    out = []
    for a in np.radians(np.linspace(0.0, degrees, num)):
        eye = target + radius * np.array([-np.sin(a), 0.0, -np.cos(a)]) + np.array([0.0, height, 0.0])
        out.append(poses.look_at_w2c(eye, target))
    return np.stack(out)


def multi_shot(parts: list[np.ndarray], height: int, width: int, fps: float = 25.0) -> Trajectory:
    """Concatenate shots with one transition frame between consecutive shots (its pose is ignored)."""
    frames, cuts = [], []
    for i, part in enumerate(parts):
        if i:
            cuts.append(sum(len(p) for p in frames))
            frames.append(part[:1])  # placeholder pose for the cut frame
        frames.append(part)
    return Trajectory.create(np.concatenate(frames), height=height, width=width, fps=fps, cuts=cuts)


NAMES = ("dolly", "pan", "orbit", "truck", "three_shot")


def named(name: str, height: int = 144, width: int = 256, num: int = 49) -> Trajectory:
    """The standard test moves by name: dolly, pan, orbit, truck, three_shot (≥ ``num`` frames in all:
    three shots of equal length and two cut frames)."""
    if name == "three_shot":
        per = max(-(-(num - 2) // 3), 8)
        return multi_shot([dolly(per, 1.5), truck(per, 1.2), orbit(per, 40.0)], height, width)
    makers = {"dolly": dolly, "pan": pan, "orbit": orbit, "truck": truck}
    if name not in makers:
        raise KeyError(f"unknown sample trajectory {name!r}; choose from {sorted([*makers, 'three_shot'])}")
    return Trajectory.create(makers[name](num), height=height, width=width)
