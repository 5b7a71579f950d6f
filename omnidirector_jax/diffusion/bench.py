"""`omnidirector bench sample`: the sampler of a config (random weights unless a checkpoint is given), by stage.

Stages of one batched generation window: prompt (rules + template fusion + tokenizer + text encoder), grid
(camera grid of the trajectory), encode (reference image and grid to latents), denoise (the one-program loop),
decode. The denoise loop is compared with one forward of the model at the loop's own batch (doubled under
guidance: conditional and unconditional halves in one call), so `step / forward` says what the loop adds to
the network's own cost (1.0 = nothing).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.config import load_config


def _timed(fn, *args, repeats: int = 3) -> tuple[Any, float, float]:
    """(result, first call seconds (compile + run), best of `repeats` steady calls)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return out, first, best


def run_sample_bench(config_path: str, overrides: list[str], *, batch: int = 1, steps: int | None = None,
                     guidance: str | None = None, checkpoint: str | None = None, repeats: int = 2) -> dict[str, Any]:
    """Times every stage of sampling `batch` jobs of the config's shape; returns the figures (seconds)."""
    from flax import nnx

    from omnidirector_jax.camera.render import render_grid
    from omnidirector_jax.data import sample_trajectories as samples
    from omnidirector_jax.diffusion.generate import Model, load_model
    from omnidirector_jax.diffusion.sampler import Sampler, model_apply, shared_inputs
    from omnidirector_jax.models.mmdit import assemble_inputs
    from omnidirector_jax.models.tokenizer import load_tokenizer
    from omnidirector_jax.prompting.fusion import fuse
    from omnidirector_jax.prompting.rules import describe
    from omnidirector_jax.train.conditions import build_conditioner
    from omnidirector_jax.train.state import create_model

    if checkpoint:
        model = load_model(checkpoint)
    else:
        cfg = load_config(config_path, overrides, num_devices=None)
        module = create_model(cfg.model, cfg.train.seed)
        graphdef, params = nnx.split(module)
        conditioner, frozen = build_conditioner(cfg, cfg.train.seed)
        model = Model(cfg, graphdef, params.to_pure_dict(), conditioner, frozen, "random weights")
    cfg = model.cfg
    s = cfg.shape
    sampler_cfg = cfg.sampler
    if steps is not None:
        sampler_cfg = dataclasses.replace(sampler_cfg, steps=steps)
    if guidance is not None:
        sampler_cfg = dataclasses.replace(sampler_cfg, guidance=guidance)
    traj = samples.named("dolly", s.height, s.width, s.frames)
    image = np.random.default_rng(0).integers(0, 256, (s.height, s.width, 3), np.uint8)
    frozen = jax.device_put(model.frozen)
    times: dict[str, float] = {}

    # prompt: camera rules + fusion (host) + tokenizer + text encoder (device)
    tokenizer = load_tokenizer(cfg.data.tokenizer or None)
    text_fn = jax.jit(model.conditioner.text)

    def prompt_stage():
        text = fuse(describe(traj).text, "a quiet library", image)
        ids, mask = tokenizer([text] * batch, cfg.model.text_len)
        return text_fn(frozen, jnp.asarray(ids), jnp.asarray(mask, bool)), jnp.asarray(mask, bool)

    (states, mask), _, times["prompt"] = _timed(prompt_stage, repeats=repeats)
    grid, _, times["grid"] = _timed(lambda: render_grid(traj, grid=model.cfg.room), repeats=repeats)
    encode = jax.jit(model.conditioner.encode)
    frames = jnp.asarray(np.broadcast_to(grid[: s.frames], (batch,) + grid[: s.frames].shape), jnp.float32)
    ref_px = jnp.asarray(np.broadcast_to(image, (batch, 1) + image.shape), jnp.float32)

    def encode_stage():
        return encode(frozen, ref_px / 127.5 - 1.0), encode(frozen, frames / 127.5 - 1.0)

    (ref_lat, grid_lat), times["encode_compile"], times["encode"] = _timed(encode_stage, repeats=repeats)
    cond = {"ref": ref_lat, "grid": grid_lat if s.grid else None, "text": states, "text_mask": mask}
    shared = shared_inputs(model.conditioner, frozen, sampler_cfg.negative_prompt, text_len=cfg.model.text_len,
                           tokenizer=cfg.data.tokenizer or None)
    noise = jax.random.normal(jax.random.key(0), (batch, s.latent_frames) + ref_lat.shape[2:], jnp.float32)
    params = jax.device_put(model.params)
    run = Sampler(model_apply(model.graphdef), sampler_cfg)
    latents, times["denoise_compile"], times["denoise"] = _timed(run, params, cond, shared, noise, repeats=repeats)
    times["encode_compile"] -= times["encode"]  # first call minus a steady one: the compile time
    times["denoise_compile"] -= times["denoise"]
    decode = jax.jit(model.conditioner.decode)
    _, _, times["decode"] = _timed(decode, frozen, latents, repeats=repeats)

    # One forward at the loop's batch: doubled under guidance (both halves in one call).
    doubled = 1 if sampler_cfg.guidance == "none" else 2
    rep = lambda x: None if x is None else jnp.concatenate([x] * doubled, axis=0)  # noqa: E731
    apply = jax.jit(model_apply(model.graphdef))
    t = jnp.full((batch * doubled,), 0.5, jnp.float32)
    latents_in, frame_t, _ = assemble_inputs(rep(ref_lat), rep(cond["grid"]), rep(noise.astype(ref_lat.dtype)), t)
    _, _, times["forward"] = _timed(apply, params, latents_in, frame_t, rep(states), rep(mask), repeats=repeats)
    evaluations = run.evaluations
    step = times["denoise"] / evaluations
    return {"config": config_path, "model": model.source, "batch": batch, "forward_batch": batch * doubled,
            "steps": sampler_cfg.steps, "solver": sampler_cfg.solver, "guidance": sampler_cfg.guidance,
            "frames": s.frames, "size": [s.height, s.width], "device": jax.devices()[0].device_kind,
            "seconds": {k: round(v, 5) for k, v in times.items()},
            "steps_per_s": round(sampler_cfg.steps / times["denoise"], 3),
            "step_over_forward": round(step / times["forward"], 4),
            "window_s": round(sum(times[k] for k in ("prompt", "grid", "encode", "denoise", "decode")), 4),
            "compilations": run.compilations}


def format_sample_bench(r: dict[str, Any]) -> str:
    sec = r["seconds"]
    lines = [f"bench sample: {r['config']} ({r['model']}), {r['frames']} frames {r['size'][0]}x{r['size'][1]}, "
             f"batch {r['batch']}, {r['steps']} {r['solver']} steps, guidance {r['guidance']}, on {r['device']}",
             f"{'stage':<18} {'seconds':>10}"]
    for k in ("prompt", "grid", "encode", "denoise", "decode", "forward", "encode_compile", "denoise_compile"):
        lines.append(f"{k:<18} {sec[k]:>10.4f}")
    lines += [f"steps/s {r['steps_per_s']}; one sampling step / one batched forward (batch {r['forward_batch']}) = "
              f"{r['step_over_forward']}; a window end to end {r['window_s']} s; compilations {r['compilations']}"]
    return "\n".join(lines)
