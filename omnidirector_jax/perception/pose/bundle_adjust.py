"""Bundle adjustment for visual odometry: Levenberg–Marquardt with a Schur complement on the cameras."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.perception.pose.tracks import Tracks

log = logging.getLogger("omnidirector_jax.perception.pose_estimators")


def skew(v: np.ndarray) -> np.ndarray:
    """(N,3) → (N,3,3) cross-product matrices."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    zero = np.zeros_like(x)
    return np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=1).reshape(-1, 3, 3)


def rodrigues(rvec: np.ndarray) -> np.ndarray:
    """(N,3) axis-angle → (N,3,3) rotations."""
    theta = np.linalg.norm(rvec, axis=1, keepdims=True)
    k = skew(rvec / np.maximum(theta, 1e-12))
    th = theta[:, :, None]
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k


def _block_diag(blocks: np.ndarray):
    """(n, b, b) → sparse block-diagonal CSR matrix (n·b square)."""
    from scipy import sparse

    n, b, _ = blocks.shape
    rows = (np.arange(n)[:, None, None] * b + np.arange(b)[None, :, None]).repeat(b, axis=2)
    cols = (np.arange(n)[:, None, None] * b + np.arange(b)[None, None, :]).repeat(b, axis=1)
    return sparse.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(n * b, n * b))


def bundle_adjust(tracks: Tracks, points: dict, w2c: np.ndarray, valid: np.ndarray, K: np.ndarray,
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
    if not len(frames) or len(points) < 10 or not np.isfinite(w2c[valid]).all():
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
        j_cam = np.concatenate([-d_proj @ skew(rx), d_proj], axis=2)  # (nobs, 2, 6)
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
            try:
                V_inv_sp = _block_diag(np.linalg.inv(V_d))
                S = (_block_diag(U_d) - W @ V_inv_sp @ W.T).tocsc()
                rhs = -g_cam.ravel() + W @ (V_inv_sp @ g_pt.ravel())
                # SuperLU (single-threaded) on the banded reduced system: multi-threaded LAPACK on a small
                # dense matrix is many times slower on a busy machine.
                with warnings.catch_warnings():  # a singular system is handled below (more damping)
                    warnings.simplefilter("ignore")
                    d_cam = spsolve(S, rhs)
            except (np.linalg.LinAlgError, RuntimeError, ValueError):
                d_cam = np.full(6 * nf, np.nan)
            if not np.all(np.isfinite(d_cam)):
                lam *= 10
                continue
            d_pt = V_inv_sp @ (-g_pt.ravel() - W.T @ d_cam)
            d_cam, d_pt = d_cam.reshape(nf, 6), d_pt.reshape(npts, 3)
            new_rot, new_trans = rot.copy(), trans.copy()
            new_rot[frames] = rodrigues(d_cam[:, :3]) @ rot[frames]
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
    if not (np.isfinite(rot[frames]).all() and np.isfinite(trans[frames]).all()):
        return w2c  # diverged: keep the poses it started from
    out = w2c.copy()
    out[frames, :, :3] = poses.project_to_so3(rot[frames])
    out[frames, :, 3] = trans[frames]
    return out

