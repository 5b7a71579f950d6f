"""Regenerate the sample trajectories in data/trajectories/ (JSON, schema version 1).

Run from the repository root: python data/make_trajectories.py
"""

from pathlib import Path

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import DollyZoom, Trajectory, save_trajectory

H, W, T, FPS = 480, 832, 49, 25
OUT = Path(__file__).parent / "trajectories"


def from_centers_and_rotations(centers, rotations):
    trans = -np.einsum("tij,tj->ti", rotations, centers)
    return np.concatenate([rotations, trans[..., None]], axis=-1)


def main() -> None:
    s = np.linspace(0.0, 1.0, T)
    eye = np.tile(np.eye(3), (T, 1, 1))
    trajs = {}
    # Dolly in: forward along +Z at 0.1 per frame.
    trajs["dolly_in"] = Trajectory.create(
        from_centers_and_rotations(np.stack([0 * s, 0 * s, 4.8 * s], -1), eye), height=H, width=W, fps=FPS)
    # Pan right by 60°, camera in place.
    pan = np.stack([poses.rotation_from_euler_deg(0, 60 * v, 0).T for v in s])
    trajs["pan_right"] = Trajectory.create(from_centers_and_rotations(np.zeros((T, 3)), pan),
                                           height=H, width=W, fps=FPS)
    # Orbit (arc shot) of 90° around a point 4 m ahead.
    ang = np.deg2rad(90 * s)
    centers = np.stack([4 * np.sin(ang), 0 * s, 4 - 4 * np.cos(ang)], -1)
    trajs["orbit_arc"] = Trajectory.create(
        np.stack([poses.look_at_w2c(c, [0, 0, 4]) for c in centers]), height=H, width=W, fps=FPS)
    # Static camera.
    trajs["static"] = Trajectory.create(from_centers_and_rotations(np.zeros((T, 3)), eye), height=H, width=W, fps=FPS)
    # Three shots: truck right, tilt up, dolly out; cuts at frames 16 and 33 (white frames).
    tilt = np.stack([poses.rotation_from_euler_deg(-30 * v, 0, 0).T for v in s])
    w2c = np.concatenate([
        from_centers_and_rotations(np.stack([3 * s, 0 * s, 0 * s], -1), eye)[:16],
        from_centers_and_rotations(np.zeros((T, 3)), tilt)[:17],
        from_centers_and_rotations(np.stack([0 * s, 0 * s, -4 * s], -1), eye)[:16],
    ])
    trajs["three_shots"] = Trajectory.create(w2c, height=H, width=W, fps=FPS, cuts=[16, 33])
    # Fisheye walk-through with a strong Kannala–Brandt lens and a slight yaw.
    yaw = np.stack([poses.rotation_from_euler_deg(0, 20 * v, 0).T for v in s])
    K = poses.default_intrinsics(H, W, focal=0.35 * W)
    trajs["fisheye_walk"] = Trajectory.create(
        from_centers_and_rotations(np.stack([0 * s, 0 * s, 3 * s], -1), yaw), K, height=H, width=W, fps=FPS,
        dist=[0.05, -0.01, 0.002, 0.0])
    # Dolly zoom: camera backs away from a subject 3 m ahead while the focal grows with distance.
    f_ref = 0.8 * W
    trajs["dolly_zoom"] = Trajectory.create(
        from_centers_and_rotations(np.stack([0 * s, 0 * s, -3 * s], -1), eye), height=H, width=W, fps=FPS,
        effect=DollyZoom(subject=(0.0, 0.0, 3.0), f_ref=f_ref))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, traj in trajs.items():
        save_trajectory(traj, OUT / f"{name}.json")
        print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main()
