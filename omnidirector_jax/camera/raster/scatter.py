"""The scatter method (CPU/GPU): units of OpenCV's decomposition laid out by a cumulative sum, scatter-added."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from omnidirector_jax.camera.raster.config import RasterConfig
from omnidirector_jax.camera.raster.primitives import _F, _FILL_BLOCKS, _LINE_BLOCKS, _NF, _axes, smooth_half
from omnidirector_jax.camera.raster.weights import (
    _capsule_weight,
    _fill_row,
    _fill_setup,
    _line_column,
    _materialize,
    _opacity,
    exact_centres,
)

# The scatter method draws OpenCV's own decomposition. 'opencv': every anti-aliased edge (a thin line, a thick
# line's four quad edges, its caps' eight diamond edges) is a run of major-axis columns of three pixels whose
# weights are computed once per column; every filled polygon (the quad, the two diamonds) is a run of image
# rows, each cut into pieces of _SPAN pixels whose ends are computed once per row. So per pixel there is only
# an index and a compare. 'smooth': each capsule is a run of columns. A pass lays its units out by a cumulative
# sum over their owners (primitives), finds each unit's owner by searchsorted and scatter-adds its block.
_SPAN = 8  # pixels per piece of a fill row


@dataclasses.dataclass(frozen=True)
class _Pass:
    kind: str  # 'lines' | 'spans' ('opencv' profile) | 'smooth' (capsules)
    block: int  # pixels per unit
    half: int = 1  # 'smooth': static half-height of a column


def _passes(width: int, cfg: RasterConfig) -> tuple[_Pass, ...]:
    """The scatter passes of a profile; a smooth column spans the widest line the config can draw."""
    if cfg.profile == "smooth":
        half = smooth_half(width, cfg)
        return (_Pass("smooth", 2 * half + 1, half),)
    return (_Pass("lines", 3), _Pass("spans", _SPAN))


def _span_pieces(p: jax.Array, width: int) -> jax.Array:
    """Pieces per row that cover the longest row of fill polygons p (N, _NF), parallelograms (quad, diamond):
    a row's span is at most the polygon's clipped width and at most its chord |e × g| / |e_y or g_y|."""
    xs = jnp.stack([p[:, _F[f"x{i}"]] for i in range(4)], -1)
    ys = jnp.stack([p[:, _F[f"y{i}"]] for i in range(4)], -1)
    bbox = jnp.minimum(jnp.floor(xs.max(-1)), width - 1) - jnp.maximum(jnp.ceil(xs.min(-1)), 0) + 1
    ex, ey, gx, gy = xs[:, 1] - xs[:, 0], ys[:, 1] - ys[:, 0], xs[:, 2] - xs[:, 1], ys[:, 2] - ys[:, 1]
    area = jnp.abs(ex * gy - ey * gx)
    chord = jnp.minimum(area / jnp.maximum(jnp.abs(gy), 1e-6), area / jnp.maximum(jnp.abs(ey), 1e-6))
    longest = jnp.clip(jnp.minimum(bbox, jnp.floor(jnp.minimum(chord, 2.0 * width)) + 2.0), 1.0, float(width))
    return jnp.ceil(longest / _SPAN)


def _owners(prims: jax.Array, ps: _Pass, height: int, width: int) -> tuple[dict, jax.Array, jax.Array]:
    """Per-owner data of a pass, each owner's first column (or row) and its number of units (0: not drawn)."""
    if ps.kind == "spans":
        p = prims.reshape(16, -1, _NF)[jnp.array(_FILL_BLOCKS)].reshape(-1, _NF)
        fill = _fill_setup(p)
        r0 = jnp.maximum(fill["ymin"], 0.0)
        rows = jnp.minimum(fill["ymax"], height - 1.0) - r0 + 1
        pieces = _span_pieces(p, width)
        live = (p[:, _F["live"]] > 0.5) & (rows > 0)
        own = {"fill": fill, "pieces": pieces, "family": p[:, _F["family"]].astype(jnp.int32), "fog": p[:, _F["fog"]]}
        return own, r0.astype(jnp.int32), jnp.where(live, rows * pieces, 0).astype(jnp.int32)
    if ps.kind == "lines":
        p = prims.reshape(16, -1, _NF)[jnp.array(_LINE_BLOCKS)].reshape(-1, _NF)
    else:
        p = prims
    ax = _axes(p)
    own = {"ax": ax, "family": p[:, _F["family"]].astype(jnp.int32), "fog": p[:, _F["fog"]]}
    live = p[:, _F["live"]] > 0.5
    if ps.kind == "smooth":
        own["members"] = p
    else:  # OpenCV draws (almost) nothing for a point-like line: its weights are all 0 (see _line_ramp)
        live &= (ax["maj1"] - ax["maj0"]) >= 1.0 / 32.0
    if ps.kind == "smooth":  # a capsule reaches ``pad`` past its ends
        pad = p[:, _F["pad"]].astype(jnp.int32) + 1
        lo, hi = jnp.floor(ax["maj0"]).astype(jnp.int32) - pad, jnp.ceil(ax["maj1"]).astype(jnp.int32) + pad
    else:  # a 1-px line's end ramp is 0 from 17/16 px past its ends on (the first table step)
        reach = 17.0 / 16.0
        lo = jnp.floor(ax["maj0"] - reach).astype(jnp.int32) + 1
        hi = jnp.ceil(ax["maj1"] + reach).astype(jnp.int32) - 1
    n_major = jnp.where(ax["x_major"], width, height)
    c0, c1 = jnp.clip(lo, 0, n_major - 1), jnp.clip(hi, 0, n_major - 1)
    return own, c0, jnp.where(live & (c1 >= c0), c1 - c0 + 1, 0)


def _unit_weights(u: dict, first: jax.Array, local: jax.Array, ps: _Pass,
                  cfg: RasterConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pixels x, y of units — number ``local`` (U,) of owners starting at column/row ``first`` — and their
    log-transmittance: (U, _SPAN) for spans, else (block, U). XLA:CPU vectorises a fusion along its minor axis,
    which pays where there is arithmetic per pixel (lines' logarithms); a span's pixels are a compare each."""
    if ps.kind == "spans":
        pieces = u["pieces"]
        row_in = jnp.floor((local.astype(jnp.float32) + 0.5) / pieces)  # exact: small integers
        piece = local.astype(jnp.float32) - row_in * pieces
        y = first.astype(jnp.float32) + row_in
        lo, hi = _fill_row(u["fill"], y)
        lo = jnp.maximum(lo, 0.0)
        filled = hi >= lo  # else the row is empty (no active edge, or a span left of the image)
        start = jnp.clip(jnp.where(filled, lo + piece * _SPAN, 0.0), 0.0, 4095.0)
        last = jnp.clip(jnp.where(filled, hi, -1.0), -1.0, 4094.0)
        # The piece's first pixel and the row's last, packed exactly in one float and stored once per piece
        # (:func:`_materialize`): XLA would otherwise redo the row's edge walk in each of the piece's pixels.
        (packed,) = _materialize(start * 4096.0 + last + 1.0)
        start = jnp.floor(packed / 4096.0)
        last = packed - start * 4096.0 - 1.0
        x = start.astype(jnp.int32)[:, None] + jnp.arange(_SPAN)[None, :]
        # A pixel outside the span gets column −1 (the scatter drops it), so the value needs no test of its own.
        x = jnp.where(x.astype(jnp.float32) <= last[:, None], x, -1)
        return x, jnp.broadcast_to(y.astype(jnp.int32)[:, None], x.shape), jnp.full(x.shape, _opacity(1.0))
    ax = u["ax"]
    col = first + local
    xm = ax["x_major"][None, :]
    if ps.kind == "lines":
        rows, opacity = _line_column(ax, col, exact_centres(cfg))
        colb = jnp.broadcast_to(col[None, :], rows.shape)
        return jnp.where(xm, colb, rows), jnp.where(xm, rows, colb), opacity
    k = jnp.arange(-ps.half, ps.half + 1, dtype=jnp.int32)
    along = jnp.clip(col.astype(jnp.float32), ax["maj0"], ax["maj1"])
    rows = jnp.floor(ax["min0"] + (along - ax["maj0"]) * ax["m"] + 0.5).astype(jnp.int32)[None, :] + k[:, None]
    colb = jnp.broadcast_to(col[None, :], rows.shape)
    px, py = jnp.where(xm, colb, rows), jnp.where(xm, rows, colb)
    return px, py, _capsule_weight(u["members"][None], px, py, cfg.smooth_softness)


def _pack_owners(own: dict) -> tuple[jax.Array, jax.Array, object]:
    """Per-owner data (a dict of (N, ...) arrays) as two row tables, float32 (N, Kf) and int32 (N, Ki) (integers
    and booleans stay exact), and the function that turns gathered rows back into the dict. A chunk then gathers
    two rows per unit: one XLA:CPU operation each, where a gather per field costs an operation per field."""
    leaves, treedef = jax.tree.flatten(own)
    is_float = [jnp.issubdtype(x.dtype, jnp.floating) for x in leaves]
    flat = [x.reshape(x.shape[0], -1) for x in leaves]
    floats = jnp.concatenate([x for x, f in zip(flat, is_float, strict=True) if f], -1)
    ints = jnp.concatenate([x.astype(jnp.int32) for x, f in zip(flat, is_float, strict=True) if not f], -1)

    def unpack(float_rows: jax.Array, int_rows: jax.Array) -> dict:
        out, at = [], {True: 0, False: 0}
        for x, f, col in zip(leaves, is_float, flat, strict=True):
            rows = float_rows if f else int_rows
            part = rows[:, at[f]:at[f] + col.shape[1]].reshape((rows.shape[0],) + x.shape[1:])
            at[f] += col.shape[1]
            out.append(part if f else part.astype(x.dtype))
        return jax.tree.unflatten(treedef, out)

    return floats, ints, unpack


def _draw_units(acc: jax.Array, tables: tuple, unpack, ps: _Pass, ends: jax.Array, start: jax.Array,
                n_units: int, height: int, width: int, cfg: RasterConfig) -> jax.Array:
    """Add units [start, start + n_units) of a pass into ``acc`` (B·H·W·3,) complex; ``tables`` and ``unpack``
    from :func:`_pack_owners` (the owner data plus each owner's first column/row, first unit and frame)."""
    sample = start + jnp.arange(n_units, dtype=jnp.int32)
    # A unit's owner is the number of owners that end at or before it: mark each owner's end at its place in
    # the chunk (the earlier ones at 0) and sum up. One scatter and one scan instead of a binary search.
    marks = jnp.zeros((n_units,), jnp.int32).at[jnp.clip(ends - start, 0, n_units)].add(1, mode="drop")
    owner = jnp.minimum(jnp.cumsum(marks), ends.shape[0] - 1)
    u = unpack(*(t[owner] for t in tables))
    px, py, total = _unit_weights(u, u["first"], sample - u["unit0"], ps, cfg)
    # The index does not look at the weight (adding 0 is harmless) and the two quantities travel as one
    # complex number: XLA:CPU fuses the weight into each consumer element, so this computes it once per pixel.
    per_unit = (lambda v: v[:, None]) if ps.kind == "spans" else (lambda v: v[None, :])  # noqa: E731
    ok = per_unit(sample < ends[-1]) & (px >= 0) & (px < width) & (py >= 0) & (py < height)
    plane = per_unit(u["frame"]) * 3 + per_unit(u["family"])  # accumulators (B, 3 families, H, W)
    flat = jnp.where(ok, plane * (height * width) + py * width + px, acc.shape[0])
    vals = jax.lax.complex(total, total * per_unit(u["fog"]))
    return acc.at[flat.reshape(-1)].add(vals.reshape(-1), mode="drop")


def candidate_counts(prims: jax.Array, height: int, width: int, cfg: RasterConfig) -> jax.Array:
    """Candidate pixels of the busiest scatter pass for these primitives (the ``pixel_budget`` it needs)."""
    return jnp.max(jnp.stack([_owners(prims, ps, height, width)[2].sum() * ps.block
                              for ps in _passes(width, cfg)]))


def _raster_scatter(prims: jax.Array, height: int, width: int, cfg: RasterConfig,
                    scratch: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Accumulators (B, 3 families, H, W) complex L + iG of B frames' primitives (B, N, _NF), and overflow (B,).

    The B frames share each pass's enumeration: their owners are laid out one after the other, so a chunk
    can span frames and the fixed cost of a step (owner search, gathers, scatter) is paid once for all.
    With ``cfg.pixel_budget`` (per frame) each pass runs a static number of chunks (``fori_loop``:
    reverse-differentiable) and candidate pixels past the budget are dropped and counted as overflow; without
    it a ``while_loop`` runs until every unit is drawn (exact, forward-only). ``scratch`` (see
    :func:`frame_scratch`) is the accumulators' memory from the previous group, cleared and reused.
    """
    n_frames = prims.shape[0]
    plane = height * width * 3
    acc = jnp.zeros((n_frames * plane,), jnp.complex64)
    if scratch is not None and scratch.shape != acc.shape:
        raise ValueError(f"scratch of shape {scratch.shape} does not fit {n_frames} frames of {height}x{width}")
    overflow = jnp.zeros((n_frames,), jnp.int32)
    for ps in _passes(width, cfg):
        own, first, count = jax.vmap(lambda p, ps=ps: _owners(p, ps, height, width))(prims)
        per_frame = count.shape[1]
        own = jax.tree.map(lambda x, n=per_frame: x.reshape((n_frames * n,) + x.shape[2:]), own)
        first, count = first.reshape(-1), count.reshape(-1)
        ends = jnp.cumsum(count)
        own |= {"frame": jnp.repeat(jnp.arange(n_frames, dtype=jnp.int32), per_frame), "first": first,
                "unit0": ends - count}
        *tables, unpack = _pack_owners(own)
        step = max(1, cfg.chunk // ps.block)

        def draw(i, a, ps=ps, tables=tuple(tables), unpack=unpack, ends=ends, step=step):
            return _draw_units(a, tables, unpack, ps, ends, i * step, step, height, width, cfg)

        if cfg.pixel_budget:
            n_chunks = math.ceil(math.ceil(n_frames * int(cfg.pixel_budget) / ps.block) / step)
            acc = jax.lax.fori_loop(0, n_chunks, draw, acc)
            frame_end = ends.reshape(n_frames, per_frame)[:, -1]
            frame_start = frame_end - count.reshape(n_frames, per_frame).sum(1)
            overflow += (frame_end - jnp.clip(n_chunks * step, frame_start, frame_end)) * ps.block
        else:
            acc = jax.lax.while_loop(lambda c, ends=ends, step=step: c[0] * step < ends[-1],
                                     lambda c, draw=draw: (c[0] + 1, draw(c[0], c[1])), (jnp.int32(0), acc))[1]
    return acc.reshape(n_frames, 3, height, width), overflow

