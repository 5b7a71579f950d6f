"""Camera math and trajectory files: conversions, SLERP densification, validation that names the problem."""

import json

import numpy as np
import pytest

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory, load_trajectory, save_trajectory
from omnidirector_jax.errors import TrajectoryError


def _random_w2c(rng, n):
    rot = poses.project_to_so3(rng.normal(size=(n, 3, 3)))
    return np.concatenate([rot, rng.normal(size=(n, 3, 1))], axis=-1)


def test_invert_and_centres_roundtrip():
    rng = np.random.default_rng(0)
    w2c = _random_w2c(rng, 5)
    c2w = poses.invert(w2c)
    np.testing.assert_allclose(poses.to_4x4(c2w) @ poses.to_4x4(w2c), np.tile(np.eye(4), (5, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(poses.camera_centers(w2c), c2w[:, :, 3], atol=1e-12)
    rel = poses.relative(w2c[0], w2c[1])
    np.testing.assert_allclose(rel @ poses.to_4x4(w2c[0]), poses.to_4x4(w2c[1]), atol=1e-12)


def test_project_to_so3_and_angles():
    rng = np.random.default_rng(1)
    rot = poses.project_to_so3(rng.normal(size=(10, 3, 3)))
    np.testing.assert_allclose(np.swapaxes(rot, 1, 2) @ rot, np.tile(np.eye(3), (10, 1, 1)), atol=1e-12)
    assert np.all(np.linalg.det(rot) > 0)
    r = poses.rotation_from_euler_deg(10.0, -25.0, 5.0)
    np.testing.assert_allclose(poses.euler_xyz_deg(r), [10.0, -25.0, 5.0], atol=1e-9)
    assert poses.rotation_angle_deg(poses.rotation_from_euler_deg(0, 30, 0)) == pytest.approx(30.0)


def test_densify_slerp_matches_constant_rate_rotation():
    # A camera turning 4° per frame sampled every 3rd frame: SLERP recovers the in-between frames exactly.
    frames = 13
    yaw = np.arange(frames) * 4.0
    rots = np.stack([poses.rotation_from_euler_deg(0, a, 0) for a in yaw])
    centers = np.stack([np.arange(frames) * 0.1, np.zeros(frames), np.zeros(frames)], -1)
    w2c = np.concatenate([rots, -np.einsum("tij,tj->ti", rots, centers)[..., None]], -1)
    dense, _ = poses.densify(w2c[::3], 3)
    np.testing.assert_allclose(dense, w2c, atol=1e-9)


def test_default_intrinsics():
    K = poses.default_intrinsics(480, 832)
    assert K[0, 0] == K[1, 1] == pytest.approx(0.8 * 832)
    assert (K[0, 2], K[1, 2]) == (415.5, 239.5)


def test_json_and_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    traj = Trajectory.create(_random_w2c(rng, 6), height=48, width=64, cuts=[2], dist=[0.1, 0.0, 0.0, 0.0])
    for name in ("t.json", "t.npz"):
        save_trajectory(traj, tmp_path / name)
        back = load_trajectory(tmp_path / name)
        np.testing.assert_allclose(back.w2c, traj.w2c, atol=1e-8)
        np.testing.assert_allclose(back.K, traj.K, atol=1e-5)
        assert back.cuts == (2,) and (back.height, back.width) == (48, 64)
        assert back.shots() == [(0, 2), (3, 6)]


def test_npz_with_stride_is_densified(tmp_path):
    rng = np.random.default_rng(3)
    w2c = _random_w2c(rng, 4)
    K = np.tile(poses.default_intrinsics(90, 160), (4, 1, 1))
    np.savez(tmp_path / "p.npz", extrinsics=w2c, intrinsics=K, stride=np.array(5))
    traj = load_trajectory(tmp_path / "p.npz")
    assert traj.num_frames == 16 and (traj.height, traj.width) == (90, 160)
    np.testing.assert_allclose(traj.w2c[::5], w2c, atol=1e-9)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(w2c=d["w2c"][:1]), "at least 2 frames"),
    (lambda d: d.update(w2c=[[[1, 0, 0]]] * 3), "shape"),
    (lambda d: d["w2c"][1][0].__setitem__(3, float("nan")), "non-finite"),
    (lambda d: d["w2c"][1][0].__setitem__(0, 2.0), "not a rotation"),
    (lambda d: d.update(cuts=[7]), "out of range"),
    (lambda d: d.update(cuts=[2, 1]), "sorted"),
    (lambda d: d.update(K=[[1, 0], [0, 1]]), "K must have shape"),
    (lambda d: d.update(version=3), "version"),
    (lambda d: d.update(colour="red"), "unknown key"),
])
def test_bad_trajectories_name_the_problem(tmp_path, edit, message):
    data = {"version": 1, "height": 48, "width": 64,
            "w2c": [np.eye(4)[:3].tolist() for _ in range(4)]}
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TrajectoryError, match=message):
        load_trajectory(path)
