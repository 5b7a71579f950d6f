"""The tiled method (TPU, where scatter is slow): dense per-tile math, no scatter in the compiled program.

The image is cut into ``tile``×``tile`` tiles. A segment's primitives (16 for the opencv profile, one capsule
for the smooth one) are binned together: each tile lists the segments whose footprint box overlaps it, in
drawing order, and evaluates every pixel against ``K`` of them at a time (``primitive_weight``, the per-pixel
formulas the scatter passes are tested against). The accumulators are sums, so the order of rounds does not
matter and the result equals the scatter method's.

* ``tile_segments=None`` (default, exact): a tile chunk runs as many rounds of ``tile_block`` segments as its
  busiest tile needs (a ``while_loop``: forward only, like the scatter method without ``pixel_budget``).
* ``tile_segments=K``: one round of K per tile (static: reverse-differentiable); segments beyond K are dropped
  and counted in ``overflow``. :func:`tile_counts` sizes K from the scene, as ``max_segments`` is sized.

Memory: tiles run in chunks of ``tile_rows`` tile rows under ``lax.map``, each chunk under ``jax.checkpoint``,
so neither the forward pass nor the gradient holds more than one chunk's (tiles × pixels × K × blocks) values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from omnidirector_jax.camera.raster.config import RasterConfig
from omnidirector_jax.camera.raster.primitives import _F, _NF, _axes, smooth_half
from omnidirector_jax.camera.raster.weights import primitive_weight


def _blocks(prims: jax.Array, cfg: RasterConfig) -> jax.Array:
    """Primitives (nb·S, _NF) as (nb, S, _NF): block b of segment s (``make_primitives`` stacks blocks)."""
    nb = 1 if cfg.profile == "smooth" else 16
    return prims.reshape(nb, -1, _NF)


def _footprint(p: jax.Array, half: int) -> tuple[jax.Array, ...]:
    """Inclusive pixel box (x_lo, x_hi, y_lo, y_hi) outside which primitive rows p (..., _NF) weigh nothing
    (the smooth capsule: outside which the scatter pass does not draw it)."""
    kind = p[..., _F["kind"]]
    xs = jnp.stack([p[..., _F[f"x{i}"]] for i in range(4)], -1)
    ys = jnp.stack([p[..., _F[f"y{i}"]] for i in range(4)], -1)
    # Lines: ends ± 2 px covers the 3-row profile and the end ramp (17/16 px). Fills: the vertices ± 1.
    line = (jnp.minimum(xs[..., 0], xs[..., 1]) - 2, jnp.maximum(xs[..., 0], xs[..., 1]) + 2,
            jnp.minimum(ys[..., 0], ys[..., 1]) - 2, jnp.maximum(ys[..., 0], ys[..., 1]) + 2)
    fill = (xs.min(-1) - 1, xs.max(-1) + 1, ys.min(-1) - 1, ys.max(-1) + 1)
    ax = _axes(p)
    pad = p[..., _F["pad"]].astype(jnp.int32).astype(jnp.float32) + 2
    lo_maj, hi_maj = jnp.floor(ax["maj0"]) - pad, jnp.ceil(ax["maj1"]) + pad
    lo_min = jnp.minimum(ax["min0"], ax["min1"]) - half - 1
    hi_min = jnp.maximum(ax["min0"], ax["min1"]) + half + 1
    xm = ax["x_major"]
    capsule = (jnp.where(xm, lo_maj, lo_min), jnp.where(xm, hi_maj, hi_min),
               jnp.where(xm, lo_min, lo_maj), jnp.where(xm, hi_min, hi_maj))
    return tuple(jnp.where(kind < 0.5, a, jnp.where(kind < 1.5, b, c)) for a, b, c in zip(line, fill, capsule,
                                                                                           strict=True))


def _segment_tiles(blocks: jax.Array, height: int, width: int, cfg: RasterConfig) -> tuple[jax.Array, ...]:
    """Per segment (S,): the inclusive tile range (c0, c1, r0, r1) of its live primitives' union box, and live."""
    x_lo, x_hi, y_lo, y_hi = _footprint(blocks, smooth_half(width, cfg))
    live = blocks[..., _F["live"]] > 0.5  # (nb, S)
    big = 1e9
    x_lo, y_lo = (jnp.where(live, v, big).min(0) for v in (x_lo, y_lo))
    x_hi, y_hi = (jnp.where(live, v, -big).max(0) for v in (x_hi, y_hi))
    ts = cfg.tile
    tx, ty = -(-width // ts), -(-height // ts)
    to_tile = lambda v, n: jnp.clip(jnp.floor(v / ts), -1, n).astype(jnp.int32)  # noqa: E731
    return to_tile(x_lo, tx), to_tile(x_hi, tx), to_tile(y_lo, ty), to_tile(y_hi, ty), live.any(0)


def _overlaps(ranges: tuple, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """(C, S): tile (rows[c], cols[c]) lies in segment s's tile range."""
    c0, c1, r0, r1, live = (x[None] for x in ranges)
    r, c = rows[:, None], cols[:, None]
    return live & (c0 <= c) & (c1 >= c) & (r0 <= r) & (r1 >= r)


def tile_counts(prims: jax.Array, height: int, width: int, cfg: RasterConfig) -> jax.Array:
    """Segments listed by the busiest tile of this frame's primitives: the ``tile_segments`` it needs."""
    ranges = _segment_tiles(_blocks(prims, cfg), height, width, cfg)
    ts = cfg.tile
    tx, ty = -(-width // ts), -(-height // ts)
    cols = jnp.arange(tx, dtype=jnp.int32)
    per_row = jax.lax.map(lambda r: _overlaps(ranges, jnp.full((tx,), r), cols).sum(1).max(),
                          jnp.arange(ty, dtype=jnp.int32))
    return per_row.max()


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


def _round(blocks: jax.Array, over: jax.Array, rank: jax.Array, first: jax.Array, k: int, px: jax.Array,
           py: jax.Array, half: int, cfg: RasterConfig) -> jax.Array:
    """Accumulators (C, ts, ts, 3) complex of the listed segments of rank first … first + k − 1 in each tile."""
    n = over.shape[1]
    chosen = over & (rank >= first) & (rank < first + k)
    # The k chosen ones in drawing order (top_k of a descending index score; a sort, not a scatter).
    score, pick = jax.lax.top_k(jnp.where(chosen, n - jnp.arange(n, dtype=jnp.int32), 0), k)  # (C, k)
    p = blocks[:, pick]  # (nb, C, k, _NF)
    pe = p[:, :, None, None]  # (nb, C, 1, 1, k, _NF)
    xe, ye = px[None, ..., None], py[None, ..., None]  # (1, C, ts, ts, 1)
    weight = primitive_weight(pe, xe, ye, cfg)
    keep = (pe[..., _F["live"]] > 0.5) & (score > 0)[None, :, None, None, :]
    if cfg.profile == "smooth":
        keep &= _smooth_window(pe, xe, ye, half)
    weight = jnp.where(keep, weight, 0.0).sum(0)  # (C, ts, ts, k)
    onehot = jax.nn.one_hot(p[0, ..., _F["family"]].astype(jnp.int32), 3, dtype=jnp.float32)  # (C, k, 3)
    fogged = onehot * p[0, ..., _F["fog"], None]
    return jax.lax.complex(jnp.einsum("cijk,ckf->cijf", weight, onehot),
                           jnp.einsum("cijk,ckf->cijf", weight, fogged))


def raster_tiled(prims: jax.Array, height: int, width: int, cfg: RasterConfig) -> tuple[jax.Array, jax.Array]:
    """Accumulators (3 families, H, W) complex L + iG of one frame's primitives (N, _NF), and overflow: the
    listed segments beyond ``tile_segments`` summed over tiles (0 when ``tile_segments`` is None: exact)."""
    blocks = _blocks(prims, cfg)
    ranges = _segment_tiles(blocks, height, width, cfg)
    half = smooth_half(width, cfg)
    ts, rows_per = cfg.tile, cfg.tile_rows
    tx, ty = -(-width // ts), -(-height // ts)
    n_chunks = -(-ty // rows_per)
    n_seg = blocks.shape[1]
    k = min(cfg.tile_segments or cfg.tile_block, n_seg)
    local_r = jnp.repeat(jnp.arange(rows_per, dtype=jnp.int32), tx)
    cols = jnp.tile(jnp.arange(tx, dtype=jnp.int32), rows_per)
    iy, ix = jnp.meshgrid(jnp.arange(ts, dtype=jnp.int32), jnp.arange(ts, dtype=jnp.int32), indexing="ij")

    @jax.checkpoint  # the gradient recomputes a chunk instead of keeping every chunk's per-pixel values
    def chunk(ci: jax.Array) -> tuple[jax.Array, jax.Array]:
        rows = ci * rows_per + local_r
        over = _overlaps(ranges, rows, cols)  # (C, S)
        count = over.sum(1, dtype=jnp.int32)
        rank = jnp.cumsum(over, axis=1, dtype=jnp.int32) - 1
        py = rows[:, None, None] * ts + iy[None]
        px = cols[:, None, None] * ts + ix[None]
        draw = lambda first: _round(blocks, over, rank, first, k, px, py, half, cfg)  # noqa: E731
        if cfg.tile_segments is not None:
            return draw(jnp.int32(0)), jnp.maximum(count - k, 0).sum()
        acc = jax.lax.while_loop(lambda c: c[0] < count.max(), lambda c: (c[0] + k, c[1] + draw(c[0])),
                                 (jnp.int32(0), jnp.zeros(px.shape + (3,), jnp.complex64)))[1]
        return acc, jnp.int32(0)

    acc, overflow = jax.lax.map(chunk, jnp.arange(n_chunks, dtype=jnp.int32))  # (n_chunks, C, ts, ts, 3)
    acc = acc.reshape(n_chunks, rows_per, tx, ts, ts, 3).transpose(5, 0, 1, 3, 2, 4)
    acc = acc.reshape(3, n_chunks * rows_per * ts, tx * ts)[:, :height, :width]
    return acc, overflow.sum()
