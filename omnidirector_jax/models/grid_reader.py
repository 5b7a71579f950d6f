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

A plane's homography cannot show a translation's parallax: a dolly came out as a zoom of the picture, which the
pose estimator reads as a rotation. With `model.reader_depth` the reader also reads the plane at infinity (the
rotation alone) and a small CNN (`DepthNet`) gives the reference's relative inverse depth; :func:`warp_depth`
moves each pixel by the rotation plus its share of the near plane's translation. The depth is learnt from the
true cameras (the train step warps the reference onto every frame by them and scores the photometric error), so
it comes from the reference image alone and the grid still carries only the camera.

Coordinates are normalised image coordinates: u = (2x + 1) / W − 1 for pixel column x (OpenCV pixel centres),
so the image spans [−1, 1] on both axes whatever its size.

Shapes: grid frames [B, V, H, W, c] (pixels, or unshuffled latents), corners [B, V, 4, 2] (u, v of the target
frame's corners (−1, −1), (1, −1), (1, 1), (−1, 1) in the reference), homographies [B, V, 3, 3], depth scale
[B, H, W] (the reference's inverse depth over the near plane's: 1 on it, 0 at infinity).
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


def _source_pixels(h: jax.Array, height: int, width: int) -> jax.Array:
    """Where every output pixel's centre lands under `h [3, 3]` (normalised output -> input), as input pixel
    coordinates [H, W, 2] (x, y)."""
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                          indexing="ij")
    n = normaliser(height, width)
    pix = jnp.linalg.inv(n) @ h @ n  # output pixel -> input pixel
    return apply_homography(pix, jnp.stack([xs, ys], -1).reshape(-1, 2)).reshape(height, width, 2)


def _bilinear(image: jax.Array, src: jax.Array) -> jax.Array:
    """image [H, W, C] sampled at pixel coordinates src [..., 2] (x, y), border pixels repeated -> [..., C]."""
    height, width, _ = image.shape
    x = jnp.clip(src[..., 0], 0.0, width - 1.0)
    y = jnp.clip(src[..., 1], 0.0, height - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, width - 2).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, height - 2).astype(jnp.int32)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def warp(image: jax.Array, h: jax.Array) -> jax.Array:
    """Backward warp: out(p) = image(h·p) in normalised coordinates, bilinear, border pixels repeated.

    image [H, W, C], h [3, 3] (output -> input) -> [H, W, C]."""
    height, width, _ = image.shape
    return _bilinear(image, _source_pixels(h, height, width))


def warp_depth(image: jax.Array, h_near: jax.Array, h_far: jax.Array, scale: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """Backward warp with parallax: a point at inverse depth ρ (in the reference) moves as the plane at infinity
    (`h_far`, the rotation) plus ρ / ρ_near of the difference to the near plane (`h_near`) — exact in
    homogeneous coordinates, to first order after dividing. `scale [H, W]` = ρ / ρ_near of the reference,
    looked up where the rotation alone puts each output pixel.

    image [H, W, C], h_near/h_far [3, 3] (output -> input, normalised) -> (out [H, W, C], inside [H, W]: the
    source lies in the image)."""
    height, width, _ = image.shape
    far = _source_pixels(h_far, height, width)
    near = _source_pixels(h_near, height, width)
    s = _bilinear(scale[..., None], far)
    src = far + s * (near - far)
    inside = ((src[..., 0] >= 0) & (src[..., 0] <= width - 1) & (src[..., 1] >= 0) & (src[..., 1] <= height - 1))
    return _bilinear(image, src), inside


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
                 param_dtype: Any = jnp.float32, shot_gate: bool = False, far_plane: bool = False):
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
        # far_plane: the corners for the plane at infinity as well (the rotation alone), read as a change of the
        # near plane's corners: zero-initialised, a reader trained without it starts where it was.
        self.far_head = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (None, None))(
            rngs.params(), (hidden, 8), param_dtype)) if far_plane else None

    def __call__(self, first: jax.Array, frames: jax.Array) -> jax.Array:
        """first [B, H, W, c], frames [B, V, H, W, c] -> corners [B, V, 4, 2] of each frame in `first`."""
        return self.read(first, frames)[0]

    def read(self, first: jax.Array, frames: jax.Array) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """As `__call__`, and with `shot_gate` the logit that frame i is a cut frame (a white grid frame), [B, V]
        (None without), and with `far_plane` the corners for the plane at infinity, [B, V, 4, 2] (None without)."""
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
        corners = jnp.asarray(CORNERS, jnp.float32) + offsets
        far = None if self.far_head is None else corners + (h @ self.far_head[...]).reshape(b, v, 4, 2)
        return corners, cut_logits, far


def same_shot(cut_logits: jax.Array) -> jax.Array:
    """cut_logits [B, V] -> [B, V] in [0, 1]: the chance that no cut frame lies in frames 0..i (frame i is still
    in the reference's shot), the product of (1 − p_cut) up to i."""
    return jnp.exp(jnp.cumsum(jax.nn.log_sigmoid(-cut_logits.astype(jnp.float32)), axis=1))


def warp_reference(reference: jax.Array, corners: jax.Array, s: int, far_corners: jax.Array | None = None,
                   depth_scale: jax.Array | None = None) -> jax.Array:
    """The reference latents moved by each frame's homography (or, given `far_corners` and `depth_scale`, by
    :func:`warp_depth`).

    reference [B, h, w, C] latents, corners/far_corners [B, V, 4, 2], s: the pixel encoder's space-to-depth
    factor (1 for VAE latents, which are warped on their own grid), depth_scale [B, H, W] (pixels of the
    unshuffled reference) -> [B, V, h, w, C]."""
    pixels = unshuffle(reference, s)  # [B, H, W, c]
    homographies = corners_to_homography(corners)  # target -> reference
    if far_corners is None:
        warped = jax.vmap(lambda img, hs: jax.vmap(lambda h: warp(img, h))(hs))(pixels, homographies)
    else:
        far = corners_to_homography(far_corners)
        warped = jax.vmap(lambda img, hn, hf, sc: jax.vmap(lambda a, b: warp_depth(img, a, b, sc)[0])(hn, hf))(
            pixels, homographies, far, depth_scale)
    return shuffle(warped, s)


class DepthNet(nnx.Module):
    """The reference image's relative inverse depth, as the scale of :func:`warp_depth` (1: the reader's near
    plane, 0: infinitely far): dilated 3×3 convolutions at full resolution (receptive field 31 px), the last
    zero-initialised (scale 1 everywhere: the one-plane warp), bounded to e^±3.

    pixels [B, H, W, c] -> [B, H, W]."""

    DILATIONS = (1, 2, 4, 8)
    BOUND = 3.0

    def __init__(self, in_channels: int, channels: int, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32):
        chans = (in_channels,) + (channels,) * len(self.DILATIONS)
        self.kernels = nnx.List([nnx.Param(nnx.with_partitioning(
            nnx.initializers.normal(1.0 / math.sqrt(9 * a)), (None, None, None, None))(
            rngs.params(), (3, 3, a, b), param_dtype)) for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.biases = nnx.List([nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (None,))(
            rngs.params(), (b,), param_dtype)) for b in chans[1:]])
        self.out = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (None, None))(
            rngs.params(), (channels, 1), param_dtype))

    def __call__(self, pixels: jax.Array) -> jax.Array:
        x = pixels.astype(jnp.float32)
        for kernel, bias, dilation in zip(self.kernels, self.biases, self.DILATIONS, strict=True):
            x = jax.lax.conv_general_dilated(x, kernel[...].astype(x.dtype), (1, 1), "SAME",
                                             rhs_dilation=(dilation, dilation),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.gelu(x + bias[...].astype(x.dtype), approximate=True)
        z = (x @ self.out[...].astype(x.dtype))[..., 0]
        return jnp.exp(self.BOUND * jnp.tanh(z / self.BOUND))
