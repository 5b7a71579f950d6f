"""Frames: per-frame primitives, the method, compositing, cut frames; the jitted entry points."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from omnidirector_jax.camera.raster.composite import _composite, to_uint8
from omnidirector_jax.camera.raster.config import RasterConfig
from omnidirector_jax.camera.raster.geometry import frame_segments
from omnidirector_jax.camera.raster.primitives import make_primitives
from omnidirector_jax.camera.raster.scatter import _raster_scatter, candidate_counts
from omnidirector_jax.camera.raster.tiled import raster_tiled, tile_counts


def _compact(seg: dict, size: int, cfg: RasterConfig) -> tuple[dict, jax.Array]:
    """The first ``size`` visible segments, in drawing order, and how many visible ones did not fit."""
    n_visible = seg["keep"].sum()
    if cfg.method == "tiled":  # a stable sort: jnp.nonzero compiles to a scatter, which the tiled method avoids
        idx = jnp.argsort(~seg["keep"], stable=True)[:size]
    else:
        idx = jnp.nonzero(seg["keep"], size=size, fill_value=0)[0]
    out = {k: jnp.asarray(v)[idx] for k, v in seg.items()}
    out["keep"] = out["keep"] & (jnp.arange(size) < n_visible)
    return out, jnp.maximum(n_visible - size, 0).astype(jnp.int32)


def _frame_primitives(scene: dict, camera: dict, height: int, width: int, cfg: RasterConfig,
                      fisheye: bool) -> tuple[jax.Array, jax.Array]:
    """Primitives of one frame's visible segments and the number of visible segments dropped (beyond
    ``cfg.max_segments``): a frame sees a small part of the room, so compacting first saves most of the work."""
    seg = frame_segments(scene, camera["w2c"], camera["K"], camera["dist"] if fisheye else None,
                         camera["shot"], camera["spacing"], camera["view"], height, width, cfg)
    dropped = jnp.int32(0)
    if cfg.max_segments is not None and cfg.max_segments < seg["keep"].shape[0]:
        seg, dropped = _compact(seg, cfg.max_segments, cfg)
    return make_primitives(seg, cfg), dropped


@partial(jax.jit, static_argnames=("height", "width", "cfg", "fisheye"))
def visible_segments(scene: dict, cameras: dict, *, height: int, width: int, cfg: RasterConfig = RasterConfig(),
                     fisheye: bool = False) -> jax.Array:
    """(T,) visible (2D, after culling and clipping) segments per frame: choose ``max_segments`` from its max."""
    def one(cam):
        return frame_segments(scene, cam["w2c"], cam["K"], cam["dist"] if fisheye else None, cam["shot"],
                              cam["spacing"], cam["view"], height, width, cfg)["keep"].sum()

    return jax.lax.map(one, cameras)


def render_group(scene: dict, cameras: dict, colors: jax.Array, height: int, width: int, cfg: RasterConfig,
                 fisheye: bool, uint8: bool = False, scratch: jax.Array | None = None):
    """B frames (cameras with a leading axis B) → RGB (B, H, W, 3) float32 in [0, 1] or uint8, overflow (B,),
    and the accumulators (the scratch memory of the next group; ``scratch`` when there are none).

    Cut frames are pure white. The scatter method draws the B frames in one enumeration (see
    :func:`_raster_scatter`); the tiled method maps over them (:func:`raster_tiled`)."""
    prims, dropped = jax.vmap(lambda cam: _frame_primitives(scene, cam, height, width, cfg, fisheye))(cameras)
    if cfg.method == "scatter":
        acc, overflow = _raster_scatter(prims, height, width, cfg, scratch)
        scratch = acc.reshape(-1)
    else:
        acc, overflow = jax.lax.map(lambda p: raster_tiled(p, height, width, cfg), prims)
    overflow = overflow + dropped
    img = jax.vmap(_composite, (0, None))(acc, colors)
    # Cut frames white by arithmetic, not a select: with a select in it, LLVM leaves the fused pass scalar (4x slower).
    cut = (cameras["shot"] < 0).astype(img.dtype)[:, None, None, None]
    img = img * (1.0 - cut) + cut
    return (to_uint8(img) if uint8 else img), overflow, scratch


def scratch_size(height: int, width: int, cfg: RasterConfig = RasterConfig()) -> int:
    """Length of :func:`frame_scratch`: frame_batch·H·W·3 (0 for 'tiled')."""
    return cfg.frame_batch * height * width * 3 if cfg.method == "scatter" else 0


def frame_scratch(height: int, width: int, cfg: RasterConfig = RasterConfig()) -> jax.Array:
    """Accumulator memory for :func:`render_frames_into` (complex64 zeros of :func:`scratch_size`)."""
    return jnp.zeros((scratch_size(height, width, cfg),), jnp.complex64)


def _render(scene: dict, cameras: dict, colors: jax.Array, out: jax.Array, scratch: jax.Array, height: int,
            width: int, cfg: RasterConfig, fisheye: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Frames of ``cameras`` written into ``out`` (T, H, W, 3) group by group; the accumulators live in
    ``scratch`` across groups, so a call allocates (and page-faults in) no frame-sized memory of its own."""
    n_frames = cameras["shot"].shape[0]
    group = min(cfg.frame_batch, n_frames)
    n_groups = -(-n_frames // group)
    index = jnp.minimum(jnp.arange(n_groups * group), n_frames - 1).reshape(n_groups, group)
    if cfg.method == "scatter" and scratch.shape[0] != group * height * width * 3:
        scratch = jnp.zeros((group * height * width * 3,), jnp.complex64)  # fewer frames than frame_batch

    def group_frames(cams: dict, scratch: jax.Array | None):
        return render_group(scene, cams, colors, height, width, cfg, fisheye, out.dtype == jnp.uint8, scratch)

    if cfg.method == "tiled":  # the gradient keeps a group's inputs, not its per-pixel values (memory bound)
        group_frames = jax.checkpoint(group_frames)

    def body(g, carry):
        out, overflow, scratch = carry
        idx = index[g]
        frames, over, new_scratch = group_frames(jax.tree.map(lambda x: x[idx], cameras),
                                                 scratch if cfg.method == "scatter" else None)
        for b in range(group):  # a padded group's extra copies of the last frame rewrite it with the same image
            out = jax.lax.dynamic_update_index_in_dim(out, frames[b].astype(out.dtype), idx[b], 0)
            overflow = jax.lax.dynamic_update_index_in_dim(overflow, over[b], idx[b], 0)  # no scatter (tiled)
        return out, overflow, (new_scratch if cfg.method == "scatter" else scratch)

    overflow = jnp.zeros((n_frames,), jnp.int32)
    return jax.lax.fori_loop(0, n_groups, body, (out, overflow, scratch))


@partial(jax.jit, static_argnames=("height", "width", "cfg", "fisheye"))
def required_budget(scene: dict, cameras: dict, *, height: int, width: int, cfg: RasterConfig = RasterConfig(),
                    fisheye: bool = False) -> jax.Array:
    """(T,) candidate pixels each frame needs (scatter method): choose ``pixel_budget`` from its max."""
    return jax.lax.map(lambda cam: candidate_counts(_frame_primitives(scene, cam, height, width, cfg, fisheye)[0],
                                                    height, width, cfg), cameras)


@partial(jax.jit, static_argnames=("height", "width", "cfg", "fisheye"))
def required_tile_segments(scene: dict, cameras: dict, *, height: int, width: int,
                           cfg: RasterConfig = RasterConfig(method="tiled"), fisheye: bool = False) -> jax.Array:
    """(T,) segments listed by each frame's busiest tile (tiled method): choose ``tile_segments`` from its max
    (a static list size, needed for the gradient; ``None`` runs exact rounds instead)."""
    return jax.lax.map(lambda cam: tile_counts(_frame_primitives(scene, cam, height, width, cfg, fisheye)[0],
                                               height, width, cfg), cameras)


@partial(jax.jit, static_argnames=("height", "width", "cfg", "fisheye", "uint8"))
def render_frames(scene: dict, cameras: dict, colors: jax.Array, *, height: int, width: int,
                  cfg: RasterConfig = RasterConfig(), fisheye: bool = False,
                  uint8: bool = False) -> tuple[jax.Array, jax.Array]:
    """Render a trajectory's frames.

    Args:
      scene: segments (S, 2, 3), family (S,), shot (S,), valid (S,) — from ``build_scene`` or
        ``build_scene_jax``.
      cameras: per frame w2c (T, 3, 4), K (T, 3, 3), dist (T, 4), shot (T,) (−1 = cut, rendered white),
        spacing (T,) and view (T,) of the frame's room.
      colors: (3, 3) RGB in [0, 1] of the X, Z and vertical line families.
      uint8: return frames as uint8 (converted inside the compiled program; 4x less output traffic).
    Returns: frames (T, H, W, 3) float32 in [0, 1] (or uint8) and overflow (T,) — what was dropped: candidate
    pixels beyond the static budget (scatter) or tile-listed segments beyond ``tile_segments`` (tiled), plus visible
    segments beyond ``max_segments``; 0 when the frame is exact.
    """
    n_frames = cameras["shot"].shape[0]
    out = jnp.zeros((n_frames, height, width, 3), jnp.uint8 if uint8 else jnp.float32)
    frames, overflow, _ = _render(scene, cameras, colors, out, frame_scratch(height, width, cfg), height, width,
                                  cfg, fisheye)
    return frames, overflow


@partial(jax.jit, static_argnames=("height", "width", "cfg", "fisheye"), donate_argnames=("out", "scratch"))
def render_frames_into(scene: dict, cameras: dict, colors: jax.Array, out: jax.Array, scratch: jax.Array, *,
                       height: int, width: int, cfg: RasterConfig = RasterConfig(),
                       fisheye: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`render_frames` into donated memory: ``out`` (T, H, W, 3) uint8 or float32 and ``scratch``
    (:func:`frame_scratch`) → (frames, overflow, scratch). Pass the returned frames and scratch back in on
    the next call (after reading the frames): repeated rendering then reuses its memory instead of mapping
    fresh pages every call, which on CPU costs about as much as drawing."""
    return _render(scene, cameras, colors, out, scratch, height, width, cfg, fisheye)
