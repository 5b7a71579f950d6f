"""Pose estimation and `omnidirector extract` on synthetic videos with exact cameras, and on bad input."""

import json
import sys
import warnings

import numpy as np
import pytest

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory, load_trajectory, save_trajectory
from omnidirector_jax.cli import main
from omnidirector_jax.data import sample_trajectories as st
from omnidirector_jax.data.synth_world import render_trajectory
from omnidirector_jax.eval.camera_metrics import camera_metrics
from omnidirector_jax.media import write_video
from omnidirector_jax.perception import pose_estimators as pe

H, W = 144, 256
MOVES = {"dolly": 49, "pan": 49, "orbit": 49, "three_shot": 62}  # three_shot: 3 × 20 frames + 2 cuts


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The standard moves rendered once, as H.264 mp4 (compression is part of the test)."""
    folder = tmp_path_factory.mktemp("synth")
    out = {}
    for name, num in MOVES.items():
        ref = st.named(name, height=H, width=W, num=num)
        frames = render_trajectory(ref, seed=0)
        path = folder / f"{name}.mp4"
        write_video(path, frames, fps=ref.fps)
        out[name] = (ref, path, frames)
    return out


def path_length(w2c: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(poses.camera_centers(w2c), axis=0), axis=1).sum())


# ------------------------------------------------------------------------------------ end to end (VO)
@pytest.mark.parametrize("name", list(MOVES))
def test_extract_recovers_cuts_and_cameras(videos, name, tmp_path, capsys):
    ref, video, _ = videos[name]
    out = tmp_path / "est.json"
    args = ["extract", str(video), "--out", str(out)]
    if name == "three_shot":
        args += ["--grid", str(tmp_path / "grid.npz")]
    assert main(args) == 0
    est = load_trajectory(out)
    assert est.num_frames == ref.num_frames and (est.height, est.width) == (H, W)
    assert est.cuts == ref.cuts  # exactly
    metrics = camera_metrics(ref, est)
    assert metrics.rre < 2.0 and metrics.rte < 15.0, metrics.table()
    assert metrics.tem_pre == 1.0
    report = json.loads((tmp_path / "est.extract.json").read_text())
    assert report["failed_shots"] == [] and report["estimator"] == "vo"
    assert report["models"] == ["rotation" if name == "pan" else "6dof"] * len(report["shots"])
    assert "camera model per shot: 6-DoF" in capsys.readouterr().out
    valid = np.array(report["valid"], dtype=bool)
    assert valid[ref.shot_index() >= 0].all() and not valid[list(ref.cuts)].any()
    for a, b in est.shots():  # each shot starts at the identity, unit path length (or none: a pan)
        np.testing.assert_allclose(est.w2c[a], np.eye(3, 4), atol=1e-6)
        assert path_length(est.w2c[a:b]) == pytest.approx(0.0 if name == "pan" else 1.0, abs=1e-6)
    if name == "pan":
        assert report["methods"] == ["vo-rotation"]
    if name == "three_shot":  # the grid shows the cuts as white frames
        grid = np.load(tmp_path / "grid.npz")["frames"]
        assert grid.shape == (ref.num_frames, H, W, 3)
        assert all((grid[c] == 255).all() for c in ref.cuts)
        assert grid[0].mean() < 128


# ------------------------------------------------------------------------------------------ colmap
def test_colmap_estimator_on_a_dolly():
    pytest.importorskip("pycolmap")
    ref = st.named("dolly", height=H, width=W, num=25)
    frames = render_trajectory(ref, seed=4)
    result = pe.ColmapEstimator().estimate(frames)
    assert result.methods == ["colmap"] and result.failed_shots == []
    est = Trajectory.create(result.w2c, result.K, height=H, width=W)
    metrics = camera_metrics(ref, est)
    assert metrics.rre < 2.0 and metrics.rte < 15.0, metrics.table()
    # The K guess goes in and comes back in our pixel convention (COLMAP's is shifted by half a pixel).
    np.testing.assert_allclose(result.K, ref.K, atol=1e-9)


def test_colmap_falls_back_to_vo_without_pycolmap(videos, monkeypatch):
    _, _, frames = videos["pan"]
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap → ImportError
    with pytest.warns(UserWarning, match="pycolmap is not installed.*falling back to visual odometry"):
        result = pe.ColmapEstimator().estimate(frames[:12])
    assert result.methods == ["colmap→vo-rotation"] and result.valid.all()


def test_colmap_falls_back_when_nothing_registers(videos):
    pytest.importorskip("pycolmap")
    _, _, frames = videos["pan"]  # a pure rotation: SfM cannot initialise
    with pytest.warns(UserWarning, match="falling back to visual odometry"):
        result = pe.ColmapEstimator().estimate(frames[:10])
    assert result.methods[0].startswith("colmap→vo")


# --------------------------------------------------------------------------------------------- npz
def test_npz_import_with_stride_is_rebased_and_rescaled_per_shot(tmp_path):
    # A smooth move (constant yaw rate, straight line): SLERP + linear densification is exact for it.
    n, cut = 41, 20
    rots = np.stack([poses.rotation_from_euler_deg(0.0, 0.5 * i, 0.0) for i in range(n)])
    centers = np.arange(n)[:, None] * np.array([0.05, 0.0, 0.1])
    w2c = np.concatenate([rots, -np.einsum("tij,tj->ti", rots, centers)[..., None]], -1)
    ref = Trajectory.create(w2c, height=H, width=W, cuts=[cut])
    # The archive lives in another world frame and scale, with poses every 2nd frame.
    q = poses.rotation_from_euler_deg(30.0, -20.0, 5.0)
    moved = poses.to_4x4(w2c) @ np.linalg.inv(np.block([[q, np.ones((3, 1))], [np.zeros((1, 3)), 1.0]]))
    moved[:, :3, 3] *= 4.0
    np.savez(tmp_path / "poses.npz", extrinsics=moved[::2, :3], stride=np.array(2),
             intrinsics=np.broadcast_to(ref.K[0], (21, 3, 3)))
    frames = np.zeros((n, H, W, 3), np.uint8)
    result = pe.make_estimator("npz", poses_path=tmp_path / "poses.npz").estimate(frames, shots=ref.shots())
    est = Trajectory.create(result.w2c, result.K, height=H, width=W, cuts=[cut])
    metrics = camera_metrics(ref, est)
    assert metrics.rre < 1e-6 and metrics.rte < 1e-4
    for a, b in ref.shots():
        np.testing.assert_allclose(result.w2c[a], np.eye(3, 4), atol=1e-9)
        assert path_length(result.w2c[a:b]) == pytest.approx(1.0)
    with pytest.raises(pe.PoseEstimationError, match="41 poses"):
        pe.NpzEstimator(tmp_path / "poses.npz").estimate(np.zeros((45, H, W, 3), np.uint8))


def test_extract_with_imported_poses(videos, tmp_path):
    ref, video, _ = videos["orbit"]
    save_trajectory(ref, tmp_path / "gt.npz")
    out = tmp_path / "est.json"
    assert main(["extract", str(video), "--out", str(out), "--estimator", "npz", "--poses",
                 str(tmp_path / "gt.npz")]) == 0
    metrics = camera_metrics(ref, load_trajectory(out))
    assert metrics.rre < 1e-5 and metrics.rte < 1e-4
    assert main(["extract", str(video), "--out", str(out), "--estimator", "npz"]) == 2  # no --poses


# ------------------------------------------------------------------------------------ failures, bad input
def test_a_failing_shot_is_reported_and_marked(videos, tmp_path, capsys):
    _, _, frames = videos["dolly"]
    black = np.zeros_like(frames[:20])
    mixed = np.concatenate([frames[:25], black])
    with pytest.warns(UserWarning, match=r"shot 1 \(frames 26–44\): pose estimation failed"):
        result = pe.VisualOdometry().estimate(mixed, shots=[(0, 25), (26, 45)])
    assert result.failed_shots == [1] and result.methods == ["vo", "failed"]
    assert result.valid[:25].all() and not result.valid[25:].any()
    assert "blank" in result.messages[1]
    # Through the CLI: the detector finds the switch to black, the shot is reported, the run succeeds.
    write_video(tmp_path / "mixed.mp4", mixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["extract", str(tmp_path / "mixed.mp4"), "--out", str(tmp_path / "t.json")]) == 0
    assert "pose estimation failed for 1 of 2 shot(s) [1]" in capsys.readouterr().err
    report = json.loads((tmp_path / "t.extract.json").read_text())
    assert report["cuts"] == [25] and report["failed_shots"] == [1]
    assert report["valid"][26:] == [0] * 19 and all(report["valid"][:25])


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


def test_bad_videos_give_clear_errors(videos, tmp_path, capsys):
    _, _, frames = videos["dolly"]
    out = str(tmp_path / "t.json")
    assert main(["extract", str(tmp_path / "missing.mp4"), "--out", out]) == 2
    assert "does not exist" in _one_line_error(capsys)
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert main(["extract", str(tmp_path / "empty.mp4"), "--out", out]) == 2
    _one_line_error(capsys)
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 50)
    assert main(["extract", str(tmp_path / "text.mp4"), "--out", out]) == 2
    _one_line_error(capsys)
    write_video(tmp_path / "one.mp4", frames[:1])
    assert main(["extract", str(tmp_path / "one.mp4"), "--out", out]) == 2
    assert "only 1 frame" in _one_line_error(capsys)
    write_video(tmp_path / "black.mp4", np.zeros((20, H, W, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["extract", str(tmp_path / "black.mp4"), "--out", out]) == 2
    assert "no camera pose could be estimated" in _one_line_error(capsys)
    assert not (tmp_path / "t.json").exists()


def test_estimator_input_checks():
    vo = pe.VisualOdometry()
    with pytest.raises(pe.PoseEstimationError, match="at least 2 frames"):
        vo.estimate(np.zeros((1, H, W, 3), np.uint8))
    with pytest.raises(pe.PoseEstimationError, match="uint8"):
        vo.estimate(np.zeros((3, H, W, 3), np.float32))
    with pytest.raises(pe.PoseEstimationError, match="outside"):
        vo.estimate(np.zeros((3, H, W, 3), np.uint8), shots=[(0, 5)])
    with pytest.raises(pe.OmniDirectorError, match="unknown pose estimator"):
        pe.make_estimator("magic")


# ------------------------------------------------------------------------------------------- pieces
def test_static_camera_is_a_valid_identity_rotation(videos):
    _, _, frames = videos["orbit"]
    still = np.repeat(frames[:1], 8, axis=0)
    result = pe.VisualOdometry().estimate(still)
    assert result.methods == ["vo-rotation"] and result.valid.all()
    np.testing.assert_allclose(result.w2c, np.tile(np.eye(3, 4), (8, 1, 1)), atol=1e-6)


def test_median_step_scale(videos):
    ref, _, frames = videos["dolly"]
    result = pe.VisualOdometry(scale="median_step").estimate(frames[:20])
    steps = np.linalg.norm(np.diff(poses.camera_centers(result.w2c), axis=0), axis=1)
    assert np.median(steps) == pytest.approx(1.0)


def test_fit_rotation_is_exact_and_robust():
    rng = np.random.default_rng(0)
    rot = poses.rotation_from_euler_deg(4.0, -12.0, 3.0)
    b0 = rng.normal(size=(200, 3))
    b0[:, 2] = np.abs(b0[:, 2]) + 1.0
    b0 /= np.linalg.norm(b0, axis=1, keepdims=True)
    b1 = b0 @ rot.T
    b1[:20] = rng.normal(size=(20, 3))  # 10 % outliers
    b1 /= np.linalg.norm(b1, axis=1, keepdims=True)
    fit, res = pe._fit_rotation(b0, b1)
    assert poses.rotation_angle_deg(fit @ rot.T) < 1e-6
    assert np.median(res[20:]) < 1e-4  # degrees (arccos precision)


def test_bundle_adjustment_removes_drift():
    """Exact tracks of random points, poses with a growing rotation drift: BA must bring them back."""
    ref = st.named("dolly", height=H, width=W, num=15)
    K = ref.K[0]
    rng = np.random.default_rng(1)
    X = rng.uniform([-4, -3, 3], [4, 3, 9], size=(600, 3))
    pts, ids = [], []
    for w in ref.w2c:
        cam = X @ w[:, :3].T + w[:, 3]
        uv = cam @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        ok = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        pts.append((uv[ok] + rng.normal(0, 0.1, (ok.sum(), 2))).astype(np.float32))
        ids.append(np.flatnonzero(ok))
    drifted = ref.w2c.copy()
    for i in range(1, len(drifted)):
        drifted[i, :, :3] = poses.rotation_from_euler_deg(0.1 * i, 0.15 * i, 0.0) @ drifted[i, :, :3]
    points = {i: x + rng.normal(0, 0.02, 3) for i, x in enumerate(X)}
    out = pe._bundle_adjust(pe.Tracks(pts, ids), points, drifted, np.ones(len(drifted), bool), K, 1.5)
    before = poses.rotation_angle_deg(drifted[:, :, :3] @ np.swapaxes(ref.w2c[:, :, :3], 1, 2)).max()
    after = poses.rotation_angle_deg(out[:, :, :3] @ np.swapaxes(ref.w2c[:, :, :3], 1, 2)).max()
    assert before > 2.5 and after < 0.1, (before, after)


def _projected_tracks(ref: Trajectory, X: np.ndarray, rng, noise: float = 0.1, id_offset_from: int | None = None):
    K = ref.K[0]
    pts, ids = [], []
    for f, w in enumerate(ref.w2c):
        cam = X @ w[:, :3].T + w[:, 3]
        uv = cam @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        ok = (cam[:, 2] > 0.3) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        pts.append((uv[ok] + rng.normal(0, noise, (ok.sum(), 2))).astype(np.float32))
        offset = 100_000 if id_offset_from is not None and f >= id_offset_from else 0
        ids.append(np.flatnonzero(ok) + offset)
    return pe.Tracks(pts, ids)


def test_vo_reinitialises_after_tracking_loss():
    """Every track breaks at frame 15 (new ids): VO starts a new segment there, holding one frame, and
    carries the scale over; the rest of the shot is still estimated."""
    rng = np.random.default_rng(2)
    ref = st.named("dolly", height=H, width=W, num=30)
    X = rng.uniform([-4, -3, 1], [4, 3, 9], size=(1500, 3))
    tracks = _projected_tracks(ref, X, rng, id_offset_from=15)
    est = pe.VisualOdometry().estimate_tracks(tracks, ref.K[0], (0, 30))
    assert est.method == "vo"
    assert not est.valid[15] and est.valid[np.arange(30) != 15].all()
    w2c = pe._normalise_shot(est.w2c, est.valid, "path")
    metrics = camera_metrics(ref, Trajectory.create(w2c, height=H, width=W))
    assert metrics.rre < 0.5 and metrics.rte < 5.0, metrics.table()
    # The second segment's scale matches the first (constant speed): steps stay about equal.
    steps = np.linalg.norm(np.diff(poses.camera_centers(w2c), axis=0), axis=1)
    assert np.median(steps[16:]) == pytest.approx(np.median(steps[:14]), rel=0.15)


# ------------------------------------------------------------------------------- camera model per shot
def test_rotation_only_chain_bridges_a_track_break_and_says_so():
    """A pan whose tracks all break at frame 10 (new ids): the chain re-anchors there, holding the
    rotation (that frame invalid), and the later rotations stay exact relative to it."""
    rng = np.random.default_rng(3)
    ref = st.named("pan", height=H, width=W, num=20)
    X = rng.uniform([-6, -4, 4], [6, 4, 12], size=(800, 3))
    est = pe.VisualOdometry().estimate_tracks(_projected_tracks(ref, X, rng, id_offset_from=10), ref.K[0], (0, 20))
    assert est.model == "rotation" and "1 track break" in est.reason
    assert not est.valid[10] and est.valid[np.arange(20) != 10].all()
    rel_est = est.w2c[15, :, :3] @ est.w2c[11, :, :3].T
    rel_ref = ref.w2c[15, :, :3] @ ref.w2c[11, :, :3].T
    assert poses.rotation_angle_deg(rel_est @ rel_ref.T) < 0.05


def test_short_shot_gets_rotation_only_and_the_report_says_why():
    rng = np.random.default_rng(4)
    ref = st.named("dolly", height=H, width=W, num=5)
    X = rng.uniform([-4, -3, 3], [4, 3, 9], size=(600, 3))
    vo = pe.VisualOdometry()
    est = vo.estimate_tracks(_projected_tracks(ref, X, rng), ref.K[0], (0, 5))
    assert est.model == "rotation" and "short shot" in est.reason and est.valid.all()
    assert np.all(est.w2c[:, :, 3] == 0.0)
