"""The pose-estimator interface and the per-shot bookkeeping every back end shares (design §4).

:class:`PoseEstimator` turns frames (and a guess of ``K``) into per-frame ``w2c``, ``K`` and a validity
mask, shot by shot. Shots are independent: each starts at the identity and its scale is normalised on
its own (default: unit camera path length over the shot; ``scale="median_step"`` makes the median step
between consecutive camera centres 1 instead). A shot with no translation (a pan) keeps zero
translations.

Every shot is reported with the model it got: ``6dof`` (rotation and translation), ``rotation``
(rotation only, zero translation: a pan, a static camera, too little parallax, too short a shot) or
``failed`` (its frames hold a static placeholder camera and are invalid), and why. A back end that
raises :class:`ShotFailure` fails that shot; any other exception is a bug or an unguarded library
assertion, and it too fails only that shot (logged with its traceback at DEBUG), never the run.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.errors import OmniDirectorError

log = logging.getLogger("omnidirector_jax.perception.pose_estimators")

MODELS = ("6dof", "rotation", "failed")


class PoseEstimationError(OmniDirectorError):
    """No camera pose could be estimated (or the input to the estimator is unusable)."""


class ShotFailure(Exception):
    """Internal: one shot could not be estimated (reported, the others go on)."""


@dataclasses.dataclass
class ShotPoses:
    """Poses of one shot as a back end returns them (any origin and scale)."""

    w2c: np.ndarray  # (N, 3, 4)
    K: np.ndarray  # (N, 3, 3)
    valid: np.ndarray  # (N,) bool
    method: str  # what produced them, e.g. "vo", "vo-rotation", "colmap", "colmap→vo"
    model: str = "6dof"  # "6dof" or "rotation" (zero translation by construction)
    reason: str = ""  # why this model, when it is not the full one


@dataclasses.dataclass
class PoseResult:
    """Per-frame poses of a whole video: ``valid`` is False on cut frames and frames not estimated."""

    w2c: np.ndarray  # (T, 3, 4)
    K: np.ndarray  # (T, 3, 3)
    valid: np.ndarray  # (T,) bool
    shots: list[tuple[int, int]]
    failed_shots: list[int]
    methods: list[str]  # per shot
    messages: list[str]  # per shot: why a shot failed, or "" when it did not
    models: list[str] = dataclasses.field(default_factory=list)  # per shot: "6dof", "rotation" or "failed"
    reasons: list[str] = dataclasses.field(default_factory=list)  # per shot: why that model ("" for 6dof)

    def model_shares(self) -> dict[str, float]:
        """Share of shots per model (``6dof``, ``rotation``, ``failed``)."""
        n = max(len(self.models), 1)
        return {m: self.models.count(m) / n for m in MODELS}

    def report(self) -> dict:
        """A JSON-ready summary (for the extract side-car file)."""
        return {"shots": [list(s) for s in self.shots], "failed_shots": self.failed_shots,
                "methods": self.methods, "messages": self.messages, "models": self.models,
                "model_reasons": self.reasons,
                "model_counts": {m: self.models.count(m) for m in MODELS},
                "valid": self.valid.astype(int).tolist()}


class PoseEstimator:
    """Frames + intrinsics guess → per-frame ``w2c``, ``K`` and validity, shot by shot."""

    name = "base"

    def __init__(self, scale: str = "path", min_valid_share: float = 0.5) -> None:
        if scale not in ("path", "median_step"):
            raise OmniDirectorError(f"unknown scale normalisation {scale!r} (use 'path' or 'median_step')")
        self.scale = scale
        self.min_valid_share = min_valid_share

    def estimate_shot(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        """Poses of one shot (``frames (N,H,W,3)`` uint8 RGB); raise :class:`ShotFailure` when impossible."""
        raise NotImplementedError

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None,
                 shots: Sequence[tuple[int, int]] | None = None, progress: bool = False) -> PoseResult:
        """Estimate every shot (``shots``: half-open frame ranges; default one shot over all frames)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise PoseEstimationError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        num, height, width = frames.shape[:3]
        if num < 2:
            raise PoseEstimationError(f"pose estimation needs at least 2 frames, got {num}")
        K = poses.default_intrinsics(height, width) if K is None else np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise PoseEstimationError(f"K must be a finite 3×3 matrix with positive focal lengths, got {K}")
        shots = [(0, num)] if shots is None else [(int(a), int(b)) for a, b in shots]
        for a, b in shots:
            if not 0 <= a < b <= num:
                raise PoseEstimationError(f"shot [{a}, {b}) is outside the video's {num} frames")

        w2c = np.tile(np.eye(3, 4), (num, 1, 1))
        K_all = np.broadcast_to(K, (num, 3, 3)).copy()
        valid = np.zeros(num, dtype=bool)
        failed, methods, messages, models, reasons = [], [], [], [], []
        iterator = enumerate(shots)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(shots), desc=f"poses ({self.name})", unit="shot")
        for i, (a, b) in iterator:
            log.debug("shot %d: frames %d–%d, estimating poses with %s", i, a, b - 1, self.name)
            try:
                if b - a == 1:  # a one-frame shot: its camera is the shot's origin by definition
                    est = ShotPoses(np.eye(3, 4)[None], K[None], np.ones(1, bool), "single-frame", "rotation",
                                    "single frame: identity")
                else:
                    est = self._estimate_shot_guarded(frames[a:b], K, (a, b))
                share = float(est.valid.mean())
                if share < self.min_valid_share:
                    raise ShotFailure(f"only {share:.0%} of its frames got a pose ({est.method})")
                normalised = _normalise_shot(est.w2c, est.valid, self.scale)
                if not np.isfinite(normalised).all() or not np.isfinite(est.K).all():
                    raise ShotFailure(f"non-finite poses from {est.method}")
                w2c[a:b], K_all[a:b], valid[a:b] = normalised, est.K, est.valid
                methods.append(est.method)
                messages.append("")
                models.append(est.model)
                reasons.append(est.reason)
            except ShotFailure as err:
                msg = f"shot {i} (frames {a}–{b - 1}): pose estimation failed: {err}"
                warnings.warn(msg + "; its frames are marked invalid and hold a static placeholder camera",
                              stacklevel=2)
                log.warning(msg)
                failed.append(i)
                methods.append("failed")
                messages.append(str(err))
                models.append("failed")
                reasons.append(str(err))
        if len(failed) == len(shots):
            raise PoseEstimationError(
                f"no camera pose could be estimated from this video ({self.name}): "
                + "; ".join(f"shot {i}: {m}" for i, m in enumerate(messages)))
        return PoseResult(w2c, K_all, valid, list(shots), failed, methods, messages, models, reasons)

    def _estimate_shot_guarded(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        """``estimate_shot``, with anything unexpected turned into a failure of this shot only: a dataset
        build runs this over millions of clips and one odd clip must not take the worker down."""
        try:
            return self.estimate_shot(frames, K, frame_range)
        except (ShotFailure, KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:  # noqa: BLE001 - see the docstring
            log.debug("shot frames %d–%d: unexpected error in %s", frame_range[0], frame_range[1] - 1, self.name,
                      exc_info=True)
            raise ShotFailure(f"unexpected error in {self.name}: {type(err).__name__}: "
                              f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}") from err


def _normalise_shot(w2c: np.ndarray, valid: np.ndarray, scale: str) -> np.ndarray:
    """Re-base on the first valid frame (→ identity), fill invalid frames by interpolation, rescale."""
    w2c = np.asarray(w2c, dtype=np.float64)
    idx = np.flatnonzero(valid)
    first = idx[0]
    rebased = poses.to_4x4(w2c) @ np.linalg.inv(poses.to_4x4(w2c[first]))
    rebased = rebased[:, :3]
    if idx.size < len(w2c):  # SLERP / linear between the nearest valid frames, held at the ends
        rebased = _fill_invalid(rebased, idx)
    centers = poses.camera_centers(rebased)
    steps = np.linalg.norm(np.diff(centers, axis=0), axis=1)
    if scale == "path":
        length = float(steps.sum())
    else:
        moving = steps[steps > 1e-9 * max(float(steps.max(initial=0.0)), 1e-300)]
        length = float(np.median(moving)) if moving.size else 0.0
    if length > 1e-12:
        rebased[:, :, 3] /= length
    else:
        rebased[:, :, 3] = 0.0  # no translation at all (pure rotation): keep exact zeros
    return rebased


def _fill_invalid(w2c: np.ndarray, valid_idx: np.ndarray) -> np.ndarray:
    out = w2c.copy()
    rot = poses.project_to_so3(w2c[valid_idx, :, :3])
    quats = poses.quat_from_matrix(rot)
    centers = poses.camera_centers(w2c[valid_idx])
    for f in range(len(w2c)):
        if f in valid_idx:
            continue
        j = np.searchsorted(valid_idx, f)
        lo, hi = max(j - 1, 0), min(j, len(valid_idx) - 1)
        span = valid_idx[hi] - valid_idx[lo]
        alpha = 0.0 if span == 0 else (f - valid_idx[lo]) / span
        r = poses.matrix_from_quat(poses.slerp(quats[lo], quats[hi], alpha))
        c = (1 - alpha) * centers[lo] + alpha * centers[hi]
        out[f] = np.concatenate([r, (-r @ c)[:, None]], axis=1)
    return out
