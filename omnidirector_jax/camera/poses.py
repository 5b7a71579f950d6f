"""Camera pose math in the OpenCV convention (+X right, +Y down, +Z forward).

Extrinsics are world-to-camera ``w2c`` matrices, 3×4 or 4×4: ``x_cam = R @ x_world + t``. The functions
here are NumPy (float64) for host-side work; ``jax.numpy`` twins live where they are needed on device
(``camera/augment.py``). Every function accepts a leading batch of poses.
"""

from __future__ import annotations

import numpy as np

DEFAULT_FOCAL_SCALE = 0.8  # f = 0.8 · max(W, H): the paper's resolution-agnostic "empirical scale factor"


def to_4x4(pose: np.ndarray) -> np.ndarray:
    """(..., 3, 4) or (..., 4, 4) → (..., 4, 4) homogeneous matrix."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape[-2:] == (4, 4):
        return pose.copy()
    if pose.shape[-2:] != (3, 4):
        raise ValueError(f"expected poses of shape (..., 3, 4) or (..., 4, 4), got {pose.shape}")
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), pose.shape[:-2] + (1, 4))
    return np.concatenate([pose, bottom], axis=-2)


def invert(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (w2c ↔ c2w); keeps the input's 3×4 or 4×4 shape."""
    pose = np.asarray(pose, dtype=np.float64)
    rot, trans = pose[..., :3, :3], pose[..., :3, 3]
    rot_inv = np.swapaxes(rot, -1, -2)
    out = np.concatenate([rot_inv, -(rot_inv @ trans[..., None])], axis=-1)
    return to_4x4(out) if pose.shape[-2:] == (4, 4) else out


w2c_to_c2w = invert
c2w_to_w2c = invert


def camera_centers(w2c: np.ndarray) -> np.ndarray:
    """Camera centres in world coordinates, ``-Rᵀ t``: (..., 3, 4) → (..., 3)."""
    w2c = np.asarray(w2c, dtype=np.float64)
    rot, trans = w2c[..., :3, :3], w2c[..., :3, 3]
    return -np.einsum("...ji,...j->...i", rot, trans)


def relative(w2c_a: np.ndarray, w2c_b: np.ndarray) -> np.ndarray:
    """Pose of camera b relative to camera a (4×4): maps a's camera frame to b's camera frame."""
    return to_4x4(w2c_b) @ np.linalg.inv(to_4x4(w2c_a))


def project_to_so3(mat: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius norm) to each 3×3 matrix, via SVD with the determinant fixed to +1."""
    mat = np.asarray(mat, dtype=np.float64)
    u, _, vt = np.linalg.svd(mat)
    det = np.sign(np.linalg.det(u @ vt))
    fix = np.ones(mat.shape[:-2] + (3,))
    fix[..., 2] = det
    return (u * fix[..., None, :]) @ vt


def rotation_angle_deg(rot: np.ndarray) -> np.ndarray:
    """Rotation angle of each 3×3 rotation matrix, in degrees (numerically safe near 0 and 180°)."""
    rot = np.asarray(rot, dtype=np.float64)
    cos = (np.trace(rot, axis1=-2, axis2=-1) - 1.0) / 2.0
    # Near 0° arccos(cos) loses precision; use the skew part for the sine instead.
    skew = np.stack(
        [rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0], rot[..., 1, 0] - rot[..., 0, 1]], -1
    )
    sin = np.linalg.norm(skew, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def quat_from_matrix(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations → (..., 4) unit quaternions (w, x, y, z), w ≥ 0."""
    rot = np.asarray(rot, dtype=np.float64)
    m = rot.reshape(-1, 3, 3)
    q = np.empty((m.shape[0], 4))
    for i, r in enumerate(m):
        trace = np.trace(r)
        if trace > 0:
            s = 2.0 * np.sqrt(trace + 1.0)
            q[i] = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
        else:
            k = int(np.argmax(np.diag(r)))
            a, b = (k + 1) % 3, (k + 2) % 3
            s = 2.0 * np.sqrt(1.0 + r[k, k] - r[a, a] - r[b, b])
            q[i, 0] = (r[b, a] - r[a, b]) / s
            q[i, 1 + k] = 0.25 * s
            q[i, 1 + a] = (r[a, k] + r[k, a]) / s
            q[i, 1 + b] = (r[b, k] + r[k, b]) / s
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return q.reshape(rot.shape[:-2] + (4,))


def matrix_from_quat(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z) → (..., 3, 3) rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Spherical interpolation between unit quaternions (shortest arc); alpha in [0, 1], broadcast."""
    q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
    alpha = np.asarray(alpha, np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin = np.sin(theta)
    near = sin < 1e-8  # nearly identical: linear interpolation is exact enough and avoids 0/0
    safe_sin = np.where(near, 1.0, sin)
    w0 = np.where(near, 1.0 - alpha, np.sin((1.0 - alpha) * theta) / safe_sin)
    w1 = np.where(near, alpha, np.sin(alpha * theta) / safe_sin)
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def densify(w2c: np.ndarray, stride: int, num_frames: int | None = None,
            intrinsics: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Poses estimated every ``stride``-th frame → one pose per frame.

    Rotations are projected to SO(3) and interpolated by SLERP, camera centres and intrinsics linearly.
    Args: w2c (N, 3, 4); intrinsics (N, 3, 3) or None. Returns (T, 3, 4) and (T, 3, 3) | None with
    ``T = num_frames`` or ``(N - 1) · stride + 1``; frames past the last key pose hold it.
    """
    w2c = np.asarray(w2c, dtype=np.float64)
    n = w2c.shape[0]
    total = (n - 1) * stride + 1 if num_frames is None else int(num_frames)
    keys = np.arange(n) * stride
    frames = np.arange(total, dtype=np.float64)
    idx = np.clip(np.searchsorted(keys, frames, side="right") - 1, 0, max(n - 2, 0))
    nxt = np.minimum(idx + 1, n - 1)
    span = np.maximum(keys[nxt] - keys[idx], 1)
    alpha = np.clip((frames - keys[idx]) / span, 0.0, 1.0)

    rot = project_to_so3(w2c[:, :3, :3])
    centers = camera_centers(w2c)
    quats = quat_from_matrix(rot)
    rot_t = matrix_from_quat(slerp(quats[idx], quats[nxt], alpha))
    center_t = (1 - alpha)[:, None] * centers[idx] + alpha[:, None] * centers[nxt]
    trans_t = -np.einsum("tij,tj->ti", rot_t, center_t)
    dense = np.concatenate([rot_t, trans_t[..., None]], axis=-1)
    dense_k = None
    if intrinsics is not None:
        intrinsics = np.asarray(intrinsics, dtype=np.float64)
        dense_k = (1 - alpha)[:, None, None] * intrinsics[idx] + alpha[:, None, None] * intrinsics[nxt]
    return dense, dense_k


def euler_xyz_deg(rot: np.ndarray) -> np.ndarray:
    """Euler angles (degrees) of a rotation, as (tilt about X, pan about Y, roll about Z).

    Decomposition R = Ry(pan) · Rx(tilt) · Rz(roll) (YXZ order, natural for a camera that pans first);
    for the relative rotations used by the prompt rules these are the familiar tilt/pan/roll.
    Input (..., 3, 3) → (..., 3).
    """
    rot = np.asarray(rot, dtype=np.float64)
    tilt = np.arcsin(np.clip(-rot[..., 1, 2], -1.0, 1.0))
    pan = np.arctan2(rot[..., 0, 2], rot[..., 2, 2])
    roll = np.arctan2(rot[..., 1, 0], rot[..., 1, 1])
    return np.degrees(np.stack([tilt, pan, roll], axis=-1))


def rotation_from_euler_deg(tilt: float, pan: float, roll: float) -> np.ndarray:
    """Inverse of :func:`euler_xyz_deg`: R = Ry(pan) · Rx(tilt) · Rz(roll)."""
    a, b, c = np.radians([tilt, pan, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def default_intrinsics(height: int, width: int, focal: float | None = None) -> np.ndarray:
    """Pinhole K with ``f = 0.8 · max(W, H)`` (unless given) and the principal point at the image centre.

    Pixel centres are integer coordinates, so the centre of a W-wide image is at (W - 1) / 2.
    """
    f = DEFAULT_FOCAL_SCALE * max(width, height) if focal is None else float(focal)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def look_at_w2c(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, -1.0, 0.0)) -> np.ndarray:
    """w2c (3×4) of a camera at ``eye`` looking at ``target``; ``up`` is world up (−Y in OpenCV)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight up/down: any perpendicular works
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    return np.concatenate([rot, (-rot @ eye)[:, None]], axis=1)
