"""Feature tracks over one shot: SIFT keypoints matched frame to frame (default) or KLT optical flow.

Every OpenCV call goes through :mod:`.cvsafe`: a frame pair OpenCV cannot handle contributes no
matches (its tracks end there) instead of raising.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from omnidirector_jax.perception.pose import cvsafe
from omnidirector_jax.perception.pose.cvsafe import CvFailure

log = logging.getLogger("omnidirector_jax.perception.pose_estimators")


@dataclasses.dataclass
class Tracks:
    """Tracks over one shot: ``pts[f]`` (M_f, 2) with track ids ``ids[f]`` (M_f,)."""

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
        try:
            found = cvsafe.call("goodFeaturesToTrack", cv2.goodFeaturesToTrack, img, maxCorners=max_corners,
                                qualityLevel=0.005, minDistance=min_distance, mask=mask, blockSize=5)
        except CvFailure as err:
            log.debug("%s", err)
            found = None
        return np.zeros((0, 2), np.float32) if found is None else found.reshape(-1, 2).astype(np.float32)

    pts0 = detect(gray[0], np.zeros((0, 2)))
    all_pts, all_ids = [pts0], [np.arange(len(pts0))]
    next_id = len(pts0)
    for f in range(1, len(gray)):
        prev_pts, prev_ids = all_pts[-1], all_ids[-1]
        cur_pts, cur_ids = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
        if len(prev_pts):
            try:
                p1, st1, _ = cvsafe.call("calcOpticalFlowPyrLK", cv2.calcOpticalFlowPyrLK, gray[f - 1], gray[f],
                                         prev_pts.reshape(-1, 1, 2), None, **lk)
                p0, st0, _ = cvsafe.call("calcOpticalFlowPyrLK", cv2.calcOpticalFlowPyrLK, gray[f], gray[f - 1],
                                         p1, None, **lk)
                p1, p0 = p1.reshape(-1, 2), p0.reshape(-1, 2)
                fb = np.linalg.norm(p0 - prev_pts, axis=1)
                inside = ((p1[:, 0] >= border) & (p1[:, 0] < width - border) & (p1[:, 1] >= border)
                          & (p1[:, 1] < height - border))
                ok = (st1.ravel() == 1) & (st0.ravel() == 1) & (fb < fb_threshold) & inside
                cur_pts, cur_ids = p1[ok], prev_ids[ok]
            except CvFailure as err:
                log.debug("frame %d: %s", f, err)
        if len(cur_pts) < 0.8 * max_corners:
            new = detect(gray[f], cur_pts)
            new = new[: max(max_corners - len(cur_pts), 0)]
            cur_pts = np.concatenate([cur_pts, new])
            cur_ids = np.concatenate([cur_ids, np.arange(next_id, next_id + len(new))])
            next_id += len(new)
        all_pts.append(cur_pts.astype(np.float32))
        all_ids.append(cur_ids.astype(np.int64))
    return Tracks(all_pts, all_ids)


def verify_pair(pa: np.ndarray, pb: np.ndarray, K: np.ndarray, epipolar_px: float) -> np.ndarray:
    """Inlier mask of matched pixels between two frames: essential-matrix RANSAC, else a homography.

    A homography explains a rotating camera (and a planar scene) exactly, so when the essential matrix
    is degenerate or OpenCV refuses the points the pair is still checked. Raises :class:`CvFailure`
    when neither model can be fitted.
    """
    import cv2

    pa = cvsafe.check_points("matches", pa, 8)
    pb = cvsafe.check_points("matches", pb, 8)
    try:
        E, mask = cvsafe.call("findEssentialMat", cv2.findEssentialMat, pa, pb, K, cv2.RANSAC, 0.999, epipolar_px)
        cvsafe.finite("findEssentialMat", E, mask)
        return mask.ravel() > 0
    except CvFailure as err:
        log.debug("essential matrix refused (%s): verifying with a homography", err)
    H, mask = cvsafe.call("findHomography", cv2.findHomography, pa, pb, cv2.RANSAC, 2.0 * epipolar_px)
    cvsafe.finite("findHomography", H, mask)
    return mask.ravel() > 0


def match_features(gray: np.ndarray, K: np.ndarray, max_features: int = 2000, ratio: float = 0.8,
                   lookback: int = 2, epipolar_px: float = 1.0) -> Tracks:
    """Tracks from SIFT keypoints matched between consecutive frames (and up to ``lookback`` back).

    Every observation is a keypoint *detected* in its frame, so, unlike KLT, positions do not drift along
    a track (KLT drifts by pixels over tens of frames of a dolly: the patch changes scale). Matches pass
    Lowe's ratio test, a mutual check and a geometric RANSAC check (:func:`verify_pair`).
    """
    import cv2

    sift = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=0.01)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    kps, descs = [], []
    for f, img in enumerate(gray):
        try:
            kp, desc = cvsafe.call("SIFT", sift.detectAndCompute, img, None)
        except CvFailure as err:
            log.debug("frame %d: %s", f, err)
            kp, desc = (), None
        kps.append(np.array([k.pt for k in kp], dtype=np.float32).reshape(-1, 2))
        descs.append(np.zeros((0, 128), np.float32) if desc is None else desc)

    def verified_matches(f: int, g: int) -> np.ndarray:
        """(M, 2) keypoint index pairs (in f, in g); none when the pair cannot be verified."""
        none = np.zeros((0, 2), dtype=np.int64)
        if len(descs[f]) < 8 or len(descs[g]) < 8:
            return none
        try:
            fwd = cvsafe.call("knnMatch", matcher.knnMatch, descs[g], descs[f], k=2)
            bwd = cvsafe.call("knnMatch", matcher.knnMatch, descs[f], descs[g], k=2)
        except CvFailure as err:
            log.debug("frames %d, %d: %s", f, g, err)
            return none
        back = {m[0].queryIdx: m[0].trainIdx for m in bwd if m}
        pairs = [(m[0].trainIdx, m[0].queryIdx) for m in fwd
                 if len(m) == 2 and m[0].distance < ratio * m[1].distance and back.get(m[0].trainIdx) == m[0].queryIdx]
        if len(pairs) < 8:
            return none
        pairs = np.array(pairs, dtype=np.int64)
        pa, pb = kps[f][pairs[:, 0]].astype(np.float64), kps[g][pairs[:, 1]].astype(np.float64)
        flow = np.linalg.norm(pa - pb, axis=1)
        # Tiny motions make E degenerate (any rotation-only motion fits): accept them on the flow alone.
        if np.median(flow) < 0.5:
            return pairs[flow < 2.0]
        try:
            return pairs[verify_pair(pa, pb, K, epipolar_px)]
        except CvFailure as err:
            log.debug("frames %d, %d: no verified matches (%s)", f, g, err)
            return none

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
