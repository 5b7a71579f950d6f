"""Monocular visual odometry (``vo``, the fast default back end).

SIFT keypoints matched frame to frame into tracks (KLT optional), two-view initialisation from the
essential matrix (``findEssentialMat`` + ``recoverPose``) once the tracks show enough parallax, PnP for
every frame against triangulated tracks, new tracks triangulated as the camera moves, and a final
bundle adjustment (Levenberg–Marquardt with a Schur complement).

Shots that cannot carry a 6-DoF trajectory get a rotation-only one (model ``rotation``, zero
translation) whenever rotations are measurable, with the reason in the report: no frame pair shows
parallax (a pan, tilt, roll or a static camera), the shot is short (fewer than ``short_shot`` frames),
the first frame has too few features for 3D, the 3D initialisation failed, or 6-DoF tracking posed
too few frames. Rotations come from the tracks' rays (Kabsch, outliers trimmed), chained over
keyframes; where every track breaks (a flash, a whip pan) the chain re-anchors on the next frame,
holding the rotation across the break (that frame is marked invalid). When the 3D map loses the view
mid-shot, VO re-initialises from the last posed frame and carries the scale over by assuming
constant speed across the hand-over (the log says where).

Every OpenCV call goes through :mod:`.cvsafe`: a degenerate pair (identical or collinear points, too
few matches, a solver assertion, NaN) fails that pair or that shot with a reason, never the run.
"""

from __future__ import annotations

import logging

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.perception.pose import cvsafe
from omnidirector_jax.perception.pose.base import PoseEstimator, ShotFailure, ShotPoses
from omnidirector_jax.perception.pose.bundle_adjust import bundle_adjust
from omnidirector_jax.perception.pose.cvsafe import CvFailure
from omnidirector_jax.perception.pose.rotation import bearings, fit_rotation, rotation_between
from omnidirector_jax.perception.pose.tracks import Tracks, match_features, track_features

log = logging.getLogger("omnidirector_jax.perception.pose_estimators")


class VisualOdometry(PoseEstimator):
    """Monocular visual odometry: essential-matrix initialisation, PnP tracking, bundle adjustment."""

    name = "vo"

    def __init__(self, init_parallax_deg: float = 2.0, min_parallax_deg: float = 0.6, min_tracks: int = 25,
                 triangulate_parallax_deg: float = 1.5, reproj_px: float = 1.5, bundle_adjust: bool = True,
                 features: str = "sift", min_rotation_tracks: int = 8, short_shot: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        if features not in ("sift", "klt"):
            raise OmniDirectorError(f"unknown feature tracker {features!r} (use 'sift' or 'klt')")
        self.features = features
        self.init_parallax_deg = init_parallax_deg  # start 3D once a frame pair shows this much parallax
        self.min_parallax_deg = min_parallax_deg  # below this everywhere: the shot is a pure rotation
        self.min_tracks = min_tracks  # for 3D (essential matrix, PnP)
        self.min_rotation_tracks = min_rotation_tracks  # a rotation needs far fewer matches than 3D
        self.short_shot = short_shot  # shorter shots get rotations only: too few frames for parallax
        self.triangulate_parallax_deg = triangulate_parallax_deg
        self.reproj_px = reproj_px
        self.bundle_adjust = bundle_adjust

    # The shot's frames → tracks → (rotation-only | full VO).
    def estimate_shot(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        import cv2

        try:
            K = cvsafe.check_intrinsics(K)
        except CvFailure as err:
            raise ShotFailure(str(err)) from err
        gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        if float(gray.std()) < 1.0:
            raise ShotFailure("the frames are blank (no image content to track)")
        tracks = match_features(gray, K) if self.features == "sift" else track_features(gray)
        return self.estimate_tracks(tracks, K, frame_range)

    def estimate_tracks(self, tracks: Tracks, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        """Poses of one shot from its feature tracks (``frame_range`` only labels the log messages)."""
        tracks = _usable_tracks(tracks)
        num = len(tracks.pts)
        label = f"shot frames {frame_range[0]}–{frame_range[1] - 1}"
        if num < self.short_shot:
            return self._rotation_shot(tracks, K, f"short shot ({num} frames < {self.short_shot})")
        if len(tracks.pts[0]) < self.min_tracks:
            return self._rotation_shot(tracks, K, f"only {len(tracks.pts[0])} features in its first frame "
                                                  f"(3D needs {self.min_tracks})")
        K_all = np.broadcast_to(K, (num, 3, 3)).copy()
        w2c = np.tile(np.eye(3, 4), (num, 1, 1))
        valid = np.zeros(num, dtype=bool)
        start, methods, held, why = 0, [], [], ""
        # Segments: 3D VO until tracking is lost, then re-initialise from the last posed frame, with the
        # scale carried over by assuming the camera keeps its speed across the hand-over.
        while start < num - 1:
            sub = Tracks(tracks.pts[start:], tracks.ids[start:])
            seg = self._segment(sub, K, (frame_range[0] + start, frame_range[1]), first=start == 0)
            if seg is None:  # a pure rotation from the start: the whole shot
                log.debug("%s: no parallax, pure rotation", label)
                return self._rotation_shot(tracks, K, f"no parallax ≥ {self.min_parallax_deg}° against its "
                                                      "first frame: pure rotation or static camera")
            seg_w2c, seg_valid, stop, method, seg_why = seg
            methods.append(method)
            why = why or seg_why
            idx = np.flatnonzero(seg_valid)
            if start:
                seg_w2c = seg_w2c.copy()
                seg_w2c[:, :, 3] *= _hand_over_scale(w2c[:start + 1][valid[:start + 1]], seg_w2c[idx])
            base = poses.to_4x4(w2c[start])
            w2c[start + idx] = (poses.to_4x4(seg_w2c[idx]) @ base)[:, :3]
            valid[start + idx] = True
            if stop is None:
                break
            log.info("%s: tracking lost at frame %d, re-initialising", label, frame_range[0] + start + stop)
            start += int(idx[idx < stop].max())
            if len(tracks.common(start, start + 1)[0]) < self.min_tracks:
                # The tracks themselves broke (a flash, heavy blur): start afresh one frame later from the
                # same pose; that held frame is not an estimate.
                start += 1
                w2c[start] = w2c[start - 1]
                held.append(start)
        valid[held] = False
        method = methods[0] if len(set(methods)) == 1 else "+".join(dict.fromkeys(methods))
        if "vo" not in methods:
            return ShotPoses(w2c, K_all, valid, method, "rotation", why)
        if valid.mean() < self.min_valid_share:
            # 6-DoF tracking kept too few frames: rotations may still cover the shot.
            share = f"6-DoF VO posed only {valid.mean():.0%} of its frames"
            try:
                return self._rotation_shot(tracks, K, share)
            except ShotFailure:
                pass
        reason = "part of the shot is rotation-only: " + why if why else ""
        return ShotPoses(w2c, K_all, valid, method, "6dof", reason)

    def _rotation_shot(self, tracks: Tracks, K: np.ndarray, reason: str) -> ShotPoses:
        """The whole shot as rotations only, or :class:`ShotFailure` when too few frames get one."""
        num = len(tracks.pts)
        w2c, valid, breaks = self._rotation_only(tracks, K)
        share = float(valid.mean())
        if share < self.min_valid_share:
            raise ShotFailure(f"{reason}; rotation-only fit posed only {share:.0%} of its frames")
        if breaks:
            reason += f"; {breaks} track break(s) bridged by holding the rotation"
        return ShotPoses(w2c, np.broadcast_to(K, (num, 3, 3)).copy(), valid, "vo-rotation", "rotation", reason)

    def _segment(self, tracks: Tracks, K: np.ndarray, frame_range: tuple[int, int], first: bool):
        """One VO segment from frame 0 of ``tracks``: (w2c, valid, stop, method, why), or None for a pure
        rotation at the start of a shot. Falls back to rotations only when 3D initialisation fails."""
        candidates = self._init_candidates(tracks, K)
        if not candidates and first:
            return None
        failure = "no frame pair with enough parallax"
        for k in candidates:
            try:
                return (*self._full_vo(tracks, K, k), "vo", "")
            except ShotFailure as err:
                log.debug("VO initialisation with frames 0 and %d failed: %s", k, err)
                failure = str(err)
        # Rotations are still measurable without 3D points; the translation is lost (held), so say so.
        log.info("frames %d–%d: 3D initialisation failed (%s); using rotation-only poses (no translation)",
                 frame_range[0], frame_range[1] - 1, failure)
        w2c, valid, _ = self._rotation_only(tracks, K)
        return w2c, valid, None, "vo-rotation-fallback", f"3D initialisation failed ({failure})"

    def _parallax(self, tracks: Tracks, K: np.ndarray, f: int, g: int) -> tuple[float, int]:
        """Median angle (deg) left between the rays of two frames after the best pure rotation."""
        ids, pa, pb = tracks.common(f, g)
        if len(ids) < self.min_tracks:
            return 0.0, len(ids)
        _, res = fit_rotation(bearings(pa, K), bearings(pb, K))
        par = float(np.median(res))
        return (par if np.isfinite(par) else 0.0), len(ids)

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

    def _rotation_only(self, tracks: Tracks, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Rotations chained over keyframes from the tracks' rays; zero translation.

        Each frame is fitted against the current keyframe, else the previous posed frame; the keyframe
        moves on once it shares under 60% of its tracks. A frame that no posed frame shares enough
        tracks with is invalid; the next frame that has tracks becomes an anchor that holds the last
        rotation (also invalid), so the rest of the shot is chained from there. Returns (w2c, valid,
        number of such breaks).
        """
        num = len(tracks.pts)
        w2c = np.tile(np.eye(3, 4), (num, 1, 1))
        valid = np.zeros(num, dtype=bool)
        valid[0] = True
        key, key_count = 0, len(tracks.pts[0])
        last = 0  # last frame with a rotation (valid or anchor)
        breaks = 0
        for f in range(1, num):
            rel, ids = None, ()
            for ref in dict.fromkeys((key, last)):
                ids, pa, pb = tracks.common(ref, f)
                try:
                    rel = rotation_between(pa, pb, K, self.min_rotation_tracks)
                    ref_rot = w2c[ref, :, :3]
                    break
                except CvFailure as err:
                    log.debug("rotation %d→%d: %s", ref, f, err)
            if rel is None:  # every track broke: hold the rotation, re-anchor here
                w2c[f, :, :3] = w2c[last, :, :3]
                breaks += 1
                key, key_count, last = f, len(tracks.pts[f]), f
                continue
            w2c[f, :, :3] = rel @ ref_rot
            valid[f] = True
            last = f
            if len(ids) < 0.6 * key_count:
                key, key_count = f, len(tracks.pts[f])
        return w2c, valid, breaks

    def _full_vo(self, tracks: Tracks, K: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int | None]:
        """3D VO from the pair (0, k) on: poses, validity, and the frame where tracking was lost (or None)."""
        import cv2

        num = len(tracks.pts)
        w2c = np.tile(np.eye(3, 4), (num, 1, 1))
        valid = np.zeros(num, dtype=bool)
        ids, p0, pk = tracks.common(0, k)
        try:
            p0 = cvsafe.check_points("initial pair", p0, self.min_tracks)
            pk = cvsafe.check_points("initial pair", pk, self.min_tracks)
            E, mask = cvsafe.call("findEssentialMat", cv2.findEssentialMat, p0, pk, K, cv2.RANSAC, 0.999, 1.0)
            if E is None or E.shape[0] < 3 or mask is None:
                raise CvFailure("the essential matrix could not be estimated from the first frames")
            E = np.ascontiguousarray(E[:3])  # several stacked solutions are possible: take the first
            cvsafe.finite("findEssentialMat", E)
            _, R, t, mask = cvsafe.call("recoverPose", cv2.recoverPose, E, p0, pk, K, mask=mask)
            cvsafe.finite("recoverPose", R, t)
        except CvFailure as err:
            raise ShotFailure(str(err)) from err
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
            w2c = bundle_adjust(tracks, points, w2c, valid, K, self.reproj_px)
        return w2c, valid, stop

    def _pnp(self, tracks: Tracks, f: int, points: dict, w2c: np.ndarray, valid: np.ndarray,
             K: np.ndarray) -> bool:
        """Pose of frame ``f`` from its tracks with 3D points (into ``w2c[f]``); False when impossible."""
        import cv2

        have = np.array([i in points for i in tracks.ids[f]], dtype=bool)
        if have.sum() < self.min_tracks:
            return False
        obj = np.stack([points[i] for i in tracks.ids[f][have]])
        img = tracks.pts[f][have].astype(np.float64)
        prev = np.flatnonzero(valid[:f])
        guess = w2c[prev[-1]] if prev.size else np.eye(3, 4)
        try:
            cvsafe.check_points("PnP", img, self.min_tracks)
            cvsafe.finite("PnP points", obj)
            rvec0, _ = cvsafe.call("Rodrigues", cv2.Rodrigues, guess[:, :3])
            ok, rvec, tvec, inliers = cvsafe.call(
                "solvePnPRansac", cv2.solvePnPRansac, obj, img, K, None, rvec0.copy(), guess[:, 3:].copy(),
                useExtrinsicGuess=True, iterationsCount=200, reprojectionError=2.0 * self.reproj_px,
                confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
            if not ok or inliers is None or len(inliers) < self.min_tracks:
                return False
            inl = inliers.ravel()
            rvec, tvec = cvsafe.call("solvePnPRefineLM", cv2.solvePnPRefineLM, obj[inl], img[inl], K, None,
                                     rvec, tvec)
            R, _ = cvsafe.call("Rodrigues", cv2.Rodrigues, rvec)
            cvsafe.finite("PnP pose", R, tvec)
        except CvFailure as err:
            log.debug("frame %d: %s", f, err)
            return False
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
        try:
            X = cvsafe.call("triangulatePoints", cv2.triangulatePoints, K @ wa, K @ wb,
                            pa.T.astype(np.float64), pb.T.astype(np.float64))
        except CvFailure as err:
            log.debug("%s", err)
            return
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            X = (X[:3] / np.where(np.abs(X[3]) < 1e-12, 1e-12, X[3])).T
            ca, cb = poses.camera_centers(wa), poses.camera_centers(wb)
            ra, rb = X - ca, X - cb
            cos = np.sum(ra * rb, 1) / np.maximum(np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1), 1e-12)
            parallax = np.degrees(np.arccos(np.clip(cos, -1, 1)))
            ok = np.isfinite(X).all(axis=1) & (parallax >= self.triangulate_parallax_deg)
            for w, p in ((wa, pa), (wb, pb)):
                cam = X @ w[:, :3].T + w[:, 3]
                proj = cam @ K.T
                uv = proj[:, :2] / np.where(np.abs(proj[:, 2:]) < 1e-12, 1e-12, proj[:, 2:])
                ok &= (cam[:, 2] > 0) & (np.linalg.norm(uv - p, axis=1) < self.reproj_px)
        for i, x in zip(ids[ok], X[ok], strict=True):
            points[int(i)] = x


def _usable_tracks(tracks: Tracks, bound: float = 1e7) -> Tracks:
    """Drop observations that are not finite pixel coordinates (no detector makes them, but a track
    source handed in from elsewhere may): the solvers downstream assume finite, bounded input."""
    pts, ids = [], []
    for p, i in zip(tracks.pts, tracks.ids, strict=True):
        p = np.asarray(p).reshape(-1, 2)
        keep = np.isfinite(p).all(axis=1) & (np.abs(p) < bound).all(axis=1)
        pts.append(p[keep])
        ids.append(np.asarray(i)[keep])
    return Tracks(pts, ids)


def _hand_over_scale(before: np.ndarray, after: np.ndarray, steps: int = 5) -> float:
    """Scale for a re-initialised segment: its first steps as long as the previous segment's last ones."""
    prev = np.linalg.norm(np.diff(poses.camera_centers(before[-(steps + 1):]), axis=0), axis=1)
    new = np.linalg.norm(np.diff(poses.camera_centers(after[: steps + 1]), axis=0), axis=1)
    if not prev.size or not new.size or np.median(new) < 1e-12 or np.median(prev) < 1e-12:
        return 1.0
    return float(np.median(prev) / np.median(new))


