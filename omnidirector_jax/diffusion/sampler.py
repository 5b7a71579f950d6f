"""Sampling: the whole denoising loop as one XLA program (`lax.fori_loop`), batched over jobs, sharded by batch.

The model sees `[ref | grid | x_t]` along frames with the condition frames at `t = 0`, exactly as in training;
the loop integrates the predicted velocity from `t = 1` (noise) to `t = 0` (data) on the SD3-shifted time grid
(`flow.time_grid`). Solvers: Euler (one evaluation per step) and Heun (two: Euler predictor, trapezoidal
corrector; second order) and `renoise` (one: jump to the x0 estimate, then noise it afresh to the next time, as
the forward process would: the state stays on the training marginals, so a model whose one-step estimates are
good but whose velocity field drifts off them along an ODE path still lands on data). Guidance
(`diffusion/cfg.py`) puts the conditional and unconditional halves in one model call per evaluation.

    sampler = Sampler(model_apply(graphdef), cfg.sampler, mesh=mesh, rules=cfg.mesh.rules)
    x0 = sampler(params, cond, shared, noise)      # compiled once per shape, params are jit arguments
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omnidirector_jax.config import SamplerConfig
from omnidirector_jax.diffusion import flow
from omnidirector_jax.diffusion.cfg import Apply, Guidance, guided_velocity
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.parallel import rules as rules_lib

SOLVERS = ("euler", "heun", "renoise")
Velocity = Callable[[jax.Array, jax.Array], jax.Array]  # (x [B, ...] float32, t scalar) -> dx/dt like x


def integrate(velocity: Velocity, x1: jax.Array, times: jax.Array, solver: str = "euler",
              anchor: jax.Array | None = None) -> jax.Array:
    """Integrates `dx/dt = velocity(x, t)` from `times[0]` to `times[-1]` in `len(times) − 1` steps.

    x1 [B, ...] (any float dtype; the state is float32, recast after every step), times [N + 1] float32 ->
    x at `times[-1]`, float32. Heun evaluates the corrector at `times[i + 1]` on every step, the last
    (`t = 0`) included: a rectified-flow velocity is finite there, so the method stays second order. Renoise
    draws its fresh noise from a key per row taken from the bits of that row's `x1`, so a row's result depends
    on its own starting noise only (not on the batch it shares).

    `anchor` [B, k, ...]: the known clean values of the first k entries of axis 1 (frames). After every step
    they are put back on the path the forward process gives them at the new time (x_t = (1 − t)·x0 + t·ε with
    this step's noise: the fresh draw under renoise, `x1`'s own under the ODE solvers), so the rest of the
    window is denoised next to its true first frame; at t = 0 they are the anchor exactly."""
    if solver not in SOLVERS:
        raise OmniDirectorError(f"solver '{solver}' is not one of {', '.join(SOLVERS)}")
    times = times.astype(jnp.float32)
    flat = x1.reshape(x1.shape[0], -1).astype(jnp.float32)
    row_keys = jax.vmap(lambda row: jax.random.key(jax.lax.bitcast_convert_type(row[0], jnp.uint32)))(flat)

    def body(i, x):
        t0, t1 = times[i], times[i + 1]
        dt = t1 - t0
        v0 = velocity(x, t0)
        eps = x1
        if solver == "renoise":  # x0 estimate x − t0·v, then the forward process to t1 with fresh noise
            eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:], jnp.float32))(
                row_keys)
            x = (1 - t1) * (x - t0 * v0) + t1 * eps
        elif solver == "euler":
            x = x + dt * v0
        else:
            v1 = velocity((x + dt * v0).astype(jnp.float32), t1)
            x = x + dt * 0.5 * (v0 + v1)
        if anchor is not None:
            k = anchor.shape[1]
            x = x.at[:, :k].set((1 - t1) * anchor.astype(jnp.float32) + t1 * eps[:, :k].astype(jnp.float32))
        return x.astype(jnp.float32)

    return jax.lax.fori_loop(0, times.shape[0] - 1, body, x1.astype(jnp.float32))


def model_apply(graphdef: nnx.GraphDef) -> Apply:
    """`apply(params, latents, frame_t, text, text_mask)` for the model `nnx.merge(graphdef, params)`."""

    def apply(params: Any, latents: jax.Array, frame_t: jax.Array, text: jax.Array, mask: jax.Array) -> jax.Array:
        # merged inside the trace, per call; an x0-predicting model's output becomes a velocity here
        return flow.model_velocity(nnx.merge(graphdef, params), latents, frame_t, text, mask)

    return apply


def denoise(apply: Apply, params: Any, cond: dict, shared: dict | None, noise: jax.Array, *, steps: int,
            shift: float, solver: str, guidance: Guidance, anchor_reference: bool = False) -> jax.Array:
    """Traceable sampling loop: noise [B, F, h, w, C] -> x_0 estimate [B, F, h, w, C] float32.

    `anchor_reference`: the first target frame is the reference itself (a model trained with
    `data.reference: overlap`), so it is held on its known path (`integrate`'s anchor) instead of sampled.

    cond: ref [B, Fr, h, w, C], grid [B, F, h, w, C] or None, text [B, L, Dt], text_mask [B, L];
    shared (guidance only): black_grid [F, h, w, C], neg_text [L, Dt], neg_mask [L]."""
    if guidance.mode != "none":
        if shared is None:
            raise OmniDirectorError(f"guidance '{guidance.mode}' needs the black grid and the negative prompt")
        if shared["neg_text"].shape != cond["text"].shape[1:]:
            raise OmniDirectorError(f"negative prompt states {shared['neg_text'].shape} do not match the prompt's "
                                    f"{cond['text'].shape[1:]}")
        grid = cond.get("grid")
        if grid is not None and shared["black_grid"].shape != grid.shape[1:]:
            raise OmniDirectorError(f"black grid latents {shared['black_grid'].shape} do not match the grid's "
                                    f"{grid.shape[1:]}")

    def velocity(x: jax.Array, t: jax.Array) -> jax.Array:
        return guided_velocity(apply, params, cond, shared, x, t, guidance)

    anchor = cond["ref"][:, -1:] if anchor_reference else None
    return integrate(velocity, noise, flow.time_grid(steps, shift), solver, anchor)


def sample_euler(graphdef: nnx.GraphDef, params: Any, ref: jax.Array, grid: jax.Array | None, text: jax.Array,
                 text_mask: jax.Array, noise: jax.Array, *, steps: int, shift: float = 1.0) -> jax.Array:
    """Unguided Euler sampling (training previews), traceable inside a caller's jit.

    ref [B, Fr, h, w, C], grid [B, F, h, w, C] or None, text [B, L, Dt], text_mask [B, L],
    noise [B, F, h, w, C] -> x_0 estimate [B, F, h, w, C] float32."""
    cond = {"ref": ref, "grid": grid, "text": text, "text_mask": text_mask}
    return denoise(model_apply(graphdef), params, cond, None, noise, steps=steps, shift=shift, solver="euler",
                   guidance=Guidance(mode="none"))


def shared_inputs(conditioner: Any, frozen: dict, negative_prompt: str, *, text_len: int,
                  tokenizer: str | None = None) -> dict[str, jax.Array]:
    """What every job's unconditional half shares: black_grid [F, h, w, C] (latents of an all-black grid, from
    `frozen`), neg_text [L, Dt] and neg_mask [L] (the negative prompt through the frozen text encoder)."""
    from omnidirector_jax.models.tokenizer import load_tokenizer

    ids, mask = load_tokenizer(tokenizer or None)([negative_prompt], text_len)
    mask = jnp.asarray(mask, bool)
    text = jax.jit(conditioner.text)(frozen, jnp.asarray(ids), mask)
    return {"black_grid": jnp.asarray(frozen["black_grid"]), "neg_text": text[0], "neg_mask": mask[0]}


class Sampler:
    """The jitted sampler of one `SamplerConfig`: `sampler(params, cond, shared, noise) -> x_0`.

    Parameters are jit arguments (never constants of the program); with a mesh, params are placed with
    `param_shardings` (replicated if None) and every batched input and the output are split on the batch
    axis by the rules' `activation_batch`, the shared guidance inputs replicated. One compilation per set of
    input shapes (see :attr:`compilations`)."""

    def __init__(self, apply: Apply, cfg: SamplerConfig, *, mesh: Mesh | None = None, rules: Any = None,
                 param_shardings: Any = None, anchor_reference: bool = False) -> None:
        self.cfg = cfg
        self.guidance = Guidance(cfg.guidance, cfg.grid_scale, cfg.content_scale, cfg.switch_t)
        if cfg.solver not in SOLVERS or cfg.steps <= 0 or cfg.shift <= 0:
            raise OmniDirectorError(f"sampler: solver {cfg.solver!r}, steps {cfg.steps}, shift {cfg.shift} invalid")
        self.mesh, self.rules = mesh, rules

        def run(params: Any, cond: dict, shared: dict | None, noise: jax.Array) -> jax.Array:
            def go() -> jax.Array:
                return denoise(apply, params, cond, shared, noise, steps=cfg.steps, shift=cfg.shift,
                               solver=cfg.solver, guidance=self.guidance, anchor_reference=anchor_reference)

            if mesh is None:
                return go()
            with rules_lib.activation_sharding(mesh, rules):
                return go()

        self._placements = None
        if mesh is None:
            self.shards = 1
            self._jit = jax.jit(run)
            return
        spec = rules_lib.batch_spec(rules, mesh, (mesh.size,))  # every batch axis the rules name (size > 1)
        axes = spec[0] if len(spec) else None
        self.shards = 1 if axes is None else math.prod(mesh.shape[a] for a in
                                                       ([axes] if isinstance(axes, str) else axes))
        batch = NamedSharding(mesh, PartitionSpec(axes))
        replicated = NamedSharding(mesh, PartitionSpec())
        self._placements = (param_shardings if param_shardings is not None else replicated, batch, replicated, batch)
        self._jit = jax.jit(run, in_shardings=self._placements, out_shardings=batch)

    @property
    def evaluations(self) -> int:
        """Model evaluations per sample (each one batched call: doubled batch under guidance)."""
        return self.cfg.steps * (2 if self.cfg.solver == "heun" else 1)

    @property
    def compilations(self) -> int:
        """Programs compiled so far (one per distinct input shapes)."""
        return self._jit._cache_size()

    def __call__(self, params: Any, cond: dict, shared: dict | None, noise: jax.Array) -> jax.Array:
        b = noise.shape[0]
        for k, v in cond.items():
            if v is not None and v.shape[0] != b:
                raise OmniDirectorError(f"sampler: cond['{k}'] has batch {v.shape[0]}, the noise {b}")
        if b % self.shards:
            raise OmniDirectorError(f"sampler: batch {b} is not divisible by the {self.shards} batch shards of "
                                    "the mesh (pad the jobs)")
        if self.guidance.mode == "none":
            shared = None
        args = (params, cond, shared, noise)
        if self._placements is not None:  # no-op for inputs already placed so; moves others (jit refuses them)
            args = tuple(jax.device_put(a, s) for a, s in zip(args, self._placements, strict=True))
        return self._jit(*args)
