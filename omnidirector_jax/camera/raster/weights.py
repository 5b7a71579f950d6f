"""Per-pixel log-transmittance of each primitive kind: OpenCV LineAA tables, scanline fills, capsules."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.camera.raster.config import RasterConfig
from omnidirector_jax.camera.raster.primitives import _F, _axes

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
_ALPHA_MAX = 1.0 - 1e-6  # keeps log(1 − a) finite under full coverage
_L_MAX = -math.log(1.0 - _ALPHA_MAX)  # the matching cap on log-transmittance


def _interp_table(table: jax.Array, pos: jax.Array) -> jax.Array:
    """Linear interpolation in a 1D table at fractional index ``pos`` (clamped)."""
    n = table.shape[-1]
    pos = jnp.clip(pos, 0.0, n - 1.0)
    i0 = jnp.floor(pos).astype(jnp.int32)
    i1 = jnp.minimum(i0 + 1, n - 1)
    f = pos - i0
    return table[i0] * (1 - f) + table[i1] * f


# _AA_PROFILE resampled to _AA_SLOPES + 1 slopes (|m| = i/_AA_SLOPES, linear between the measured rows), so a
# weight is one interpolation along the offset in its line's row (two lookups instead of four).
_AA_SLOPES = 128
_AA_ROWS = np.stack([np.interp(np.arange(_AA_SLOPES + 1) * 8.0 / _AA_SLOPES, np.arange(9), _AA_PROFILE[:, d])
                     for d in range(49)], -1).astype(np.float32)  # (_AA_SLOPES + 1, 49)
# The rows flattened, with one entry past the end: a line column at the last slope whose centre lies exactly
# half-way between pixels reads it with interpolation weight 0 (see _line_column).
_AA_FLAT = np.append(_AA_ROWS.reshape(-1), np.float32(0.0))
# What a line column reads at table position i: the entries i, i + 1, i + 16, i + 17, i + 32, i + 33 (its three
# rows and their interpolation neighbours) as one row, so a column gathers one row instead of six values.
_AA_COLUMN = np.stack([_AA_FLAT[np.arange(len(_AA_FLAT) - 33) + o] for o in (0, 1, 16, 17, 32, 33)], -1)


def _line_ramp(ax: dict, maj: jax.Array) -> jax.Array:
    """End-ramp factor of a 1-px line at major coordinate ``maj`` (0 for a degenerate, point-like line)."""
    ramp = _interp_table(jnp.asarray(_AA_END_RAMP), jnp.minimum(maj - ax["maj0"], ax["maj1"] - maj) * 16.0 + 24.0)
    degenerate = (ax["maj1"] - ax["maj0"]) < 1.0 / 32.0  # OpenCV draws (almost) nothing for a point
    return jnp.where(degenerate, 0.0, ramp)


def _floor_div(num: jax.Array, den: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact floor(num / den) and its remainder in [0, den) for int32 ``num`` and ``den`` > 0: a float estimate
    refined from the exact integer remainder, then corrected by ±1 — no integer division (which XLA:CPU
    leaves scalar) and no rounding left to the backend."""
    f32 = lambda v: v.astype(jnp.float32)  # noqa: E731
    q = jnp.floor(f32(num) / f32(den)).astype(jnp.int32)
    q = q + jnp.floor(f32(num - q * den) / f32(den)).astype(jnp.int32)  # now off by at most one
    r = num - q * den
    q = jnp.where(r < 0, q - 1, jnp.where(r >= den, q + 1, q))
    return q, num - q * den


def _line_centre(ax: dict, col: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Where a 1-px line crosses major-axis column ``col`` (int32), in exact integer arithmetic on its end points
    in 1/16 px (OpenCV's shift=4): the middle row ``floor(centre + ½)``, the table index of the row above
    (k = −1) and its interpolation fraction, and the slope row of the AA table ``floor(|m|·128 + ½)``.

    Rows and table rows are picked by floors of rational numbers, so a centre exactly half-way between pixels
    is a tie; in floats it lands on either side depending on whether the backend fuses the multiply-add (GPUs
    do, XLA:CPU does not). Integers decide every tie the same way everywhere; only the fraction is a float."""
    i16 = lambda v: jnp.round(v * 16.0).astype(jnp.int32)  # noqa: E731
    m0, n0 = i16(ax["maj0"]), i16(ax["min0"])
    dm, dn = i16(ax["maj1"]) - m0, i16(ax["min1"]) - n0
    flat = dm <= 0  # a point: slope 0 (its weights are 0 anyway, see _line_ramp)
    dm, dn = jnp.where(flat, 1, dm), jnp.where(flat, 0, dn)
    q, r = _floor_div((col * 16 - m0) * dn, dm)  # 16·centre = n0 + q + r/dm
    mid = (n0 + q + 8) >> 4  # floor((16·centre + 8) / 16): r/dm < 1 cannot carry past a multiple of 16
    index = mid * 16 - n0 - q + 8 - (r > 0).astype(jnp.int32)  # floor(16·(mid − centre) + 8)
    frac = jnp.where(r > 0, 1.0 - r.astype(jnp.float32) / dm.astype(jnp.float32), 0.0)
    slope_row = _floor_div(jnp.abs(dn) * (2 * _AA_SLOPES) + dm, 2 * dm)[0]
    return mid, index, frac, slope_row


def _line_centre_float(ax: dict, col: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """:func:`_line_centre` in float32 (XLA:CPU does not fuse multiply-adds, so its ties fall like OpenCV's
    within the parity bounds; ~20% faster line columns there than the integer form, measured)."""
    centre = ax["min0"] + (col.astype(jnp.float32) - ax["maj0"]) * ax["m"]
    mid = jnp.floor(centre + 0.5)
    first = (mid - centre) * 16.0 + 8.0  # table position of the row above (k = −1), in [0, 16]
    index = jnp.floor(first)
    slope_row = jnp.floor(jnp.clip(jnp.abs(ax["m"]), 0.0, 1.0) * _AA_SLOPES + 0.5)
    return mid.astype(jnp.int32), index.astype(jnp.int32), first - index, slope_row.astype(jnp.int32)


def exact_centres(cfg: RasterConfig) -> bool:
    """Whether line centres use the integer form: ``cfg.exact_centres``, or by default on every backend but
    the CPU (the process's default backend at trace time; ``tuned`` sets it for GPU and TPU explicitly)."""
    return cfg.exact_centres if cfg.exact_centres is not None else jax.default_backend() != "cpu"


def _line_weight(p: jax.Array, ax: dict, x: jax.Array, y: jax.Array, exact: bool = True) -> jax.Array:
    """Kind 0: OpenCV LineAA — three rows around the line per major step, measured profile, end ramps."""
    maj = jnp.where(ax["x_major"], x, y).astype(jnp.int32)
    row = jnp.where(ax["x_major"], y, x).astype(jnp.int32)
    mid, index, frac, slope_row = (_line_centre if exact else _line_centre_float)(ax, maj)
    k = row - mid
    pos = jnp.clip(slope_row * 49 + index + 16 * (k + 1), 0, len(_AA_FLAT) - 2)
    flat = jnp.asarray(_AA_FLAT)
    w = flat[pos] * (1.0 - frac) + flat[pos + 1] * frac
    return jnp.where(jnp.abs(k) <= 1, w, 0.0) * _line_ramp(ax, maj.astype(jnp.float32))


def _materialize(*columns: jax.Array) -> list[jax.Array]:
    """The same (U,) float32 vectors, computed once into memory. XLA fuses a cheap per-column value into every
    per-pixel expression that reads it and recomputes it there (three times for a 3-pixel column), but keeps a
    division out of fusions that would repeat it: so the stacked values are divided by a traced 1 (x·0 + 1,
    which XLA cannot fold for floats), exact for finite values, and stored once. ``lax.optimization_barrier``
    does not stop the fusion on XLA:CPU; a dot with the identity does but costs more."""
    stacked = jnp.stack([c.astype(jnp.float32) for c in columns])
    return list(stacked / (stacked * 0.0 + 1.0))


def _line_column(ax: dict, col: jax.Array, exact: bool = True) -> tuple[jax.Array, jax.Array]:
    """A 1-px line at major-axis columns ``col`` (U,) with per-unit axes: its three minor-axis rows (3, U)
    and their log-transmittance (3, U) — the weights of :func:`_line_weight`, computed once per column.

    The rows sit at offsets k + e (k = −1, 0, 1) from the centre with e = mid − centre ∈ (−½, ½], so their
    table positions are 16 apart and share the interpolation fraction: one table index per column."""
    centre = _line_centre if exact else _line_centre_float
    mid, index, frac, slope_row = centre(ax, col)  # index: the row above (k = −1), in [0, 16]
    mid, base, frac, ramp = _materialize(mid, slope_row * 49 + index, frac, _line_ramp(ax, col.astype(jnp.float32)))
    pairs = jnp.take(jnp.asarray(_AA_COLUMN), base.astype(jnp.int32), axis=0, mode="clip")  # (U, 6)
    weight = jnp.stack([(pairs[:, 2 * k] * (1.0 - frac) + pairs[:, 2 * k + 1] * frac) * ramp for k in range(3)])
    rows = mid.astype(jnp.int32)[None, :] + jnp.array([-1, 0, 1], jnp.int32)[:, None]
    return rows, _opacity(weight)


def _fill_setup(p: jax.Array) -> dict:
    """Per-primitive part of :func:`_fill_weight`: rounded row range and the four edges, each walked from its
    upper vertex at its rounded row."""
    xs = [p[..., _F[f"x{i}"]] for i in range(4)]
    yr = [jnp.floor(p[..., _F[f"y{i}"]] + 0.5) for i in range(4)]
    out = {"ymin": jnp.minimum(jnp.minimum(yr[0], yr[1]), jnp.minimum(yr[2], yr[3])),
           "ymax": jnp.maximum(jnp.maximum(yr[0], yr[1]), jnp.maximum(yr[2], yr[3]))}
    for i in range(4):
        j = (i + 1) % 4
        top = yr[i] <= yr[j]
        xt, xb = jnp.where(top, xs[i], xs[j]), jnp.where(top, xs[j], xs[i])
        yt, yb = jnp.minimum(yr[i], yr[j]), jnp.maximum(yr[i], yr[j])
        out |= {f"xt{i}": xt, f"slope{i}": (xb - xt) / jnp.where(yb > yt, yb - yt, 1.0), f"yt{i}": yt, f"yb{i}": yb,
                f"live{i}": yb > yt, f"closed{i}": yb == out["ymax"]}
    return out


def _fill_row(f: dict, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """First and last pixel, ceil(left) and floor(right), of row ``y`` (float) under :func:`_fill_setup`'s
    edges (±inf where no edge is active, so the row is empty)."""
    left = jnp.full(y.shape, jnp.inf)
    right = jnp.full(y.shape, -jnp.inf)
    for i in range(4):
        yt, yb = f[f"yt{i}"], f[f"yb{i}"]
        active = f[f"live{i}"] & (y >= yt) & ((y < yb) | ((y == yb) & f[f"closed{i}"]))
        xe = f[f"xt{i}"] + (y - yt) * f[f"slope{i}"]
        left = jnp.where(active, jnp.minimum(left, xe), left)
        right = jnp.where(active, jnp.maximum(right, xe), right)
    return jnp.ceil(left), jnp.floor(right)


def _fill_inside(f: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-pixel part of :func:`_fill_weight`: pixels ceil(left) … floor(right) of rows ymin … ymax."""
    yf = y.astype(jnp.float32)
    first, last = _fill_row(f, yf)
    xf = x.astype(jnp.float32)
    inside = (yf >= f["ymin"]) & (yf <= f["ymax"]) & (xf >= first) & (xf <= last)
    return inside.astype(jnp.float32)


def _fill_weight(p: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Kind 1: OpenCV's convex scanline fill — rows round(y_min)…round(y_max); on each row the span between
    the two active edges, each walked from its upper vertex at its rounded row; pixels ceil(left)…floor(right)."""
    return _fill_inside(_fill_setup(p), x, y)


def _capsule_weight(p: jax.Array, x: jax.Array, y: jax.Array, softness: float) -> jax.Array:
    """Kind 2 as log-transmittance: coverage a = sigmoid((w/2 − d) / s) gives −log(1 − a) = softplus((w/2 − d) / s),
    d = distance to the segment (round caps). Smooth everywhere, so gradients reach the cameras."""
    ax, ay, bx, by = (p[..., _F[k]] for k in ("x0", "y0", "x1", "y1"))
    px, py = x.astype(jnp.float32) - ax, y.astype(jnp.float32) - ay
    dx, dy = bx - ax, by - ay
    s = jnp.clip((px * dx + py * dy) / jnp.maximum(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    d = jnp.sqrt((px - s * dx) ** 2 + (py - s * dy) ** 2 + 1e-12)
    return jnp.minimum(jax.nn.softplus((p[..., _F["w"]] / 2.0 - d) / softness), _L_MAX)


@jax.custom_jvp
def _opacity(a: jax.Array) -> jax.Array:
    """Coverage a ∈ [0, 1] → log-transmittance −log(1 − a), capped so full coverage stays finite.

    The logarithm is spelled out (exponent from the float's bits, mantissa m ∈ [√½, √2) by the atanh series,
    |error| < 1e-6): XLA:CPU calls a scalar log1p per element inside a fusion, this runs in vector lanes."""
    x = 1.0 - jnp.clip(jnp.asarray(a, jnp.float32), 0.0, _ALPHA_MAX)
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    exponent = (bits - 0x3F3504F3) >> 23  # 0x3F3504F3 = √½: the mantissa lands in [√½, √2)
    m = jax.lax.bitcast_convert_type(bits - (exponent << 23), jnp.float32)
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    log_m = 2.0 * t * (1.0 + t2 * (1 / 3 + t2 * (1 / 5 + t2 * (1 / 7 + t2 / 9))))
    return -(exponent.astype(jnp.float32) * math.log(2.0) + log_m)


@_opacity.defjvp
def _opacity_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    inside = (a > 0.0) & (a < _ALPHA_MAX)
    return _opacity(a), jnp.where(inside, da / (1.0 - jnp.clip(a, 0.0, _ALPHA_MAX)), 0.0)


def _kind_weight(kind: int, p: jax.Array, x: jax.Array, y: jax.Array, cfg: RasterConfig) -> jax.Array:
    if kind == 0:
        return _opacity(_line_weight(p, _axes(p), x, y, exact_centres(cfg)))
    if kind == 1:
        return _opacity(_fill_weight(p, x, y))
    return _capsule_weight(p, x, y, cfg.smooth_softness)


def primitive_weight(p: jax.Array, x: jax.Array, y: jax.Array, cfg: RasterConfig) -> jax.Array:
    """Log-transmittance l = −log(1 − a) ≥ 0 of image pixel (x, y) under primitive rows p (..., _NF)."""
    if cfg.profile == "smooth":
        return _kind_weight(2, p, x, y, cfg)
    kind = p[..., _F["kind"]]
    return jnp.where(kind < 0.5, _kind_weight(0, p, x, y, cfg), _kind_weight(1, p, x, y, cfg))

