"""Model inputs made on device inside the train step: the camera grid and the encoders.

The data pipeline stores poses, never grid videos. Each step, for every sample: build the room from the clip's
own (clean) cameras with the jittable builder, jitter the cameras (the room stays put: jitter moves the cameras,
not the room), draw random line colours, rasterize. Then pixels become latents: the Wan VAE, or the pixel
encoder of the tiny configs (space-to-depth, exactly invertible, so a CPU model can be trained and its samples
looked at without a trained VAE). The text goes through a frozen T5/UMT5 encoder.

Frozen networks enter the jitted step as an argument (`frozen`, a pytree of arrays), never as closed-over
constants: closures would be baked into the compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnidirector_jax.camera import augment, raster
from omnidirector_jax.camera.scene import DEFAULT_COLORS, GridConfig, build_scene_jax
from omnidirector_jax.config import ConditionConfig, Config
from omnidirector_jax.errors import ConfigError

Batch = dict[str, jax.Array]


def raster_config(c: ConditionConfig) -> raster.RasterConfig:
    """The rasterizer settings of the conditions, with chunk sizes tuned for the backend the step runs on
    (`conditions.raster_backend`, default: JAX's default backend; the pictures do not depend on it)."""
    cfg = raster.RasterConfig(profile=c.raster_profile, method=c.raster_method, max_segments=c.max_segments,
                              pixel_budget=c.pixel_budget or None)
    return raster.tuned(cfg, c.raster_backend or jax.default_backend())


def render_grids(key: jax.Array, w2c: jax.Array, K: jax.Array, frame_shot: jax.Array, *, height: int, width: int,
                 c: ConditionConfig, jitter: bool = True, grid: GridConfig = GridConfig(),
                 with_spacing: bool = False) -> tuple[jax.Array, ...]:
    """Camera grids of a batch of clips, rendered on device.

    w2c [B, T, 3, 4], K [B, T, 3, 3] (pixels of H×W), frame_shot [B, T] int32 (−1 on cut frames) ->
    frames [B, T, H, W, 3] float32 in [0, 1] (cut frames white), overflow [B] int32 (segments or pixels that
    did not fit the static budgets; 0 when every frame is exact); `with_spacing`: also the room spacing of
    frame 0's shot [B] (world units).
    """
    rcfg = raster_config(c)
    do_jitter = jitter and (c.jitter_rotation_deg > 0 or c.jitter_translation > 0)

    def one(args):
        key, w2c, K, shot = args
        w2c = jnp.where(jnp.isfinite(w2c), w2c, jnp.eye(3, 4))  # a bad pose must not poison the batch
        room = build_scene_jax(w2c, shot, grid, lattice=c.lattice, max_segments=c.room_segments,
                               max_shots=c.max_shots)
        room_overflow = room.pop("overflow")
        at = jnp.clip(shot, 0, c.max_shots - 1)
        k_jitter, k_color = jax.random.split(key)
        if do_jitter:
            w2c = augment.jitter_poses(k_jitter, w2c, room["spacing"][at], rotation_deg=c.jitter_rotation_deg,
                                       translation=c.jitter_translation, knot_frames=c.jitter_knot_frames)
        colors = augment.random_colors(k_color) if c.random_colors else jnp.asarray(DEFAULT_COLORS)
        cameras = {"w2c": w2c, "K": K, "dist": jnp.zeros(shot.shape + (4,), jnp.float32), "shot": shot,
                   "spacing": room["spacing"][at], "view": room["view"][at]}
        frames, overflow = raster.render_frames(room, cameras, colors, height=height, width=width, cfg=rcfg)
        return frames, overflow.sum() + room_overflow, room["spacing"][at[0]]

    keys = jax.random.split(key, w2c.shape[0])
    frames, overflow, spacing = jax.lax.map(one, (keys, w2c, K, frame_shot), batch_size=c.render_batch)
    return (frames, overflow, spacing) if with_spacing else (frames, overflow)


# ------------------------------------------------------------------------------------------------ encoders


def pixel_encode(frames: jax.Array, s: int) -> jax.Array:
    """Space-to-depth: [B, T, H, W, 3] in [-1, 1] -> [B, T, H/s, W/s, s·s·3] (exactly invertible)."""
    b, t, h, w, c = frames.shape
    x = frames.reshape(b, t, h // s, s, w // s, s, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h // s, w // s, s * s * c)


def pixel_decode(latents: jax.Array, s: int) -> jax.Array:
    """Inverse of :func:`pixel_encode`."""
    b, t, h, w, d = latents.shape
    c = d // (s * s)
    x = latents.reshape(b, t, h, w, s, s, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h * s, w * s, c)


@dataclasses.dataclass(frozen=True)
class Conditioner:
    """Static structure of the frozen encoders (graphdefs, sizes); their arrays travel in ``frozen``.

    ``encode(frozen, frames)`` maps [B, T, H, W, 3] in [-1, 1] to model latents; ``text(frozen, ids, mask)``
    maps token ids to text states [B, L, text_dim].
    """

    kind: str
    spatial: int
    vae_graphdef: Any
    text_graphdef: Any
    vae_chunked: bool = True
    pixel_shift: float = 0.0  # pixel encoder: latents = (space-to-depth(frames) - shift) * scale
    pixel_scale: float = 1.0

    def encode(self, frozen: dict, frames: jax.Array) -> jax.Array:
        if self.kind == "pixel":
            return (pixel_encode(frames, self.spatial) - self.pixel_shift) * self.pixel_scale
        vae = nnx.merge(self.vae_graphdef, frozen["vae"])
        return vae.encode_latents(frames, chunked=self.vae_chunked)

    def decode(self, frozen: dict, latents: jax.Array) -> jax.Array:
        """Latents -> frames [B, T, H, W, 3] in [-1, 1]."""
        if self.kind == "pixel":
            return jnp.clip(pixel_decode(latents / self.pixel_scale + self.pixel_shift, self.spatial), -1.0, 1.0)
        vae = nnx.merge(self.vae_graphdef, frozen["vae"])
        return vae.decode_latents(latents)

    def text(self, frozen: dict, ids: jax.Array, mask: jax.Array) -> jax.Array:
        encoder = nnx.merge(self.text_graphdef, frozen["text"])
        return encoder(ids, mask) * mask[..., None].astype(jnp.float32)  # zeros at padding


def _encoders(cfg: Config, seed: int, abstract: bool) -> tuple[nnx.Module, nnx.Module | None]:
    """The frozen text encoder and VAE (None for the pixel encoder); `abstract`: shapes only (no weights made
    or read, except from a weights folder, whose config decides the shapes)."""
    from omnidirector_jax.models import text_encoder as te
    from omnidirector_jax.models import vae as vae_lib

    c, m = cfg.conditions, cfg.model
    make = nnx.eval_shape if abstract else (lambda f: f())
    if c.text_encoder_dir:
        text = te.load_t5_encoder(c.text_encoder_dir)
        if text.cfg.d_model != m.text_dim:
            raise ConfigError(f"model.text_dim: {m.text_dim}, but the text encoder in {c.text_encoder_dir} makes "
                              f"{text.cfg.d_model}-wide states")
    else:  # the small random byte-level default, as wide as the model's text input
        heads = 4 if m.text_dim % 4 == 0 else 1
        tcfg = te.TextEncoderConfig(d_model=m.text_dim, d_kv=m.text_dim // heads, num_heads=heads, d_ff=m.text_dim)
        text = make(lambda: te.T5Encoder(tcfg, rngs=nnx.Rngs(seed + 1)))
    if c.encoder != "vae":
        return text, None
    if c.vae_dir:
        from omnidirector_jax.models.vae_weights import load_wan_vae

        vae = load_wan_vae(c.vae_dir, dtype=c.vae_dtype)
    else:
        vcfg = vae_lib.VAEConfig(base_dim=c.vae_base_dim, z_dim=m.latent_channels, dtype=c.vae_dtype,
                                 latents_mean=(0.0,) * m.latent_channels, latents_std=(1.0,) * m.latent_channels)
        vae = make(lambda: vae_lib.WanVAE(vcfg, rngs=nnx.Rngs(seed + 2)))
    if vae.cfg.z_dim != m.latent_channels:
        raise ConfigError(f"model.latent_channels: {m.latent_channels}, but the VAE makes {vae.cfg.z_dim}")
    return text, vae


def build_conditioner(cfg: Config, seed: int = 0, *, abstract: bool = False) -> tuple[Conditioner, dict]:
    """The frozen encoders of ``cfg.conditions`` -> (static conditioner, host pytree ``frozen``).

    ``frozen`` also holds the empty prompt's ids and mask (text dropout) and the latents of an all-black grid
    (grid dropout), so the step never encodes them again. ``abstract``: ShapeDtypeStructs instead of arrays
    (ahead-of-time compilation: nothing is computed).
    """
    from omnidirector_jax.models.tokenizer import load_tokenizer

    m, s = cfg.model, cfg.shape
    text, vae = _encoders(cfg, seed, abstract)
    text_graphdef, text_state = nnx.split(text)
    frozen: dict[str, Any] = {"text": text_state.to_pure_dict()}
    vae_graphdef = None
    if vae is not None:
        vae_graphdef, vae_state = nnx.split(vae)
        frozen["vae"] = vae_state.to_pure_dict()
    c = cfg.conditions
    if c.pixel_scale <= 0:
        raise ConfigError(f"conditions.pixel_scale must be positive, got {c.pixel_scale}")
    conditioner = Conditioner(c.encoder, s.vae_spatial, vae_graphdef, text_graphdef, c.vae_chunked,
                              float(c.pixel_shift), float(c.pixel_scale))
    ids, mask = load_tokenizer(cfg.data.tokenizer or None)([""], m.text_len)
    frozen["empty_ids"], frozen["empty_mask"] = ids[0], mask[0]
    black = jax.ShapeDtypeStruct((1, s.frames, s.height, s.width, 3), jnp.float32)
    if abstract:
        encoded = jax.eval_shape(conditioner.encode, frozen, black)
        frozen["black_grid"] = jax.ShapeDtypeStruct(encoded.shape[1:], encoded.dtype)
        return conditioner, jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), frozen)
    frozen["black_grid"] = jax.jit(conditioner.encode)(frozen, -jnp.ones(black.shape, black.dtype))[0]
    return conditioner, jax.tree.map(np.asarray, frozen)
