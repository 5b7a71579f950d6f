"""Camera space → image: projection, near-plane and image clipping, culling, 1/16-px snapping."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from omnidirector_jax.camera.raster.config import RasterConfig, base_line_width


def project_points(pts: jax.Array, K: jax.Array, dist: jax.Array | None) -> jax.Array:
    """Camera-space points (..., 3) → pixels (..., 2): pinhole, or Kannala–Brandt when ``dist`` is given.

    Fisheye: θ = atan2(r, z), θ_d = θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸), u = fx·θ_d·x/r + cx.
    """
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    if dist is None:
        inv_z = 1.0 / z
        mx, my = x * inv_z, y * inv_z
    else:
        r2 = x * x + y * y
        r = jnp.sqrt(jnp.maximum(r2, 1e-24))
        theta = jnp.arctan2(r, z)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (dist[0] + t2 * (dist[1] + t2 * (dist[2] + t2 * dist[3]))))
        scale = jnp.where(r2 > 1e-24, theta_d / r, 1.0 / z)  # on the axis: the pinhole limit
        mx, my = x * scale, y * scale
    return jnp.stack([K[0, 0] * mx + K[0, 1] * my + K[0, 2], K[1, 1] * my + K[1, 2]], axis=-1)


def _clip_near(p0: jax.Array, p1: jax.Array, near: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Clip camera-space segments (…, 3) to z ≥ near; returns the new ends and whether anything is left."""
    z0, z1 = p0[..., 2], p1[..., 2]
    alive = (z0 >= near) | (z1 >= near)
    denom = jnp.where(jnp.abs(z1 - z0) > 1e-12, z1 - z0, 1.0)
    s = jnp.clip((near - z0) / denom, 0.0, 1.0)[..., None]
    hit = p0 + (p1 - p0) * s
    p0n = jnp.where((z0 < near)[..., None], hit, p0)
    p1n = jnp.where((z1 < near)[..., None], hit, p1)
    return p0n, p1n, alive


def _clip_rect(a: jax.Array, b: jax.Array, lo: jax.Array, hi: jax.Array):
    """Liang–Barsky: clip 2D segments a→b (…, 2) to the box [lo, hi]; returns ends and a keep mask."""
    d = b - a
    t0 = jnp.zeros(a.shape[:-1])
    t1 = jnp.ones(a.shape[:-1])
    for axis in range(2):
        da = d[..., axis]
        safe = jnp.where(jnp.abs(da) > 1e-12, da, 1.0)
        ta = (lo[axis] - a[..., axis]) / safe
        tb = (hi[axis] - a[..., axis]) / safe
        tmin, tmax = jnp.minimum(ta, tb), jnp.maximum(ta, tb)
        parallel = jnp.abs(da) <= 1e-12
        inside = (a[..., axis] >= lo[axis]) & (a[..., axis] <= hi[axis])
        t0 = jnp.where(parallel, jnp.where(inside, t0, 2.0), jnp.maximum(t0, tmin))
        t1 = jnp.where(parallel, jnp.where(inside, t1, -1.0), jnp.minimum(t1, tmax))
    keep = t0 <= t1
    return a + d * t0[..., None], a + d * t1[..., None], keep


def frame_segments(scene: dict, w2c: jax.Array, K: jax.Array, dist: jax.Array | None, shot: jax.Array,
                   spacing: jax.Array, view: jax.Array, height: int, width: int, cfg: RasterConfig) -> dict:
    """Visible 2D segments of one frame (fixed size S·pieces), with their family, fog, width and mask."""
    rot, trans = w2c[:3, :3], w2c[:3, 3]
    # Spelled out, not einsum or a sum: XLA:CPU hands either to a library call that costs more than the arithmetic.
    seg = scene["segments"]
    cam = seg[..., 0, None] * rot[:, 0] + seg[..., 1, None] * rot[:, 1] + seg[..., 2, None] * rot[:, 2] + trans
    mid = (cam[:, 0] + cam[:, 1]) * 0.5
    mid_dist = jnp.sqrt(mid[:, 0] ** 2 + mid[:, 1] ** 2 + mid[:, 2] ** 2)
    fog = jnp.clip(1.0 - mid_dist / view, 0.0, 1.0)
    keep = (scene["valid"] & (scene["shot"] == shot) & (mid[:, 2] > -jnp.maximum(spacing, 1.0))
            & (mid_dist < view) & (fog >= cfg.fog_cutoff))
    p0, p1, alive = _clip_near(cam[:, 0], cam[:, 1], cfg.near)
    keep &= alive
    family = scene["family"]
    if dist is not None:  # subdivide so straight 3D lines bend under the fisheye lens
        n = cfg.fisheye_pieces
        s = jnp.linspace(0.0, 1.0, n + 1)[None, :, None]
        pts = p0[:, None] + (p1 - p0)[:, None] * s  # (S, n+1, 3)
        uv = project_points(pts, K, dist)
        a, b = uv[:, :-1].reshape(-1, 2), uv[:, 1:].reshape(-1, 2)
        rep = lambda x: jnp.repeat(x, n, axis=0)  # noqa: E731
        keep, fog, family = rep(keep), rep(fog), rep(family)
    else:
        a, b = project_points(p0, K, None), project_points(p1, K, None)
    base = base_line_width(width, cfg)
    margin = math.ceil(base) + 3.0
    a, b, inside = _clip_rect(a, b, jnp.array([-margin, -margin]),
                              jnp.array([width - 1 + margin, height - 1 + margin]))
    keep &= inside & jnp.all(jnp.isfinite(a) & jnp.isfinite(b), axis=-1)
    if cfg.profile == "opencv":  # cv2.line with shift=4 snaps end points to 1/16 px
        a, b = jnp.round(a * 16.0) / 16.0, jnp.round(b * 16.0) / 16.0
        thickness = jnp.maximum(1.0, jnp.round(base * fog))
        fog = jnp.round(fog * 255.0) / 255.0  # the reference passes the colour fog·c as integers
    else:
        thickness = jnp.maximum(1.0, base * fog)
    a = jnp.where(keep[:, None], a, 0.0)
    b = jnp.where(keep[:, None], b, 0.0)
    return {"a": a, "b": b, "family": family, "fog": fog, "thickness": thickness, "keep": keep}

