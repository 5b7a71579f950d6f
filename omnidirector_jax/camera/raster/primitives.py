"""Visible 2D segments → packed drawing primitives (OpenCV's decomposition of a thick line, or capsules)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from omnidirector_jax.camera.raster.config import RasterConfig, base_line_width

# Every visible segment becomes a fixed number of drawing primitives, packed as rows of floats:
#   kind 0: anti-aliased 1-px line (OpenCV LineAA) between (x0, y0) and (x1, y1);
#   kind 1: convex quadrilateral (x0, y0) … (x3, y3) filled by OpenCV's scanline rule;
#   kind 2: smooth capsule of width `w` around (x0, y0)–(x1, y1) (the differentiable profile).
# OpenCV draws a line of thickness t ≥ 2 as a quad of half-width o = ⌈t/2⌉ plus two round caps of radius
# t/2, which for t ≤ 4 are diamonds; each polygon gets 1-px AA edges and a scanline fill. So an 'opencv'
# segment is one AA line (t = 1) or 12 AA edges + 3 fills (t ≥ 2); a 'smooth' segment is one capsule.
# The enumeration frame of a primitive: centre line (ex0, ey0)–(ex1, ey1), half-window R rows, pad columns.
_F = {name: i for i, name in enumerate(
    ["ex0", "ey0", "ex1", "ey1", "R", "pad", "kind", "fog", "family", "w",
     "x0", "y0", "x1", "y1", "x2", "y2", "x3", "y3", "live"])}
_NF = len(_F)
# Where make_primitives stacks an 'opencv' segment's 16 primitives (blocks of S rows each):
_LINE_BLOCKS = (0, 1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14)  # the AA line and the polygons' AA edges (kind 0)
_FILL_BLOCKS = (5, 10, 15)  # the fills (kind 1): the quad, the two caps' diamonds


def _pack(n: int, **cols) -> jax.Array:
    """Columns by name (missing ones are 0) → rows (n, _NF): one concatenation, not a scatter per column."""
    zero = jnp.zeros((n,), jnp.float32)
    return jnp.stack([jnp.broadcast_to(jnp.asarray(cols.get(name, zero), jnp.float32), (n,)) for name in _F], -1)


def make_primitives(seg: dict, cfg: RasterConfig) -> jax.Array:
    """Visible 2D segments → packed primitives (N, _NF) float32 (see the table above)."""
    a, b, keep = seg["a"], seg["b"], seg["keep"]
    n = a.shape[0]
    common = {"fog": seg["fog"], "family": seg["family"].astype(jnp.float32)}
    if cfg.profile == "smooth":
        w = seg["thickness"]
        reach = jnp.ceil(w / 2.0 + 3.0 * cfg.smooth_softness)
        stretch = jnp.sqrt(2.0)  # worst case over slopes ≤ 1, keeps R static-shaped per segment
        return _pack(n, ex0=a[:, 0], ey0=a[:, 1], ex1=b[:, 0], ey1=b[:, 1], R=jnp.ceil(reach * stretch) + 1,
                     pad=reach, kind=2.0, w=w, x0=a[:, 0], y0=a[:, 1], x1=b[:, 0], y1=b[:, 1],
                     live=keep.astype(jnp.float32), **common)
    t = seg["thickness"]
    thin = t < 1.5
    thin_line = _pack(n, ex0=a[:, 0], ey0=a[:, 1], ex1=b[:, 0], ey1=b[:, 1], R=1.0, pad=1.0, kind=0.0,
                      x0=a[:, 0], y0=a[:, 1], x1=b[:, 0], y1=b[:, 1], live=(keep & thin).astype(jnp.float32),
                      **common)
    thick = (keep & ~thin).astype(jnp.float32)
    # Quad: corners p0 ± d, p1 ∓ d with d ⟂ (p1 − p0), |d| = o = t/2 (+ 1/2 when t is odd).
    o = jnp.floor((t + 1.0) / 2.0)
    delta = b - a
    length = jnp.maximum(jnp.linalg.norm(delta, axis=-1), 1e-9)
    d = jnp.stack([delta[:, 1], -delta[:, 0]], -1) * (o / length)[:, None]
    quad = jnp.stack([a + d, a - d, b - d, b + d], 1)  # (n, 4, 2)
    # Caps: diamonds of radius t/2 at both ends (OpenCV approximates circles this small by 4 points).
    r = t / 2.0
    dirs = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    caps = [p[:, None, :] + r[:, None, None] * dirs[None] for p in (a, b)]  # (n, 4, 2) each
    polys = [quad] + caps
    stretch = jnp.sqrt(1.0 + jnp.minimum(jnp.abs(delta[:, 0]), jnp.abs(delta[:, 1])) ** 2
                       / jnp.maximum(jnp.abs(delta[:, 0]), jnp.abs(delta[:, 1])).clip(1e-9) ** 2)
    out = [thin_line]
    for k, poly in enumerate(polys):
        for e in range(4):  # the polygon's edges, drawn as AA lines
            p, q = poly[:, e], poly[:, (e + 1) % 4]
            out.append(_pack(n, ex0=p[:, 0], ey0=p[:, 1], ex1=q[:, 0], ey1=q[:, 1], R=1.0, pad=1.0, kind=0.0,
                             x0=p[:, 0], y0=p[:, 1], x1=q[:, 0], y1=q[:, 1], live=thick, **common))
        verts = {f"{c}{i}": poly[:, i, j] for i in range(4) for j, c in enumerate("xy")}
        if k == 0:
            frame = dict(ex0=a[:, 0], ey0=a[:, 1], ex1=b[:, 0], ey1=b[:, 1], R=jnp.ceil(o * stretch) + 1,
                         pad=o + 1)
        else:
            c = a if k == 1 else b
            frame = dict(ex0=c[:, 0], ey0=c[:, 1], ex1=c[:, 0], ey1=c[:, 1], R=jnp.ceil(r) + 1, pad=jnp.ceil(r) + 1)
        out.append(_pack(n, kind=1.0, live=thick, **frame, **verts, **common))
    return jnp.concatenate(out)


def _axes(p: jax.Array, x_major: jax.Array | None = None) -> dict:
    """Enumeration frame of primitive rows p (..., _NF): major axis, ordered ends, slope.

    ``x_major`` forces the major axis (the long edges of a thick line follow their band's)."""
    x0, y0, x1, y1 = (p[..., _F[k]] for k in ("ex0", "ey0", "ex1", "ey1"))
    if x_major is None:
        x_major = jnp.abs(x1 - x0) > jnp.abs(y1 - y0)  # OpenCV steps along y when |dx| == |dy|
    maj0, maj1 = jnp.where(x_major, x0, y0), jnp.where(x_major, x1, y1)
    min0, min1 = jnp.where(x_major, y0, x0), jnp.where(x_major, y1, x1)
    swap = maj1 < maj0
    maj0, maj1, min0, min1 = (jnp.where(swap, maj1, maj0), jnp.where(swap, maj0, maj1),
                              jnp.where(swap, min1, min0), jnp.where(swap, min0, min1))
    span = maj1 - maj0
    m = jnp.where(span > 1e-9, (min1 - min0) / jnp.where(span > 1e-9, span, 1.0), 0.0)
    return {"x_major": x_major, "maj0": maj0, "maj1": maj1, "min0": min0, "min1": min1, "m": m}



def smooth_half(width: int, cfg: RasterConfig) -> int:
    """Static half-height (rows either side of the centre line) of the pixels drawn for a smooth capsule: the
    reach w/2 + 3·softness of the widest line the config can draw, stretched for slopes up to 1."""
    reach = math.ceil(base_line_width(width, cfg) / 2.0 + 3.0 * cfg.smooth_softness)
    return math.ceil(reach * math.sqrt(2.0)) + 1
