"""Guards around OpenCV calls: degenerate input becomes a :class:`CvFailure` with a reason, not a crash.

OpenCV asserts on inputs that real footage produces (OpenCV 5.1's ``findEssentialMat`` dies in
``solvePoly`` on identical or collinear point sets), and returns NaN or ``None`` on others. Callers
catch :class:`CvFailure` and drop that frame pair, or fail that shot, with the reason it carries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")


class CvFailure(Exception):
    """An OpenCV (or pycolmap) call refused its input or returned nothing usable."""


def call(what: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)``; OpenCV's own errors (assertions, bad sizes) become :class:`CvFailure`."""
    import cv2

    try:
        return fn(*args, **kwargs)
    except cv2.error as err:
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        raise CvFailure(f"{what}: OpenCV refused the input ({lines[-1].strip() if lines else err!r})") from err


def check_points(what: str, pts: np.ndarray, minimum: int, spread_px: float = 1.0) -> np.ndarray:
    """(N, 2) finite float64 points, at least ``minimum`` of them, not all on one line or one spot.

    The spread check is what keeps the minimal solvers away from their degenerate (rank-deficient)
    cases, which OpenCV answers with assertion failures rather than errors.
    """
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if len(pts) < minimum:
        raise CvFailure(f"{what}: {len(pts)} points (need {minimum})")
    if not np.isfinite(pts).all():
        raise CvFailure(f"{what}: non-finite point coordinates")
    centred = pts - pts.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[-1] / np.sqrt(len(pts)) < spread_px:
        raise CvFailure(f"{what}: the points lie on a line or a single spot")
    return pts


def check_intrinsics(K: np.ndarray) -> np.ndarray:
    """A finite 3×3 ``K`` with positive focal lengths that are not absurd for pixel coordinates."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise CvFailure(f"intrinsics must be a finite 3×3 matrix, got shape {K.shape}")
    if not (1e-3 < K[0, 0] < 1e7 and 1e-3 < K[1, 1] < 1e7):
        raise CvFailure(f"focal lengths ({K[0, 0]:.3g}, {K[1, 1]:.3g}) px are outside (1e-3, 1e7)")
    return K


def finite(what: str, *arrays: np.ndarray | None) -> None:
    """Raise :class:`CvFailure` when a result is missing or holds NaN/inf."""
    for a in arrays:
        if a is None or not np.all(np.isfinite(a)):
            raise CvFailure(f"{what}: no finite result")
