"""Classifier-free guidance for the camera-conditioned denoiser (design §6), as one batched model call.

Every guided evaluation runs the model once on `[conditional ; unconditional]` stacked along the batch and
combines `v = v_u + s · (v_c − v_u)`. What the unconditional half sees, per mode (a static choice):

* ``none``: no unconditional half; `v = v_c`.
* ``plain``: same reference image, the all-black grid, the negative prompt; `s = grid_scale` at every step.
* ``adaptive``: decided by the time `t` at which the velocity is evaluated (noise `t = 1` → data `t = 0`):

  - high noise (`t > switch_t`): same reference, **black grid**, same prompt, `s = grid_scale`. The two halves
    differ only in the grid, so the guidance pushes exactly the camera signal while layout and motion form;
  - low noise (`t ≤ switch_t`): **zero reference latent** (the latent-space mean, a featureless image), same
    grid, **negative prompt** ("a completely static camera"), `s = content_scale`. The halves differ in the
    content signals (reference image and detailed prompt) while the grid, already obeyed, is left alone.

The choice per step is a `jnp.where` on inputs of equal shapes (a select, not a traced `cond`), so the loop
stays one program with one model call per evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.models.mmdit import assemble_inputs

MODES = ("none", "plain", "adaptive")

# (params, latents [B, F, h, w, C], frame_t [B, F], text [B, L, Dt], text_mask [B, L]) -> velocity [B, F, h, w, C]
Apply = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Guidance:
    """Static guidance settings (hashable: they shape the compiled program)."""

    mode: str = "adaptive"
    grid_scale: float = 5.0
    content_scale: float = 5.0
    switch_t: float = 0.6

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OmniDirectorError(f"guidance mode '{self.mode}' is not one of {', '.join(MODES)}")


def _batched(x: jax.Array, like: jax.Array) -> jax.Array:
    """A per-model array without batch axis (black grid, negative prompt) broadcast to `like`'s batch."""
    return jnp.broadcast_to(x.astype(like.dtype), like.shape)


def unconditional(cond: dict, shared: dict, t: jax.Array, g: Guidance) -> tuple[dict, jax.Array]:
    """The unconditional half's inputs and the scale at time `t` (a scalar).

    cond: ref [B, Fr, h, w, C], grid [B, F, h, w, C] or None, text [B, L, Dt], text_mask [B, L];
    shared: black_grid [F, h, w, C], neg_text [L, Dt], neg_mask [L]."""
    ref, grid, text, mask = cond["ref"], cond.get("grid"), cond["text"], cond["text_mask"]
    black = None if grid is None else _batched(shared["black_grid"], grid)
    neg_text, neg_mask = _batched(shared["neg_text"], text), _batched(shared["neg_mask"], mask)
    if g.mode == "plain":
        return {"ref": ref, "grid": black, "text": neg_text, "text_mask": neg_mask}, jnp.float32(g.grid_scale)
    if grid is None:
        raise OmniDirectorError("adaptive guidance needs the camera grid, but the model takes none (shape.grid)")
    high = t > g.switch_t
    return ({"ref": jnp.where(high, ref, jnp.zeros_like(ref)), "grid": jnp.where(high, black, grid),
             "text": jnp.where(high, text, neg_text), "text_mask": jnp.where(high, mask, neg_mask)},
            jnp.where(high, g.grid_scale, g.content_scale).astype(jnp.float32))


def _concat(a: dict, b: dict) -> dict:
    return {k: None if a[k] is None else jnp.concatenate([a[k], b[k]], axis=0) for k in a}


def guided_velocity(apply: Apply, params: Any, cond: dict, shared: dict | None, x: jax.Array, t: jax.Array,
                    g: Guidance) -> jax.Array:
    """Velocity at `x [B, F, h, w, C]` and scalar time `t`, guided per `g`; float32 like `x`."""
    b, f = x.shape[:2]
    if g.mode == "none":
        inputs, xs = cond, x
    else:
        uncond, scale = unconditional(cond, shared, t, g)
        inputs, xs = _concat(cond, uncond), jnp.concatenate([x, x], axis=0)
    tb = jnp.full((xs.shape[0],), t, jnp.float32)
    latents, frame_t, _ = assemble_inputs(inputs["ref"], inputs.get("grid"), xs.astype(inputs["ref"].dtype), tb)
    v = apply(params, latents, frame_t, inputs["text"], inputs["text_mask"])[:, -f:].astype(jnp.float32)
    if g.mode == "none":
        return v
    v_c, v_u = v[:b], v[b:]
    return v_u + scale * (v_c - v_u)
