"""Training previews: what the model makes of one clip of the current batch, as a PNG people can look at."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.config import Config
from omnidirector_jax.diffusion.sampler import sample_euler
from omnidirector_jax.train.step import model_inputs


def _generate(cfg: Config, graphdef: Any, conditioner: Any, params: Any, batch: dict, frozen: Any,
              key: jax.Array) -> tuple[jax.Array, jax.Array]:
    one = {k: v[:1] for k, v in batch.items()}
    inputs = model_inputs(cfg, conditioner, frozen, one, key, jitter=False)
    noise = jax.random.normal(key, inputs["target"].shape, jnp.float32)
    # Preview the plain conditional model: real grid and text, whatever the dropout draw said.
    grid = inputs["grid"] if not cfg.shape.grid else jnp.where(inputs["drop_grid"][:, None, None, None, None],
                                                                 _clean_grid(conditioner, frozen, inputs),
                                                                 inputs["grid"])
    latents = sample_euler(graphdef, params, inputs["ref"], grid, inputs["text"], inputs["text_mask"], noise,
                           steps=cfg.train.preview_steps, shift=cfg.train.timestep_shift)
    video = conditioner.decode(frozen, latents)
    return inputs["grid_frames"][0], video[0]


def _clean_grid(conditioner: Any, frozen: Any, inputs: dict) -> jax.Array:
    return conditioner.encode(frozen, inputs["grid_frames"] * 2.0 - 1.0)


_COMPILED: dict = {}


def preview_sheet(cfg: Config, layout: Any, conditioner: Any, state: dict, batch: dict, frozen: Any,
                  max_frames: int = 8) -> np.ndarray:
    """Rows: the clip's frames, its camera grid (no jitter), the frames generated from that grid."""
    params = state.get("ema", state["params"])
    key = (id(layout), id(conditioner))
    if key not in _COMPILED:  # one program per run (cfg is not hashable: bind it instead of marking it static)
        _COMPILED.clear()
        _COMPILED[key] = jax.jit(functools.partial(_generate, cfg, layout.graphdef, conditioner))
    grid, video = jax.device_get(_COMPILED[key](params, batch, frozen, jax.random.key(0)))
    target = np.asarray(jax.device_get(batch["frames"][0]))
    pick = np.linspace(0, target.shape[0] - 1, min(max_frames, target.shape[0])).round().astype(int)
    rows = [target[pick], np.clip(grid[pick] * 255.0 + 0.5, 0, 255).astype(np.uint8),
            np.clip((video[pick] + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)]
    gap = 2
    h, w = target.shape[1:3]
    sheet = np.full((3 * h + 4 * gap, len(pick) * (w + gap) + gap, 3), 32, np.uint8)
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            y, x = gap + r * (h + gap), gap + c * (w + gap)
            sheet[y:y + h, x:x + w] = frame
    return sheet
