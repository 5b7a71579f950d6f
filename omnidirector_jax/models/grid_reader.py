"""Grid reader: a small CNN that reads the camera motion shown by two camera-grid frames as a homography, and the
warp that moves the reference image by it (`model.grid_reader`).

A tiny MMDiT trained on two CPU cores learns to denoise from the reference image long before it learns to read
the grid (design notes in the README). The reader gives it the camera motion explicitly, in the one form a
picture can use without depth: for grid frame 0 (the reference's camera) and grid frame i, where each corner of
frame i lies in frame 0 — the 4-point homography parametrisation of deep homography estimation — learnt from
the grid pixels alone, supervised by the homography that the true cameras induce on a plane `plane_depth` room
spacings in front of camera 0 (exact for rotations and zooms, a plane's parallax for translations). The MMDiT
then predicts x0 as a correction of the reference warped frame by frame. Nothing but the grid reaches the
reader: a blanked grid reads as no motion (it is trained so), so the grid-blanked ablation stays honest.

Coordinates are normalised image coordinates: u = (2x + 1) / W − 1 for pixel column x (OpenCV pixel centres),
so the image spans [−1, 1] on both axes whatever its size.

Shapes: grid frames [B, V, H, W, c] (pixels, or unshuffled latents), corners [B, V, 4, 2] (u, v of the target
frame's corners (−1, −1), (1, −1), (1, 1), (−1, 1) in the reference), homographies [B, V, 3, 3].
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))


def corners_to_homography(dst: jax.Array) -> jax.Array:
    """The homography mapping the image corners `CORNERS` to `dst [..., 4, 2]` -> [..., 3, 3] (h33 = 1)."""
    src = jnp.asarray(CORNERS, jnp.float32)
    x, y = src[:, 0], src[:, 1]
    u, v = dst[..., 0], dst[..., 1]
    zero, one = jnp.zeros_like(u), jnp.ones_like(u)
    xb, yb = jnp.broadcast_to(x, u.shape), jnp.broadcast_to(y, u.shape)
    rows_u = jnp.stack([xb, yb, one, zero, zero, zero, -xb * u, -yb * u], -1)  # [..., 4, 8]
    rows_v = jnp.stack([zero, zero, zero, xb, yb, one, -xb * v, -yb * v], -1)
    a = jnp.concatenate([rows_u, rows_v], -2)  # [..., 8, 8]
    b = jnp.concatenate([u, v], -1)[..., None]  # [..., 8, 1]
    h = jnp.linalg.solve(a, b)[..., 0]
    return jnp.concatenate([h, jnp.ones(h.shape[:-1] + (1,), h.dtype)], -1).reshape(h.shape[:-1] + (3, 3))


def apply_homography(h: jax.Array, points: jax.Array) -> jax.Array:
    """`h [..., 3, 3]` applied to `points [..., N, 2]` -> [..., N, 2] (dehomogenised)."""
    p = jnp.concatenate([points, jnp.ones(points.shape[:-1] + (1,), points.dtype)], -1)
    q = jnp.einsum("...ij,...nj->...ni", h, p)
    w = q[..., 2:]
    w = jnp.where(jnp.abs(w) < 1e-6, jnp.where(w < 0, -1e-6, 1e-6), w)
    return q[..., :2] / w


def normaliser(height: int, width: int) -> jax.Array:
    """Pixel (OpenCV centres) -> normalised coordinates, as a 3×3 matrix."""
    return jnp.asarray([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0],
                        [0.0, 0.0, 1.0]], jnp.float32)


def plane_corners(w2c: jax.Array, K: jax.Array, spacing: jax.Array, plane_depth: float, *, height: int,
                  width: int, limit: float = 4.0) -> jax.Array:
    """Where each frame's corners lie in frame 0, for points on the plane z = plane_depth·spacing in front of
    camera 0 (the reader's supervision).

    w2c [T, 3, 4], K [T, 3, 3] (pixels of height×width), spacing [] (room spacing, world units) -> [T, 4, 2]
    normalised coordinates, clipped to ±limit (a camera that turns away from the plane has no finite answer)."""
    r0, t0 = w2c[0, :, :3], w2c[0, :, 3]
    rel_r = jnp.einsum("tij,kj->tik", w2c[:, :, :3], r0)  # R_i R_0ᵀ
    rel_t = w2c[:, :, 3] - jnp.einsum("tij,j->ti", rel_r, t0)  # t_i − R_rel t_0
    normal = jnp.asarray([0.0, 0.0, 1.0], jnp.float32)
    plane = rel_r + rel_t[:, :, None] * normal[None, None, :] / (plane_depth * spacing)
    h_pix = jnp.einsum("tij,tjk,kl->til", K, plane, jnp.linalg.inv(K[0]))  # frame-0 pixel -> frame-i pixel
    n = normaliser(height, width)
    g = n @ jnp.linalg.inv(h_pix) @ jnp.linalg.inv(n)  # frame-i normalised -> frame-0 normalised
    corners = jnp.broadcast_to(jnp.asarray(CORNERS, jnp.float32), (w2c.shape[0], 4, 2))
    return jnp.clip(apply_homography(g, corners), -limit, limit)


def warp(image: jax.Array, h: jax.Array) -> jax.Array:
    """Backward warp: out(p) = image(h·p) in normalised coordinates, bilinear, border pixels repeated.

    image [H, W, C], h [3, 3] (output -> input) -> [H, W, C]."""
    height, width, _ = image.shape
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                          indexing="ij")
    n = normaliser(height, width)
    pix = jnp.linalg.inv(n) @ h @ n  # output pixel -> input pixel
    src = apply_homography(pix, jnp.stack([xs, ys], -1).reshape(-1, 2)).reshape(height, width, 2)
    x = jnp.clip(src[..., 0], 0.0, width - 1.0)
    y = jnp.clip(src[..., 1], 0.0, height - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, width - 2).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, height - 2).astype(jnp.int32)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def unshuffle(latents: jax.Array, s: int) -> jax.Array:
    """Depth-to-space of the pixel encoder's layout: [..., h, w, s·s·c] -> [..., h·s, w·s, c] (s = 1: as is)."""
    if s == 1:
        return latents
    *lead, h, w, d = latents.shape
    c = d // (s * s)
    x = latents.reshape(-1, h, w, s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(*lead, h * s, w * s, c)


def shuffle(frames: jax.Array, s: int) -> jax.Array:
    """Inverse of :func:`unshuffle`."""
    if s == 1:
        return frames
    *lead, hh, ww, c = frames.shape
    x = frames.reshape(-1, hh // s, s, ww // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(*lead, hh // s, ww // s, s * s * c)


class Conv(nnx.Module):
    """3×3 convolution, stride 2, SAME padding, NHWC (replicated: the reader is small)."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, param_dtype: Any):
        init = nnx.initializers.normal(1.0 / math.sqrt(9 * cin))
        self.kernel = nnx.Param(nnx.with_partitioning(init, (None, None, None, None))(
            rngs.params(), (3, 3, cin, cout), param_dtype))
        self.bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (None,))(
            rngs.params(), (cout,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(x, self.kernel[...].astype(x.dtype), (2, 2), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.bias[...].astype(x.dtype)


class GridReader(nnx.Module):
    """Two grid frames -> where the second's corners lie in the first (zero-initialised head: no motion)."""

    POOL = 4  # the last feature map is resized to POOL × POOL cells: where things are matters, the size does not

    CUT_PRIOR = -6.0  # the cut head's initial logit: no cut anywhere (sigmoid ~0.0025), the plain reader

    def __init__(self, in_channels: int, channels: tuple[int, ...], hidden: int, *, rngs: nnx.Rngs,
                 param_dtype: Any = jnp.float32, shot_gate: bool = False):
        chans = (2 * in_channels,) + tuple(channels)
        self.convs = nnx.List([Conv(a, b, rngs=rngs, param_dtype=param_dtype)
                               for a, b in zip(chans[:-1], chans[1:], strict=True)])
        flat = self.POOL * self.POOL * channels[-1]
        init = nnx.initializers.normal(1.0 / math.sqrt(flat))
        self.fc = nnx.Param(nnx.with_partitioning(init, (None, None))(rngs.params(), (flat, hidden), param_dtype))
        self.fc_bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (None,))(
            rngs.params(), (hidden,), param_dtype))
        self.head = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (None, None))(
            rngs.params(), (hidden, 8), param_dtype))
        self.cut_head = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (None, None))(
            rngs.params(), (hidden, 1), param_dtype)) if shot_gate else None
        self.cut_bias = nnx.Param(nnx.with_partitioning(nnx.initializers.constant(self.CUT_PRIOR), (None,))(
            rngs.params(), (1,), param_dtype)) if shot_gate else None

    def __call__(self, first: jax.Array, frames: jax.Array) -> jax.Array:
        """first [B, H, W, c], frames [B, V, H, W, c] -> corners [B, V, 4, 2] of each frame in `first`."""
        return self.read(first, frames)[0]

    def read(self, first: jax.Array, frames: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """As `__call__`, and with `shot_gate` the logit that frame i is a cut frame (a white grid frame), [B, V]
        (None without)."""
        b, v = frames.shape[:2]
        x = jnp.concatenate([jnp.broadcast_to(first[:, None], frames.shape), frames], -1)
        x = x.reshape(b * v, *x.shape[2:]).astype(jnp.float32)
        for conv in self.convs:
            x = jax.nn.gelu(conv(x), approximate=True)
        if x.shape[1:3] != (self.POOL, self.POOL):
            x = jax.image.resize(x, (x.shape[0], self.POOL, self.POOL, x.shape[3]), "linear")
        h = jax.nn.gelu(x.reshape(b * v, -1) @ self.fc[...] + self.fc_bias[...], approximate=True)
        offsets = (h @ self.head[...]).reshape(b, v, 4, 2)
        cut_logits = None
        if self.cut_head is not None:
            cut_logits = (h @ self.cut_head[...] + self.cut_bias[...]).reshape(b, v)
        return jnp.asarray(CORNERS, jnp.float32) + offsets, cut_logits


def same_shot(cut_logits: jax.Array) -> jax.Array:
    """cut_logits [B, V] -> [B, V] in [0, 1]: the chance that no cut frame lies in frames 0..i (frame i is still
    in the reference's shot), the product of (1 − p_cut) up to i."""
    return jnp.exp(jnp.cumsum(jax.nn.log_sigmoid(-cut_logits.astype(jnp.float32)), axis=1))


def warp_reference(reference: jax.Array, corners: jax.Array, s: int) -> jax.Array:
    """The reference latents moved by each frame's homography.

    reference [B, h, w, C] latents, corners [B, V, 4, 2], s: the pixel encoder's space-to-depth factor (1 for
    VAE latents, which are warped on their own grid) -> [B, V, h, w, C]."""
    pixels = unshuffle(reference, s)  # [B, H, W, c]
    homographies = corners_to_homography(corners)  # target -> reference
    warped = jax.vmap(lambda img, hs: jax.vmap(lambda h: warp(img, h))(hs))(pixels, homographies)
    return shuffle(warped, s)
