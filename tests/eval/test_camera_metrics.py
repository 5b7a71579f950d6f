"""Camera metrics against hand-computed cases: known rotations, translations, cuts."""

import json

import numpy as np
import pytest

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory, save_trajectory
from omnidirector_jax.cli import main
from omnidirector_jax.errors import TrajectoryError
from omnidirector_jax.eval.camera_metrics import (
    MetricConfig,
    camera_metrics,
    relative_to_first,
    temporal_precision,
    translation_errors,
)

H, W = 90, 160


def rot_y(deg: float) -> np.ndarray:
    return poses.rotation_from_euler_deg(0.0, deg, 0.0)


def traj_from(rotations, centers, cuts=()) -> Trajectory:
    rotations = np.asarray(rotations, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    t = -np.einsum("tij,tj->ti", rotations, centers)
    return Trajectory.create(np.concatenate([rotations, t[..., None]], -1), height=H, width=W, cuts=cuts)


def forward(n: int, direction=(0.0, 0.0, 1.0), yaw_per_frame: float = 0.0) -> Trajectory:
    rots = [rot_y(i * yaw_per_frame) for i in range(n)]
    centers = np.arange(n)[:, None] * np.asarray(direction, dtype=np.float64)
    return traj_from(rots, centers)


def test_identical_trajectories_score_perfectly():
    ref = forward(20, yaw_per_frame=1.5)
    m = camera_metrics(ref, ref)
    assert m.rre == pytest.approx(0.0, abs=1e-6) and m.rte == pytest.approx(0.0, abs=1e-6)
    assert (m.r_pre, m.t_pre, m.tem_pre) == (1.0, 1.0, 1.0)
    assert np.isnan(m.rre_per_frame[0])  # the alignment frame itself is not counted


def test_rre_of_a_known_rotation_drift():
    # Reference never turns; the generated camera yaws 1° per frame: RRE of frame i is exactly i degrees.
    n = 11
    ref, gen = forward(n), forward(n, yaw_per_frame=1.0)
    m = camera_metrics(ref, gen)
    np.testing.assert_allclose(m.rre_per_frame[1:], np.arange(1, n), atol=1e-6)
    assert m.rre == pytest.approx(np.mean(np.arange(1, n)))
    # R-Pre at 5°: frames 1..4 pass out of 10.
    assert m.r_pre == pytest.approx(0.4)
    assert camera_metrics(ref, gen, MetricConfig(rre_threshold=7.5)).r_pre == pytest.approx(0.7)


def test_rte_is_the_angle_between_translation_directions_and_ignores_scale():
    n = 8
    ref = forward(n, (0.0, 0.0, 1.0))
    sideways = forward(n, (1.0, 0.0, 0.0))
    tilted = forward(n, (np.sin(np.radians(30)), 0.0, np.cos(np.radians(30))))
    scaled = forward(n, (0.0, 0.0, 7.0))
    assert camera_metrics(ref, sideways).rte == pytest.approx(90.0)
    assert camera_metrics(ref, tilted).rte == pytest.approx(30.0)
    assert camera_metrics(ref, scaled).rte == pytest.approx(0.0, abs=1e-6)
    assert camera_metrics(ref, tilted).t_pre == 0.0
    assert camera_metrics(ref, tilted, MetricConfig(rte_threshold=31.0)).t_pre == 1.0


def test_translation_is_measured_in_the_first_camera_frame():
    # The first camera looks along +X (yawed −90°: its optical axis, row 3 of R, is +X) and moves along
    # world +X: in its own frame that is straight ahead (+Z). A generated camera that looks along +Z and
    # moves along +Z does the same move.
    n = 6
    ref = traj_from([rot_y(-90.0)] * n, np.arange(n)[:, None] * np.array([1.0, 0.0, 0.0]))
    gen = forward(n)
    _, pos = relative_to_first(ref.w2c)
    np.testing.assert_allclose(pos[:, 2], np.arange(n), atol=1e-9)
    np.testing.assert_allclose(pos[:, :2], 0.0, atol=1e-9)
    m = camera_metrics(ref, gen)
    assert m.rre == pytest.approx(0.0, abs=1e-6) and m.rte == pytest.approx(0.0, abs=1e-6)


def test_alignment_removes_any_world_frame_and_scale():
    ref = forward(15, (0.3, -0.1, 1.0), yaw_per_frame=2.0)
    # The same cameras in another world: rotated, shifted and scaled by 3.
    world = np.eye(4)
    world[:3, :3] = poses.rotation_from_euler_deg(20.0, -35.0, 10.0)
    world[:3, 3] = [4.0, -2.0, 9.0]
    w2c = poses.to_4x4(ref.w2c) @ np.linalg.inv(world)
    w2c[:, :3, 3] *= 3.0
    gen = Trajectory.create(w2c, height=H, width=W)
    m = camera_metrics(ref, gen)
    assert m.rre == pytest.approx(0.0, abs=1e-6) and m.rte == pytest.approx(0.0, abs=1e-5)


def test_static_translation_rules():
    pan = traj_from([rot_y(i) for i in range(6)], np.zeros((6, 3)))
    dolly = forward(6)
    assert camera_metrics(pan, pan).rte == 0.0  # neither moves
    assert camera_metrics(pan, dolly).rte == 90.0  # one moves, the other does not
    assert camera_metrics(dolly, pan).rte == 90.0
    err = translation_errors(np.array([[0.0, 0, 0], [0, 0, 1e-4], [0, 0, 1.0]]),
                             np.array([[0.0, 0, 0], [1e-3, 0, 0], [0, 0, 2.0]]))
    # Frame 1 is below 1 % of the largest move in both: static in both → 0°.
    np.testing.assert_allclose(err, [0.0, 0.0, 0.0])


def test_each_shot_is_aligned_to_its_own_first_frame():
    n = 10
    shot_a, shot_b = forward(n), forward(n, (1.0, 0.0, 0.0), yaw_per_frame=1.0)
    w2c_ref = np.concatenate([shot_a.w2c, shot_a.w2c[:1], shot_b.w2c])
    ref = Trajectory.create(w2c_ref, height=H, width=W, cuts=[n])
    # Generated: the second shot lives in another world frame (rotated by Q, scaled by 0.01, shifted).
    q = poses.rotation_from_euler_deg(10.0, 50.0, -5.0)
    rots = shot_b.w2c[:, :, :3] @ q.T
    centers = 0.01 * shot_b.centers() @ q.T + np.array([5.0, 5.0, 5.0])
    moved = np.concatenate([rots, -np.einsum("tij,tj->ti", rots, centers)[..., None]], axis=-1)
    gen = Trajectory.create(np.concatenate([shot_a.w2c, shot_a.w2c[:1], moved[:, :3]]), height=H, width=W,
                            cuts=[n])
    m = camera_metrics(ref, gen)
    assert len(m.segments) == 2
    assert m.rre == pytest.approx(0.0, abs=1e-6) and m.rte == pytest.approx(0.0, abs=1e-5)
    assert m.tem_pre == 1.0
    assert np.isnan(m.rre_per_frame[n]) and np.isnan(m.rre_per_frame[n + 1])  # cut frame, alignment frame
    # Segments split at the union of cuts: a generated cut inside a reference shot splits it.
    gen2 = Trajectory.create(ref.w2c, height=H, width=W, cuts=[4, n])
    segs = [(s["start"], s["end"]) for s in camera_metrics(ref, gen2).segments]
    assert segs == [(0, 4), (5, n), (n + 1, 2 * n + 1)]


@pytest.mark.parametrize("ref, gen, expected", [
    ([20, 41], [20, 41], 1.0),
    ([20, 41], [22], 0.5),
    ([20, 41], [24, 41], 0.5),  # 24 is 4 frames away: no match
    ([20, 41], [17, 44], 1.0),  # exactly 3 frames away both: matched
    ([10, 12], [11], 0.5),  # one generated transition matches at most one reference transition
    ([20], [], 0.0),
    ([], [], 1.0),
    ([], [5], 0.0),
])
def test_temporal_precision(ref, gen, expected):
    assert temporal_precision(ref, gen, 3) == pytest.approx(expected)


def test_consecutive_cut_frames_are_one_transition():
    base = forward(30)
    ref = Trajectory.create(base.w2c, height=H, width=W, cuts=[10, 11, 12, 20])
    gen = Trajectory.create(base.w2c, height=H, width=W, cuts=[13, 21])
    m = camera_metrics(ref, gen)
    assert m.ref_transitions == [10, 20]
    assert m.tem_pre == 1.0


def test_length_mismatch_is_an_error():
    with pytest.raises(TrajectoryError, match="different lengths"):
        camera_metrics(forward(5), forward(6))


def test_eval_camera_cli(tmp_path, capsys):
    ref, gen = forward(11), forward(11, yaw_per_frame=1.0)
    save_trajectory(ref, tmp_path / "ref.json")
    save_trajectory(gen, tmp_path / "gen.npz")
    assert main(["eval-camera", str(tmp_path / "ref.json"), str(tmp_path / "gen.npz")]) == 0
    table = capsys.readouterr().out
    assert "RRE 5.500°" in table and "Tem-Pre(±3) 1.000" in table
    assert main(["eval-camera", str(tmp_path / "ref.json"), str(tmp_path / "gen.npz"), "--json",
                 "--rre-threshold", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["RRE"] == pytest.approx(5.5) and data["R-Pre"] == pytest.approx(0.2)
    assert data["rre_per_frame"][0] is None and len(data["rre_per_frame"]) == 11
    assert main(["eval-camera", str(tmp_path / "ref.json"), str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err
