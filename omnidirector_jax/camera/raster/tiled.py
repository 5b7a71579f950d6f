"""The tiled method (TPU, where scatter is slow): dense per-tile math, no scatter in the compiled program.

The image is cut into ``tile``×``tile`` tiles. Like the scatter method, the primitives are drawn in passes of
one kind each ('opencv': the AA lines and edges, then the fills; 'smooth': the capsules), so a pixel evaluates
only its pass's formula. In a pass each tile lists the live primitives whose footprint box overlaps it, in
drawing order (a cumulative sum, searched per slot), and weighs its pixels against ``k`` of them at a time
with the per-pixel formulas the scatter passes are tested against.
The accumulators are sums, so the result equals the scatter method's.

* ``tile_segments=None`` (default, exact): a chunk of tiles runs as many rounds of ``tile_block`` primitives
  as its busiest tile lists (a ``while_loop``: forward only, like the scatter method without ``pixel_budget``).
* ``tile_segments=K``: one round of K per tile and pass (static: reverse-differentiable); primitives beyond K
  are dropped and counted in ``overflow``. :func:`tile_counts` sizes K from the scene, as ``max_segments`` is.

Memory: tiles run in chunks of ``tile_rows`` tile rows under ``lax.map``, each chunk under ``jax.checkpoint``,
so neither the forward pass nor the gradient holds more than one chunk's (tiles × pixels × k) values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.camera.raster.config import RasterConfig
from omnidirector_jax.camera.raster.primitives import _F, _FILL_BLOCKS, _LINE_BLOCKS, _NF, _axes, smooth_half
from omnidirector_jax.camera.raster.weights import _capsule_weight, _fill_weight, _line_weight, _opacity, exact_centres


def _passes(prims: jax.Array, cfg: RasterConfig) -> list[tuple[str, jax.Array]]:
    """The primitives (N, _NF) of each pass, by kind: ('lines' | 'fills' | 'capsules', rows)."""
    if cfg.profile == "smooth":
        return [("capsules", prims)]
    blocks = prims.reshape(16, -1, _NF)
    return [(kind, blocks[np.array(idx)].reshape(-1, _NF))
            for kind, idx in (("lines", _LINE_BLOCKS), ("fills", _FILL_BLOCKS))]


def _footprint(kind: str, p: jax.Array, half: int) -> tuple[jax.Array, ...]:
    """Inclusive pixel box (x_lo, x_hi, y_lo, y_hi) outside which primitive rows p (..., _NF) weigh nothing
    (a smooth capsule: outside which the scatter pass does not draw it)."""
    xs = jnp.stack([p[..., _F[f"x{i}"]] for i in range(4)], -1)
    ys = jnp.stack([p[..., _F[f"y{i}"]] for i in range(4)], -1)
    if kind == "lines":  # ends ± 2 px: the 3-row profile and the end ramp (17/16 px)
        return (xs[..., :2].min(-1) - 2, xs[..., :2].max(-1) + 2, ys[..., :2].min(-1) - 2, ys[..., :2].max(-1) + 2)
    if kind == "fills":  # rows round(y), pixels ceil(left) … floor(right): inside the vertices' box ± 1
        return xs.min(-1) - 1, xs.max(-1) + 1, ys.min(-1) - 1, ys.max(-1) + 1
    ax = _axes(p)
    pad = p[..., _F["pad"]].astype(jnp.int32).astype(jnp.float32) + 2
    lo_maj, hi_maj = jnp.floor(ax["maj0"]) - pad, jnp.ceil(ax["maj1"]) + pad
    lo_min = jnp.minimum(ax["min0"], ax["min1"]) - half - 1
    hi_min = jnp.maximum(ax["min0"], ax["min1"]) + half + 1
    xm = ax["x_major"]
    return (jnp.where(xm, lo_maj, lo_min), jnp.where(xm, hi_maj, hi_min),
            jnp.where(xm, lo_min, lo_maj), jnp.where(xm, hi_min, hi_maj))


def _tile_ranges(kind: str, p: jax.Array, height: int, width: int, cfg: RasterConfig) -> tuple[jax.Array, ...]:
    """Per primitive (N,): its inclusive tile range (c0, c1, r0, r1), and whether it is drawn at all."""
    x_lo, x_hi, y_lo, y_hi = _footprint(kind, p, smooth_half(width, cfg))
    live = p[:, _F["live"]] > 0.5
    ts = cfg.tile
    tx, ty = -(-width // ts), -(-height // ts)
    to_tile = lambda v, n: jnp.clip(jnp.floor(v / ts), -1, n).astype(jnp.int32)  # noqa: E731
    return to_tile(x_lo, tx), to_tile(x_hi, tx), to_tile(y_lo, ty), to_tile(y_hi, ty), live


def _overlaps(ranges: tuple, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """(C, N): tile (rows[c], cols[c]) lies in primitive n's tile range."""
    c0, c1, r0, r1, live = (x[None] for x in ranges)
    r, c = rows[:, None], cols[:, None]
    return live & (c0 <= c) & (c1 >= c) & (r0 <= r) & (r1 >= r)


def tile_counts(prims: jax.Array, height: int, width: int, cfg: RasterConfig) -> jax.Array:
    """Primitives listed by the busiest tile of any pass of this frame: the ``tile_segments`` it needs."""
    ts = cfg.tile
    tx, ty = -(-width // ts), -(-height // ts)
    cols = jnp.arange(tx, dtype=jnp.int32)
    most = jnp.int32(0)
    for kind, p in _passes(prims, cfg):
        ranges = _tile_ranges(kind, p, height, width, cfg)
        per_row = jax.lax.map(lambda r, ranges=ranges: _overlaps(ranges, jnp.full((tx,), r), cols).sum(1).max(),
                              jnp.arange(ty, dtype=jnp.int32))
        most = jnp.maximum(most, per_row.max())
    return most


def _smooth_window(p: jax.Array, x: jax.Array, y: jax.Array, half: int) -> jax.Array:
    """The pixels the scatter pass draws for a capsule: columns up to ``pad`` + 1 past its ends, and ``half``
    rows either side of its centre line (clamped to the segment), so both methods cut the same tails."""
    ax = _axes(p)
    xm = ax["x_major"]
    maj = jnp.where(xm, x, y).astype(jnp.float32)
    minor = jnp.where(xm, y, x).astype(jnp.float32)
    pad = p[..., _F["pad"]].astype(jnp.int32).astype(jnp.float32) + 1
    along = jnp.clip(maj, ax["maj0"], ax["maj1"])
    centre = jnp.floor(ax["min0"] + (along - ax["maj0"]) * ax["m"] + 0.5)
    return ((maj >= jnp.floor(ax["maj0"]) - pad) & (maj <= jnp.ceil(ax["maj1"]) + pad)
            & (jnp.abs(minor - centre) <= half))


def _weight(kind: str, p: jax.Array, x: jax.Array, y: jax.Array, half: int, cfg: RasterConfig) -> jax.Array:
    """Log-transmittance of pixels (x, y) under primitive rows p of one pass's kind."""
    if kind == "lines":
        return _opacity(_line_weight(p, _axes(p), x, y, exact_centres(cfg)))
    if kind == "fills":
        return _opacity(_fill_weight(p, x, y))
    return jnp.where(_smooth_window(p, x, y, half), _capsule_weight(p, x, y, cfg.smooth_softness), 0.0)


def _round(kind: str, p: jax.Array, listed: jax.Array, count: jax.Array, first: jax.Array, k: int, px: jax.Array,
           py: jax.Array, half: int, cfg: RasterConfig) -> jax.Array:
    """Accumulators (C, ts, ts, 3) complex of the listed primitives number first … first + k − 1 of each tile.

    ``listed`` (C, N) counts each tile's listed primitives up to and including n (a cumulative sum in drawing
    order): the j-th one is where it first reaches j + 1 — a binary search per slot, not a sort or a scatter."""
    slot = first + jnp.arange(k, dtype=jnp.int32)  # (k,)
    pick = jax.vmap(lambda row: jnp.searchsorted(row, slot + 1, side="left"))(listed)  # (C, k)
    used = slot[None, :] < count[:, None]
    q = p[jnp.minimum(pick, p.shape[0] - 1)]  # (C, k, _NF)
    weight = _weight(kind, q[:, None, None], px[..., None], py[..., None], half, cfg)  # (C, ts, ts, k)
    weight = jnp.where(used[:, None, None, :], weight, 0.0)
    onehot = jax.nn.one_hot(q[..., _F["family"]].astype(jnp.int32), 3, dtype=jnp.float32)  # (C, k, 3)
    fogged = onehot * q[..., _F["fog"], None]
    return jax.lax.complex(jnp.einsum("cijk,ckf->cijf", weight, onehot),
                           jnp.einsum("cijk,ckf->cijf", weight, fogged))


def raster_tiled(prims: jax.Array, height: int, width: int, cfg: RasterConfig) -> tuple[jax.Array, jax.Array]:
    """Accumulators (3 families, H, W) complex L + iG of one frame's primitives (N, _NF), and overflow: the
    listed primitives beyond ``tile_segments`` summed over tiles and passes (0 when it is None: exact)."""
    passes = [(kind, p, _tile_ranges(kind, p, height, width, cfg)) for kind, p in _passes(prims, cfg)]
    half = smooth_half(width, cfg)
    ts, rows_per = cfg.tile, cfg.tile_rows
    tx, ty = -(-width // ts), -(-height // ts)
    n_chunks = -(-ty // rows_per)
    local_r = jnp.repeat(jnp.arange(rows_per, dtype=jnp.int32), tx)
    cols = jnp.tile(jnp.arange(tx, dtype=jnp.int32), rows_per)
    iy, ix = jnp.meshgrid(jnp.arange(ts, dtype=jnp.int32), jnp.arange(ts, dtype=jnp.int32), indexing="ij")

    @jax.checkpoint  # the gradient recomputes a chunk instead of keeping every chunk's per-pixel values
    def chunk(ci: jax.Array) -> tuple[jax.Array, jax.Array]:
        rows = ci * rows_per + local_r
        py = rows[:, None, None] * ts + iy[None]
        px = cols[:, None, None] * ts + ix[None]
        acc = jnp.zeros(px.shape + (3,), jnp.complex64)
        overflow = jnp.int32(0)
        for kind, p, ranges in passes:
            over = _overlaps(ranges, rows, cols)  # (C, N)
            listed = jnp.cumsum(over, axis=1, dtype=jnp.int32)
            count = listed[:, -1]
            k = min(cfg.tile_segments or cfg.tile_block, p.shape[0])

            def draw(first, kind=kind, p=p, listed=listed, count=count, k=k):
                return _round(kind, p, listed, count, first, k, px, py, half, cfg)

            if cfg.tile_segments is not None:
                acc = acc + draw(jnp.int32(0))
                overflow += jnp.maximum(count - k, 0).sum()
            else:
                acc = jax.lax.while_loop(lambda c, count=count: c[0] < count.max(),
                                         lambda c, k=k, draw=draw: (c[0] + k, c[1] + draw(c[0])),
                                         (jnp.int32(0), acc))[1]
        return acc, overflow

    acc, overflow = jax.lax.map(chunk, jnp.arange(n_chunks, dtype=jnp.int32))  # (n_chunks, C, ts, ts, 3)
    acc = acc.reshape(n_chunks, rows_per, tx, ts, ts, 3).transpose(5, 0, 1, 3, 2, 4)
    acc = acc.reshape(3, n_chunks * rows_per * ts, tx * ts)[:, :height, :width]
    return acc, overflow.sum()
