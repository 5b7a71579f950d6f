"""Sampling: the whole denoising loop as one XLA program (`lax.fori_loop`), rectified-flow Euler steps.

The model sees `[ref | grid | x_t]` along frames with the condition frames at `t = 0`, exactly as in
training; the loop integrates the predicted velocity from `t = 1` (noise) to `t = 0` on a shifted time grid.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from omnidirector_jax.diffusion import flow
from omnidirector_jax.models.mmdit import assemble_inputs


def sample_euler(graphdef: nnx.GraphDef, params: Any, ref: jax.Array, grid: jax.Array | None, text: jax.Array,
                 text_mask: jax.Array, noise: jax.Array, *, steps: int, shift: float = 1.0) -> jax.Array:
    """Latents of the target frames from the model `nnx.merge(graphdef, params)`.

    ref [B, Fr, h, w, C], grid [B, F, h, w, C] or None, text [B, L, Dt], text_mask [B, L],
    noise [B, F, h, w, C] -> x_0 estimate [B, F, h, w, C] float32."""
    times = flow.time_grid(steps, shift)
    b, f = noise.shape[:2]

    def body(i, x):
        model = nnx.merge(graphdef, params)  # inside the loop's trace: NNX transforms in the model need that
        t = jnp.full((b,), times[i])
        latents, frame_t, _ = assemble_inputs(ref, grid, x, t)
        v = model(latents, frame_t, text, text_mask)[:, -f:]
        return (x + (times[i + 1] - times[i]) * v).astype(jnp.float32)

    return jax.lax.fori_loop(0, steps, body, noise.astype(jnp.float32))
