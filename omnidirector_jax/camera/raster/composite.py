"""Accumulators → RGB: per-family transmittance, families laid over each other in drawing order."""

from __future__ import annotations

import jax
import jax.numpy as jnp


# Overlaps composite as OpenCV's in-place blending does for lines of one colour: per family we accumulate
# L = Σ l and G = Σ fog·l over its primitives (l = −log(1 − a)); the family then covers 1 − e^(−L) of the
# pixel with colour c·G/L, and families are laid over each other in drawing order (X, Z, vertical).
def _composite(acc: jax.Array, colors: jax.Array) -> jax.Array:
    """acc (3 families, H, W) complex L + iG → RGB (H, W, 3) float32 in [0, 1].

    Family f leaves transmittance T_f = e^(−L_f) and paints (1 − T_f)·G_f/L_f of its colour; the later
    families (Z over X, vertical over both) attenuate the earlier ones, so family f's weight in the pixel is
    w_f = (1 − T_f)·G_f/L_f · Π_{g>f} T_g. XLA would store an exponential or a division that the three colour
    channels read (three passes over the accumulators); with the polynomial exponential and the Newton
    reciprocal below every operation is cheap, so XLA fuses the whole composite into the one pass that writes
    the frame (measured: 0.39 vs 0.57 ms a 480×832 frame), at ≤ 1e-4 relative error (< 0.03 grey levels)."""
    total, fogged = acc.real, acc.imag
    trans = [_exp_neg(total[f]) for f in range(3)]
    # L clamped to [1e-6, 1e12] (L = 0 gives G = 0 and 1 − T = 0: w = 0): the product of three stays a normal float.
    safe = [jnp.where(total[f] > 1e-6, jnp.where(total[f] < 1e12, total[f], 1e12), 1e-6) for f in range(3)]
    inv = _reciprocal(safe[0] * safe[1] * safe[2])  # one reciprocal for the three 1/L_f
    wx = fogged[0] * (1.0 - trans[0]) * trans[1] * trans[2] * (inv * safe[1] * safe[2])
    wz = fogged[1] * (1.0 - trans[1]) * trans[2] * (inv * safe[0] * safe[2])
    wv = fogged[2] * (1.0 - trans[2]) * (inv * safe[0] * safe[1])
    return wx[..., None] * colors[0] + wz[..., None] * colors[1] + wv[..., None] * colors[2]


@jax.custom_jvp
def _exp_neg(x: jax.Array) -> jax.Array:
    """e^(−x) for x ≥ 0 (relative error < 1.1e-4): 2^y with y = −x·log2(e) clamped at −126, the integer part
    of y as the float's exponent bits, 2^frac by a cubic fitted with p(0) = 1, p(1) = 2 (continuous at the
    integers). XLA's exponential is exact to an ulp but costs enough that XLA will not recompute it per
    colour channel."""
    y = x * -1.4426950408889634
    y = jnp.where(y > -126.0, y, -126.0)
    whole = jnp.floor(y)
    frac = y - whole
    poly = 1.0 + frac * (0.69542435 + frac * (0.22630768 + frac * 0.07826797))
    return poly * jax.lax.bitcast_convert_type((whole.astype(jnp.int32) + 127) << 23, jnp.float32)


@_exp_neg.defjvp
def _exp_neg_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    value = _exp_neg(x)
    return value, -value * dx


@jax.custom_jvp
def _reciprocal(x: jax.Array) -> jax.Array:
    """1/x for normal floats x > 0 (relative error < 7e-6): a first guess from the float's bits, then two
    Newton steps r ← r(2 − x·r) — multiplies that XLA fuses freely, where a division is a slow instruction
    that it keeps out of fusions read more than once."""
    r = jax.lax.bitcast_convert_type(0x7EF311C7 - jax.lax.bitcast_convert_type(x, jnp.int32), jnp.float32)
    for _ in range(2):
        r = r * (2.0 - x * r)
    return r


@_reciprocal.defjvp
def _reciprocal_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    value = _reciprocal(x)
    return value, -value * value * dx



def to_uint8(frames: jax.Array) -> jax.Array:
    return jnp.clip(jnp.round(frames * 255.0), 0, 255).astype(jnp.uint8)

