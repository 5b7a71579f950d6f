"""Parametric camera moves (dolly, truck, pedestal, pan, tilt, roll, orbit, static, multi-shot) for
synthetic videos, the embedded training set and tests.

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


def pedestal(num: int = 49, distance: float = 1.0) -> np.ndarray:
    """Vertical move: positive ``distance`` rises (−Y is up in the OpenCV convention), looking forward."""
    centers = np.linspace(0.0, distance, num)[:, None] * np.array([0.0, -1.0, 0.0])
    return _w2c(np.repeat(np.eye(3)[None], num, 0), centers)


def tilt(num: int = 49, degrees: float = 20.0) -> np.ndarray:
    """Rotation about the camera's horizontal axis at a fixed position (positive: looks down)."""
    rot = np.stack([poses.rotation_from_euler_deg(a, 0.0, 0.0) for a in np.linspace(0.0, degrees, num)])
    return _w2c(rot, np.zeros((num, 3)))


def roll(num: int = 49, degrees: float = 20.0) -> np.ndarray:
    """Rotation about the optical axis at a fixed position."""
    rot = np.stack([poses.rotation_from_euler_deg(0.0, 0.0, a) for a in np.linspace(0.0, degrees, num)])
    return _w2c(rot, np.zeros((num, 3)))


def static(num: int = 49) -> np.ndarray:
    """A locked-off camera: the same pose on every frame."""
    return np.tile(np.eye(3, 4), (num, 1, 1))


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


# ------------------------------------------------------------------------------------------ random moves
MOVE_CLASSES = ("dolly", "truck", "pedestal", "pan", "tilt", "roll", "orbit", "static")
RANDOM_CLASSES = (*MOVE_CLASSES, "multi_shot")


def random_move(rng: np.random.Generator, num: int, name: str | None = None) -> tuple[np.ndarray, str, str]:
    """One single-shot move with random direction and amplitude → (w2c (num,3,4), class, description)."""
    name = str(rng.choice(MOVE_CLASSES)) if name is None else name
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if name == "dolly":
        return dolly(num, sign * rng.uniform(0.8, 2.5), rng.uniform(-10, 10)), name, \
            "dollies in" if sign > 0 else "pulls back"
    if name == "truck":
        return truck(num, sign * rng.uniform(0.6, 2.0)), name, "trucks right" if sign > 0 else "trucks left"
    if name == "pedestal":
        return pedestal(num, sign * rng.uniform(0.4, 1.2)), name, "rises" if sign > 0 else "lowers"
    if name == "pan":  # positive pan turns the optical axis towards −X: the camera pans left
        return pan(num, sign * rng.uniform(15, 45)), name, "pans left" if sign > 0 else "pans right"
    if name == "tilt":
        return tilt(num, sign * rng.uniform(10, 30)), name, "tilts down" if sign > 0 else "tilts up"
    if name == "roll":  # positive roll lifts the camera's +X axis (−Y is up): counter-clockwise seen from behind
        return roll(num, sign * rng.uniform(10, 30)), name, "rolls counter-clockwise" if sign > 0 else \
            "rolls clockwise"
    if name == "orbit":
        return orbit(num, sign * rng.uniform(25, 60), rng.uniform(2.0, 4.0), rng.uniform(-0.6, 0.0)), name, \
            "arcs around the centre of the room"
    if name == "static":
        return static(num), name, "stays still"
    raise KeyError(f"unknown move {name!r}; choose from {MOVE_CLASSES}")


def random_trajectory(rng: np.random.Generator, num: int, height: int, width: int, fps: float = 25.0,
                      name: str | None = None) -> tuple[Trajectory, str, list[str], str]:
    """A random trajectory of ``num`` frames: one move, or (class ``multi_shot``) 2–3 moves joined by cut
    frames. Returns (trajectory, class, per-shot classes, a sentence describing the camera)."""
    if name is None:  # multi-shot clips are what the model is for: a third of the draws
        name = "multi_shot" if rng.random() < 1 / 3 else str(rng.choice(MOVE_CLASSES))
    if name != "multi_shot":
        w2c, cls, text = random_move(rng, num, name)
        return Trajectory.create(w2c, height=height, width=width, fps=fps), cls, [cls], f"the camera {text}"
    shots = int(rng.integers(2, 4)) if num >= 3 * 2 + 2 else 2
    if num < 2 * shots + shots - 1:
        raise ValueError(f"a {shots}-shot trajectory needs at least {3 * shots - 1} frames, got {num}")
    body = num - (shots - 1)  # frames left once the cut frames are taken
    lengths = [body // shots + (i < body % shots) for i in range(shots)]
    parts, classes, texts = [], [], []
    for n in lengths:
        w2c, cls, text = random_move(rng, n)
        parts.append(w2c)
        classes.append(cls)
        texts.append(text)
    traj = multi_shot(parts, height, width, fps)
    return traj, name, classes, f"{shots} shots: the camera " + ", then cut, the camera ".join(texts)
