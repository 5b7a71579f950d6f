"""Pure-JAX camera-grid rasterizer: fixed shapes, no host callbacks; ``jit``, ``vmap`` and ``grad`` work.

Pipeline per frame: world segments → camera space → cull (shot, behind, view distance, fog) → clip to the
near plane → project (pinhole, or Kannala–Brandt fisheye on subdivided segments) → clip to the image →
anti-aliased lines → per-family accumulation → composite (X, then Z, then vertical, like the reference).

Two line profiles:

* ``opencv``: reproduces ``cv2.line(..., LINE_AA, shift=4)`` of OpenCV 5.0 — a 1-px line writes three
  pixels per major-axis step with weights that depend on the minor-axis offset and the slope (measured
  tables below, from ``tools/calibrate_opencv_aa.py``), thicker lines are a solid band with those weights
  on its two edges and round caps. End points are snapped to 1/16 px as OpenCV does. For parity tests.
* ``smooth``: coverage ``sigmoid((w/2 − d) / softness)`` of the distance ``d`` from a pixel to the
  segment, with continuous width — useful gradients with respect to cameras and colours. For training.

Two methods produce the same image:

* ``scatter`` (CPU/GPU): a static per-frame budget of candidate pixels is shared out among the visible
  segments by the length of their pixel footprints (cumulative sum + ``searchsorted``); each candidate
  computes its weight and is scatter-added into per-family accumulators.
* ``tiled`` (TPU, where scatter is slow): 16×16 tiles each pick the ``tile_segments`` segments whose
  footprint overlaps them and evaluate every pixel against those — dense math, no scatter.

Overlaps composite as OpenCV's blending does for same-coloured lines: per family we accumulate
``A = Σa``, ``F = Σ fog·a`` and ``L = Σ log(1 − a)``; the family then covers ``1 − e^L`` of the pixel with
colour ``c · F / A``, and families are laid over each other in order.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

# Measured from OpenCV 5.0 (tools/calibrate_opencv_aa.py): weight of a pixel at minor-axis offset
# d ∈ [−1.5, 1.5] (1/16 px steps, columns) from a 1-px LINE_AA line of slope |m| = j/8 (rows).
_AA_PROFILE = np.array([
    [0.000, 0.024, 0.039, 0.055, 0.071, 0.098, 0.129, 0.165, 0.208, 0.255, 0.310, 0.373, 0.427, 0.494, 0.561, 0.620, 0.678, 0.737, 0.784, 0.820, 0.851, 0.875, 0.894, 0.906, 0.910, 0.910, 0.902, 0.886, 0.867, 0.839, 0.800, 0.757, 0.710, 0.655, 0.592, 0.529, 0.463, 0.396, 0.341, 0.282, 0.227, 0.184, 0.145, 0.114, 0.082, 0.063, 0.047, 0.031, 0.024],  # noqa: E501
    [0.000, 0.031, 0.047, 0.063, 0.082, 0.114, 0.145, 0.184, 0.227, 0.282, 0.341, 0.404, 0.463, 0.533, 0.596, 0.655, 0.714, 0.761, 0.804, 0.839, 0.871, 0.890, 0.906, 0.910, 0.910, 0.910, 0.898, 0.878, 0.855, 0.824, 0.784, 0.737, 0.686, 0.624, 0.561, 0.494, 0.431, 0.373, 0.314, 0.255, 0.208, 0.165, 0.129, 0.098, 0.071, 0.055, 0.039, 0.024, 0.000],  # noqa: E501
    [0.000, 0.039, 0.047, 0.063, 0.082, 0.114, 0.149, 0.192, 0.235, 0.290, 0.345, 0.408, 0.475, 0.537, 0.600, 0.663, 0.722, 0.769, 0.812, 0.851, 0.875, 0.898, 0.910, 0.918, 0.918, 0.918, 0.906, 0.886, 0.863, 0.831, 0.792, 0.745, 0.694, 0.635, 0.569, 0.502, 0.439, 0.376, 0.314, 0.263, 0.208, 0.173, 0.137, 0.098, 0.078, 0.055, 0.039, 0.024, 0.000],  # noqa: E501
    [0.000, 0.039, 0.047, 0.071, 0.090, 0.122, 0.157, 0.200, 0.243, 0.302, 0.361, 0.420, 0.482, 0.553, 0.620, 0.678, 0.741, 0.788, 0.831, 0.867, 0.894, 0.910, 0.925, 0.933, 0.933, 0.929, 0.922, 0.906, 0.882, 0.851, 0.812, 0.765, 0.710, 0.655, 0.584, 0.518, 0.451, 0.392, 0.329, 0.271, 0.220, 0.180, 0.137, 0.106, 0.078, 0.063, 0.047, 0.024, 0.000],  # noqa: E501
    [0.000, 0.039, 0.055, 0.071, 0.090, 0.129, 0.157, 0.208, 0.255, 0.310, 0.373, 0.439, 0.506, 0.576, 0.639, 0.702, 0.761, 0.812, 0.851, 0.890, 0.914, 0.929, 0.941, 0.949, 0.949, 0.945, 0.937, 0.922, 0.898, 0.871, 0.835, 0.788, 0.733, 0.671, 0.604, 0.537, 0.467, 0.404, 0.341, 0.282, 0.227, 0.184, 0.145, 0.106, 0.078, 0.063, 0.047, 0.024, 0.000],  # noqa: E501
    [0.000, 0.039, 0.055, 0.071, 0.098, 0.137, 0.173, 0.216, 0.271, 0.329, 0.392, 0.455, 0.522, 0.596, 0.663, 0.725, 0.788, 0.835, 0.875, 0.910, 0.933, 0.949, 0.961, 0.965, 0.965, 0.965, 0.957, 0.941, 0.922, 0.894, 0.855, 0.812, 0.757, 0.698, 0.631, 0.561, 0.490, 0.420, 0.361, 0.294, 0.235, 0.192, 0.149, 0.114, 0.082, 0.071, 0.047, 0.031, 0.000],  # noqa: E501
    [0.000, 0.047, 0.055, 0.078, 0.106, 0.145, 0.180, 0.227, 0.282, 0.345, 0.408, 0.478, 0.549, 0.624, 0.694, 0.757, 0.820, 0.863, 0.902, 0.933, 0.957, 0.969, 0.976, 0.980, 0.980, 0.980, 0.973, 0.961, 0.945, 0.918, 0.882, 0.839, 0.788, 0.725, 0.659, 0.584, 0.514, 0.443, 0.376, 0.310, 0.255, 0.208, 0.157, 0.122, 0.090, 0.071, 0.055, 0.031, 0.000],  # noqa: E501
    [0.000, 0.047, 0.063, 0.082, 0.106, 0.149, 0.192, 0.243, 0.294, 0.365, 0.431, 0.506, 0.580, 0.655, 0.722, 0.788, 0.847, 0.890, 0.925, 0.957, 0.973, 0.984, 0.992, 0.992, 0.992, 0.992, 0.988, 0.980, 0.965, 0.941, 0.910, 0.871, 0.816, 0.757, 0.690, 0.616, 0.537, 0.467, 0.396, 0.329, 0.271, 0.216, 0.173, 0.129, 0.098, 0.078, 0.055, 0.031, 0.000],  # noqa: E501
    [0.000, 0.031, 0.055, 0.078, 0.098, 0.137, 0.180, 0.227, 0.282, 0.345, 0.420, 0.494, 0.569, 0.647, 0.722, 0.788, 0.847, 0.898, 0.937, 0.965, 0.980, 0.992, 0.996, 1.000, 1.000, 1.000, 1.000, 0.996, 0.988, 0.976, 0.953, 0.918, 0.875, 0.820, 0.753, 0.690, 0.612, 0.533, 0.455, 0.384, 0.314, 0.255, 0.200, 0.157, 0.114, 0.082, 0.063, 0.047, 0.031],  # noqa: E501
], dtype=np.float32)
# Weight factor of a column at major-axis distance s ∈ [−1.5, 1.5] (1/16 px) inside a 1-px line's end point.
_AA_END_RAMP = np.array([0.000] * 8 + [
    0.004, 0.034, 0.084, 0.129, 0.175, 0.220, 0.261, 0.302, 0.345, 0.384, 0.422, 0.463, 0.498, 0.532, 0.569, 0.601,
    0.634, 0.664, 0.692, 0.722, 0.750, 0.776, 0.802, 0.823, 0.845, 0.869, 0.890, 0.912, 0.931, 0.948, 0.966, 0.983,
    0.996] + [1.000] * 8, dtype=np.float32)
_CAP_SOFTNESS = 0.6  # OpenCV's round caps: coverage clip(r + 0.6 − d, 0, 1) fits its AA circles best
_ALPHA_MAX = 1.0 - 1e-6  # keeps log(1 − a) finite under full coverage

PROFILES = ("opencv", "smooth")
METHODS = ("scatter", "tiled")


@dataclasses.dataclass(frozen=True)
class RasterConfig:
    """Static rasterizer settings (hashable: it is a static argument of the jitted functions)."""

    profile: str = "opencv"  # 'opencv' (matches cv2.line LINE_AA) | 'smooth' (differentiable)
    method: str = "scatter"  # 'scatter' (CPU/GPU) | 'tiled' (TPU: no scatter)
    line_width: float | None = None  # width at full fog; None → max(4, W / 320)
    pixel_budget: int | None = None  # candidate pixels per frame (scatter); None → H·W / 3
    near: float = 0.1  # near plane (camera z)
    fog_cutoff: float = 0.05  # segments dimmer than this are dropped
    fisheye_pieces: int = 16  # sub-segments per segment for fisheye lenses (≥ 12; ~32 for strong lenses)
    frame_batch: int = 4  # frames per lax.map step (XLA:CPU materialises per-frame temporaries)
    tile: int = 16  # tiled method: tile side in pixels
    tile_segments: int = 32  # tiled method: segments considered per tile
    smooth_softness: float = 0.35  # smooth profile: sigmoid temperature in pixels

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"unknown line profile {self.profile!r}; choose from {PROFILES}")
        if self.method not in METHODS:
            raise ValueError(f"unknown raster method {self.method!r}; choose from {METHODS}")
        if self.fisheye_pieces < 1 or self.frame_batch < 1 or self.tile < 1 or self.tile_segments < 1:
            raise ValueError("fisheye_pieces, frame_batch, tile and tile_segments must be ≥ 1")


def base_line_width(width: int, cfg: RasterConfig) -> float:
    return float(cfg.line_width) if cfg.line_width is not None else max(4.0, width / 320.0)


# ------------------------------------------------------------------------------------------ geometry
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
    cam = jnp.einsum("ij,skj->ski", rot, scene["segments"]) + trans  # (S, 2, 3)
    mid = cam.mean(axis=1)
    mid_dist = jnp.linalg.norm(mid, axis=-1)
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


# ------------------------------------------------------------------------------------------ profiles
def _interp_table(table: jax.Array, pos: jax.Array) -> jax.Array:
    """Linear interpolation in a 1D table at fractional index ``pos`` (clamped)."""
    n = table.shape[-1]
    pos = jnp.clip(pos, 0.0, n - 1.0)
    i0 = jnp.floor(pos).astype(jnp.int32)
    i1 = jnp.minimum(i0 + 1, n - 1)
    f = pos - i0
    return table[i0] * (1 - f) + table[i1] * f


def _aa_weight(slope: jax.Array, offset: jax.Array) -> jax.Array:
    """OpenCV thin-line weight for minor-axis ``offset`` (px) at ``slope`` = |minor/major| ∈ [0, 1]."""
    table = jnp.asarray(_AA_PROFILE)
    sp = jnp.clip(slope * 8.0, 0.0, 8.0)
    s0 = jnp.floor(sp).astype(jnp.int32)
    s1 = jnp.minimum(s0 + 1, 8)
    fs = sp - s0
    dp = jnp.clip(offset * 16.0 + 24.0, 0.0, 48.0)
    d0 = jnp.floor(dp).astype(jnp.int32)
    d1 = jnp.minimum(d0 + 1, 48)
    fd = dp - d0
    flat = table.reshape(-1)
    g = lambda s, d: flat[s * 49 + d]  # noqa: E731
    w = (g(s0, d0) * (1 - fd) + g(s0, d1) * fd) * (1 - fs) + (g(s1, d0) * (1 - fd) + g(s1, d1) * fd) * fs
    return jnp.where(jnp.abs(offset) <= 1.5, w, 0.0)


def _end_ramp(s: jax.Array) -> jax.Array:
    return _interp_table(jnp.asarray(_AA_END_RAMP), s * 16.0 + 24.0)


def _segment_frame(seg: dict) -> dict:
    """Per-segment quantities in (major, minor) axes: a → major coordinate, b → minor coordinate."""
    a, b = seg["a"], seg["b"]
    d = b - a
    x_major = jnp.abs(d[:, 0]) >= jnp.abs(d[:, 1])
    maj0 = jnp.where(x_major, a[:, 0], a[:, 1])
    min0 = jnp.where(x_major, a[:, 1], a[:, 0])
    maj1 = jnp.where(x_major, b[:, 0], b[:, 1])
    min1 = jnp.where(x_major, b[:, 1], b[:, 0])
    swap = maj1 < maj0
    maj0, maj1 = jnp.where(swap, maj1, maj0), jnp.where(swap, maj0, maj1)
    min0, min1 = jnp.where(swap, min1, min0), jnp.where(swap, min0, min1)
    span = maj1 - maj0
    m = jnp.where(span > 1e-9, (min1 - min0) / jnp.where(span > 1e-9, span, 1.0), 0.0)
    return {"x_major": x_major, "maj0": maj0, "maj1": maj1, "min0": min0, "min1": min1, "m": m}


def _half_rows(seg: dict, geo: dict, cfg: RasterConfig) -> jax.Array:
    """Rows above/below the centre row that a segment can touch (R; the window is 2R + 1 rows)."""
    t = seg["thickness"]
    stretch = jnp.sqrt(1.0 + geo["m"] ** 2)  # minor-axis extent of a perpendicular width
    if cfg.profile == "opencv":
        offset = jnp.where(t > 1.5, jnp.floor((t + 1.0) / 2.0), 0.0)
        return jnp.ceil(offset * stretch).astype(jnp.int32) + 1
    return jnp.ceil((t / 2.0 + 3.0 * cfg.smooth_softness) * stretch).astype(jnp.int32) + 1


def _col_pad(seg: dict, cfg: RasterConfig) -> jax.Array:
    """Columns drawn beyond each end point (end ramp or cap)."""
    t = seg["thickness"]
    if cfg.profile == "opencv":
        return jnp.where(t > 1.5, jnp.floor((t + 1.0) / 2.0) + 1.0, 1.0).astype(jnp.int32)
    return jnp.ceil(t / 2.0 + 3.0 * cfg.smooth_softness).astype(jnp.int32)


def pixel_weight(seg: dict, geo: dict, idx: jax.Array, maj: jax.Array, row: jax.Array,
                 cfg: RasterConfig) -> jax.Array:
    """Line weight a ∈ [0, 1] of pixel (major ``maj``, minor ``row``) for segments ``idx`` (any shape)."""
    take = lambda k: geo[k][idx]  # noqa: E731
    maj0, maj1, min0, m = take("maj0"), take("maj1"), take("min0"), take("m")
    majf = maj.astype(jnp.float32)
    rowf = row.astype(jnp.float32)
    t = seg["thickness"][idx]
    if cfg.profile == "smooth":
        # Distance from the pixel centre to the segment (round caps), in image pixels.
        min1 = take("min1")
        pa = jnp.stack([majf - maj0, rowf - min0], -1)
        ab = jnp.stack([maj1 - maj0, min1 - min0], -1)
        s = jnp.clip(jnp.sum(pa * ab, -1) / jnp.maximum(jnp.sum(ab * ab, -1), 1e-9), 0.0, 1.0)
        d = jnp.linalg.norm(pa - ab * s[..., None], axis=-1)
        return jax.nn.sigmoid((t / 2.0 - d) / cfg.smooth_softness)
    slope = jnp.abs(m)
    centre = min0 + (majf - maj0) * m  # minor coordinate of the line at this column
    thin = t < 1.5
    # 1-px line: the three rows around round(centre), weights from the measured profile and end ramp.
    yc = jnp.floor(centre + 0.5)
    ramp = _end_ramp(jnp.minimum(majf - maj0, maj1 - majf))
    w_thin = jnp.where(jnp.abs(rowf - yc) <= 1.0, _aa_weight(slope, rowf - centre), 0.0) * ramp
    # Thick line: a solid band between edge lines offset by o = ⌊(t+1)/2⌋ px across the line (OpenCV 5),
    # each edge anti-aliased with the thin-line weight, plus round caps of radius o.
    o = jnp.floor((t + 1.0) / 2.0)
    h = o * jnp.sqrt(1.0 + m * m)
    lo_edge, hi_edge = centre - h, centre + h
    lo, hi = jnp.floor(lo_edge + 0.5), jnp.floor(hi_edge + 0.5)
    in_span = (majf >= jnp.floor(maj0 + 0.5)) & (majf <= jnp.floor(maj1 + 0.5))
    band = jnp.where((rowf >= lo) & (rowf <= hi), 1.0,
                     jnp.where(rowf == lo - 1, _aa_weight(slope, rowf - lo_edge),
                               jnp.where(rowf == hi + 1, _aa_weight(slope, rowf - hi_edge), 0.0)))
    band = jnp.where(in_span, band, 0.0)
    min1 = take("min1")
    d0 = jnp.hypot(majf - maj0, rowf - min0)
    d1 = jnp.hypot(majf - maj1, rowf - min1)
    cap = jnp.clip(o + _CAP_SOFTNESS - jnp.minimum(d0, d1), 0.0, 1.0)
    return jnp.where(thin, w_thin, jnp.maximum(band, cap))


# -------------------------------------------------------------------------------------- compositing
def _composite(acc: jax.Array, colors: jax.Array) -> jax.Array:
    """acc (3 families, 3 quantities [A, F, L], H, W) → RGB (H, W, 3) in [0, 1]."""
    img = jnp.zeros(acc.shape[2:] + (3,), acc.dtype)
    for f in range(3):
        total, fogged, log_clear = acc[f, 0], acc[f, 1], acc[f, 2]
        clear = jnp.exp(log_clear)
        tint = jnp.where(total > 0, fogged / jnp.where(total > 0, total, 1.0), 0.0)
        img = img * clear[..., None] + ((1.0 - clear) * tint)[..., None] * colors[f]
    return img


def _quantities(a: jax.Array, fog: jax.Array) -> jax.Array:
    a = jnp.clip(a, 0.0, _ALPHA_MAX)
    return jnp.stack([a, a * fog, jnp.log1p(-a)], axis=-1)


def _raster_scatter(seg: dict, height: int, width: int, cfg: RasterConfig) -> tuple[jax.Array, jax.Array]:
    """Accumulators (3, 3, H, W) by budgeted candidate pixels + scatter-add; also the overflow count."""
    geo = _segment_frame(seg)
    half = _half_rows(seg, geo, cfg)
    pad = _col_pad(seg, cfg)
    n_major = jnp.where(geo["x_major"], width, height)
    c0 = jnp.clip(jnp.floor(geo["maj0"]).astype(jnp.int32) - pad, 0, n_major - 1)
    c1 = jnp.clip(jnp.ceil(geo["maj1"]).astype(jnp.int32) + pad, 0, n_major - 1)
    rows = 2 * half + 1
    count = jnp.where(seg["keep"], (c1 - c0 + 1) * rows, 0)
    ends = jnp.cumsum(count)
    total = ends[-1]
    budget = cfg.pixel_budget or (height * width) // 3
    sample = jnp.arange(budget, dtype=jnp.int32)
    idx = jnp.minimum(jnp.searchsorted(ends, sample, side="right"), count.shape[0] - 1)
    local = sample - (ends[idx] - count[idx])
    col = c0[idx] + local // rows[idx]
    k = local % rows[idx] - half[idx]
    colf = col.astype(jnp.float32)
    clamped = jnp.clip(colf, geo["maj0"][idx], geo["maj1"][idx])
    centre = geo["min0"][idx] + (clamped - geo["maj0"][idx]) * geo["m"][idx]
    if cfg.profile == "opencv":  # thin lines follow the unclamped line past their ends (the end ramp)
        line = geo["min0"][idx] + (colf - geo["maj0"][idx]) * geo["m"][idx]
        centre = jnp.where(seg["thickness"][idx] < 1.5, line, centre)
    row = jnp.floor(centre + 0.5).astype(jnp.int32) + k
    weight = pixel_weight(seg, geo, idx, col, row, cfg)
    x_major = geo["x_major"][idx]
    px, py = jnp.where(x_major, col, row), jnp.where(x_major, row, col)
    ok = (sample < total) & (px >= 0) & (px < width) & (py >= 0) & (py < height) & (weight > 0)
    flat = seg["family"][idx] * (height * width) + py * width + px
    flat = jnp.where(ok, flat, 3 * height * width)  # out of range: dropped by the scatter
    vals = _quantities(jnp.where(ok, weight, 0.0), seg["fog"][idx])
    acc = jnp.zeros((3 * height * width, 3), jnp.float32).at[flat].add(vals, mode="drop")
    acc = acc.reshape(3, height, width, 3).transpose(0, 3, 1, 2)
    return acc, jnp.maximum(total - budget, 0)


def _raster_tiled(seg: dict, height: int, width: int, cfg: RasterConfig) -> tuple[jax.Array, jax.Array]:
    """Accumulators (3, 3, H, W) by tiles: each tile evaluates its nearest ``tile_segments`` segments."""
    geo = _segment_frame(seg)
    half = _half_rows(seg, geo, cfg).astype(jnp.float32)
    pad = _col_pad(seg, cfg).astype(jnp.float32)
    ts = cfg.tile
    ty, tx = -(-height // ts), -(-width // ts)
    # Footprint box of each segment in image x/y (major/minor padded by caps and rows).
    lo_min = jnp.minimum(geo["min0"], geo["min1"]) - half - 1
    hi_min = jnp.maximum(geo["min0"], geo["min1"]) + half + 1
    lo_maj, hi_maj = geo["maj0"] - pad - 1, geo["maj1"] + pad + 1
    xm = geo["x_major"]
    x_lo, x_hi = jnp.where(xm, lo_maj, lo_min), jnp.where(xm, hi_maj, hi_min)
    y_lo, y_hi = jnp.where(xm, lo_min, lo_maj), jnp.where(xm, hi_min, hi_maj)
    n = seg["keep"].shape[0]
    kk = min(cfg.tile_segments, n)

    def tile_row(r):
        y0 = r * ts
        xs0 = jnp.arange(tx) * ts
        over = (seg["keep"][None] & (x_lo[None] <= xs0[:, None] + ts - 1) & (x_hi[None] >= xs0[:, None])
                & (y_lo[None] <= y0 + ts - 1) & (y_hi[None] >= y0))  # (tx, S)
        # Keep the first kk overlapping segments in draw order (ties broken by index).
        score = jnp.where(over, n - jnp.arange(n)[None], 0)
        _, pick = jax.lax.top_k(score, kk)  # (tx, kk)
        picked_ok = jnp.take_along_axis(over, pick, axis=1)
        overflow = jnp.maximum(over.sum(1) - kk, 0).sum()
        yy, xx = jnp.meshgrid(jnp.arange(ts) + y0, jnp.arange(ts), indexing="ij")
        px = xs0[:, None, None] + xx[None]  # (tx, ts, ts)
        py = jnp.broadcast_to(yy[None], px.shape)
        idx = pick[:, None, None, :]  # (tx, 1, 1, kk)
        x_major = geo["x_major"][idx]
        maj = jnp.where(x_major, px[..., None], py[..., None])
        row = jnp.where(x_major, py[..., None], px[..., None])
        w = pixel_weight(seg, geo, idx, maj, row, cfg) * picked_ok[:, None, None, :]
        q = _quantities(w, seg["fog"][idx])  # (tx, ts, ts, kk, 3)
        onehot = jax.nn.one_hot(seg["family"][pick], 3, dtype=jnp.float32)  # (tx, kk, 3)
        acc = jnp.einsum("xijkq,xkf->fqixj", q, onehot)  # (3, 3, ts, tx, ts)
        return acc.reshape(3, 3, ts, tx * ts), overflow

    acc, overflow = jax.lax.map(tile_row, jnp.arange(ty))  # (ty, 3, 3, ts, tx·ts)
    acc = acc.transpose(1, 2, 0, 3, 4).reshape(3, 3, ty * ts, tx * ts)[:, :, :height, :width]
    return acc, overflow.sum()


# ------------------------------------------------------------------------------------------ frames
def render_frame(scene: dict, camera: dict, colors: jax.Array, height: int, width: int,
                 cfg: RasterConfig, fisheye: bool) -> tuple[jax.Array, jax.Array]:
    """One frame → (RGB (H, W, 3) float32 in [0, 1], overflow count). Cut frames are pure white."""
    seg = frame_segments(scene, camera["w2c"], camera["K"], camera["dist"] if fisheye else None,
                         camera["shot"], camera["spacing"], camera["view"], height, width, cfg)
    raster = _raster_scatter if cfg.method == "scatter" else _raster_tiled
    acc, overflow = raster(seg, height, width, cfg)
    img = _composite(acc, colors)
    img = jnp.where(camera["shot"] < 0, 1.0, img)
    return img, overflow


@partial(jax.jit, static_argnames=("height", "width", "cfg", "fisheye"))
def render_frames(scene: dict, cameras: dict, colors: jax.Array, *, height: int, width: int,
                  cfg: RasterConfig = RasterConfig(), fisheye: bool = False) -> tuple[jax.Array, jax.Array]:
    """Render a trajectory's frames.

    Args:
      scene: segments (S, 2, 3), family (S,), shot (S,), valid (S,) — from ``build_scene`` or
        ``build_scene_jax``.
      cameras: per frame w2c (T, 3, 4), K (T, 3, 3), dist (T, 4), shot (T,) (−1 = cut, rendered white),
        spacing (T,) and view (T,) of the frame's room.
      colors: (3, 3) RGB in [0, 1] of the X, Z and vertical line families.
    Returns: frames (T, H, W, 3) float32 in [0, 1] and overflow (T,) — candidate pixels beyond the static
    budget (scatter) or segments beyond ``tile_segments`` (tiled); 0 when nothing was dropped.
    """
    fn = lambda cam: render_frame(scene, cam, colors, height, width, cfg, fisheye)  # noqa: E731
    return jax.lax.map(fn, cameras, batch_size=cfg.frame_batch)


def to_uint8(frames: jax.Array) -> jax.Array:
    return jnp.clip(jnp.round(frames * 255.0), 0, 255).astype(jnp.uint8)
