"""Rotation-only geometry: rays from pixels and the rotation that best maps one ray set onto another."""

from __future__ import annotations

import numpy as np

from omnidirector_jax.perception.pose.cvsafe import CvFailure


def bearings(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (N,2) → unit rays in camera coordinates (N,3)."""
    homo = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ np.linalg.inv(K).T
    return homo / np.linalg.norm(homo, axis=1, keepdims=True)


def fit_rotation(b_from: np.ndarray, b_to: np.ndarray, iters: int = 3) -> tuple[np.ndarray, np.ndarray]:
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


def rotation_between(pa: np.ndarray, pb: np.ndarray, K: np.ndarray, min_points: int,
                     max_median_deg: float = 3.0) -> np.ndarray:
    """Camera rotation from frame a to frame b (``x_b ≈ R x_a`` in rays) from matched pixels.

    Raises :class:`CvFailure` when the matches cannot pin a rotation down: too few, non-finite, all on
    one spot (the rotation about that ray is free), or not explained by a rotation at all (the median
    residual above ``max_median_deg``: too much parallax or wrong matches).
    """
    pa = np.asarray(pa, np.float64).reshape(-1, 2)
    pb = np.asarray(pb, np.float64).reshape(-1, 2)
    if len(pa) < min_points:
        raise CvFailure(f"{len(pa)} matches for a rotation (need {min_points})")
    if not (np.isfinite(pa).all() and np.isfinite(pb).all()):
        raise CvFailure("non-finite matches")
    ba, bb = bearings(pa, K), bearings(pb, K)
    if not (np.isfinite(ba).all() and np.isfinite(bb).all()):
        raise CvFailure("non-finite rays (check the focal length)")
    spread = np.linalg.svd(ba - ba.mean(axis=0), compute_uv=False)
    if spread[1] < 1e-4 * np.sqrt(len(ba)):  # rays on one great circle or one spot: roll is free
        raise CvFailure("the matches lie on one line or spot: rotation undetermined")
    rot, res = fit_rotation(ba, bb)
    med = float(np.median(res))
    if not np.isfinite(rot).all() or not np.isfinite(med):
        raise CvFailure("rotation fit did not converge")
    if med > max_median_deg:
        raise CvFailure(f"the matches are not explained by a rotation (median residual {med:.2f}°)")
    return rot
