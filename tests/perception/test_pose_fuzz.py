"""Degenerate input must fail a frame pair or a shot with a reason, never the run (issue 15).

Each case goes through the public back end (``VisualOdometry.estimate`` / ``estimate_tracks``) and the
guarded OpenCV helpers directly. A case passes when nothing but :class:`PoseEstimationError` (every
shot failed, said clearly) escapes, and no shot failed through the catch-all ("unexpected error"),
which would mean an OpenCV call was left unguarded. Run it under both the lowest and the newest
OpenCV that ``setup.py`` allows.
"""

import warnings

import cv2
import numpy as np
import pytest

from omnidirector_jax.camera import poses
from omnidirector_jax.perception import pose_estimators as pe
from omnidirector_jax.perception.pose import cvsafe
from omnidirector_jax.perception.pose.rotation import rotation_between
from omnidirector_jax.perception.pose.tracks import verify_pair

H, W = 60, 80
K = poses.default_intrinsics(H, W)


def _run(estimate, *args, **kwargs):
    """Run an estimate; return its result (or None when every shot failed) after the no-crash checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = estimate(*args, **kwargs)
        except (pe.PoseEstimationError, pe.ShotFailure) as err:  # ShotFailure: from estimate_tracks itself
            assert "unexpected error" not in str(err), err
            return None
    if isinstance(result, pe.PoseResult):
        assert not any("unexpected error" in m for m in result.messages), result.messages
        assert np.isfinite(result.w2c).all() and np.isfinite(result.K).all()
        assert len(result.models) == len(result.shots)
    return result


def _texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (H // 4, W // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)


def _dots(points: np.ndarray) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for x, y in points:
        cv2.circle(img, (int(x), int(y)), 2, (255, 255, 255), -1)
    return img


@pytest.mark.parametrize("case", ["identical", "black", "few_dots", "collinear_dots", "noise"])
def test_degenerate_frames_do_not_crash(case):
    rng = np.random.default_rng(1)
    if case == "identical":
        frames = np.repeat(_texture()[None], 10, axis=0)
    elif case == "black":
        frames = np.zeros((10, H, W, 3), np.uint8)
    elif case == "few_dots":  # 2–6 features
        frames = np.stack([_dots(rng.uniform(5, [W - 5, H - 5], (2 + i % 5, 2)) + i) for i in range(10)])
    elif case == "collinear_dots":
        xs = np.linspace(8, W - 8, 12)
        frames = np.stack([_dots(np.stack([xs + i, 0.5 * xs + 5], 1)) for i in range(10)])
    else:  # independent noise frames: nothing matches
        frames = rng.integers(0, 256, (10, H, W, 3), dtype=np.uint8)
    result = _run(pe.VisualOdometry().estimate, frames, K, shots=[(0, 3), (3, 10)])
    if case == "identical":  # a static camera is a valid identity rotation
        assert result is not None and result.models == ["rotation", "rotation"] and result.valid.all()


def test_colmap_on_degenerate_frames_does_not_crash():
    pytest.importorskip("pycolmap")
    frames = np.concatenate([np.repeat(_texture()[None], 4, axis=0), np.zeros((4, H, W, 3), np.uint8)])
    _run(pe.ColmapEstimator().estimate, frames, K, shots=[(0, 4), (4, 8)])


@pytest.mark.parametrize("focal", [1e-9, 1e-2, 1e9, np.nan])
def test_extreme_focal_lengths(focal):
    frames = np.stack([np.roll(_texture(), i, axis=1) for i in range(9)])
    K_bad = K.copy()
    K_bad[0, 0] = K_bad[1, 1] = focal
    if not np.isfinite(focal):
        with pytest.raises(pe.PoseEstimationError, match="finite"):
            pe.VisualOdometry().estimate(frames, K_bad)
        return
    _run(pe.VisualOdometry().estimate, frames, K_bad)


def _tracks(points: np.ndarray, num: int = 10, shift: float = 1.5) -> pe.Tracks:
    return pe.Tracks([(points + [shift * f, 0.0]).astype(np.float32) for f in range(num)],
                     [np.arange(len(points)) for _ in range(num)])


@pytest.mark.parametrize("case", ["two", "six", "collinear", "one_spot", "infinity", "nan", "huge"])
def test_degenerate_tracks_do_not_crash(case):
    rng = np.random.default_rng(2)
    pts = {"two": rng.uniform(0, 60, (2, 2)), "six": rng.uniform(0, 60, (6, 2)),
           "collinear": np.stack([np.linspace(0, 60, 40), np.linspace(0, 30, 40)], 1),
           "one_spot": np.full((40, 2), 30.0), "infinity": rng.uniform(0, 60, (40, 2)) * 1e12,
           "nan": np.where(rng.random((40, 2)) < 0.3, np.nan, rng.uniform(0, 60, (40, 2))),
           "huge": rng.uniform(-1e30, 1e30, (40, 2))}[case]
    vo = pe.VisualOdometry(min_tracks=4, min_rotation_tracks=2)
    _run(vo.estimate_tracks, _tracks(pts), K, (0, 10))


def test_guarded_solvers_raise_cvfailure_not_cv2_error():
    """The inputs that made OpenCV 5.1's findEssentialMat assert (identical and collinear points)."""
    rng = np.random.default_rng(0)
    same = rng.uniform(0, 60, (20, 2))
    line = np.stack([np.linspace(0, 60, 20), np.linspace(0, 30, 20)], 1)
    for pa, pb in ((same, same), (line, line + [1.0, 0.0]), (same * 1e12, same * 1e12 + 1), (same[:5], same[:5])):
        try:
            mask = verify_pair(pa, pb, K, 1.0)
            assert mask.shape == (len(pa),)
        except cvsafe.CvFailure:
            pass
        for minimum in (2, 8):
            try:
                rot = rotation_between(pa, pb, K, minimum)
                assert np.isfinite(rot).all()
            except cvsafe.CvFailure:
                pass
    with pytest.raises(cvsafe.CvFailure, match="OpenCV refused"):
        cvsafe.call("findEssentialMat", cv2.findEssentialMat, np.zeros((3, 2)), np.zeros((4, 2)), K)
