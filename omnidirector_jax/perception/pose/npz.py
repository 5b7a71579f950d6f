"""Poses estimated elsewhere (``npz``), e.g. by a feed-forward network, split into our shots."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from omnidirector_jax.perception.pose.base import PoseEstimationError, PoseEstimator, PoseResult, ShotPoses

log = logging.getLogger("omnidirector_jax.perception.pose_estimators")


class NpzEstimator(PoseEstimator):
    """Poses estimated elsewhere (e.g. Depth Anything 3), read from ``.npz`` and split into our shots.

    The archive's frames must cover the video (after stride densification). Each shot is re-based on its
    first frame and rescaled like the other back ends; the archive's intrinsics replace the guess when
    it has them, rescaled to the video size when the archive records another ``image_size``.
    """

    name = "npz"

    def __init__(self, path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = path
        self._traj = None

    def _load(self, height: int, width: int):
        from omnidirector_jax.camera.trajectory import load_trajectory

        if self._traj is None:
            traj = load_trajectory(self.path, size=None if _npz_has_size(self.path) else (height, width))
            if (traj.height, traj.width) != (height, width):
                traj = traj.resized(height, width)
            self._traj = traj
        return self._traj

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None,
                 shots: Sequence[tuple[int, int]] | None = None, progress: bool = False) -> PoseResult:
        frames = np.asarray(frames)
        if frames.ndim == 4:
            traj = self._load(frames.shape[1], frames.shape[2])
            if traj.num_frames < frames.shape[0]:
                raise PoseEstimationError(f"{self.path}: {traj.num_frames} poses (after densifying) for a video of "
                                          f"{frames.shape[0]} frames")
            if traj.num_frames > frames.shape[0]:
                log.warning("%s has %d poses for %d frames: using the first %d", self.path, traj.num_frames,
                            frames.shape[0], frames.shape[0])
        return super().estimate(frames, K, shots, progress)

    def estimate_shot(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        traj = self._load(frames.shape[1], frames.shape[2])
        a, b = frame_range
        w2c = traj.w2c[a:b]
        # Frames that are cuts in the archive have no meaningful pose.
        valid = traj.shot_index()[a:b] >= 0
        return ShotPoses(w2c.copy(), traj.K[a:b].copy(), valid, "npz")


def _npz_has_size(path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as data:
            return "image_size" in data.files or "intrinsics" in data.files
    except Exception:  # unreadable: let load_trajectory report it properly
        return True
