"""Attention back ends chosen by name (`model.attention`): `xla`, `cudnn`, `splash`.

All take `q, k, v: [B, S, H, D]` and a key mask `kv_mask: [B, S]` (True = attend) and return `[B, S, H, D]`.
The MMDiT orders its joint sequence `[visual | text]`, so text padding is a suffix of every row; the `cudnn`
path relies on that (it takes per-row valid lengths), the others accept any mask.

- `xla`: `jax.nn.dot_product_attention(implementation="xla")`; runs everywhere (CPU tests).
- `cudnn`: the cuDNN flash kernel on NVIDIA GPUs (bf16/fp16 inputs), padding via key/value lengths.
- `splash`: Pallas splash attention for TPU, one kernel per device under `shard_map`: batch sharded over
  `data`/`fsdp`, heads over `tensor`, queries over `context` (keys and values gathered along it).
  Padding uses segment ids (padded keys get segment 0, valid ones 1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from omnidirector_jax.parallel import rules as rules_lib

AttentionFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None], jax.Array]
_REGISTRY: dict[str, AttentionFn] = {}


def register(name: str) -> Callable[[AttentionFn], AttentionFn]:
    """Adds an attention implementation under `name`."""

    def wrap(fn: AttentionFn) -> AttentionFn:
        _REGISTRY[name] = fn
        return fn

    return wrap


def get_attention(name: str) -> AttentionFn:
    """The implementation registered under `name`."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown attention implementation '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_mask: jax.Array | None, impl: str = "xla") -> jax.Array:
    """Scaled dot-product attention `softmax(q k^T / sqrt(D)) v` over `[B, S, H, D]` with key mask `[B, S]`."""
    return get_attention(impl)(q, k, v, kv_mask)


@register("xla")
def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_mask: jax.Array | None) -> jax.Array:
    mask = None if kv_mask is None else kv_mask[:, None, None, :]  # [B, 1(heads), 1(queries), S]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


@register("cudnn")
def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_mask: jax.Array | None) -> jax.Array:
    lengths = None if kv_mask is None else jnp.sum(kv_mask, axis=-1, dtype=jnp.int32)  # suffix padding
    dtype = q.dtype
    if dtype == jnp.float32:  # cuDNN flash attention takes half precision only
        q, k, v = (a.astype(jnp.bfloat16) for a in (q, k, v))
    out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
    return out.astype(dtype)


def _splash_local(q: jax.Array, k: jax.Array, v: jax.Array, q_seg: jax.Array, kv_seg: jax.Array,
                  block: int, interpret: bool) -> jax.Array:
    """Per-device splash call: q [b, sq, h, d], k/v [b, skv, h, d], segment ids [b, sq] / [b, skv]."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    _, sq, h, d = q.shape
    skv = k.shape[1]
    mask = sm.MultiHeadMask([sm.FullMask((sq, skv)) for _ in range(h)])
    sizes = sk.BlockSizes(block_q=min(block, sq), block_kv=min(block, skv), block_kv_compute=min(block, skv),
                          block_q_dkv=min(block, sq), block_kv_dkv=min(block, skv),
                          block_kv_dkv_compute=min(block, skv), block_q_dq=min(block, sq),
                          block_kv_dq=min(block, skv))
    kernel = sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
    q = q * (1.0 / math.sqrt(d))  # the kernel does not scale the logits

    def one(qb, kb, vb, qs, ks):  # kernel layout is [heads, seq, dim]
        out = kernel(qb.swapaxes(0, 1), kb.swapaxes(0, 1), vb.swapaxes(0, 1),
                     segment_ids=sk.SegmentIds(q=qs, kv=ks))
        return out.swapaxes(0, 1)

    return jax.vmap(one)(q, k, v, q_seg, kv_seg)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_mask: jax.Array | None, *,
                     block: int = 512, interpret: bool = False) -> jax.Array:
    """Splash attention under `shard_map` on the mesh of the enclosing `activation_sharding` context
    (or a plain call without one). The sequence is padded to a multiple of the block (times `context`)."""
    b, s, h, d = q.shape
    active = rules_lib.active_mesh()
    ctx = 1 if active is None else active[0].shape["context"]
    block = min(block, 128 * max(1, -(-s // (128 * ctx))))
    pad = (-s) % (block * ctx)
    seg = jnp.ones((b, s), jnp.int32) if kv_mask is None else kv_mask.astype(jnp.int32)
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = (jnp.pad(a, widths) for a in (q, k, v))
        seg = jnp.pad(seg, ((0, 0), (0, pad)))  # padded positions: segment 0, never attended by valid ones
    local = functools.partial(_splash_local, block=block, interpret=interpret)
    if active is None:
        out = local(q, k, v, seg, seg)
    else:
        mesh, rules = active
        sizes = dict(mesh.shape)
        bspec = rules_lib.logical_to_spec(["activation_batch"], rules, sizes, (b,))
        batch_axes = bspec[0] if len(bspec) else None
        heads = "tensor" if sizes["tensor"] > 1 and h % sizes["tensor"] == 0 else None
        seq = "context" if ctx > 1 else None
        q_spec = P(batch_axes, seq, heads, None)
        kv_spec = P(batch_axes, None, heads, None)  # keys/values gathered over the context axis
        out = jax.shard_map(local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, P(batch_axes, seq),
                                                        P(batch_axes, None)),
                            out_specs=q_spec, check_vma=False)(q, k, v, seg, seg)
    return out[:, :s]


register("splash")(splash_attention)
