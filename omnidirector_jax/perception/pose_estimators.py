"""Camera poses from video, per shot, behind one interface (design §4): the registry of back ends.

The interface lives in :mod:`omnidirector_jax.perception.pose.base` (:class:`PoseEstimator`,
:class:`ShotPoses`, :class:`PoseResult`), each back end in its own module:

* ``vo`` — :class:`~omnidirector_jax.perception.pose.vo.VisualOdometry`, OpenCV visual odometry (the
  fast default; rotation-only trajectories where 6-DoF is not recoverable);
* ``colmap`` — :class:`~omnidirector_jax.perception.pose.colmap.ColmapEstimator`, pycolmap SfM per
  shot, falling back to VO;
* ``npz`` — :class:`~omnidirector_jax.perception.pose.npz.NpzEstimator`, poses estimated elsewhere.

This module re-exports them under their historical names, so ``from ...pose_estimators import X``
keeps working, and maps CLI names to back ends (:func:`make_estimator`).
"""

from __future__ import annotations

from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.perception.pose.base import (
    MODELS,
    PoseEstimationError,
    PoseEstimator,
    PoseResult,
    ShotFailure,
    ShotPoses,
    _fill_invalid,
    _normalise_shot,
)
from omnidirector_jax.perception.pose.bundle_adjust import bundle_adjust as _bundle_adjust
from omnidirector_jax.perception.pose.colmap import ColmapEstimator
from omnidirector_jax.perception.pose.npz import NpzEstimator
from omnidirector_jax.perception.pose.rotation import bearings as _bearings
from omnidirector_jax.perception.pose.rotation import fit_rotation as _fit_rotation
from omnidirector_jax.perception.pose.tracks import Tracks, match_features, track_features
from omnidirector_jax.perception.pose.vo import VisualOdometry

ESTIMATORS = ("vo", "colmap", "npz")

__all__ = ["ESTIMATORS", "MODELS", "ColmapEstimator", "NpzEstimator", "OmniDirectorError", "PoseEstimationError",
           "PoseEstimator", "PoseResult", "ShotFailure", "ShotPoses", "Tracks", "VisualOdometry", "_bearings",
           "_bundle_adjust", "_fill_invalid", "_fit_rotation", "_normalise_shot", "make_estimator",
           "match_features", "track_features"]


def make_estimator(name: str, *, poses_path: str | None = None, **kwargs) -> PoseEstimator:
    """Estimator by CLI name: ``vo``, ``colmap`` or ``npz`` (which needs ``poses_path``)."""
    if name == "vo":
        return VisualOdometry(**kwargs)
    if name == "colmap":
        return ColmapEstimator(**kwargs)
    if name == "npz":
        if poses_path is None:
            raise OmniDirectorError("the npz estimator needs a poses file (--poses POSES.npz)")
        return NpzEstimator(poses_path, **kwargs)
    raise OmniDirectorError(f"unknown pose estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
