"""MMDiT (Esser et al. 2024) for camera cloning, in Flax NNX.

Inputs are latents concatenated along the FRAME axis, `[reference image | camera grid | noisy video]`,
patchified together by a 3D convolution (kernel = stride = patch), so RoPE frame indices run contiguously
over all conditions. Every frame carries its own timestep (conditions are clean, `t = 0`), so AdaLN-Zero
modulation is computed per frame and broadcast over that frame's tokens; text tokens are modulated by the
target timestep plus pooled text.

Shapes (B batch, F latent frames, H/W latent size, C channels, L text length, D width, N visual tokens
`= F/pt * H/ph * W/pw`, S = N + L, heads `Hd` of size `Dh`):

    latents [B, F, H, W, C] -> patch embed -> x [B, N, D];  text [B, L, Dt] -> c [B, L, D]
    dual-stream blocks (scanned):   joint attention over [x | c], separate weights per stream
    single-stream blocks (optional, scanned): shared weights over [x | c]
    final AdaLN + linear -> unpatchify -> [B, F, H, W, C]   (velocity prediction for every frame)

State is a plain pytree at the jit boundary: `graphdef, state = nnx.split(model)`; the parallel package
shards it by the logical names every parameter carries (`embed`, `mlp`, `heads`, `kv`, `modulation`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnidirector_jax.config import ModelConfig, ShapeConfig
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.models.attention import attention
from omnidirector_jax.models.grid_reader import DepthNet, GridReader, same_shot, unshuffle, warp_reference
from omnidirector_jax.parallel.rules import constrain

Names = tuple[str | None, ...]
BATCH, LENGTH, EMBED = "activation_batch", "activation_length", "activation_embed"
HEADS, KV, MLP_ACT = "activation_heads", "activation_kv", "activation_mlp"


def _dtype(name: str) -> Any:
    return jnp.dtype(name)


# ------------------------------------------------------------------------------------------- primitives


class Linear(nnx.Module):
    """`y = x · W + b` contracting the last `len(in_shape)` axes; W has shape `in_shape + out_shape` and
    logical names `names` (one per axis of W); the bias takes the names of `out_shape`."""

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], names: Names, *, rngs: nnx.Rngs,
                 cfg: ModelConfig, zero_init: bool = False, use_bias: bool = True):
        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        assert len(names) == len(in_shape) + len(out_shape), (names, in_shape, out_shape)
        fan_in = math.prod(in_shape)
        pdt = _dtype(cfg.param_dtype)
        init = nnx.initializers.zeros if zero_init else nnx.initializers.normal(1.0 / math.sqrt(fan_in))
        self.kernel = nnx.Param(nnx.with_partitioning(init, names)(rngs.params(), in_shape + out_shape, pdt))
        self.bias = (nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, names[len(in_shape):])(
            rngs.params(), out_shape, pdt)) if use_bias else None)
        self.n_in = len(in_shape)
        self.dtype = _dtype(cfg.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...].astype(self.dtype)
        y = jax.lax.dot_general(x.astype(self.dtype), w, (
            (tuple(range(x.ndim - self.n_in, x.ndim)), tuple(range(self.n_in))), ((), ())))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """RMS norm over the last axis with a learned scale (QK-norm: over each head's `Dh`)."""

    def __init__(self, dim: int, names: Names, *, rngs: nnx.Rngs, cfg: ModelConfig):
        del rngs
        self.scale = nnx.Param(nnx.with_partitioning(nnx.initializers.ones, names)(
            jax.random.key(0), (dim,), _dtype(cfg.param_dtype)))
        self.eps = cfg.norm_eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """LayerNorm without affine parameters (AdaLN supplies shift and scale), statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class MLP(nnx.Module):
    """`D -> M -> D` with tanh-GELU."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, cfg: ModelConfig):
        self.fc1 = Linear((dim,), (hidden,), ("embed", "mlp"), rngs=rngs, cfg=cfg)
        self.fc2 = Linear((hidden,), (dim,), ("mlp", "embed"), rngs=rngs, cfg=cfg)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.gelu(self.fc1(x), approximate=True)
        h = constrain(h, (BATCH, LENGTH, MLP_ACT))
        return self.fc2(h)


def timestep_features(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal features of `t` in [0, 1] (scaled by 1000 as in SD3): `t [...] -> [..., dim]`."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (t.astype(jnp.float32) * 1000.0)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


# ------------------------------------------------------------------------------------------------ RoPE


def rope_dims(head_dim: int) -> tuple[int, int, int]:
    """Head-dim split `(frames, rows, cols)` for 3D RoPE (as in Wan): rows/cols get `2 * (Dh // 6)` each."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_angles(grid: tuple[int, int, int], head_dim: int, theta: float) -> jax.Array:
    """Rotation angles `[N, Dh/2]` for tokens on a `(frames, rows, cols)` grid, frame-major order; frame
    indices are contiguous over the concatenated conditions."""
    angles = []
    for axis, (n, d) in enumerate(zip(grid, rope_dims(head_dim), strict=True)):
        inv = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
        pos = jnp.arange(n, dtype=jnp.float32)
        shape = [1, 1, 1]
        shape[axis] = n
        a = (pos[:, None] * inv).reshape(*shape, d // 2)
        angles.append(jnp.broadcast_to(a, (*grid, d // 2)))
    return jnp.concatenate(angles, axis=-1).reshape(-1, head_dim // 2)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotates consecutive pairs of `x [B, N, Hd, Dh]` by `angles [N, Dh/2]` (in float32)."""
    xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    cos = jnp.cos(angles)[None, :, None, :]
    sin = jnp.sin(angles)[None, :, None, :]
    x1, x2 = xf[..., 0], xf[..., 1]
    out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)


# ------------------------------------------------------------------------------------------- modulation


def frame_modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """`x [B, N, D]` (frame-major tokens) modulated by per-frame `shift, scale [B, F', D]`."""
    b, n, d = x.shape
    f = shift.shape[1]
    y = x.reshape(b, f, n // f, d) * (1 + scale[:, :, None]) + shift[:, :, None]
    return y.reshape(b, n, d)


def frame_gate(x: jax.Array, gate: jax.Array) -> jax.Array:
    """`x [B, N, D]` times a per-frame gate `[B, F', D]`."""
    b, n, d = x.shape
    f = gate.shape[1]
    return (x.reshape(b, f, n // f, d) * gate[:, :, None]).reshape(b, n, d)


def _mod(linear: Linear, cond: jax.Array) -> list[jax.Array]:
    """AdaLN parameters: `cond [..., D] -> k` arrays `[..., D]` (k from the linear's output shape)."""
    out = linear(jax.nn.silu(cond))
    return [out[..., i, :] for i in range(out.shape[-2])]


# ------------------------------------------------------------------------------------------------ blocks


class DualStreamBlock(nnx.Module):
    """Separate weights for visual `x` and text `c` tokens, one joint attention over `[x | c]`."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        kw: dict[str, Any] = {"rngs": rngs, "cfg": cfg}
        self.x_mod = Linear((d,), (6, d), ("embed", None, "modulation"), zero_init=True, **kw)
        self.c_mod = Linear((d,), (6, d), ("embed", None, "modulation"), zero_init=True, **kw)
        self.x_qkv = Linear((d,), (3, h, dh), ("embed", None, "heads", "kv"), **kw)
        self.c_qkv = Linear((d,), (3, h, dh), ("embed", None, "heads", "kv"), **kw)
        self.x_q_norm, self.x_k_norm = RMSNorm(dh, ("kv",), **kw), RMSNorm(dh, ("kv",), **kw)
        self.c_q_norm, self.c_k_norm = RMSNorm(dh, ("kv",), **kw), RMSNorm(dh, ("kv",), **kw)
        self.x_out = Linear((h, dh), (d,), ("heads", "kv", "embed"), **kw)
        self.c_out = Linear((h, dh), (d,), ("heads", "kv", "embed"), **kw)
        self.x_mlp = MLP(d, cfg.mlp_dim, **kw)
        self.c_mlp = MLP(d, cfg.mlp_dim, **kw)
        self.qk_norm, self.eps, self.impl = cfg.qk_norm, cfg.norm_eps, cfg.attention

    def __call__(self, x: jax.Array, c: jax.Array, x_cond: jax.Array, c_cond: jax.Array, rope: jax.Array,
                 kv_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, N, D], c [B, L, D], x_cond [B, F', D] (per frame), c_cond [B, D], rope [N, Dh/2],
        kv_mask [B, N + L] -> (x, c) of the same shapes."""
        xs1, xc1, xg1, xs2, xc2, xg2 = _mod(self.x_mod, x_cond)
        cs1, cc1, cg1, cs2, cc2, cg2 = _mod(self.c_mod, c_cond[:, None])
        n = x.shape[1]
        xq, xk, xv = jnp.unstack(self.x_qkv(frame_modulate(layer_norm(x, self.eps), xs1, xc1)), axis=2)
        cq, ck, cv = jnp.unstack(self.c_qkv(layer_norm(c, self.eps) * (1 + cc1) + cs1), axis=2)
        if self.qk_norm:
            xq, xk, cq, ck = self.x_q_norm(xq), self.x_k_norm(xk), self.c_q_norm(cq), self.c_k_norm(ck)
        xq, xk = apply_rope(xq, rope), apply_rope(xk, rope)
        names = (BATCH, LENGTH, HEADS, KV)
        q, k, v = (constrain(jnp.concatenate(p, axis=1), names) for p in ((xq, cq), (xk, ck), (xv, cv)))
        o = constrain(attention(q, k, v, kv_mask, self.impl), names)
        x = x + frame_gate(self.x_out(o[:, :n]), xg1)
        c = c + cg1 * self.c_out(o[:, n:])
        x = x + frame_gate(self.x_mlp(frame_modulate(layer_norm(x, self.eps), xs2, xc2)), xg2)
        c = c + cg2 * self.c_mlp(layer_norm(c, self.eps) * (1 + cc2) + cs2)
        return constrain(x, (BATCH, LENGTH, EMBED)), constrain(c, (BATCH, None, EMBED))


class SingleStreamBlock(nnx.Module):
    """Shared weights over `[x | c]`: parallel attention and MLP branches (Flux/HunyuanVideo style)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        kw: dict[str, Any] = {"rngs": rngs, "cfg": cfg}
        self.mod = Linear((d,), (3, d), ("embed", None, "modulation"), zero_init=True, **kw)
        self.qkv = Linear((d,), (3, h, dh), ("embed", None, "heads", "kv"), **kw)
        self.mlp_in = Linear((d,), (cfg.mlp_dim,), ("embed", "mlp"), **kw)
        self.q_norm, self.k_norm = RMSNorm(dh, ("kv",), **kw), RMSNorm(dh, ("kv",), **kw)
        self.attn_out = Linear((h, dh), (d,), ("heads", "kv", "embed"), **kw)
        self.mlp_out = Linear((cfg.mlp_dim,), (d,), ("mlp", "embed"), use_bias=False, **kw)
        self.qk_norm, self.eps, self.impl = cfg.qk_norm, cfg.norm_eps, cfg.attention

    def __call__(self, x: jax.Array, c: jax.Array, x_cond: jax.Array, c_cond: jax.Array, rope: jax.Array,
                 kv_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Same signature and shapes as :meth:`DualStreamBlock.__call__`."""
        xs, xc, xg = _mod(self.mod, x_cond)
        cs, cc, cg = _mod(self.mod, c_cond[:, None])
        n = x.shape[1]
        hx = frame_modulate(layer_norm(x, self.eps), xs, xc)
        hc = layer_norm(c, self.eps) * (1 + cc) + cs
        hcat = constrain(jnp.concatenate([hx, hc], axis=1), (BATCH, LENGTH, EMBED))
        q, k, v = jnp.unstack(self.qkv(hcat), axis=2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = jnp.concatenate([apply_rope(q[:, :n], rope), q[:, n:]], axis=1)
        k = jnp.concatenate([apply_rope(k[:, :n], rope), k[:, n:]], axis=1)
        names = (BATCH, LENGTH, HEADS, KV)
        o = constrain(attention(constrain(q, names), constrain(k, names), constrain(v, names), kv_mask, self.impl),
                      names)
        m = constrain(jax.nn.gelu(self.mlp_in(hcat), approximate=True), (BATCH, LENGTH, MLP_ACT))
        out = self.attn_out(o) + self.mlp_out(m)
        x = x + frame_gate(out[:, :n], xg)
        c = c + cg * out[:, n:]
        return constrain(x, (BATCH, LENGTH, EMBED)), constrain(c, (BATCH, None, EMBED))


def remat_policy(name: str) -> Callable[..., bool] | None:
    """Named checkpoint policies: `full` saves nothing, `save_dots` keeps matmul outputs without batch
    dims, `offload` moves those to host memory (TPU/GPU)."""
    policies = jax.checkpoint_policies
    return {
        "full": policies.nothing_saveable,
        "save_dots": policies.dots_with_no_batch_dims_saveable,
        "offload": policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
    }[name]


def _stack(cls: type, n: int, cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """`n` blocks with parameters stacked on a leading `layers` axis (one init traced once)."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(r: nnx.Rngs) -> nnx.Module:
        return cls(cfg, rngs=r)

    return make(rngs)


def run_stack(stack: nnx.Module, cfg: ModelConfig, x: jax.Array, c: jax.Array, *args: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """Runs stacked blocks with `nnx.scan` (unrolled when `cfg.scan_layers` is False), under `nnx.remat`."""

    def body(carry: tuple[jax.Array, jax.Array], block: nnx.Module, *rest: jax.Array):
        return block(*carry, *rest)

    if cfg.remat != "none":
        body = nnx.remat(body, policy=remat_policy(cfg.remat), prevent_cse=False)
    scan = nnx.scan(body, in_axes=(nnx.Carry, 0) + (None,) * len(args), out_axes=nnx.Carry,
                    unroll=1 if cfg.scan_layers else True)
    return scan((x, c), stack, *args)


# ------------------------------------------------------------------------------------------------- model


class PatchEmbed3D(nnx.Module):
    """3D convolution with kernel = stride = patch: `[B, F, H, W, C] -> [B, N, D]` (frame-major). Written
    as the equivalent reshape + matmul, which XLA:CPU runs faster than a strided conv."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, zero_init: bool = False):
        pt, ph, pw = cfg.patch_size
        c, d = cfg.latent_channels, cfg.hidden_size
        self.proj = Linear((pt, ph, pw, c), (d,), (None, None, None, "patch", "embed"), rngs=rngs, cfg=cfg,
                           zero_init=zero_init)
        self.patch = cfg.patch_size

    def __call__(self, x: jax.Array) -> jax.Array:
        b, f, h, w, c = x.shape
        pt, ph, pw = self.patch
        x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
        x = x.reshape(b, -1, pt, ph, pw, c)
        return self.proj(x)


class MMDiT(nnx.Module):
    """Velocity-predicting MMDiT over frame-concatenated latents; see the module docstring."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        kw: dict[str, Any] = {"rngs": rngs, "cfg": cfg}
        pt, ph, pw = cfg.patch_size
        self.cfg = cfg
        self.patch_embed = PatchEmbed3D(cfg, rngs=rngs)
        # model.grid_inject: grid frame i's patches, projected, added to video frame i's tokens (zero at init)
        self.grid_embed = PatchEmbed3D(cfg, rngs=rngs, zero_init=True) if cfg.grid_inject else None
        # model.grid_reader: the grid's homographies, and the warped reference's patches on the video tokens
        s = cfg.reader_unshuffle
        self.grid_reader = (GridReader(cfg.latent_channels // (s * s), cfg.reader_channels, cfg.reader_hidden,
                                       rngs=rngs, param_dtype=_dtype(cfg.param_dtype), shot_gate=cfg.reader_shot_gate,
                                       far_plane=cfg.reader_depth)
                            if cfg.grid_reader else None)
        # model.reader_depth: the reference's relative depth, so translations warp with parallax
        self.depth_net = (DepthNet(cfg.latent_channels // (s * s), cfg.depth_channels, rngs=rngs,
                                   param_dtype=_dtype(cfg.param_dtype)) if cfg.reader_depth else None)
        self.base_embed = PatchEmbed3D(cfg, rngs=rngs, zero_init=True) if cfg.grid_reader else None
        self.text_in = Linear((cfg.text_dim,), (d,), ("text_embed", "embed"), **kw)
        self.pooled_in1 = Linear((cfg.text_dim,), (d,), ("text_embed", "embed"), **kw)
        self.pooled_in2 = Linear((d,), (d,), ("embed", "mlp"), **kw)
        self.t_in1 = Linear((cfg.freq_dim,), (d,), ("freq", "embed"), **kw)
        self.t_in2 = Linear((d,), (d,), ("embed", "mlp"), **kw)
        self.blocks = _stack(DualStreamBlock, cfg.depth, cfg, rngs)
        self.single_blocks = _stack(SingleStreamBlock, cfg.single_depth, cfg, rngs) if cfg.single_depth else None
        self.final_mod = Linear((d,), (2, d), ("embed", None, "modulation"), zero_init=True, **kw)
        self.final_out = Linear((d,), (pt, ph, pw, cfg.latent_channels), ("embed", None, None, None, "patch"),
                                zero_init=True, **kw)

    def embed_timesteps(self, t: jax.Array) -> jax.Array:
        """`t [...] in [0, 1] -> [..., D]`."""
        return self.t_in2(jax.nn.silu(self.t_in1(timestep_features(t, self.cfg.freq_dim))))

    def __call__(self, latents: jax.Array, frame_t: jax.Array, text: jax.Array, text_mask: jax.Array) -> jax.Array:
        """latents [B, F, H, W, C] (`[ref | grid | noisy video]` along F), frame_t [B, F] (0 on conditions),
        text [B, L, Dt], text_mask [B, L] bool (right-padded) -> velocity [B, F, H, W, C] (float32)."""
        return self.forward(latents, frame_t, text, text_mask)[0]

    def forward(self, latents: jax.Array, frame_t: jax.Array, text: jax.Array, text_mask: jax.Array
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """As :meth:`__call__`, with what the grid reader found (empty without one): `corners [B, V, 4, 2]`
        (where each video frame's corners lie in the reference) and `base [B, V, H, W, C]` (the reference
        latents warped to each video frame, float32)."""
        cfg = self.cfg
        b, f, h, w, ch = latents.shape
        pt, ph, pw = cfg.patch_size
        grid = (f // pt, h // ph, w // pw)
        dtype = _dtype(cfg.dtype)

        x = self.patch_embed(latents.astype(dtype))
        if self.grid_embed is not None:
            x = x + self._grid_tokens(latents.astype(dtype))
        aux: dict[str, jax.Array] = {}
        if self.grid_reader is not None:
            aux = self.read_grid(latents)
            base_tokens = self.base_embed(aux["base"].astype(dtype))
            x = x.at[:, x.shape[1] - base_tokens.shape[1]:].add(base_tokens)
        x = constrain(x, (BATCH, LENGTH, EMBED))
        c = constrain(self.text_in(text.astype(dtype)), (BATCH, None, EMBED))
        maskf = text_mask.astype(jnp.float32)
        pooled = jnp.sum(text.astype(jnp.float32) * maskf[..., None], 1) / jnp.maximum(maskf.sum(1, keepdims=True), 1)
        pooled = self.pooled_in2(jax.nn.silu(self.pooled_in1(pooled.astype(dtype))))
        # One timestep per patchified frame; text follows the target (largest) timestep.
        t_frames = frame_t.reshape(b, grid[0], pt).max(-1)
        x_cond = self.embed_timesteps(t_frames) + pooled[:, None]  # [B, F', D]
        c_cond = self.embed_timesteps(frame_t.max(-1)) + pooled  # [B, D]
        rope = rope_angles(grid, cfg.head_dim, cfg.rope_theta)
        kv_mask = jnp.concatenate([jnp.ones((b, x.shape[1]), bool), text_mask.astype(bool)], axis=1)

        x, c = run_stack(self.blocks, cfg, x, c, x_cond, c_cond, rope, kv_mask)
        if self.single_blocks is not None:
            x, c = run_stack(self.single_blocks, cfg, x, c, x_cond, c_cond, rope, kv_mask)

        shift, scale = _mod(self.final_mod, x_cond)
        out = self.final_out(frame_modulate(layer_norm(x, cfg.norm_eps), shift, scale))  # [B, N, pt, ph, pw, C]
        out = out.reshape(b, *grid, pt, ph, pw, ch).transpose(0, 1, 4, 2, 5, 3, 6, 7)
        return out.reshape(b, f, h, w, ch).astype(jnp.float32), aux

    def read_grid(self, latents: jax.Array) -> dict[str, jax.Array]:
        """`[ref r | grid v | video v]` latents -> corners [B, v, 4, 2] read from grid frames (0, i), and the
        reference (frame 0) warped by them, base [B, v, H, W, C] float32; with `reader_depth` also `far_corners`
        [B, v, 4, 2] (the plane at infinity) and `depth_scale` [B, H, W] (the reference's relative inverse
        depth), and the warp has parallax."""
        r = self.cfg.segment_ref_frames
        v = (latents.shape[1] - r) // 2
        s = self.cfg.reader_unshuffle
        grid = unshuffle(latents[:, r:r + v].astype(jnp.float32), s)
        corners, cut_logits, far = self.grid_reader.read(grid[:, 0], grid)
        reference = latents[:, 0].astype(jnp.float32)
        out = {"corners": corners}
        if self.depth_net is not None:
            out["far_corners"] = far
            out["depth_scale"] = self.depth_net(unshuffle(reference, s))
        base = warp_reference(reference, corners, s, far, out.get("depth_scale"))
        if cut_logits is None:
            return {**out, "base": base}
        # After a cut the reference shows another shot: the skip then starts from nothing (zero latents).
        gate = same_shot(cut_logits)
        return {**out, "base": base * gate[:, :, None, None, None], "cut_logits": cut_logits}

    def _grid_tokens(self, latents: jax.Array) -> jax.Array:
        """`[ref r | grid v | video v]` latents [B, F, H, W, C] -> [B, N, D]: the grid frames' patches through
        `grid_embed`, placed on the tokens of the video frames they describe (zeros on the other tokens).

        The frame-concatenated layout leaves a video token to find its grid frame by attention across an
        offset of v frames; this gives it the grid of its own frame and place directly. `grid_inject_ref` puts
        grid frame 0's patches on the reference tokens as well (the reference's own camera)."""
        b, f, h, w, _ = latents.shape
        r, pt = self.cfg.segment_ref_frames, self.cfg.patch_size[0]
        v = (f - r) // 2
        if f != r + 2 * v or r % pt or v % pt:
            raise OmniDirectorError(f"model.grid_inject: {f} latent frames are not [ref {r} | grid | video] with "
                                    f"equal grid and video frames divisible by the temporal patch {pt}")
        g = self.grid_embed(latents[:, r:r + v])  # [B, v/pt · h' · w', D]
        per_frame = (h // self.cfg.patch_size[1]) * (w // self.cfg.patch_size[2])
        zeros = jnp.zeros((b, (r + v) // pt * per_frame, g.shape[-1]), g.dtype)  # ref + grid tokens
        if self.cfg.grid_inject_ref:  # the reference is seen from grid frame 0's camera (r == pt)
            zeros = zeros.at[:, :per_frame].set(g[:, :per_frame])
        return jnp.concatenate([zeros, g], axis=1)


# --------------------------------------------------------------------------------------- conditioning


def assemble_inputs(ref: jax.Array, grid: jax.Array | None, noisy: jax.Array, t: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Concatenates `[ref | grid | noisy]` along frames.

    ref [B, Fr, H, W, C], grid [B, Fg, H, W, C] or None, noisy [B, Fv, H, W, C], t [B] ->
    latents [B, F, H, W, C], frame_t [B, F] (0 on condition frames, t on target frames),
    target_mask [B, F] bool (True on the target frames, where the loss is taken)."""
    parts = [ref] + ([grid] if grid is not None else []) + [noisy]
    latents = jnp.concatenate(parts, axis=1)
    n_cond = latents.shape[1] - noisy.shape[1]
    b = latents.shape[0]
    target = jnp.concatenate([jnp.zeros((b, n_cond), bool), jnp.ones((b, noisy.shape[1]), bool)], axis=1)
    frame_t = jnp.where(target, t[:, None].astype(jnp.float32), 0.0)
    return latents, frame_t, target


def flow_loss(model: MMDiT, batch: dict[str, jax.Array]) -> jax.Array:
    """Rectified-flow loss on the target frames: `x_t = (1 - t) x0 + t eps`, target `eps - x0`.

    batch: ref [B, Fr, H, W, C], grid [B, Fg, H, W, C], video [B, Fv, H, W, C] (clean latents),
    noise like video, t [B], text [B, L, Dt], text_mask [B, L]."""
    x0, eps, t = batch["video"], batch["noise"], batch["t"]
    tb = t[:, None, None, None, None]
    noisy = (1 - tb) * x0 + tb * eps
    latents, frame_t, target = assemble_inputs(batch["ref"], batch.get("grid"), noisy, t)
    pred = model(latents, frame_t, batch["text"], batch["text_mask"])
    n_cond = latents.shape[1] - x0.shape[1]
    err = jnp.square(pred - jnp.concatenate([jnp.zeros_like(latents[:, :n_cond]), eps - x0], axis=1))
    w = target[:, :, None, None, None].astype(jnp.float32)
    return jnp.sum(err * w) / (jnp.sum(w) * math.prod(err.shape[2:]))


def dummy_batch(model_cfg: ModelConfig, shape: ShapeConfig, seed: int = 0, batch: int | None = None
                ) -> dict[str, np.ndarray]:
    """Random host inputs with the config's shapes (benchmarks and tests; NumPy, so nothing compiles);
    the second half of the text is padding."""
    b = shape.batch_size if batch is None else batch
    lh, lw = shape.latent_hw
    c, fv = model_cfg.latent_channels, shape.latent_frames
    rng = np.random.default_rng(seed)
    lat = lambda f: rng.standard_normal((b, f, lh, lw, c), np.float32)  # noqa: E731
    out = {
        "ref": lat(shape.ref_frames),
        "video": lat(fv),
        "noise": lat(fv),
        "t": rng.uniform(size=(b,)).astype(np.float32),
        "text": rng.standard_normal((b, model_cfg.text_len, model_cfg.text_dim), np.float32),
        "text_mask": np.arange(model_cfg.text_len)[None].repeat(b, 0) < max(1, model_cfg.text_len // 2),
    }
    if shape.grid:
        out["grid"] = lat(fv)
    return out


def create_model(cfg: ModelConfig, seed: int = 0) -> MMDiT:
    """An MMDiT with unsharded parameters (eager sharding off: the parallel package places them)."""
    with nnx.use_eager_sharding(False):
        return MMDiT(cfg, rngs=nnx.Rngs(seed))


def abstract_model(cfg: ModelConfig) -> tuple[Any, Any]:
    """`(graphdef, state)` with `jax.ShapeDtypeStruct` leaves: shapes and logical names, no compute."""
    return nnx.split(nnx.eval_shape(lambda: create_model(cfg)))


def random_state(abstract_state: Any, scale: float = 0.05, seed: int = 0) -> Any:
    """Host (NumPy) parameters of the abstract state's shapes, all non-zero (tests: AdaLN-Zero and the zero
    head would otherwise hide most of the network)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (scale * rng.standard_normal(a.shape)).astype(a.dtype), abstract_state)
