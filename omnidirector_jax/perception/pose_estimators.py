"""Camera poses from video, per shot, behind one interface (design §4).

:class:`PoseEstimator` turns frames (and a guess of ``K``) into per-frame ``w2c``, ``K`` and a validity
mask. Shots are independent: each starts at the identity and its scale is normalised on its own
(default: unit camera path length over the shot; ``scale="median_step"`` makes the median step between
consecutive camera centres 1 instead). A shot with no translation (a pan) keeps zero translations.

Back ends:

* :class:`VisualOdometry` (``vo``, the fast default): SIFT keypoints matched frame to frame into tracks
  (KLT optional), two-view initialisation from the essential matrix (``findEssentialMat`` +
  ``recoverPose``) once the tracks show enough parallax, PnP for every frame against triangulated
  tracks, new tracks triangulated as the camera moves, and a final bundle adjustment
  (Levenberg–Marquardt with a Schur complement). When no pair of frames shows parallax the shot is a
  pure rotation (pan/tilt/roll or a static camera): rotations come from the tracks' bearing vectors
  (orthogonal Procrustes), translations are zero. When the shot has parallax but the 3D initialisation
  fails, it falls back to that rotation-only solution with a warning (method ``vo-rotation-fallback``).
  When the map loses the view mid-shot, VO re-initialises from the last posed frame and carries the
  scale over by assuming constant speed across the hand-over (the log says where).
* :class:`ColmapEstimator` (``colmap``): pycolmap SIFT features, sequential matching and incremental
  mapping per shot; falls back to VO (with a warning) when pycolmap is missing or too few frames register.
* :class:`NpzEstimator` (``npz``): poses estimated elsewhere (``extrinsics (N,3,4)`` w2c, optional
  ``intrinsics``, ``stride``: see :mod:`omnidirector_jax.camera.trajectory`), re-based and rescaled per shot.

A shot whose estimation fails is reported (``failed_shots``, a warning) and marked invalid; its frames
hold a static placeholder camera so the trajectory stays renderable. When no shot at all can be
estimated, :class:`PoseEstimationError` says so.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.errors import OmniDirectorError

log = logging.getLogger(__name__)

ESTIMATORS = ("vo", "colmap", "npz")


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

    def report(self) -> dict:
        """A JSON-ready summary (for the extract side-car file)."""
        return {"shots": [list(s) for s in self.shots], "failed_shots": self.failed_shots,
                "methods": self.methods, "messages": self.messages, "valid": self.valid.astype(int).tolist()}


# --------------------------------------------------------------------------------------------- interface
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
        shots = [(0, num)] if shots is None else [(int(a), int(b)) for a, b in shots]
        for a, b in shots:
            if not 0 <= a < b <= num:
                raise PoseEstimationError(f"shot [{a}, {b}) is outside the video's {num} frames")

        w2c = np.tile(np.eye(3, 4), (num, 1, 1))
        K_all = np.broadcast_to(K, (num, 3, 3)).copy()
        valid = np.zeros(num, dtype=bool)
        failed, methods, messages = [], [], []
        iterator = enumerate(shots)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(shots), desc=f"poses ({self.name})", unit="shot")
        for i, (a, b) in iterator:
            log.info("shot %d: frames %d–%d, estimating poses with %s", i, a, b - 1, self.name)
            try:
                if b - a == 1:  # a one-frame shot: its camera is the shot's origin by definition
                    est = ShotPoses(np.eye(3, 4)[None], K[None], np.ones(1, bool), "single-frame")
                else:
                    est = self.estimate_shot(frames[a:b], K, (a, b))
                share = float(est.valid.mean())
                if share < self.min_valid_share:
                    raise ShotFailure(f"only {share:.0%} of its frames got a pose")
                w2c[a:b], K_all[a:b], valid[a:b] = _normalise_shot(est.w2c, est.valid, self.scale), est.K, est.valid
                methods.append(est.method)
                messages.append("")
            except ShotFailure as err:
                msg = f"shot {i} (frames {a}–{b - 1}): pose estimation failed: {err}"
                warnings.warn(msg + "; its frames are marked invalid and hold a static placeholder camera",
                              stacklevel=2)
                log.warning(msg)
                failed.append(i)
                methods.append("failed")
                messages.append(str(err))
        if len(failed) == len(shots):
            raise PoseEstimationError(
                f"no camera pose could be estimated from this video ({self.name}): "
                + "; ".join(f"shot {i}: {m}" for i, m in enumerate(messages)))
        return PoseResult(w2c, K_all, valid, list(shots), failed, methods, messages)


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


# ------------------------------------------------------------------------------------------ geometry
def _bearings(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (N,2) → unit rays in camera coordinates (N,3)."""
    homo = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ np.linalg.inv(K).T
    return homo / np.linalg.norm(homo, axis=1, keepdims=True)


def _fit_rotation(b_from: np.ndarray, b_to: np.ndarray, iters: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R with ``b_to ≈ R b_from`` (Kabsch), refitted on inliers; also residual angles (deg)."""
    keep = np.ones(len(b_from), dtype=bool)
    rot = np.eye(3)
    for _ in range(iters):
        u, _, vt = np.linalg.svd(b_to[keep].T @ b_from[keep])
        d = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag([1.0, 1.0, d]) @ vt
        res = np.degrees(np.arccos(np.clip(np.sum((b_from @ rot.T) * b_to, axis=1), -1.0, 1.0)))
        keep = res <= max(3.0 * np.median(res), 0.05)
        if keep.sum() < 3:
            break
    return rot, res


# ------------------------------------------------------------------------------------------- tracking
@dataclasses.dataclass
class Tracks:
    """KLT tracks over one shot: ``pts[f]`` (M_f, 2) with track ids ``ids[f]`` (M_f,)."""

    pts: list[np.ndarray]
    ids: list[np.ndarray]

    def common(self, f: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tracks seen in both frames: (ids, points in f, points in g)."""
        ids, ia, ib = np.intersect1d(self.ids[f], self.ids[g], assume_unique=True, return_indices=True)
        return ids, self.pts[f][ia], self.pts[g][ib]


def track_features(gray: np.ndarray, max_corners: int = 800, min_distance: int = 6,
                   fb_threshold: float = 0.5) -> Tracks:
    """Shi–Tomasi corners tracked with pyramidal Lucas–Kanade (forward–backward checked); corners are
    re-detected where tracks are missing, so long shots keep enough of them."""
    import cv2

    lk = {"winSize": (21, 21), "maxLevel": 3,
          "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}
    height, width = gray.shape[1:]
    border = 3

    def detect(img: np.ndarray, existing: np.ndarray) -> np.ndarray:
        mask = np.full(img.shape, 255, dtype=np.uint8)
        for x, y in existing.astype(int):
            cv2.circle(mask, (int(x), int(y)), min_distance, 0, -1)
        found = cv2.goodFeaturesToTrack(img, maxCorners=max_corners, qualityLevel=0.005,
                                        minDistance=min_distance, mask=mask, blockSize=5)
        return np.zeros((0, 2), np.float32) if found is None else found.reshape(-1, 2).astype(np.float32)

    pts0 = detect(gray[0], np.zeros((0, 2)))
    all_pts, all_ids = [pts0], [np.arange(len(pts0))]
    next_id = len(pts0)
    for f in range(1, len(gray)):
        prev_pts, prev_ids = all_pts[-1], all_ids[-1]
        if len(prev_pts):
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(gray[f - 1], gray[f], prev_pts.reshape(-1, 1, 2), None, **lk)
            p0, st0, _ = cv2.calcOpticalFlowPyrLK(gray[f], gray[f - 1], p1, None, **lk)
            p1, p0 = p1.reshape(-1, 2), p0.reshape(-1, 2)
            fb = np.linalg.norm(p0 - prev_pts, axis=1)
            inside = ((p1[:, 0] >= border) & (p1[:, 0] < width - border) & (p1[:, 1] >= border)
                      & (p1[:, 1] < height - border))
            ok = (st1.ravel() == 1) & (st0.ravel() == 1) & (fb < fb_threshold) & inside
            cur_pts, cur_ids = p1[ok], prev_ids[ok]
        else:
            cur_pts, cur_ids = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
        if len(cur_pts) < 0.8 * max_corners:
            new = detect(gray[f], cur_pts)
            new = new[: max(max_corners - len(cur_pts), 0)]
            cur_pts = np.concatenate([cur_pts, new])
            cur_ids = np.concatenate([cur_ids, np.arange(next_id, next_id + len(new))])
            next_id += len(new)
        all_pts.append(cur_pts.astype(np.float32))
        all_ids.append(cur_ids.astype(np.int64))
    return Tracks(all_pts, all_ids)


def match_features(gray: np.ndarray, K: np.ndarray, max_features: int = 2000, ratio: float = 0.8,
                   lookback: int = 2, epipolar_px: float = 1.0) -> Tracks:
    """Tracks from SIFT keypoints matched between consecutive frames (and up to ``lookback`` back).

    Every observation is a keypoint *detected* in its frame, so, unlike KLT, positions do not drift along
    a track (KLT drifts by pixels over tens of frames of a dolly: the patch changes scale). Matches pass
    Lowe's ratio test, a mutual check and an essential-matrix RANSAC check.
    """
    import cv2

    sift = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=0.01)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    kps, descs = [], []
    for img in gray:
        kp, desc = sift.detectAndCompute(img, None)
        kps.append(np.array([k.pt for k in kp], dtype=np.float32).reshape(-1, 2))
        descs.append(np.zeros((0, 128), np.float32) if desc is None else desc)

    def verified_matches(f: int, g: int) -> np.ndarray:
        """(M, 2) keypoint index pairs (in f, in g)."""
        if len(descs[f]) < 8 or len(descs[g]) < 8:
            return np.zeros((0, 2), dtype=np.int64)
        fwd = matcher.knnMatch(descs[g], descs[f], k=2)
        back = {m[0].queryIdx: m[0].trainIdx for m in matcher.knnMatch(descs[f], descs[g], k=2) if m}
        pairs = [(m[0].trainIdx, m[0].queryIdx) for m in fwd
                 if len(m) == 2 and m[0].distance < ratio * m[1].distance and back.get(m[0].trainIdx) == m[0].queryIdx]
        if len(pairs) < 8:
            return np.zeros((0, 2), dtype=np.int64)
        pairs = np.array(pairs, dtype=np.int64)
        pa, pb = kps[f][pairs[:, 0]].astype(np.float64), kps[g][pairs[:, 1]].astype(np.float64)
        # Tiny motions make E degenerate (any rotation-only motion fits): accept them on the flow alone.
        if np.median(np.linalg.norm(pa - pb, axis=1)) < 0.5:
            return pairs[np.linalg.norm(pa - pb, axis=1) < 2.0]
        E, mask = cv2.findEssentialMat(pa, pb, K, cv2.RANSAC, 0.999, epipolar_px)
        if E is None or mask is None:
            return np.zeros((0, 2), dtype=np.int64)
        return pairs[mask.ravel() > 0]

    ids = [np.arange(len(kps[0]), dtype=np.int64)]
    next_id = len(kps[0])
    for f in range(1, len(gray)):
        cur = np.full(len(kps[f]), -1, dtype=np.int64)
        for back_step in range(1, min(lookback, f) + 1):
            g = f - back_step
            for i_g, i_f in verified_matches(g, f):
                tid = ids[g][i_g]
                if cur[i_f] < 0 and tid not in cur:
                    cur[i_f] = tid
        fresh = cur < 0
        cur[fresh] = np.arange(next_id, next_id + fresh.sum())
        next_id += int(fresh.sum())
        ids.append(cur)
    return Tracks(kps, ids)


# -------------------------------------------------------------------------------------- visual odometry
class VisualOdometry(PoseEstimator):
    """Monocular visual odometry: essential-matrix initialisation, PnP tracking, bundle adjustment."""

    name = "vo"

    def __init__(self, init_parallax_deg: float = 2.0, min_parallax_deg: float = 0.6, min_tracks: int = 25,
                 triangulate_parallax_deg: float = 1.5, reproj_px: float = 1.5, bundle_adjust: bool = True,
                 features: str = "sift", **kwargs) -> None:
        super().__init__(**kwargs)
        if features not in ("sift", "klt"):
            raise OmniDirectorError(f"unknown feature tracker {features!r} (use 'sift' or 'klt')")
        self.features = features
        self.init_parallax_deg = init_parallax_deg  # start 3D once a frame pair shows this much parallax
        self.min_parallax_deg = min_parallax_deg  # below this everywhere: the shot is a pure rotation
        self.min_tracks = min_tracks
        self.triangulate_parallax_deg = triangulate_parallax_deg
        self.reproj_px = reproj_px
        self.bundle_adjust = bundle_adjust

    # The shot's frames → tracks → (rotation-only | full VO).
    def estimate_shot(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        import cv2

        gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        if float(gray.std()) < 1.0:
            raise ShotFailure("the frames are blank (no image content to track)")
        tracks = match_features(gray, K) if self.features == "sift" else track_features(gray)
        return self.estimate_tracks(tracks, K, frame_range)

    def estimate_tracks(self, tracks: Tracks, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        """Poses of one shot from its feature tracks (``frame_range`` only labels the log messages)."""
        if len(tracks.pts[0]) < self.min_tracks:
            raise ShotFailure(f"only {len(tracks.pts[0])} trackable features in its first frame "
                              f"(need {self.min_tracks})")
        num = len(tracks.pts)
        K_all = np.broadcast_to(K, (num, 3, 3)).copy()
        w2c = np.tile(np.eye(3, 4), (num, 1, 1))
        valid = np.zeros(num, dtype=bool)
        start, methods, held = 0, [], []
        # Segments: 3D VO until tracking is lost, then re-initialise from the last posed frame, with the
        # scale carried over by assuming the camera keeps its speed across the hand-over.
        while start < num - 1:
            sub = Tracks(tracks.pts[start:], tracks.ids[start:])
            seg = self._segment(sub, K, (frame_range[0] + start, frame_range[1]), first=start == 0)
            if seg is None:  # a pure rotation from the start: the whole shot
                w2c, valid = self._rotation_only(tracks, K)
                log.info("shot frames %d–%d: no parallax, pure rotation", frame_range[0], frame_range[1] - 1)
                return ShotPoses(w2c, K_all, valid, "vo-rotation")
            seg_w2c, seg_valid, stop, method = seg
            methods.append(method)
            idx = np.flatnonzero(seg_valid)
            if start:
                seg_w2c = seg_w2c.copy()
                seg_w2c[:, :, 3] *= _hand_over_scale(w2c[:start + 1][valid[:start + 1]], seg_w2c[idx])
            base = poses.to_4x4(w2c[start])
            w2c[start + idx] = (poses.to_4x4(seg_w2c[idx]) @ base)[:, :3]
            valid[start + idx] = True
            if stop is None:
                break
            log.info("shot frames %d–%d: tracking lost at frame %d, re-initialising", frame_range[0],
                     frame_range[1] - 1, frame_range[0] + start + stop)
            start += int(idx[idx < stop].max())
            if len(tracks.common(start, start + 1)[0]) < self.min_tracks:
                # The tracks themselves broke (a flash, heavy blur): start afresh one frame later from the
                # same pose; that held frame is not an estimate.
                start += 1
                w2c[start] = w2c[start - 1]
                held.append(start)
        valid[held] = False
        method = methods[0] if len(set(methods)) == 1 else "+".join(dict.fromkeys(methods))
        return ShotPoses(w2c, K_all, valid, method)

    def _segment(self, tracks: Tracks, K: np.ndarray, frame_range: tuple[int, int], first: bool):
        """One VO segment from frame 0 of ``tracks``: (w2c, valid, stop, method), or None for a pure
        rotation at the start of a shot. Falls back to rotations only when 3D initialisation fails."""
        candidates = self._init_candidates(tracks, K)
        if not candidates and first:
            return None
        failure = "no frame pair with enough parallax"
        for k in candidates:
            try:
                return (*self._full_vo(tracks, K, k), "vo")
            except ShotFailure as err:
                log.debug("VO initialisation with frames 0 and %d failed: %s", k, err)
                failure = str(err)
        # Rotations are still measurable without 3D points; the translation is lost (held), so say so.
        msg = (f"frames {frame_range[0]}–{frame_range[1] - 1}: 3D initialisation failed ({failure}); "
               "using rotation-only poses (no translation)")
        warnings.warn(msg, stacklevel=4)
        log.warning(msg)
        w2c, valid = self._rotation_only(tracks, K)
        return w2c, valid, None, "vo-rotation-fallback"

    def _parallax(self, tracks: Tracks, K: np.ndarray, f: int, g: int) -> tuple[float, int]:
        """Median angle (deg) left between the rays of two frames after the best pure rotation."""
        ids, pa, pb = tracks.common(f, g)
        if len(ids) < self.min_tracks:
            return 0.0, len(ids)
        _, res = _fit_rotation(_bearings(pa, K), _bearings(pb, K))
        return float(np.median(res)), len(ids)

    def _init_candidates(self, tracks: Tracks, K: np.ndarray) -> list[int]:
        """Frames to pair with frame 0 for initialisation, best first: the first frames with enough
        parallax (a few, in case one does not triangulate), else the one with the most parallax above
        the minimum; empty when the shot shows no parallax (a pure rotation)."""
        best, best_k, found = 0.0, None, []
        for k in range(1, len(tracks.pts)):
            par, count = self._parallax(tracks, K, 0, k)
            if count < self.min_tracks:
                break
            if par >= self.init_parallax_deg:
                found.append(k)
                if len(found) == 4:
                    break
            elif par > best:
                best, best_k = par, k
        if found:
            return found
        return [best_k] if best >= self.min_parallax_deg else []

    def _rotation_only(self, tracks: Tracks, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotations chained over keyframes from bearing vectors; zero translation."""
        num = len(tracks.pts)
        w2c = np.tile(np.eye(3, 4), (num, 1, 1))
        valid = np.zeros(num, dtype=bool)
        valid[0] = True
        key, key_rot, key_count = 0, np.eye(3), len(tracks.pts[0])
        for f in range(1, num):
            ids, pa, pb = tracks.common(key, f)
            if len(ids) < self.min_tracks:  # lost the keyframe: chain through the previous frame
                if not valid[f - 1]:
                    continue
                key, key_rot, key_count = f - 1, w2c[f - 1, :, :3], len(tracks.pts[f - 1])
                ids, pa, pb = tracks.common(key, f)
                if len(ids) < self.min_tracks:
                    continue
            rel, _ = _fit_rotation(_bearings(pa, K), _bearings(pb, K))
            w2c[f, :, :3] = rel @ key_rot
            valid[f] = True
            if len(ids) < 0.6 * key_count:
                key, key_rot, key_count = f, w2c[f, :, :3], len(tracks.pts[f])
        return w2c, valid

    def _full_vo(self, tracks: Tracks, K: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int | None]:
        """3D VO from the pair (0, k) on: poses, validity, and the frame where tracking was lost (or None)."""
        import cv2

        num = len(tracks.pts)
        w2c = np.tile(np.eye(3, 4), (num, 1, 1))
        valid = np.zeros(num, dtype=bool)
        ids, p0, pk = tracks.common(0, k)
        E, mask = cv2.findEssentialMat(p0.astype(np.float64), pk.astype(np.float64), K, cv2.RANSAC, 0.999, 1.0)
        if E is None or E.shape[0] < 3:
            raise ShotFailure("the essential matrix could not be estimated from the first frames")
        E = np.ascontiguousarray(E[:3])  # several stacked solutions are possible: take the first
        _, R, t, mask = cv2.recoverPose(E, p0.astype(np.float64), pk.astype(np.float64), K, mask=mask)
        valid[0] = True
        w2c[k] = np.concatenate([R, t.reshape(3, 1)], axis=1)
        valid[k] = True
        points: dict[int, np.ndarray] = {}
        inl = mask.ravel() > 0
        self._triangulate(points, ids[inl], p0[inl], pk[inl], w2c[0], w2c[k], K)
        if len(points) < self.min_tracks:
            raise ShotFailure(f"only {len(points)} points could be triangulated from the first frames")
        log.debug("VO init with frames 0 and %d: %d points", k, len(points))
        order = list(range(1, k)) + list(range(k + 1, num))
        stop = None
        for f in order:
            ok = self._pnp(tracks, f, points, w2c, valid, K)
            if not ok:
                if f > k:  # the map no longer covers the view: the caller re-initialises from here
                    stop = f
                    break
                continue
            valid[f] = True
            # New points: tracks in f without a 3D point, triangulated from their earliest posed sighting.
            self._extend_map(tracks, f, points, w2c, valid, K)
        if self.bundle_adjust and valid.sum() >= 3:
            w2c = _bundle_adjust(tracks, points, w2c, valid, K, self.reproj_px)
        return w2c, valid, stop

    def _pnp(self, tracks: Tracks, f: int, points: dict, w2c: np.ndarray, valid: np.ndarray,
             K: np.ndarray) -> bool:
        import cv2

        have = np.array([i in points for i in tracks.ids[f]], dtype=bool)
        if have.sum() < self.min_tracks:
            return False
        obj = np.stack([points[i] for i in tracks.ids[f][have]])
        img = tracks.pts[f][have].astype(np.float64)
        prev = np.flatnonzero(valid[:f])
        guess = w2c[prev[-1]] if prev.size else np.eye(3, 4)
        rvec0, _ = cv2.Rodrigues(guess[:, :3])
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj, img, K, None, rvec0.copy(), guess[:, 3:].copy(), useExtrinsicGuess=True, iterationsCount=200,
            reprojectionError=2.0 * self.reproj_px, confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or inliers is None or len(inliers) < self.min_tracks:
            return False
        inl = inliers.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], K, None, rvec, tvec)
        R, _ = cv2.Rodrigues(rvec)
        w2c[f] = np.concatenate([R, tvec.reshape(3, 1)], axis=1)
        return True

    def _extend_map(self, tracks: Tracks, f: int, points: dict, w2c: np.ndarray, valid: np.ndarray,
                    K: np.ndarray) -> None:
        missing = np.array([i not in points for i in tracks.ids[f]], dtype=bool)
        if not missing.any():
            return
        cand_ids = tracks.ids[f][missing]
        cand_pts = tracks.pts[f][missing]
        # The earliest posed frame that saw each candidate gives the widest baseline.
        for g in np.flatnonzero(valid[:f]):
            if not len(cand_ids):
                break
            ids, ia, ib = np.intersect1d(cand_ids, tracks.ids[g], assume_unique=True, return_indices=True)
            if not len(ids):
                continue
            self._triangulate(points, ids, tracks.pts[g][ib], cand_pts[ia], w2c[g], w2c[f], K)
            done = np.isin(cand_ids, ids)
            cand_ids, cand_pts = cand_ids[~done], cand_pts[~done]

    def _triangulate(self, points: dict, ids: np.ndarray, pa: np.ndarray, pb: np.ndarray, wa: np.ndarray,
                     wb: np.ndarray, K: np.ndarray) -> None:
        """Triangulate correspondences; keep points in front of both cameras, with parallax, reprojecting."""
        import cv2

        if not len(ids):
            return
        X = cv2.triangulatePoints(K @ wa, K @ wb, pa.T.astype(np.float64), pb.T.astype(np.float64))
        X = (X[:3] / np.where(np.abs(X[3]) < 1e-12, 1e-12, X[3])).T
        ca, cb = poses.camera_centers(wa), poses.camera_centers(wb)
        ra, rb = X - ca, X - cb
        cos = np.sum(ra * rb, 1) / np.maximum(np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1), 1e-12)
        parallax = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        ok = parallax >= self.triangulate_parallax_deg
        for w, p in ((wa, pa), (wb, pb)):
            cam = X @ w[:, :3].T + w[:, 3]
            proj = cam @ K.T
            uv = proj[:, :2] / np.where(np.abs(proj[:, 2:]) < 1e-12, 1e-12, proj[:, 2:])
            ok &= (cam[:, 2] > 0) & (np.linalg.norm(uv - p, axis=1) < self.reproj_px)
        for i, x in zip(ids[ok], X[ok], strict=True):
            points[int(i)] = x


def _hand_over_scale(before: np.ndarray, after: np.ndarray, steps: int = 5) -> float:
    """Scale for a re-initialised segment: its first steps as long as the previous segment's last ones."""
    prev = np.linalg.norm(np.diff(poses.camera_centers(before[-(steps + 1):]), axis=0), axis=1)
    new = np.linalg.norm(np.diff(poses.camera_centers(after[: steps + 1]), axis=0), axis=1)
    if not prev.size or not new.size or np.median(new) < 1e-12 or np.median(prev) < 1e-12:
        return 1.0
    return float(np.median(prev) / np.median(new))


# ----------------------------------------------------------------------------------- bundle adjustment
def _skew(v: np.ndarray) -> np.ndarray:
    """(N,3) → (N,3,3) cross-product matrices."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    zero = np.zeros_like(x)
    return np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=1).reshape(-1, 3, 3)


def _rodrigues(rvec: np.ndarray) -> np.ndarray:
    """(N,3) axis-angle → (N,3,3) rotations."""
    theta = np.linalg.norm(rvec, axis=1, keepdims=True)
    skew = _skew(rvec / np.maximum(theta, 1e-12))
    th = theta[:, :, None]
    return np.eye(3) + np.sin(th) * skew + (1 - np.cos(th)) * skew @ skew


def _block_diag(blocks: np.ndarray):
    """(n, b, b) → sparse block-diagonal CSR matrix (n·b square)."""
    from scipy import sparse

    n, b, _ = blocks.shape
    rows = (np.arange(n)[:, None, None] * b + np.arange(b)[None, :, None]).repeat(b, axis=2)
    cols = (np.arange(n)[:, None, None] * b + np.arange(b)[None, None, :]).repeat(b, axis=1)
    return sparse.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(n * b, n * b))


def _bundle_adjust(tracks: Tracks, points: dict, w2c: np.ndarray, valid: np.ndarray, K: np.ndarray,
                   reproj_px: float, iterations: int = 40) -> np.ndarray:
    """Levenberg–Marquardt over the posed frames (frame 0 fixed) and the points, Huber-weighted.

    Analytic Jacobians (rotation updated on the left, ``R ← exp([δω]×) R``) and the Schur complement on
    the camera block: the reduced system is only 6 × (frames − 1) wide. Monocular forward motion leaves a
    shallow valley between rotation and translation (bas-relief); an exact solver walks it where a
    generic sparse least-squares solver stalls.
    """
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    frames = np.flatnonzero(valid)
    frames = frames[frames != 0]
    if not len(frames) or len(points) < 10:
        return w2c
    frame_col = np.full(len(w2c), -1)
    frame_col[frames] = np.arange(len(frames))
    point_ids = np.array(sorted(points))
    obs_f, obs_p, obs_uv = [], [], []
    for f in np.flatnonzero(valid):
        idx = np.searchsorted(point_ids, tracks.ids[f])
        idx = np.minimum(idx, len(point_ids) - 1)
        hit = point_ids[idx] == tracks.ids[f]
        obs_f.append(np.full(hit.sum(), f))
        obs_p.append(idx[hit])
        obs_uv.append(tracks.pts[f][hit])
    obs_f, obs_p = np.concatenate(obs_f), np.concatenate(obs_p)
    obs_uv = np.concatenate(obs_uv).astype(np.float64)
    nf, npts, nobs = len(frames), len(point_ids), len(obs_f)
    rot = w2c[:, :, :3].copy()
    trans = w2c[:, :, 3].copy()
    X = np.stack([points[int(p)] for p in point_ids])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    col = frame_col[obs_f]
    moving = col >= 0

    def residuals(rot, trans, X):
        cam = np.einsum("nij,nj->ni", rot[obs_f], X[obs_p]) + trans[obs_f]
        z = np.where(np.abs(cam[:, 2]) < 1e-6, 1e-6, cam[:, 2])
        uv = np.stack([fx * cam[:, 0] / z + cx, fy * cam[:, 1] / z + cy], axis=1)
        return uv - obs_uv, cam, z

    def robust_cost(res):
        norm = np.linalg.norm(res, axis=1)
        return float(np.sum(np.where(norm <= reproj_px, 0.5 * norm**2, reproj_px * (norm - 0.5 * reproj_px))))

    res, cam, z = residuals(rot, trans, X)
    cost = robust_cost(res)
    cost0 = cost
    lam = 1e-3
    for _ in range(iterations):
        norm = np.linalg.norm(res, axis=1)
        weight = np.where(norm <= reproj_px, 1.0, reproj_px / np.maximum(norm, 1e-12))  # Huber IRLS
        d_proj = np.zeros((nobs, 2, 3))
        d_proj[:, 0, 0] = fx / z
        d_proj[:, 0, 2] = -fx * cam[:, 0] / z**2
        d_proj[:, 1, 1] = fy / z
        d_proj[:, 1, 2] = -fy * cam[:, 1] / z**2
        rx = cam - trans[obs_f]  # R X
        j_cam = np.concatenate([-d_proj @ _skew(rx), d_proj], axis=2)  # (nobs, 2, 6)
        j_pt = d_proj @ rot[obs_f]  # (nobs, 2, 3)
        wj_cam = j_cam * weight[:, None, None]
        wj_pt = j_pt * weight[:, None, None]
        U = np.zeros((nf, 6, 6))
        np.add.at(U, col[moving], np.einsum("nki,nkj->nij", wj_cam[moving], j_cam[moving]))
        V = np.zeros((npts, 3, 3))
        np.add.at(V, obs_p, np.einsum("nki,nkj->nij", wj_pt, j_pt))
        g_cam = np.zeros((nf, 6))
        np.add.at(g_cam, col[moving], np.einsum("nki,nk->ni", wj_cam[moving], res[moving]))
        g_pt = np.zeros((npts, 3))
        np.add.at(g_pt, obs_p, np.einsum("nki,nk->ni", wj_pt, res))
        w_blocks = np.einsum("nki,nkj->nij", wj_cam[moving], j_pt[moving])  # (m, 6, 3)
        rows = (col[moving][:, None, None] * 6 + np.arange(6)[None, :, None]).repeat(3, axis=2)
        cols = (obs_p[moving][:, None, None] * 3 + np.arange(3)[None, None, :]).repeat(6, axis=1)
        W = sparse.csr_matrix((w_blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(6 * nf, 3 * npts))
        improved = False
        for _ in range(8):
            U_d = U + lam * np.einsum("nii->ni", U)[:, :, None] * np.eye(6) + 1e-9 * np.eye(6)
            V_d = V + lam * np.einsum("nii->ni", V)[:, :, None] * np.eye(3) + 1e-9 * np.eye(3)
            V_inv_sp = _block_diag(np.linalg.inv(V_d))
            S = (_block_diag(U_d) - W @ V_inv_sp @ W.T).tocsc()
            rhs = -g_cam.ravel() + W @ (V_inv_sp @ g_pt.ravel())
            # SuperLU (single-threaded) on the banded reduced system: multi-threaded LAPACK on a small
            # dense matrix is many times slower on a busy machine.
            d_cam = spsolve(S, rhs)
            if not np.all(np.isfinite(d_cam)):
                lam *= 10
                continue
            d_pt = V_inv_sp @ (-g_pt.ravel() - W.T @ d_cam)
            d_cam, d_pt = d_cam.reshape(nf, 6), d_pt.reshape(npts, 3)
            new_rot, new_trans = rot.copy(), trans.copy()
            new_rot[frames] = _rodrigues(d_cam[:, :3]) @ rot[frames]
            new_trans[frames] = trans[frames] + d_cam[:, 3:]
            new_X = X + d_pt
            new_res, new_cam, new_z = residuals(new_rot, new_trans, new_X)
            new_cost = robust_cost(new_res)
            if new_cost < cost:
                rot, trans, X, res, cam, z = new_rot, new_trans, new_X, new_res, new_cam, new_z
                improved = cost - new_cost > 1e-7 * cost
                cost = new_cost
                lam = max(lam / 3, 1e-7)
                break
            lam *= 10
        if not improved:
            break
    log.debug("bundle adjustment: %d frames, %d points, %d observations, cost %.4g → %.4g", nf + 1, npts, nobs,
              cost0, cost)
    out = w2c.copy()
    out[frames, :, :3] = poses.project_to_so3(rot[frames])
    out[frames, :, 3] = trans[frames]
    return out


# ------------------------------------------------------------------------------------------------ colmap
class ColmapEstimator(PoseEstimator):
    """pycolmap structure-from-motion per shot: SIFT, sequential matching, incremental mapping.

    The camera is one ``SIMPLE_PINHOLE`` shared by the shot's frames, fixed to the ``K`` guess; with
    ``refine_focal=True`` bundle adjustment refines the focal length (off by default: on short shots with
    little rotation it is poorly constrained; it fell from 205 px to under 90 px on a 25-frame dolly). When
    pycolmap is not installed, or fewer than ``min_registered`` of the shot's frames register (pure
    rotations, for one, cannot be initialised by SfM), the shot falls back to :class:`VisualOdometry` with
    a warning.

    COLMAP runs single-threaded by default (``num_threads=1``): with threads its RANSAC draws differ from
    run to run, and on a 20-frame dolly one run in four converged to a reconstruction bent by 15°;
    single-threaded with a fixed ``seed`` the result is reproducible.
    """

    name = "colmap"

    def __init__(self, min_registered: float = 0.8, overlap: int = 10, refine_focal: bool = False,
                 num_threads: int = 1, seed: int = 0, init_min_tri_angle: float = 4.0,
                 fallback: PoseEstimator | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.init_min_tri_angle = init_min_tri_angle
        self.min_registered = min_registered
        self.overlap = overlap
        self.refine_focal = refine_focal
        self.num_threads = num_threads
        self.fallback = fallback or VisualOdometry()

    def _fall_back(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int], why: str) -> ShotPoses:
        msg = f"colmap: frames {frame_range[0]}–{frame_range[1] - 1}: {why}; falling back to visual odometry"
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
        est = self.fallback.estimate_shot(frames, K, frame_range)
        est.method = f"colmap→{est.method}"
        return est

    def estimate_shot(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        try:
            import pycolmap
        except ImportError:
            return self._fall_back(frames, K, frame_range, "pycolmap is not installed (pip install pycolmap)")
        # COLMAP logs every step through glog: keep it to errors unless we are debugging.
        quiet = not log.isEnabledFor(logging.DEBUG)
        old_level = pycolmap.logging.minloglevel
        if quiet:
            pycolmap.logging.minloglevel = 3  # our own warning reports a failed mapping
        try:
            return self._run(pycolmap, frames, K, frame_range)
        finally:
            pycolmap.logging.minloglevel = old_level

    def _run(self, pycolmap, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        import tempfile
        from pathlib import Path

        import cv2

        num = frames.shape[0]
        with tempfile.TemporaryDirectory(prefix="omnidirector-colmap-") as tmp:
            tmp = Path(tmp)
            image_dir = tmp / "images"
            image_dir.mkdir()
            names = [f"{i:06d}.png" for i in range(num)]
            for name, frame in zip(names, frames, strict=True):
                cv2.imwrite(str(image_dir / name), np.ascontiguousarray(frame[..., ::-1]))
            database = tmp / "database.db"
            reader = pycolmap.ImageReaderOptions()
            reader.camera_model = "SIMPLE_PINHOLE"
            # COLMAP puts the centre of the top-left pixel at (0.5, 0.5); ours is at (0, 0).
            reader.camera_params = f"{K[0, 0]},{K[0, 2] + 0.5},{K[1, 2] + 0.5}"
            extraction = pycolmap.FeatureExtractionOptions()
            extraction.num_threads = self.num_threads
            pycolmap.extract_features(database, image_dir, camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader, extraction_options=extraction,
                                      device=pycolmap.Device.cpu)
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = self.overlap
            pycolmap.match_sequential(database, pairing_options=pairing, device=pycolmap.Device.cpu)
            options = pycolmap.IncrementalPipelineOptions()
            options.ba_refine_focal_length = self.refine_focal
            options.ba_refine_principal_point = False
            options.ba_refine_extra_params = False
            options.num_threads = self.num_threads
            options.min_model_size = 3
            # A known camera: no focal refinement in registration either (COLMAP refines it per image by
            # default, which bends forward-moving shots), and a fixed seed for reproducible runs.
            options.mapper.abs_pose_refine_focal_length = self.refine_focal
            options.mapper.abs_pose_refine_extra_params = False
            # COLMAP's 16° initial triangulation angle suits photo collections; video frames are close
            # together and a 16° pair pushed a 49-frame dolly into a 46°-curved reconstruction.
            options.mapper.init_min_tri_angle = self.init_min_tri_angle
            options.random_seed = self.seed
            options.mapper.random_seed = self.seed
            options.triangulation.random_seed = self.seed
            models = pycolmap.incremental_mapping(database, image_dir, tmp / "sparse", options=options)
            if not models:
                return self._fall_back(frames, K, frame_range, "incremental mapping built no model")
            model = max(models.values(), key=lambda rec: rec.num_reg_images())
            w2c = np.tile(np.eye(3, 4), (num, 1, 1))
            K_all = np.broadcast_to(K, (num, 3, 3)).copy()
            valid = np.zeros(num, dtype=bool)
            for image in model.images.values():
                if not image.has_pose:
                    continue
                f = names.index(image.name)
                w2c[f] = image.cam_from_world().matrix()
                cam_k = np.array(image.camera.calibration_matrix(), dtype=np.float64)
                cam_k[0, 2] -= 0.5
                cam_k[1, 2] -= 0.5
                K_all[f] = cam_k
                valid[f] = True
        share = float(valid.mean())
        if share < self.min_registered:
            return self._fall_back(frames, K, frame_range, f"only {valid.sum()} of {num} frames registered")
        log.info("colmap: %d of %d frames registered", valid.sum(), num)
        K_all[~valid] = np.median(K_all[valid], axis=0)
        return ShotPoses(w2c, K_all, valid, "colmap")


# ------------------------------------------------------------------------------------------------- npz
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
