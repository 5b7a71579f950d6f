"""Wan 2.1 text-to-video DiT (Wan Team 2025) in Flax NNX, with the MMDiT's call signature, and its weight loader.

A second backbone beside :mod:`omnidirector_jax.models.mmdit` (`model.backbone: wan`), meant to start from the
published Wan 2.1 T2V weights (1.3B, 14B; diffusers `WanTransformer3DModel` layout). It shares with the MMDiT the
(1,2,2) patch embedding, the 3D RoPE split and pairing, the six-way AdaLN order, the tanh-GELU MLP and the flow
convention (`t` in [0, 1], embedded as `1000 t`), and differs in:

- text: a Linear-GELU-Linear projection of the UMT5 states, read by a cross-attention in every block and never
  updated (Wan attends to all text positions, padding included: padded states are zeroed here, as the Wan
  pipeline does, so pass text padded to `text_len` with zeros or a mask);
- QK RMSNorm over all heads at once (`[H, Dh]` scale), an affine LayerNorm before the cross-attention;
- modulation: one `time_proj` shared by all blocks, plus a learned `[6, D]` table per block; the output head
  adds a `[2, D]` table to the timestep embedding.

Conditions are extra frames, `[reference image | camera grid | noisy video]` along F, through the unchanged
16-channel patch embedding with RoPE over all frames; every frame carries its own timestep (conditions at
`t = 0`), so modulation is per frame. The only new parameter is an optional zero-initialised per-segment
embedding (`model.segment_embed`), so at initialisation the model is exactly the pretrained function.

Shapes (B batch, F latent frames, H/W latent size, C channels, L text length, D width, N visual tokens
`= F/pt * H/ph * W/pw`, F' = F/pt, heads Hd of size Dh):

    latents [B, F, H, W, C] -> patch embed (+ segment embedding) -> x [B, N, D]
    text [B, L, Dt] -> Linear-GELU-Linear -> ctx [B, L, D]
    frame_t [B, F] -> sinusoid -> MLP -> temb [B, F', D] -> time_proj -> e [B, F', 6, D]
    blocks (scanned): x += g1 * SelfAttn(LN(x)(1+s1)+b1, RoPE);  x += CrossAttn(LN_affine(x), ctx);
                      x += g2 * MLP(LN(x)(1+s2)+b2)      with (b1, s1, g1, b2, s2, g2) = table + e
    head: LN(x)(1+s)+b, (b, s) = head_table + temb -> linear -> unpatchify -> velocity [B, F, H, W, C] (float32)

The loader (`load_wan_transformer`) reads a diffusers folder (`config.json`, `*.safetensors`, sharded index
files) without torch: per-block weights are stacked on the `layers` axis, q/k/v (self) and k/v (cross) fused,
linears transposed, the 3D convolution permuted to channels-last. Checkpoints with image conditioning (I2V,
FLF2V) or from Wan 2.2 are refused with a message saying what is supported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnidirector_jax.config import ModelConfig
from omnidirector_jax.models.attention import attention
from omnidirector_jax.models.mmdit import (
    BATCH,
    EMBED,
    HEADS,
    KV,
    LENGTH,
    MLP,
    Linear,
    PatchEmbed3D,
    apply_rope,
    frame_gate,
    frame_modulate,
    layer_norm,
    rope_angles,
    run_stack,
    timestep_features,
)
from omnidirector_jax.models.vae_weights import CheckpointError, read_checkpoint_folder, to_numpy_state_dict
from omnidirector_jax.parallel.rules import constrain

# Segment ids of the per-segment embedding (rows of its `[3, D]` table).
SEG_TARGET, SEG_REFERENCE, SEG_GRID = 0, 1, 2
NUM_SEGMENTS = 3


def ffn_dim(cfg: ModelConfig) -> int:
    """Hidden width of the Wan MLP: `model.ffn_dim`, or `mlp_ratio * hidden_size` when that is 0."""
    return cfg.ffn_dim or cfg.mlp_dim


def _param(init: Callable[..., jax.Array], shape: tuple[int, ...], names: tuple[str | None, ...], rngs: nnx.Rngs,
           cfg: ModelConfig) -> nnx.Param:
    return nnx.Param(nnx.with_partitioning(init, names)(rngs.params(), shape, jnp.dtype(cfg.param_dtype)))


# ------------------------------------------------------------------------------------------- primitives


class HeadsRMSNorm(nnx.Module):
    """RMS norm over all heads at once (`[..., Hd, Dh]`, statistics over `Hd * Dh`), scale `[Hd, Dh]`."""

    def __init__(self, heads: int, head_dim: int, *, rngs: nnx.Rngs, cfg: ModelConfig):
        self.scale = _param(nnx.initializers.ones, (heads, head_dim), ("heads", "kv"), rngs, cfg)
        self.eps = cfg.norm_eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        ms = jnp.mean(x32 * x32, axis=(-2, -1), keepdims=True)
        return (x32 * jax.lax.rsqrt(ms + self.eps) * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class AffineLayerNorm(nnx.Module):
    """LayerNorm with learned scale and bias `[D]`, statistics in float32 (Wan's `norm2`)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, cfg: ModelConfig):
        self.scale = _param(nnx.initializers.ones, (dim,), ("embed",), rngs, cfg)
        self.bias = _param(nnx.initializers.zeros, (dim,), ("embed",), rngs, cfg)
        self.eps = cfg.norm_eps

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x.astype(jnp.float32), self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array, eps: float, dtype: Any) -> jax.Array:
    """`LN(x) * (1 + scale) + shift` in float32 with per-frame `shift, scale [B, F', D]`; `x [B, N, D]`."""
    return frame_modulate(layer_norm(x.astype(jnp.float32), eps), shift, scale).astype(dtype)


# ------------------------------------------------------------------------------------------------ blocks


class SelfAttention(nnx.Module):
    """Fused q/k/v, QK RMSNorm across heads, 3D RoPE, attention over the visual tokens, output linear."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        kw: dict[str, Any] = {"rngs": rngs, "cfg": cfg}
        self.qkv = Linear((d,), (3, h, dh), ("embed", None, "heads", "kv"), **kw)
        self.q_norm, self.k_norm = HeadsRMSNorm(h, dh, **kw), HeadsRMSNorm(h, dh, **kw)
        self.out = Linear((h, dh), (d,), ("heads", "kv", "embed"), **kw)
        self.impl = cfg.attention

    def __call__(self, x: jax.Array, rope: jax.Array) -> jax.Array:
        """x [B, N, D], rope [N, Dh/2] -> [B, N, D]."""
        q, k, v = jnp.unstack(self.qkv(x), axis=2)
        names = (BATCH, LENGTH, HEADS, KV)
        q = constrain(apply_rope(self.q_norm(q), rope), names)
        k = constrain(apply_rope(self.k_norm(k), rope), names)
        o = constrain(attention(q, k, constrain(v, names), None, self.impl), names)
        return self.out(o)


class CrossAttention(nnx.Module):
    """Visual queries over the projected text (fused k/v), QK RMSNorm across heads, no RoPE, no mask."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        kw: dict[str, Any] = {"rngs": rngs, "cfg": cfg}
        self.q = Linear((d,), (h, dh), ("embed", "heads", "kv"), **kw)
        self.kv = Linear((d,), (2, h, dh), ("embed", None, "heads", "kv"), **kw)
        self.q_norm, self.k_norm = HeadsRMSNorm(h, dh, **kw), HeadsRMSNorm(h, dh, **kw)
        self.out = Linear((h, dh), (d,), ("heads", "kv", "embed"), **kw)
        # Splash pads queries and keys to one length: the short text side runs through XLA instead.
        self.impl = "xla" if cfg.attention == "splash" else cfg.attention

    def __call__(self, x: jax.Array, ctx: jax.Array) -> jax.Array:
        """x [B, N, D], ctx [B, L, D] -> [B, N, D]."""
        q = constrain(self.q_norm(self.q(x)), (BATCH, LENGTH, HEADS, KV))
        k, v = jnp.unstack(self.kv(ctx), axis=2)
        kv_names = (BATCH, None, HEADS, KV)
        k, v = constrain(self.k_norm(k), kv_names), constrain(v, kv_names)
        o = constrain(attention(q, k, v, None, self.impl), (BATCH, LENGTH, HEADS, KV))
        return self.out(o)


class WanBlock(nnx.Module):
    """One Wan 2.1 block: modulated self-attention, cross-attention to text, modulated MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.table = _param(nnx.initializers.normal(d ** -0.5), (6, d), (None, "modulation"), rngs, cfg)
        self.self_attn = SelfAttention(cfg, rngs=rngs)
        self.cross_norm = AffineLayerNorm(d, rngs=rngs, cfg=cfg) if cfg.cross_attn_norm else None
        self.cross_attn = CrossAttention(cfg, rngs=rngs)
        self.mlp = MLP(d, ffn_dim(cfg), rngs=rngs, cfg=cfg)
        self.eps, self.dtype = cfg.norm_eps, jnp.dtype(cfg.dtype)

    def __call__(self, x: jax.Array, ctx: jax.Array, e: jax.Array, rope: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, N, D], ctx [B, L, D], e [B, F', 6, D] (float32, per frame), rope [N, Dh/2] -> (x, ctx)."""
        mod = self.table[...].astype(jnp.float32) + e
        s1, c1, g1, s2, c2, g2 = (mod[:, :, i] for i in range(6))
        h = self.self_attn(_modulate(x, s1, c1, self.eps, self.dtype), rope)
        x = (x.astype(jnp.float32) + frame_gate(h.astype(jnp.float32), g1)).astype(self.dtype)
        hn = self.cross_norm(x) if self.cross_norm is not None else x
        x = x + self.cross_attn(hn, ctx).astype(self.dtype)
        h = self.mlp(_modulate(x, s2, c2, self.eps, self.dtype))
        x = (x.astype(jnp.float32) + frame_gate(h.astype(jnp.float32), g2)).astype(self.dtype)
        return constrain(x, (BATCH, LENGTH, EMBED)), ctx


def _stack_blocks(n: int, cfg: ModelConfig, rngs: nnx.Rngs) -> WanBlock:
    """`n` blocks with parameters stacked on a leading `layers` axis."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(r: nnx.Rngs) -> WanBlock:
        return WanBlock(cfg, rngs=r)

    return make(rngs)


# ------------------------------------------------------------------------------------------------- model


def default_segments(frame_t: jax.Array, ref_frames: int) -> jax.Array:
    """Segment ids `[B, F]` from the `[ref | grid | video]` layout: frames with `t > 0` are targets, clean frames
    among the first `ref_frames` the reference, the other clean frames the camera grid. (A target frame at
    exactly `t = 0` would read as a condition: pass `segment_ids` explicitly in that case.)"""
    idx = jnp.arange(frame_t.shape[1])[None]
    cond = jnp.where(idx < ref_frames, SEG_REFERENCE, SEG_GRID)
    return jnp.where(frame_t > 0, SEG_TARGET, cond).astype(jnp.int32)


class WanModel(nnx.Module):
    """Velocity-predicting Wan 2.1 DiT over frame-concatenated latents; see the module docstring."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        pt, ph, pw = cfg.patch_size
        kw: dict[str, Any] = {"rngs": rngs, "cfg": cfg}
        # Timestep path kept in float32 (as Wan does): it sets every modulation.
        kw32: dict[str, Any] = {"rngs": rngs, "cfg": dataclasses.replace(cfg, dtype="float32")}
        self.cfg = cfg
        self.patch_embed = PatchEmbed3D(cfg, rngs=rngs)
        self.text_in1 = Linear((cfg.text_dim,), (d,), ("text_embed", "embed"), **kw)
        self.text_in2 = Linear((d,), (d,), ("embed", "mlp"), **kw)
        self.t_in1 = Linear((cfg.freq_dim,), (d,), ("freq", "embed"), **kw32)
        self.t_in2 = Linear((d,), (d,), ("embed", "mlp"), **kw32)
        self.t_proj = Linear((d,), (6, d), ("embed", None, "modulation"), **kw32)
        self.blocks = _stack_blocks(cfg.depth, cfg, rngs)
        self.head_table = _param(nnx.initializers.normal(d ** -0.5), (2, d), (None, "modulation"), rngs, cfg)
        self.head = Linear((d,), (pt, ph, pw, cfg.latent_channels), ("embed", None, None, None, "patch"), **kw)
        self.segment_embed = (_param(nnx.initializers.zeros, (NUM_SEGMENTS, d), (None, "embed"), rngs, cfg)
                              if cfg.segment_embed else None)

    def __call__(self, latents: jax.Array, frame_t: jax.Array, text: jax.Array, text_mask: jax.Array,
                 segment_ids: jax.Array | None = None) -> jax.Array:
        """latents [B, F, H, W, C] (`[ref | grid | noisy video]` along F), frame_t [B, F] in [0, 1] (0 on
        conditions), text [B, L, Dt], text_mask [B, L] bool (False positions are zeroed, then attended as Wan
        does), segment_ids [B, F] int (default :func:`default_segments`) -> velocity [B, F, H, W, C] float32."""
        cfg = self.cfg
        b, f, h, w, ch = latents.shape
        pt, ph, pw = cfg.patch_size
        grid = (f // pt, h // ph, w // pw)
        dtype = jnp.dtype(cfg.dtype)

        x = self.patch_embed(latents.astype(dtype))  # [B, N, D]
        if self.segment_embed is not None:
            seg = default_segments(frame_t, cfg.segment_ref_frames) if segment_ids is None else segment_ids
            seg = seg.reshape(b, grid[0], pt)[:, :, 0]  # one segment per patchified frame
            emb = jnp.take(self.segment_embed[...], seg, axis=0).astype(dtype)  # [B, F', D]
            x = (x.reshape(b, grid[0], -1, x.shape[-1]) + emb[:, :, None]).reshape(x.shape)
        x = constrain(x, (BATCH, LENGTH, EMBED))
        text = jnp.where(text_mask[..., None], text, 0).astype(dtype)
        ctx = self.text_in2(jax.nn.gelu(self.text_in1(text), approximate=True))
        ctx = constrain(ctx, (BATCH, None, EMBED))

        t_frames = frame_t.reshape(b, grid[0], pt).max(-1)  # [B, F']
        temb = self.t_in2(jax.nn.silu(self.t_in1(timestep_features(t_frames, cfg.freq_dim))))  # [B, F', D] f32
        e = self.t_proj(jax.nn.silu(temb))  # [B, F', 6, D] f32
        rope = rope_angles(grid, cfg.head_dim, cfg.rope_theta)

        x, _ = run_stack(self.blocks, cfg, x, ctx, e, rope)

        mod = self.head_table[...].astype(jnp.float32) + temb[:, :, None]  # [B, F', 2, D]
        out = self.head(_modulate(x, mod[:, :, 0], mod[:, :, 1], cfg.norm_eps, dtype))  # [B, N, pt, ph, pw, C]
        out = out.reshape(b, *grid, pt, ph, pw, ch).transpose(0, 1, 4, 2, 5, 3, 6, 7)
        return out.reshape(b, f, h, w, ch).astype(jnp.float32)


def create_model(cfg: ModelConfig, seed: int = 0) -> WanModel:
    """A randomly initialised Wan model with unsharded parameters (the parallel package places them)."""
    with nnx.use_eager_sharding(False):
        return WanModel(cfg, rngs=nnx.Rngs(seed))


def abstract_model(cfg: ModelConfig) -> tuple[Any, Any]:
    """`(graphdef, state)` with `jax.ShapeDtypeStruct` leaves: shapes and logical names, no compute."""
    return nnx.split(nnx.eval_shape(lambda: create_model(cfg)))


# ------------------------------------------------------------------------------------------------ config


SUPPORTED = "Wan 2.1 text-to-video transformers (T2V-1.3B, T2V-14B; diffusers WanTransformer3DModel)"


def config_from_diffusers(d: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """A `ModelConfig` (backbone `wan`) from a diffusers `WanTransformer3DModel` `config.json` mapping.

    Raises:
      CheckpointError: image-conditioned (I2V/FLF2V) or Wan 2.2 configurations, which this backbone does not
        implement.
    """
    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"unsupported Wan transformer: {why}; supported: {SUPPORTED}")

    if d.get("image_dim") is not None or d.get("added_kv_proj_dim") is not None:
        raise refuse("image conditioning (image_dim/added_kv_proj_dim: an I2V or FLF2V model)")
    if d.get("pos_embed_seq_len") is not None:
        raise refuse("pos_embed_seq_len is set (a FLF2V model)")
    cin, cout = d.get("in_channels", 16), d.get("out_channels", 16) or d.get("in_channels", 16)
    if cin != 16 or cout != 16:
        raise refuse(f"in/out channels {cin}/{cout} (48: a Wan 2.2 TI2V model, 36: an I2V model; T2V has 16)")
    if d.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        raise refuse(f"qk_norm={d.get('qk_norm')!r} (Wan 2.1 uses 'rms_norm_across_heads')")
    heads, head_dim = int(d.get("num_attention_heads", 40)), int(d.get("attention_head_dim", 128))
    fields: dict[str, Any] = dict(
        backbone="wan", latent_channels=16, patch_size=tuple(int(p) for p in d.get("patch_size", (1, 2, 2))),
        hidden_size=heads * head_dim, num_heads=heads, depth=int(d.get("num_layers", 40)), single_depth=0,
        ffn_dim=int(d.get("ffn_dim", 13824)), text_dim=int(d.get("text_dim", 4096)), text_len=512,
        freq_dim=int(d.get("freq_dim", 256)), rope_theta=10000.0, qk_norm=True, norm_eps=float(d.get("eps", 1e-6)),
        cross_attn_norm=bool(d.get("cross_attn_norm", True)),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def to_diffusers_config(cfg: ModelConfig) -> dict[str, Any]:
    """The diffusers `WanTransformer3DModel` constructor arguments of a `wan` ModelConfig (tests, conversion)."""
    return dict(patch_size=tuple(cfg.patch_size), num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
                in_channels=cfg.latent_channels, out_channels=cfg.latent_channels, text_dim=cfg.text_dim,
                freq_dim=cfg.freq_dim, ffn_dim=ffn_dim(cfg), num_layers=cfg.depth,
                cross_attn_norm=cfg.cross_attn_norm, qk_norm="rms_norm_across_heads", eps=cfg.norm_eps)


# ------------------------------------------------------------------------------------------------ loader


# A converter takes the per-layer source arrays (in `keys` order) and `xp` (numpy, or jax.numpy for shapes only).
Converter = Callable[[list[Any], Any], Any]


def _lin_t(out_shape: tuple[int, ...]) -> Converter:
    """torch Linear weight `[out, in]` -> `[in, *out_shape]`."""
    return lambda a, xp: a[0].T.reshape(a[0].shape[1], *out_shape)


def _fused_t(heads: int, head_dim: int) -> Converter:
    """Several torch Linear weights `[H*Dh, D]` -> `[D, n, H, Dh]`."""
    return lambda a, xp: xp.stack([w.T.reshape(w.shape[1], heads, head_dim) for w in a], axis=1)


def _reshape(*shape: int) -> Converter:
    return lambda a, xp: a[0].reshape(*shape)


def _stack_reshape(*shape: int) -> Converter:
    return lambda a, xp: xp.stack([v.reshape(*shape) for v in a], axis=0)


def _source(path: tuple[str, ...], cfg: ModelConfig) -> tuple[list[str], Converter]:
    """The diffusers keys (block keys with `{i}` for the layer) and the converter of one NNX parameter path."""
    d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    pt, ph, pw = cfg.patch_size
    c = cfg.latent_channels
    p = "/".join(path)
    ident: Converter = lambda a, xp: a[0]  # noqa: E731
    linear = {
        "text_in1": "condition_embedder.text_embedder.linear_1",
        "text_in2": "condition_embedder.text_embedder.linear_2",
        "t_in1": "condition_embedder.time_embedder.linear_1",
        "t_in2": "condition_embedder.time_embedder.linear_2",
    }
    top: dict[str, tuple[list[str], Converter]] = {
        "patch_embed/proj/kernel": (["patch_embedding.weight"], lambda a, xp: a[0].transpose(2, 3, 4, 1, 0)),
        "patch_embed/proj/bias": (["patch_embedding.bias"], ident),
        "t_proj/kernel": (["condition_embedder.time_proj.weight"], _lin_t((6, d))),
        "t_proj/bias": (["condition_embedder.time_proj.bias"], _reshape(6, d)),
        "head_table": (["scale_shift_table"], _reshape(2, d)),
        "head/kernel": (["proj_out.weight"], _lin_t((pt, ph, pw, c))),
        "head/bias": (["proj_out.bias"], _reshape(pt, ph, pw, c)),
    }
    for name, key in linear.items():
        top[f"{name}/kernel"] = ([f"{key}.weight"], _lin_t((-1,)))
        top[f"{name}/bias"] = ([f"{key}.bias"], ident)
    if p in top:
        return top[p]
    if path[0] != "blocks":
        raise KeyError(p)
    b = "blocks.{i}."
    fused = _fused_t(h, dh)
    block: dict[str, tuple[list[str], Converter]] = {
        "table": ([b + "scale_shift_table"], _reshape(6, d)),
        "self_attn/qkv/kernel": ([b + f"attn1.to_{n}.weight" for n in "qkv"], fused),
        "self_attn/qkv/bias": ([b + f"attn1.to_{n}.bias" for n in "qkv"], _stack_reshape(h, dh)),
        "self_attn/q_norm/scale": ([b + "attn1.norm_q.weight"], _reshape(h, dh)),
        "self_attn/k_norm/scale": ([b + "attn1.norm_k.weight"], _reshape(h, dh)),
        "self_attn/out/kernel": ([b + "attn1.to_out.0.weight"], lambda a, xp: a[0].T.reshape(h, dh, -1)),
        "self_attn/out/bias": ([b + "attn1.to_out.0.bias"], ident),
        "cross_norm/scale": ([b + "norm2.weight"], ident),
        "cross_norm/bias": ([b + "norm2.bias"], ident),
        "cross_attn/q/kernel": ([b + "attn2.to_q.weight"], _lin_t((h, dh))),
        "cross_attn/q/bias": ([b + "attn2.to_q.bias"], _reshape(h, dh)),
        "cross_attn/kv/kernel": ([b + f"attn2.to_{n}.weight" for n in "kv"], fused),
        "cross_attn/kv/bias": ([b + f"attn2.to_{n}.bias" for n in "kv"], _stack_reshape(h, dh)),
        "cross_attn/q_norm/scale": ([b + "attn2.norm_q.weight"], _reshape(h, dh)),
        "cross_attn/k_norm/scale": ([b + "attn2.norm_k.weight"], _reshape(h, dh)),
        "cross_attn/out/kernel": ([b + "attn2.to_out.0.weight"], lambda a, xp: a[0].T.reshape(h, dh, -1)),
        "cross_attn/out/bias": ([b + "attn2.to_out.0.bias"], ident),
        "mlp/fc1/kernel": ([b + "ffn.net.0.proj.weight"], _lin_t((-1,))),
        "mlp/fc1/bias": ([b + "ffn.net.0.proj.bias"], ident),
        "mlp/fc2/kernel": ([b + "ffn.net.2.weight"], _lin_t((-1,))),
        "mlp/fc2/bias": ([b + "ffn.net.2.bias"], ident),
    }
    return block["/".join(path[1:])]


_IMAGE_KEYS = ("image_embedder", "add_k_proj", "add_v_proj", "norm_added_k")


def convert_state(state: Mapping[str, Any], cfg: ModelConfig, xp: Any = np, what: str = "Wan checkpoint"
                  ) -> dict[tuple[str, ...], Any]:
    """diffusers `WanTransformer3DModel` state dict -> flat `{NNX path: array}` for every parameter of
    `WanModel(cfg)` except the (new, zero-initialised) segment embedding.

    `xp` is `numpy` for real arrays, or `jax.numpy` under `jax.eval_shape` to check a layout from shapes only.

    Raises:
      CheckpointError: naming missing keys, unexpected keys (image-conditioning keys get their own message) and
        mis-shaped keys (checkpoint shape and the shape the model expects).
    """
    image = sorted(k for k in state if any(s in k for s in _IMAGE_KEYS))
    if image:
        more = ", ..." if len(image) > 4 else ""
        raise CheckpointError(f"{what} has image-conditioning keys ({', '.join(image[:4])}{more}): an I2V/FLF2V "
                              f"model; supported: {SUPPORTED}")
    _, abstract = abstract_model(cfg)
    used: set[str] = set()
    missing: list[str] = []
    bad: list[str] = []
    out: dict[tuple[str, ...], Any] = {}
    for path, var in nnx.to_flat_state(abstract):
        path = tuple(str(q) for q in path)
        if path == ("segment_embed",):
            continue
        keys, convert = _source(path, cfg)
        layers = range(cfg.depth) if path[0] == "blocks" else [None]
        per_layer = []
        for i in layers:
            names = [k.format(i=i) for k in keys]
            absent = [k for k in names if k not in state]
            if absent:
                missing.extend(absent)
                continue
            used.update(names)
            want = var.shape[1:] if i is not None else var.shape
            try:
                value = convert([state[k] for k in names], xp)
            except (ValueError, TypeError):
                value = None
            if value is None or tuple(value.shape) != tuple(want):
                got = ", ".join(f"{k} {tuple(state[k].shape)}" for k in names)
                bad.append(f"{got} -> model expects {tuple(want)} at {'/'.join(path)}")
                continue
            per_layer.append(value)
        if len(per_layer) == len(layers):
            out[path] = xp.stack(per_layer, axis=0) if path[0] == "blocks" else per_layer[0]
    unexpected = sorted(k for k in state if k not in used)
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(sorted(missing))}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if bad:
        problems.append(f"shape mismatches: {'; '.join(bad)}")
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + " | ".join(problems))
    return out


def _check_pipeline(folder: str) -> None:
    """Refuses a transformer folder that belongs to a Wan 2.2 pipeline (two experts, or the TI2V 5B)."""
    index = os.path.join(os.path.dirname(os.path.abspath(folder)), "model_index.json")
    if not os.path.exists(index):
        return
    with open(index) as f:
        info = json.load(f)
    two = info.get("transformer_2")
    if (isinstance(two, list) and any(two)) or info.get("boundary_ratio") is not None or info.get("expand_timesteps"):
        raise CheckpointError(f"{folder!r} belongs to a Wan 2.2 pipeline ({index}: transformer_2 / boundary_ratio /"
                              f" expand_timesteps); supported: {SUPPORTED}")


def load_wan_transformer(source: str | os.PathLike | Mapping[str, Any], cfg: ModelConfig | None = None, **overrides: Any
                         ) -> WanModel:
    """A `WanModel` holding the weights of a diffusers `WanTransformer3DModel`.

    Args:
      source: the `transformer/` folder of a Wan 2.1 diffusers checkpoint (`config.json` and `*.safetensors`,
        sharded through `*.safetensors.index.json` or not), or an in-memory state dict (then `cfg` is needed).
      cfg: the `ModelConfig` (read from `config.json` when omitted).
      overrides: ModelConfig fields replacing the folder's (e.g. `dtype="bfloat16"`, `segment_embed=True`,
        `scan_layers=False`, `attention="cudnn"`); the segment embedding, if on, starts at zero.

    Raises:
      CheckpointError: no files, unsupported variant (I2V, FLF2V, Wan 2.2), or keys that do not fit.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = os.fspath(source)
        if cfg is None:
            cfg_path = os.path.join(folder, "config.json")
            if not os.path.exists(cfg_path):
                raise CheckpointError(f"{folder!r} has no config.json; pass a ModelConfig")
            with open(cfg_path) as f:
                cfg = config_from_diffusers(json.load(f))
        _check_pipeline(folder)
        state = read_checkpoint_folder(folder, names=["diffusion_pytorch_model.safetensors"])
        what = f"Wan checkpoint {folder!r}"
    else:
        if cfg is None:
            raise CheckpointError("an in-memory Wan state dict needs an explicit ModelConfig")
        state, what = to_numpy_state_dict(source), "Wan state dict"
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    values = convert_state(state, cfg, np, what)
    graphdef, abstract = abstract_model(cfg)
    for path, var in nnx.to_flat_state(abstract):
        key = tuple(str(q) for q in path)
        value = values[key] if key in values else np.zeros(var.shape)  # only the new segment embedding
        var.set_value(jnp.asarray(value, dtype=var.dtype))
    return nnx.merge(graphdef, abstract)
