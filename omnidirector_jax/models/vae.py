"""The Wan 2.1 video VAE in Flax NNX: causal 3D convolutions, 8x spatial and 4x temporal compression.

Layout is channels-last everywhere: videos are `[B, T, H, W, C]` with pixel values in [-1, 1],
latents `[B, T', H/8, W/8, z_dim]` with `T' = 1 + (T - 1) / 4`. The first frame is encoded alone
(so an image is a one-frame video), the following frames in chunks of 4; the decoder turns the first
latent frame into one frame and every later one into 4.

Causality in time comes from padding each temporal kernel with zeros *before* the sequence only.
Encoding chunk by chunk, every causal conv keeps the last two frames of its input (the feature cache)
and prepends them to the next chunk, so the chunked result equals the whole-sequence one while the
activations held at full resolution are those of one chunk. `chunked=True` (default) runs the chunks
under `lax.scan`, threading the caches through the carry; `chunked=False` runs the whole sequence at
once (more memory, more parallelism), with the first-frame special cases of the temporal resamplers
written out. Both agree with diffusers' `AutoencoderKLWan`, whose parameter names the modules mirror
so `vae_weights.load_wan_vae` can import its weights.

Parameters are small (about 127M at Wan's width) and are left unsharded (replicated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from omnidirector_jax.errors import ConfigError

# Per-channel statistics of Wan 2.1 latents (from the published VAE config): latents are
# normalised as (z - mean) / std before the diffusion model sees them.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Widths and layout of the VAE. Defaults are Wan 2.1's (`AutoencoderKLWan()` defaults).

    `dim_mult` has one entry per resolution level; every level but the last halves H and W, and
    `temporal_downsample[i]` says whether level i also halves time (the decoder mirrors it).
    """

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    in_channels: int = 3
    out_channels: int = 3
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    precision: str | None = None  # for convolutions: None/"default", "high", "highest"

    def __post_init__(self) -> None:
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(
                f"VAE temporal_downsample has {len(self.temporal_downsample)} entries; "
                f"dim_mult has {len(self.dim_mult)} levels, so it needs {len(self.dim_mult) - 1}"
            )
        for name in ("latents_mean", "latents_std"):
            if len(getattr(self, name)) != self.z_dim:
                raise ConfigError(f"VAE {name} has {len(getattr(self, name))} entries, z_dim is {self.z_dim}")

    @property
    def decoder_dim(self) -> int:
        return self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame after the first (4 for Wan)."""
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along H and W (8 for Wan)."""
        return 2 ** (len(self.dim_mult) - 1)

    def replace(self, **changes: Any) -> VAEConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **changes: Any) -> VAEConfig:
        """Wan's layout (8x, 4x, 16 latent channels) at width 8: runs on a CPU in seconds.

        Another `z_dim` without latent statistics gets mean 0 and std 1 (no normalisation).
        """
        z_dim = changes.get("z_dim", 16)
        if z_dim != 16:
            changes.setdefault("latents_mean", (0.0,) * z_dim)
            changes.setdefault("latents_std", (1.0,) * z_dim)
        return cls(base_dim=8, num_res_blocks=1).replace(**changes)

    @classmethod
    def from_diffusers_config(cls, cfg: dict[str, Any]) -> VAEConfig:
        """Reads a diffusers `AutoencoderKLWan` `config.json` (Wan 2.1 layout only)."""
        if cfg.get("is_residual", False) or cfg.get("patch_size") is not None:
            raise ConfigError("VAE config has the Wan 2.2 layout (is_residual/patch_size); only Wan 2.1's is supported")
        if cfg.get("attn_scales"):
            raise ConfigError("VAE attn_scales must be empty (Wan 2.1 has attention only in the mid blocks)")
        z_dim = int(cfg.get("z_dim", 16))
        default = cls()
        return cls(
            base_dim=int(cfg.get("base_dim", 96)),
            decoder_base_dim=cfg.get("decoder_base_dim"),
            z_dim=z_dim,
            dim_mult=tuple(cfg.get("dim_mult", default.dim_mult)),
            num_res_blocks=int(cfg.get("num_res_blocks", 2)),
            temporal_downsample=tuple(bool(b) for b in cfg.get("temperal_downsample", default.temporal_downsample)),
            in_channels=int(cfg.get("in_channels", 3)),
            out_channels=int(cfg.get("out_channels", 3)),
            latents_mean=tuple(cfg.get("latents_mean", default.latents_mean)),
            latents_std=tuple(cfg.get("latents_std", default.latents_std)),
        )


# ---------------------------------------------------------------------------------------------
# Feature cache
# ---------------------------------------------------------------------------------------------


class FeatureCache:
    """The causal-conv caches of one encoder/decoder pass over one chunk.

    Every cached layer takes its entry from the previous chunk's list (in call order) and puts the
    one for the next chunk. `entries=None` marks the first chunk: nothing precedes it, so takes
    return zeros, exactly what causal zero padding would give. The lists are pytrees of fixed
    shapes from the first chunk on, so they can be a `lax.scan` carry.
    """

    def __init__(self, entries: Sequence[jax.Array] | None = None) -> None:
        self.entries = entries
        self.new: list[jax.Array] = []

    @property
    def first(self) -> bool:
        return self.entries is None

    def take(self, zeros: Callable[[], jax.Array]) -> jax.Array:
        return zeros() if self.entries is None else self.entries[len(self.new)]

    def put(self, x: jax.Array) -> None:
        self.new.append(x)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def _dtype(name: str) -> jnp.dtype:
    return jnp.dtype(name)


class Conv(nnx.Module):
    """N-d convolution of channels-last input. Params: `kernel` (*window, in, out), `bias` (out,)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        window: tuple[int, ...],
        *,
        stride: tuple[int, ...] | None = None,
        padding: tuple[tuple[int, int], ...] | None = None,
        cfg: VAEConfig,
        rngs: nnx.Rngs,
    ) -> None:
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        pdt = _dtype(cfg.param_dtype)
        self.kernel = nnx.Param(init(rngs.params(), (*window, cin, cout), pdt))
        self.bias = nnx.Param(jnp.zeros((cout,), pdt))
        self.stride = tuple(stride or (1,) * len(window))
        self.padding = tuple(padding or ((w // 2, w // 2) for w in window))
        self.dtype = cfg.dtype
        self.precision = cfg.precision
        spatial = "DHW"[3 - len(window) :]
        self.dimension_numbers = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = _dtype(self.dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(dt),
            self.kernel[...].astype(dt),
            window_strides=self.stride,
            padding=self.padding,
            dimension_numbers=self.dimension_numbers,
            precision=self.precision,
        )
        return y + self.bias[...].astype(dt)


class CausalConv3d(Conv):
    """3D conv over `[B, T, H, W, C]`, padded in time on the past side only (`time_pad` frames).

    With a `FeatureCache`, the padding is the last `time_pad` input frames of the previous chunk
    (zeros on the first chunk), and this chunk's last frames are stored for the next one.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        window: tuple[int, int, int] = (3, 3, 3),
        *,
        stride: tuple[int, int, int] = (1, 1, 1),
        time_pad: int | None = None,
        cfg: VAEConfig,
        rngs: nnx.Rngs,
    ) -> None:
        kt, kh, kw = window
        pad = ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2))
        super().__init__(cin, cout, window, stride=stride, padding=pad, cfg=cfg, rngs=rngs)
        self.time_pad = kt - 1 if time_pad is None else time_pad

    def __call__(self, x: jax.Array, cache: FeatureCache | None = None) -> jax.Array:
        p = self.time_pad
        if p:
            if cache is None:
                x = jnp.pad(x, ((0, 0), (p, 0), (0, 0), (0, 0), (0, 0)))
            else:
                past = cache.take(lambda: jnp.zeros((x.shape[0], p, *x.shape[2:]), x.dtype))
                x = jnp.concatenate([past.astype(x.dtype), x], axis=1)
                cache.put(x[:, -p:])
        return super().__call__(x)


class RMSNorm(nnx.Module):
    """x / ||x||_2 * sqrt(C) * gamma over the channel axis (Wan's `WanRMS_norm`, computed in float32)."""

    def __init__(self, dim: int, *, cfg: VAEConfig) -> None:
        self.gamma = nnx.Param(jnp.ones((dim,), _dtype(cfg.param_dtype)))
        self.scale = float(dim) ** 0.5

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
        y = xf / jnp.maximum(norm, 1e-12) * self.scale * self.gamma[...].astype(jnp.float32)
        return y.astype(x.dtype)


def _frames(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """Applies a per-image function to every frame of `[B, T, H, W, C]`."""
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class ResidualBlock(nnx.Module):
    """norm -> SiLU -> causal conv, twice, plus a (1x1x1 conv) shortcut."""

    def __init__(self, cin: int, cout: int, *, cfg: VAEConfig, rngs: nnx.Rngs) -> None:
        self.norm1 = RMSNorm(cin, cfg=cfg)
        self.conv1 = CausalConv3d(cin, cout, cfg=cfg, rngs=rngs)
        self.norm2 = RMSNorm(cout, cfg=cfg)
        self.conv2 = CausalConv3d(cout, cout, cfg=cfg, rngs=rngs)
        self.conv_shortcut = CausalConv3d(cin, cout, (1, 1, 1), cfg=cfg, rngs=rngs) if cin != cout else None

    def __call__(self, x: jax.Array, cache: FeatureCache | None = None) -> jax.Array:
        h = x if self.conv_shortcut is None else self.conv_shortcut(x)
        x = self.conv1(jax.nn.silu(self.norm1(x)), cache)
        x = self.conv2(jax.nn.silu(self.norm2(x)), cache)
        return x + h


class AttentionBlock(nnx.Module):
    """Single-head self-attention over the H*W positions of each frame (no mixing across time)."""

    def __init__(self, dim: int, *, cfg: VAEConfig, rngs: nnx.Rngs) -> None:
        self.norm = RMSNorm(dim, cfg=cfg)
        self.to_qkv = Conv(dim, 3 * dim, (1, 1), cfg=cfg, rngs=rngs)
        self.proj = Conv(dim, dim, (1, 1), cfg=cfg, rngs=rngs)

    def _image(self, x: jax.Array) -> jax.Array:  # [N, H, W, C]
        n, h, w, c = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(n, h * w, 3, 1, c)  # channel order: q | k | v
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return self.proj(out.reshape(n, h, w, c))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + _frames(self._image, x)


class Resample(nnx.Module):
    """Spatial (and optionally temporal) 2x down- or up-sampling.

    `downsample2d/3d`: pad right/bottom by one, 3x3 conv with stride 2; `3d` then halves time with a
    stride-2 temporal conv over (previous frame, this pair), leaving the first frame as it is.
    `upsample2d/3d`: `3d` first doubles time with a causal temporal conv giving two frames per frame
    (again not for the first frame); then nearest 2x upsampling and a 3x3 conv to `cout` channels.
    """

    def __init__(self, dim: int, mode: str, *, cout: int | None = None, cfg: VAEConfig, rngs: nnx.Rngs) -> None:
        self.mode = mode
        if mode.startswith("up"):
            self.resample = Conv(dim, cout or dim // 2, (3, 3), cfg=cfg, rngs=rngs)
            self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), cfg=cfg, rngs=rngs) if mode == "upsample3d" else None
        elif mode.startswith("down"):
            self.resample = Conv(dim, dim, (3, 3), stride=(2, 2), padding=((0, 1), (0, 1)), cfg=cfg, rngs=rngs)
            self.time_conv = (
                CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), time_pad=0, cfg=cfg, rngs=rngs)
                if mode == "downsample3d"
                else None
            )
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    def _double_time(self, x: jax.Array, cache: FeatureCache | None) -> jax.Array:
        """[B, T, H, W, C] -> [B, 2T, H, W, C]: frame t becomes (first, second) half of the channels."""
        y = self.time_conv(x, cache)
        b, t, h, w, c2 = y.shape
        y = y.reshape(b, t, h, w, 2, c2 // 2).transpose(0, 1, 4, 2, 3, 5)
        return y.reshape(b, 2 * t, h, w, c2 // 2)

    def __call__(self, x: jax.Array, cache: FeatureCache | None = None) -> jax.Array:
        if self.mode == "upsample3d":
            if cache is None:  # whole sequence: frame 0 stays single, the rest are doubled
                if x.shape[1] > 1:
                    x = jnp.concatenate([x[:, :1], self._double_time(x[:, 1:], None)], axis=1)
            elif cache.first:  # the first frame is not doubled; the next chunk starts from zeros
                cache.put(jnp.zeros((x.shape[0], 2, *x.shape[2:]), x.dtype))
            else:
                x = self._double_time(x, cache)
        if self.mode.startswith("up"):
            x = _frames(lambda im: self.resample(jnp.repeat(jnp.repeat(im, 2, axis=1), 2, axis=2)), x)
        else:
            x = _frames(self.resample, x)
        if self.mode == "downsample3d":
            if cache is None:
                x = jnp.concatenate([x[:, :1], self.time_conv(x)], axis=1)
            elif cache.first:
                cache.put(x[:, -1:])
            else:
                past = cache.take(lambda: x[:, -1:])
                cache.put(x[:, -1:])
                x = self.time_conv(jnp.concatenate([past, x], axis=1))
        return x


class MidBlock(nnx.Module):
    """Residual block, attention, residual block, at the lowest resolution."""

    def __init__(self, dim: int, *, cfg: VAEConfig, rngs: nnx.Rngs) -> None:
        self.resnets = nnx.List([ResidualBlock(dim, dim, cfg=cfg, rngs=rngs) for _ in range(2)])
        self.attentions = nnx.List([AttentionBlock(dim, cfg=cfg, rngs=rngs)])

    def __call__(self, x: jax.Array, cache: FeatureCache | None = None) -> jax.Array:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)


class Encoder3d(nnx.Module):
    """Video `[B, T, H, W, in]` -> `[B, T', H/8, W/8, 2 * z_dim]` (mean and log-variance)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs) -> None:
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        self.conv_in = CausalConv3d(cfg.in_channels, dims[0], cfg=cfg, rngs=rngs)
        blocks: list[nnx.Module] = []
        last = len(cfg.dim_mult) - 1
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(cin, cout, cfg=cfg, rngs=rngs))
                cin = cout
            if i != last:
                mode = "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"
                blocks.append(Resample(cout, mode, cfg=cfg, rngs=rngs))
        # A flat list, as in diffusers, so that parameter names (down_blocks.<i>) line up.
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(dims[-1], cfg=cfg, rngs=rngs)
        self.norm_out = RMSNorm(dims[-1], cfg=cfg)
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array, cache: FeatureCache | None = None) -> jax.Array:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)


class UpBlock(nnx.Module):
    """`num_res_blocks + 1` residual blocks, then an optional 2x upsampler (which halves channels)."""

    def __init__(self, cin: int, cout: int, mode: str | None, *, cfg: VAEConfig, rngs: nnx.Rngs) -> None:
        blocks = []
        for _ in range(cfg.num_res_blocks + 1):
            blocks.append(ResidualBlock(cin, cout, cfg=cfg, rngs=rngs))
            cin = cout
        self.resnets = nnx.List(blocks)
        self.upsamplers = nnx.List([Resample(cout, mode, cfg=cfg, rngs=rngs)] if mode else [])

    def __call__(self, x: jax.Array, cache: FeatureCache | None = None) -> jax.Array:
        for block in self.resnets:
            x = block(x, cache)
        for up in self.upsamplers:
            x = up(x, cache)
        return x


class Decoder3d(nnx.Module):
    """Latents `[B, T', h, w, z_dim]` -> video `[B, 1 + 4 (T' - 1), 8h, 8w, out]` (not clamped)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs) -> None:
        mult = cfg.dim_mult
        dims = [cfg.decoder_dim * m for m in (mult[-1], *mult[::-1])]
        temporal_up = cfg.temporal_downsample[::-1]
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], cfg=cfg, rngs=rngs)
        self.mid_block = MidBlock(dims[0], cfg=cfg, rngs=rngs)
        blocks = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                cin //= 2  # the previous level's upsampler halved the channels
            mode = None
            if i != len(mult) - 1:
                mode = "upsample3d" if temporal_up[i] else "upsample2d"
            blocks.append(UpBlock(cin, cout, mode, cfg=cfg, rngs=rngs))
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1], cfg=cfg)
        self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array, cache: FeatureCache | None = None) -> jax.Array:
        x = self.conv_in(x, cache)
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)


# ---------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------


def _run_chunks(net: Callable[[jax.Array, FeatureCache], jax.Array], x: jax.Array, first: int, size: int) -> jax.Array:
    """Runs `net` on `x[:, :first]`, then on chunks of `size` frames under `lax.scan`.

    The feature caches travel in the scan carry; outputs are concatenated along time.
    """
    cache = FeatureCache()
    y0 = net(x[:, :first], cache)
    rest = x[:, first:]
    n = rest.shape[1] // size
    if n == 0:
        return y0
    chunks = jnp.moveaxis(rest.reshape(rest.shape[0], n, size, *rest.shape[2:]), 1, 0)

    def step(entries: list[jax.Array], chunk: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        c = FeatureCache(entries)
        y = net(chunk, c)
        return c.new, y

    _, ys = jax.lax.scan(step, cache.new, chunks)  # [n, B, t, h, w, c]
    ys = jnp.moveaxis(ys, 0, 1)
    ys = ys.reshape(ys.shape[0], n * ys.shape[2], *ys.shape[3:])
    return jnp.concatenate([y0, ys], axis=1)


class WanVAE(nnx.Module):
    """The Wan 2.1 causal video VAE (encoder, decoder and the 1x1x1 (post-)quant convs).

    Example:
      vae = WanVAE(VAEConfig.tiny(), rngs=nnx.Rngs(0))
      mean, logvar = vae.encode(video)          # video [B, 1 + 4k, H, W, 3] in [-1, 1]
      latents = vae.normalize(mean)             # what the diffusion model is trained on
      frames = vae.decode(vae.denormalize(latents))
    """

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.encoder = Encoder3d(cfg, rngs=rngs)
        self.quant_conv = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, (1, 1, 1), cfg=cfg, rngs=rngs)
        self.post_quant_conv = CausalConv3d(cfg.z_dim, cfg.z_dim, (1, 1, 1), cfg=cfg, rngs=rngs)
        self.decoder = Decoder3d(cfg, rngs=rngs)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """`(T', h, w, z_dim)` of a `frames x height x width` video (checks divisibility)."""
        t, s = self.cfg.temporal_factor, self.cfg.spatial_factor
        if frames < 1 or (frames - 1) % t:
            raise ValueError(f"the VAE needs 1 + {t}k frames, got {frames}")
        if height % s or width % s:
            raise ValueError(f"the VAE needs H and W divisible by {s}, got {height}x{width}")
        return 1 + (frames - 1) // t, height // s, width // s, self.cfg.z_dim

    def encode(self, video: jax.Array, *, chunked: bool = True) -> tuple[jax.Array, jax.Array]:
        """Posterior of a video.

        Args:
          video: `[B, 1 + 4k, H, W, in_channels]`, values in [-1, 1]; H, W multiples of 8.
          chunked: encode 1 + 4 + 4 ... frames at a time with the feature cache (less memory);
            False runs all frames at once. Same result.

        Returns:
          (mean, logvar), each `[B, 1 + k, H/8, W/8, z_dim]`; logvar clipped to [-30, 20].
        """
        self.latent_shape(*video.shape[1:4])
        x = video.astype(_dtype(self.cfg.dtype))
        if chunked:
            h = _run_chunks(self.encoder, x, 1, self.cfg.temporal_factor)
        else:
            h = self.encoder(x)
        h = self.quant_conv(h)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def sample(self, mean: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
        """A reparameterised posterior sample `mean + exp(logvar / 2) * eps`."""
        eps = jax.random.normal(key, mean.shape, jnp.float32).astype(mean.dtype)
        return mean + jnp.exp(0.5 * logvar) * eps

    def decode(self, z: jax.Array, *, chunked: bool = True, clamp: bool = True) -> jax.Array:
        """Video from raw (un-normalised) latents.

        Args:
          z: `[B, T', h, w, z_dim]`.
          chunked: decode one latent frame at a time with the feature cache; False: all at once.
          clamp: clip to [-1, 1] (as diffusers does).

        Returns:
          `[B, 1 + 4 (T' - 1), 8h, 8w, out_channels]`.
        """
        x = self.post_quant_conv(z.astype(_dtype(self.cfg.dtype)))
        out = _run_chunks(self.decoder, x, 1, 1) if chunked else self.decoder(x)
        return jnp.clip(out, -1.0, 1.0) if clamp else out

    def normalize(self, z: jax.Array) -> jax.Array:
        """Raw latents -> per-channel standardised latents `(z - mean) / std`."""
        mean = jnp.asarray(self.cfg.latents_mean, z.dtype)
        std = jnp.asarray(self.cfg.latents_std, z.dtype)
        return (z - mean) / std

    def denormalize(self, latents: jax.Array) -> jax.Array:
        """Inverse of `normalize`."""
        mean = jnp.asarray(self.cfg.latents_mean, latents.dtype)
        std = jnp.asarray(self.cfg.latents_std, latents.dtype)
        return latents * std + mean

    def encode_latents(self, video: jax.Array, key: jax.Array | None = None, *, chunked: bool = True) -> jax.Array:
        """Normalised latents of a video: the posterior mean, or a sample when `key` is given."""
        mean, logvar = self.encode(video, chunked=chunked)
        return self.normalize(mean if key is None else self.sample(mean, logvar, key))

    def decode_latents(self, latents: jax.Array, *, chunked: bool = True) -> jax.Array:
        """Video in [-1, 1] from normalised latents."""
        return self.decode(self.denormalize(latents), chunked=chunked)
