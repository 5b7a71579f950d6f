"""T5 / UMT5 text encoder in Flax NNX, Hugging Face checkpoint import, and `encode_text`.

The encoder is the T5 stack: token embedding, then per layer a pre-norm self-attention and a
pre-norm feed-forward, both residual, then a final norm. T5 specifics:

- RMS norms with a scale and no bias or mean subtraction;
- attention logits are not divided by sqrt(d_kv); position enters only as a learned per-head bias
  indexed by a bucketed relative distance (exact for short distances, logarithmic up to
  `max_distance`, saturating after). UMT5 has a bias table in every layer; T5 and mT5 compute the
  bias once, in layer 0, and reuse it in all layers;
- feed-forward `wo(act(wi x))` in the original T5 (ReLU) or gated, `wo(act(wi_0 x) * wi_1 x)`, in
  T5 v1.1 / mT5 / UMT5 (tanh-approximated GELU).

Parameters carry logical axis names (`vocab`, `embed`, `heads`, `mlp`) for the mesh rules.
`transformers` is used for tokenizers (and, in tests, as the reference), never for the model.

Without any files, `encode_text` uses a byte-level tokenizer and a small randomly initialised
encoder (seed 0), so the pipeline runs end to end on a bare machine.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnidirector_jax.errors import ConfigError
from omnidirector_jax.models.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer
from omnidirector_jax.models.vae_weights import (
    CheckpointError,
    StateDict,
    assign_params,
    read_checkpoint_folder,
)

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """Sizes of a T5-family encoder. Defaults: the small random byte-level default encoder."""

    vocab_size: int = ByteTokenizer.vocab_size
    d_model: int = 128
    d_kv: int = 32
    d_ff: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    feed_forward_proj: str = "gated-gelu"  # "relu" (T5), "gated-gelu" (T5 v1.1, mT5, UMT5), "gated-silu"...
    per_layer_bias: bool = True  # UMT5: every layer has its own relative-position bias
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.activation_name not in _ACTIVATIONS:
            raise ConfigError(
                f"text encoder feed_forward_proj {self.feed_forward_proj!r}: activation "
                f"{self.activation_name!r} is not one of {sorted(_ACTIVATIONS)}"
            )
        if self.num_buckets < 4 or self.num_buckets % 2:
            raise ConfigError(f"text encoder num_buckets must be even and >= 4, got {self.num_buckets}")

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation_name(self) -> str:
        # transformers maps "gated-gelu" to the tanh approximation (gelu_new), as the originals used.
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    def replace(self, **changes: Any) -> TextEncoderConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> TextEncoderConfig:
        """Reads a Hugging Face `config.json` of a T5, mT5 or UMT5 model."""
        kind = cfg.get("model_type")
        if kind not in ("t5", "mt5", "umt5"):
            raise ConfigError(f"text encoder config has model_type {kind!r}; expected t5, mt5 or umt5")
        try:
            return cls(
                vocab_size=int(cfg["vocab_size"]),
                d_model=int(cfg["d_model"]),
                d_kv=int(cfg["d_kv"]),
                d_ff=int(cfg["d_ff"]),
                num_layers=int(cfg["num_layers"]),
                num_heads=int(cfg["num_heads"]),
                num_buckets=int(cfg.get("relative_attention_num_buckets", 32)),
                max_distance=int(cfg.get("relative_attention_max_distance", 128)),
                eps=float(cfg.get("layer_norm_epsilon", 1e-6)),
                feed_forward_proj=str(cfg.get("feed_forward_proj", "gated-gelu" if kind != "t5" else "relu")),
                per_layer_bias=kind == "umt5",
            )
        except KeyError as e:
            raise ConfigError(f"text encoder config.json lacks {e.args[0]!r}") from e


def relative_position_bucket(relative: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 bucket of each relative position `key - query` (static, NumPy).

    Half the buckets for each sign; of those, the first half are exact distances, the rest grow
    logarithmically up to `max_distance` and saturate. The log is taken in float32, as in the
    reference, because the truncation to an integer bucket is sensitive to its rounding.
    """
    half = num_buckets // 2
    bucket = np.where(relative > 0, half, 0)
    n = np.abs(relative)
    exact = half // 2
    ratio = np.log(np.maximum(n, 1).astype(np.float32) / np.float32(exact)) / np.float32(math.log(max_distance / exact))
    large = exact + (ratio * np.float32(half - exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (bucket + np.where(n < exact, n, large)).astype(np.int32)


def _normal(std: float) -> Callable:
    return nnx.initializers.normal(stddev=std)


def _meta(*names: str | None) -> dict[str, Any]:
    # Logical names only: they are mapped to the mesh by the sharding rules, not placed here.
    return {"out_sharding": names, "eager_sharding": False}


class T5Norm(nnx.Module):
    """x * rsqrt(mean(x^2) + eps) * scale (statistics in float32)."""

    def __init__(self, dim: int, eps: float, *, param_dtype: Any) -> None:
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), **_meta("embed"))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        var = jnp.mean(xf * xf, axis=-1, keepdims=True)
        return (xf * jax.lax.rsqrt(var + self.eps)).astype(x.dtype) * self.scale[...].astype(x.dtype)


class T5Attention(nnx.Module):
    """Multi-head self-attention with an additive relative-position bias and no logit scaling."""

    def __init__(self, cfg: TextEncoderConfig, has_bias: bool, *, rngs: nnx.Rngs) -> None:
        inner = cfg.num_heads * cfg.d_kv
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def linear(cin: int, cout: int, std: float, names: tuple[str, str]) -> nnx.Linear:
            return nnx.Linear(
                cin, cout, use_bias=False, dtype=dt, param_dtype=pdt, kernel_init=_normal(std),
                kernel_metadata=_meta(*names), rngs=rngs,
            )  # fmt: skip

        # T5's initialisation: the query also absorbs the missing 1/sqrt(d_kv).
        self.q = linear(cfg.d_model, inner, (cfg.d_model * cfg.d_kv) ** -0.5, ("embed", "heads"))
        self.k = linear(cfg.d_model, inner, cfg.d_model**-0.5, ("embed", "heads"))
        self.v = linear(cfg.d_model, inner, cfg.d_model**-0.5, ("embed", "heads"))
        self.o = linear(inner, cfg.d_model, inner**-0.5, ("heads", "embed"))
        self.rel_bias = (
            nnx.Embed(
                cfg.num_buckets,
                cfg.num_heads,
                dtype=dt,
                param_dtype=pdt,
                embedding_init=_normal(cfg.d_model**-0.5),
                embedding_metadata=_meta(None, "heads"),
                rngs=rngs,
            )
            if has_bias
            else None
        )
        self.num_heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance

    def position_bias(self, length: int) -> jax.Array:
        """`[1, heads, length, length]` bias from this layer's table."""
        pos = np.arange(length)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        values = self.rel_bias(jnp.asarray(buckets))  # [q, k, heads]
        return jnp.transpose(values, (2, 0, 1))[None]

    def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array) -> jax.Array:
        b, n, _ = x.shape
        q, k, v = (proj(x).reshape(b, n, self.num_heads, self.d_kv) for proj in (self.q, self.k, self.v))
        out = jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype), mask=mask[:, None, None, :], scale=1.0)
        return self.o(out.reshape(b, n, self.num_heads * self.d_kv))


class T5FeedForward(nnx.Module):
    """`wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`."""

    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs) -> None:
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def linear(cin: int, cout: int, names: tuple[str, str]) -> nnx.Linear:
            return nnx.Linear(
                cin, cout, use_bias=False, dtype=dt, param_dtype=pdt, kernel_init=_normal(cin**-0.5),
                kernel_metadata=_meta(*names), rngs=rngs,
            )  # fmt: skip

        if cfg.gated:
            self.wi_0 = linear(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
            self.wi_1 = linear(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
        else:
            self.wi = linear(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
        self.wo = linear(cfg.d_ff, cfg.d_model, ("mlp", "embed"))
        self.gated = cfg.gated
        self.activation = cfg.activation_name

    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        h = act(self.wi_0(x)) * self.wi_1(x) if self.gated else act(self.wi(x))
        return self.wo(h)


class T5Block(nnx.Module):
    def __init__(self, cfg: TextEncoderConfig, has_bias: bool, *, rngs: nnx.Rngs) -> None:
        pdt = jnp.dtype(cfg.param_dtype)
        self.attn_norm = T5Norm(cfg.d_model, cfg.eps, param_dtype=pdt)
        self.attn = T5Attention(cfg, has_bias, rngs=rngs)
        self.ffn_norm = T5Norm(cfg.d_model, cfg.eps, param_dtype=pdt)
        self.ffn = T5FeedForward(cfg, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array) -> jax.Array:
        x = x + self.attn(self.attn_norm(x), mask, bias)
        return x + self.ffn(self.ffn_norm(x))


class T5Encoder(nnx.Module):
    """Token ids `[B, L]` and mask `[B, L]` -> hidden states `[B, L, d_model]` (all positions)."""

    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size, cfg.d_model, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=_normal(1.0), embedding_metadata=_meta("vocab", "embed"), rngs=rngs,
        )  # fmt: skip
        self.blocks = nnx.List([T5Block(cfg, cfg.per_layer_bias or i == 0, rngs=rngs) for i in range(cfg.num_layers)])
        self.final_norm = T5Norm(cfg.d_model, cfg.eps, param_dtype=jnp.dtype(cfg.param_dtype))

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        mask = mask.astype(bool)
        x = self.embed_tokens(ids)
        length = ids.shape[1]
        shared = None if self.cfg.per_layer_bias else self.blocks[0].attn.position_bias(length)
        for block in self.blocks:
            bias = shared if shared is not None else block.attn.position_bias(length)
            x = block(x, mask, bias)
        return self.final_norm(x)


# ---------------------------------------------------------------------------------------------
# Checkpoint import
# ---------------------------------------------------------------------------------------------


def t5_key(path: tuple) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The Hugging Face key of a `T5Encoder` parameter path, and the layout conversion."""
    keep = lambda w: w  # noqa: E731
    names = [str(p) for p in path]
    if names[0] == "embed_tokens":
        return "shared.weight", keep
    if names[0] == "final_norm":
        return "encoder.final_layer_norm.weight", keep
    if names[0] != "blocks":
        raise CheckpointError(f"no Hugging Face key for parameter {'/'.join(names)}")
    i, part = names[1], names[2]
    block = f"encoder.block.{i}"
    if part == "attn_norm":
        return f"{block}.layer.0.layer_norm.weight", keep
    if part == "ffn_norm":
        return f"{block}.layer.1.layer_norm.weight", keep
    if part == "attn" and names[3] == "rel_bias":
        return f"{block}.layer.0.SelfAttention.relative_attention_bias.weight", keep
    transpose = lambda w: np.ascontiguousarray(w.T)  # noqa: E731  torch Linear stores (out, in)
    if part == "attn":
        return f"{block}.layer.0.SelfAttention.{names[3]}.weight", transpose
    if part == "ffn":
        return f"{block}.layer.1.DenseReluDense.{names[3]}.weight", transpose
    raise CheckpointError(f"no Hugging Face key for parameter {'/'.join(names)}")


def _not_encoder(key: str) -> bool:
    # A full encoder-decoder checkpoint also holds the decoder and the LM head; they are not ours.
    return key.startswith(("decoder.", "lm_head.")) or key == "encoder.embed_tokens.weight"


def load_t5_params(model: T5Encoder, state: StateDict, *, what: str = "text encoder state dict") -> None:
    """Copies a Hugging Face T5/mT5/UMT5 (encoder or full model) state dict into `model`, in place."""
    assign_params(
        model, state, t5_key, ignore=_not_encoder, aliases={"shared.weight": "encoder.embed_tokens.weight"}, what=what
    )


def load_t5_encoder(folder: str | os.PathLike, *, dtype: Any = None, param_dtype: Any = None) -> T5Encoder:
    """A `T5Encoder` from a local Hugging Face folder (`config.json` + safetensors or `.bin`)."""
    folder = os.fspath(folder)
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.exists(cfg_path):
        raise CheckpointError(f"{folder!r} has no config.json")
    with open(cfg_path) as f:
        cfg = TextEncoderConfig.from_hf_config(json.load(f))
    overrides = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v is not None}
    if overrides:
        cfg = cfg.replace(**{k: jnp.dtype(v).name for k, v in overrides.items()})
    model = nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0)))  # shapes only; weights follow
    load_t5_params(model, read_checkpoint_folder(folder), what=f"text encoder checkpoint {folder!r}")
    return model


# ---------------------------------------------------------------------------------------------
# Prompts -> embeddings
# ---------------------------------------------------------------------------------------------


def _encode(graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array, mask: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    hidden = model(ids, mask)
    return hidden * mask[..., None].astype(hidden.dtype)  # padded positions are exactly zero


class TextEncoder:
    """A tokenizer and a `T5Encoder` behind one jitted call: prompts -> (embeddings, mask).

    The model's state is a plain pytree argument of the jitted function (`graphdef` is static), so
    the state may be placed or sharded by the caller (`self.state`).
    """

    def __init__(self, model: T5Encoder, tokenizer: Tokenizer, max_length: int = 256) -> None:
        if tokenizer.vocab_size > model.cfg.vocab_size:
            raise ConfigError(f"tokenizer has {tokenizer.vocab_size} ids but the encoder embeds {model.cfg.vocab_size}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = model.cfg.d_model
        self.graphdef, self.state = nnx.split(model)
        self._encode = jax.jit(functools.partial(_encode, self.graphdef))

    @property
    def model(self) -> T5Encoder:
        return nnx.merge(self.graphdef, self.state)

    def __call__(self, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
        ids, mask = self.tokenizer(prompts, self.max_length)
        mask = jnp.asarray(mask)
        return self._encode(self.state, jnp.asarray(ids), mask), mask

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        tokenizer_folder: str | os.PathLike | None = None,
        *,
        max_length: int = 512,
        dtype: Any = None,
    ) -> TextEncoder:
        """Encoder weights from `folder`, tokenizer from `tokenizer_folder` (default: the same folder).

        Wan's diffusers checkpoints keep them apart (`text_encoder/`, `tokenizer/`) and use 512 tokens.
        """
        model = load_t5_encoder(folder, dtype=dtype)
        return cls(model, load_tokenizer(tokenizer_folder or folder), max_length=max_length)

    @classmethod
    def default(cls, seed: int = 0, max_length: int = 256, **config: Any) -> TextEncoder:
        """Byte tokenizer and a small random UMT5-style encoder: needs no files.

        `config` overrides `TextEncoderConfig` fields, e.g. `d_model` to match the MMDiT's `text_dim`.
        """
        model = T5Encoder(TextEncoderConfig(**config), rngs=nnx.Rngs(seed))
        return cls(model, ByteTokenizer(), max_length=max_length)


@functools.cache
def default_text_encoder() -> TextEncoder:
    """The process-wide `TextEncoder.default()` (built once)."""
    return TextEncoder.default()


def encode_text(prompts: Sequence[str], encoder: TextEncoder | None = None) -> tuple[jax.Array, jax.Array]:
    """Embeds prompts.

    Args:
      prompts: B strings.
      encoder: a `TextEncoder`; the built-in byte-level default when omitted.

    Returns:
      (embeddings `[B, L, D]` with zeros at padding, mask `[B, L]` bool), `L = encoder.max_length`.
    """
    return (encoder or default_text_encoder())(prompts)
