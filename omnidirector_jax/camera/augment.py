"""On-device augmentation for training: smooth pose jitter and random line colours (jittable, PRNG-keyed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rotation_from_axis_angle(vec: jax.Array) -> jax.Array:
    """Rodrigues: axis-angle vectors (..., 3) in radians → rotation matrices (..., 3, 3)."""
    angle = jnp.linalg.norm(vec, axis=-1, keepdims=True)
    axis = vec / jnp.maximum(angle, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = jnp.zeros_like(x)
    skew = jnp.stack([jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1),
                      jnp.stack([-y, x, zero], -1)], -2)
    s, c = jnp.sin(angle)[..., None], jnp.cos(angle)[..., None]
    return jnp.eye(3) + s * skew + (1 - c) * (skew @ skew)


def jitter_poses(key: jax.Array, w2c: jax.Array, spacing: jax.Array, *, rotation_deg: float = 1.0,
                 translation: float = 0.05, knots: int = 4, knot_frames: int | None = None) -> jax.Array:
    """Smoothly perturb a trajectory: w2c (T, 3, 4) → (T, 3, 4).

    Noise is drawn at ``knots`` control points and interpolated linearly over the frames, so the camera
    wobbles instead of shaking. Rotation noise has std ``rotation_deg`` (camera frame); camera-centre
    noise has std ``translation · g`` with ``g`` the grid spacing (scalar or per frame), so it scales with
    the room. ``knot_frames`` (instead of ``knots``): one knot every that many frames, so a short window gets
    the slow drift of a long clip's wobble, not a shake (its frames sit in the first knot interval).
    """
    num = w2c.shape[0]
    k_rot, k_trans = jax.random.split(key)
    if knot_frames is not None:
        knots = (num - 1) // knot_frames + 2
        at = jnp.arange(num, dtype=jnp.float32) / knot_frames
    else:
        at = jnp.linspace(0.0, knots - 1.0, num)
    lo = jnp.clip(jnp.floor(at).astype(jnp.int32), 0, knots - 2) if knots > 1 else jnp.zeros(num, jnp.int32)
    frac = (at - lo)[:, None]

    def smooth(k):
        ctrl = jax.random.normal(k, (knots, 3))
        if knots == 1:
            return jnp.broadcast_to(ctrl, (num, 3))
        return ctrl[lo] * (1 - frac) + ctrl[lo + 1] * frac

    d_rot = rotation_from_axis_angle(jnp.deg2rad(rotation_deg) * smooth(k_rot))
    rot, trans = w2c[:, :3, :3], w2c[:, :3, 3]
    centers = -jnp.einsum("tji,tj->ti", rot, trans)
    centers = centers + translation * jnp.reshape(spacing, (-1, 1)) * smooth(k_trans)
    new_rot = d_rot @ rot
    new_trans = -jnp.einsum("tij,tj->ti", new_rot, centers)
    return jnp.concatenate([new_rot, new_trans[..., None]], axis=-1)


def random_colors(key: jax.Array, min_saturation: float = 0.6) -> jax.Array:
    """One random saturated, fully bright RGB colour per line family: (3, 3) in [0, 1]."""
    k_h, k_s = jax.random.split(key)
    hue = jax.random.uniform(k_h, (3,))
    sat = jax.random.uniform(k_s, (3,), minval=min_saturation, maxval=1.0)
    # HSV → RGB with V = 1: each channel is 1 − S·clip(…) of the distance to its hue sector.
    offsets = jnp.array([0.0, 2.0 / 3.0, 1.0 / 3.0])
    k = (hue[:, None] * 6.0 + offsets[None] * 6.0) % 6.0
    return 1.0 - sat[:, None] * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
