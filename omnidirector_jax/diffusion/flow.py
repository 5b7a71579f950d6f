"""Rectified flow: the objective's maths (design §6), shared by the train step and the sampler.

Time runs from data (`t = 0`) to noise (`t = 1`): `x_t = (1 − t)·x_0 + t·ε`, and the model predicts the
velocity `dx_t/dt = ε − x_0`. Training draws `t` from a logit-normal (`t = σ(u)`, `u ~ N(m, s²)`), then
applies the SD3 shift `t' = k·t / (1 + (k − 1)·t)`, which moves mass toward noise for `k > 1` (larger videos
need more high-noise steps). The sampler uses the same shift on its time grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def shift_time(t: jax.Array, shift: float) -> jax.Array:
    """SD3 timestep shift `k·t / (1 + (k − 1)·t)` (identity for k = 1; keeps 0 and 1 fixed)."""
    if shift == 1.0:
        return t
    return shift * t / (1.0 + (shift - 1.0) * t)


def sample_timesteps(key: jax.Array, batch: int, *, mean: float = 0.0, std: float = 1.0,
                     shift: float = 1.0) -> jax.Array:
    """`[batch]` float32 training timesteps: shifted logit-normal in (0, 1)."""
    u = mean + std * jax.random.normal(key, (batch,), jnp.float32)
    return shift_time(jax.nn.sigmoid(u), shift)


def interpolate(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """`x_t = (1 − t)·x_0 + t·ε`, with `t [B]` broadcast over the remaining axes of `x0`."""
    tb = t.reshape(t.shape + (1,) * (x0.ndim - t.ndim)).astype(x0.dtype)
    return (1 - tb) * x0 + tb * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
    """What the model learns to predict: `ε − x_0`."""
    return noise - x0


def time_grid(steps: int, shift: float = 1.0) -> jax.Array:
    """`[steps + 1]` float32 times from 1 (noise) down to 0 (data), uniform before the shift."""
    return shift_time(jnp.linspace(1.0, 0.0, steps + 1, dtype=jnp.float32), shift)


X0_T_MIN = 0.05  # x0 prediction: the velocity divides by max(t, X0_T_MIN), bounded near the data end


def velocity_from_x0(latents: jax.Array, x0_hat: jax.Array, frame_t: jax.Array, t_min: float = X0_T_MIN
                     ) -> jax.Array:
    """`(x_t − x̂_0) / max(t, t_min)` per frame: latents / x0_hat [B, F, ...], frame_t [B, F] -> float32."""
    t = jnp.maximum(frame_t.astype(jnp.float32), t_min).reshape(frame_t.shape + (1,) * (latents.ndim - 2))
    return (latents.astype(jnp.float32) - x0_hat.astype(jnp.float32)) / t


def reference_skip(latents: jax.Array, reference: jax.Array, frame_t: jax.Array, residual_var: float
                   ) -> jax.Array:
    """Linear least-squares x0 from x_t and a reference r, for x0 = r + d, Var d = v, ε ~ N(0, 1):
    r + k·(x_t − (1 − t)·r) with k = (1 − t)·v / ((1 − t)²·v + t²): r at t = 1, x_t at t = 0.
    latents [B, F, ...], reference [B, 1 or F, ...], frame_t [B, F] -> float32 like latents."""
    t = frame_t.astype(jnp.float32).reshape(frame_t.shape + (1,) * (latents.ndim - 2))
    r = reference.astype(jnp.float32)
    k = (1 - t) * residual_var / ((1 - t) ** 2 * residual_var + t ** 2)
    return r + k * (latents.astype(jnp.float32) - (1 - t) * r)


def reference_residual_scale(frame_t: jax.Array, residual_var: float, ndim: int) -> jax.Array:
    """Posterior std of x0 under the model of :func:`reference_skip`: t·√v / √((1 − t)²·v + t²) — √v at t = 1,
    ~t near 0. The network's residual is scaled by it (EDM's c_out): its target has unit variance at every noise
    level, and near t = 0 whatever the network outputs moves x̂0 by little, so sampling cannot pile up its
    low-noise errors (unscaled, 30 Euler steps drifted to 2× the data's std). frame_t [B, F] -> [B, F, 1, ...]."""
    t = frame_t.astype(jnp.float32).reshape(frame_t.shape + (1,) * (ndim - 2))
    return t * jnp.sqrt(residual_var) / jnp.sqrt((1 - t) ** 2 * residual_var + t ** 2)


def model_velocity(model, latents: jax.Array, frame_t: jax.Array, text: jax.Array, text_mask: jax.Array
                   ) -> jax.Array:
    """The model's velocity at every frame, whatever it predicts (`model.cfg.prediction`: velocity, x0, or
    x0_residual: `reference_skip` plus the output scaled by `reference_residual_scale`, with input frame 0 —
    the reference image of the `[ref | grid | x_t]` layout — as the reference, or with a grid reader, the
    reference warped to each video frame)."""
    return model_prediction(model, latents, frame_t, text, text_mask)[0]


def model_prediction(model, latents: jax.Array, frame_t: jax.Array, text: jax.Array, text_mask: jax.Array
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`model_velocity` and the model's auxiliary outputs (the grid reader's `corners` and `base`)."""
    forward = getattr(model, "forward", None)
    out, aux = forward(latents, frame_t, text, text_mask) if forward else (model(latents, frame_t, text, text_mask), {})
    prediction = getattr(model.cfg, "prediction", "velocity")
    if prediction == "x0_residual":
        v = model.cfg.residual_var
        reference = latents[:, :1]
        if "base" in aux:  # condition frames keep frame 0 (no loss there); video frames their warped reference
            n_video = aux["base"].shape[1]
            reference = jnp.concatenate([jnp.broadcast_to(reference, (latents.shape[0], latents.shape[1] - n_video)
                                                          + latents.shape[2:]).astype(jnp.float32), aux["base"]], 1)
        out = (reference_skip(latents, reference, frame_t, v)
               + reference_residual_scale(frame_t, v, latents.ndim) * out.astype(jnp.float32))
    if prediction in ("x0", "x0_residual"):
        return velocity_from_x0(latents, out, frame_t), aux
    return out, aux
