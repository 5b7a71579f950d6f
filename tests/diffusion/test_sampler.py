"""The sampler: solver maths against float64 references, guidance wiring, one compile per shape, a real tiny
MMDiT sampled end to end on a mesh of 8 virtual CPU devices."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.config import load_config
from omnidirector_jax.diffusion import flow
from omnidirector_jax.diffusion.cfg import Guidance
from omnidirector_jax.diffusion.sampler import Sampler, denoise, integrate, model_apply, sample_euler, shared_inputs
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.parallel.mesh import make_mesh
from omnidirector_jax.train.conditions import build_conditioner
from omnidirector_jax.train.state import create_model, make_layout

ROOT = Path(__file__).resolve().parents[2]
A, C = -1.3, 0.7  # dx/dt = A·x + C·t: a linear field with a closed-form flow


def _exact(x1, t):
    k = (x1 + C / A + C / A ** 2) * np.exp(-A)
    return k * np.exp(A * t) - C * t / A - C / A ** 2


def _reference(x1, times, solver):
    """The solver's recurrence in float64 NumPy."""
    x = np.asarray(x1, np.float64)
    times = np.asarray(times, np.float64)
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        dt = t1 - t0
        v0 = A * x + C * t0
        if solver == "euler":
            x = x + dt * v0
        else:
            x = x + dt * 0.5 * (v0 + A * (x + dt * v0) + C * t1)
    return x


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_solvers_match_float64_and_converge_at_their_order(solver):
    x1 = np.array([[1.0, -0.5, 2.0]], np.float32)
    errors = []
    for steps in (8, 16, 32):
        times = flow.time_grid(steps, 3.0)
        out = jax.jit(lambda x, ts: integrate(lambda y, t: A * y + C * t, x, ts, solver))(x1, times)
        np.testing.assert_allclose(out, _reference(x1, np.asarray(times), solver), rtol=1e-5, atol=1e-6)
        errors.append(np.abs(_reference(x1, np.asarray(times), solver) - _exact(x1, 0.0)).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    order = 1 if solver == "euler" else 2
    assert np.all(np.abs(np.log2(ratios) - order) < 0.25), (solver, errors)


# ----------------------------------------------------------------------------------------- guidance wiring
REF, GRID, BLACK, TEXT, NEG = 1.0, 2.0, -3.0, 5.0, 7.0


def _wiring(mode, solver="euler", steps=4, switch_t=0.6):
    """Run the loop with a recording stand-in for the model (this test only: it exposes what each row sees)."""
    b, f, shape = 2, 2, (2, 2, 1)
    cond = {"ref": jnp.full((b, 1) + shape, REF), "grid": jnp.full((b, f) + shape, GRID),
            "text": jnp.full((b, 3, 2), TEXT), "text_mask": jnp.ones((b, 3), bool)}
    shared = {"black_grid": jnp.full((f,) + shape, BLACK), "neg_text": jnp.full((3, 2), NEG),
              "neg_mask": jnp.array([True, False, False])}
    calls = []

    def record(t, ref, grid, text, mask):
        calls.append((np.asarray(t), np.asarray(ref), np.asarray(grid), np.asarray(text), np.asarray(mask)))

    def apply(params, latents, frame_t, text, mask):
        ref, grid = latents[:, :1].mean((1, 2, 3, 4)), latents[:, 1:1 + f].mean((1, 2, 3, 4))
        jax.debug.callback(record, frame_t[:, -1], ref, grid, text.mean((1, 2)), mask.sum(1), ordered=True)
        code = ref + 10.0 * grid + 100.0 * text.mean((1, 2)) + params  # row's velocity tells what it saw
        return jnp.broadcast_to(code[:, None, None, None, None], latents.shape)

    g = Guidance(mode, grid_scale=2.0, content_scale=3.0, switch_t=switch_t)
    noise = jnp.zeros((b, f) + shape)
    out = jax.jit(lambda p: denoise(apply, p, cond, shared, noise, steps=steps, shift=1.0, solver=solver,
                                    guidance=g))(jnp.float32(0.0))
    return np.asarray(out), calls


def test_no_guidance_sees_only_the_conditions():
    out, calls = _wiring("none")
    assert [len(c[0]) for c in calls] == [2] * 4
    for _t, ref, grid, text, mask in calls:
        assert np.allclose(ref, REF) and np.allclose(grid, GRID) and np.allclose(text, TEXT) and (mask == 3).all()
    np.testing.assert_allclose(out, -(REF + 10 * GRID + 100 * TEXT), rtol=1e-6)  # x_0 = x_1 − ∫v, v constant


def test_plain_guidance_black_grid_and_negative_prompt_every_step():
    out, calls = _wiring("plain")
    assert [len(c[0]) for c in calls] == [4] * 4
    for _t, ref, grid, text, mask in calls:
        np.testing.assert_allclose(grid, [GRID, GRID, BLACK, BLACK])
        np.testing.assert_allclose(text, [TEXT, TEXT, NEG, NEG])
        np.testing.assert_allclose(ref, REF)
        np.testing.assert_array_equal(mask, [3, 3, 1, 1])
    v_c, v_u = REF + 10 * GRID + 100 * TEXT, REF + 10 * BLACK + 100 * NEG
    np.testing.assert_allclose(out, -(v_u + 2.0 * (v_c - v_u)), rtol=1e-5)


def test_adaptive_guidance_switches_from_grid_to_content():
    out, calls = _wiring("adaptive")
    times = [float(c[0][0]) for c in calls]
    np.testing.assert_allclose(times, [1.0, 0.75, 0.5, 0.25])
    v_c = REF + 10 * GRID + 100 * TEXT
    expected = 0.0
    for t, ref, grid, text, mask in calls:
        np.testing.assert_allclose(t, t[0])  # every row of one call at the same time
        if t[0] > 0.6:  # high noise: only the grid differs
            np.testing.assert_allclose(grid, [GRID, GRID, BLACK, BLACK])
            np.testing.assert_allclose(ref, REF)
            np.testing.assert_allclose(text, TEXT)
            np.testing.assert_array_equal(mask, [3, 3, 3, 3])
            v_u, s = REF + 10 * BLACK + 100 * TEXT, 2.0
        else:  # low noise: reference blanked and negative prompt, grid kept
            np.testing.assert_allclose(ref, [REF, REF, 0.0, 0.0])
            np.testing.assert_allclose(grid, GRID)
            np.testing.assert_allclose(text, [TEXT, TEXT, NEG, NEG])
            np.testing.assert_array_equal(mask, [3, 3, 1, 1])
            v_u, s = 10 * GRID + 100 * NEG, 3.0
        expected -= 0.25 * (v_u + s * (v_c - v_u))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_heun_evaluates_at_both_ends_of_each_step_and_switches_by_evaluation_time():
    _, calls = _wiring("adaptive", solver="heun", steps=2, switch_t=0.6)
    times = [float(c[0][0]) for c in calls]
    np.testing.assert_allclose(times, [1.0, 0.5, 0.5, 0.0])
    assert [float(c[2][-1]) for c in calls] == [BLACK, GRID, GRID, GRID]


def test_renoise_jumps_to_the_x0_estimate_and_noises_it_to_the_next_time():
    """renoise: x_next = (1 − t1)·(x − t0·v) + t1·ε (fresh ε per row and step); the last step (t1 = 0) returns
    the x0 estimate; a row's result depends on its own starting noise only."""
    x1 = jax.random.normal(jax.random.key(0), (3, 4, 5))
    target = jnp.full((4, 5), 0.25)
    velocity = lambda x, t: (x - target) / jnp.maximum(t, 1e-3)  # noqa: E731  (an exact x0 = target field)
    times = jnp.array([1.0, 0.6, 0.2, 0.0])
    out = integrate(velocity, x1, times, "renoise")
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(np.asarray(target), x1.shape), atol=1e-5)
    one_step = integrate(velocity, x1, times[:2], "renoise")  # stops at 0.6: 0.4·target + 0.6·fresh noise
    fresh = (np.asarray(one_step) - 0.4 * 0.25) / 0.6
    assert 0.7 < fresh.std() < 1.3 and np.abs(fresh - np.asarray(x1)).mean() > 0.5  # new noise, not x1's
    alone = integrate(velocity, x1[1:2], times[:2], "renoise")
    np.testing.assert_array_equal(np.asarray(alone[0]), np.asarray(one_step[1]))
    np.testing.assert_array_equal(np.asarray(integrate(velocity, x1, times[:2], "renoise")), np.asarray(one_step))


@pytest.mark.parametrize("solver", ["euler", "heun", "renoise"])
def test_anchored_first_frame_rides_its_forward_path_and_ends_exact(solver):
    """anchor: after every step the known first frame is (1 − t)·anchor + t·ε with that step's noise (x1 for the
    ODE solvers, the fresh draw for renoise); it ends as the anchor itself, the other frames as without it."""
    x1 = jax.random.normal(jax.random.key(0), (3, 4, 5))
    target = jnp.full((4, 5), 0.25)
    velocity = lambda x, t: (x - target) / jnp.maximum(t, 1e-3)  # noqa: E731  (an exact x0 = target field)
    anchor = jax.random.normal(jax.random.key(1), (3, 1, 5))
    times = jnp.array([1.0, 0.6, 0.2, 0.0])
    free = integrate(velocity, x1, times[:2], solver)
    held = integrate(velocity, x1, times[:2], solver, anchor)
    eps = x1[:, :1] if solver != "renoise" else (free[:, :1] - 0.4 * 0.25) / 0.6
    np.testing.assert_allclose(np.asarray(held[:, :1]), np.asarray(0.4 * anchor + 0.6 * eps), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(held[:, 1:]), np.asarray(free[:, 1:]))
    out = integrate(velocity, x1, times, solver, anchor)
    np.testing.assert_allclose(np.asarray(out[:, :1]), np.asarray(anchor), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out[:, 1:]), np.asarray(integrate(velocity, x1, times, solver)[:, 1:]))


def test_bad_settings_are_one_clear_error():
    with pytest.raises(OmniDirectorError, match="guidance mode"):
        Guidance("loud")
    with pytest.raises(OmniDirectorError, match="solver"):
        integrate(lambda x, t: x, jnp.zeros(2), jnp.array([1.0, 0.0]), "rk4")
    with pytest.raises(Exception, match="sampler"):
        load_config(ROOT / "configs" / "tiny_cpu.yaml", ["sampler.solver=rk4"], num_devices=None)


# ------------------------------------------------------------------------------------- real tiny model
SMALL = ["model.hidden_size=64", "model.depth=1", "model.single_depth=0", "model.num_heads=2", "shape.height=32",
         "shape.width=32", "sampler.steps=3"]


def test_tiny_mmdit_sampled_on_a_mesh_compiles_once_per_shape():
    cfg = load_config(ROOT / "configs" / "tiny_cpu.yaml", SMALL + ["mesh=fsdp"], num_devices=8)
    mesh = make_mesh(cfg.mesh, jax.devices())
    param_sh = make_layout(cfg, mesh).shardings["params"]  # weights split over fsdp as in training
    graphdef, params = nnx.split(create_model(cfg.model, 0))
    # Fresh MMDiTs zero their output layers (velocity 0 everywhere): perturb every weight so guidance shows.
    leaves, tree = jax.tree.flatten(nnx.to_pure_dict(params))
    keys = jax.random.split(jax.random.key(7), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape, p.dtype)
                                       for p, k in zip(leaves, keys, strict=True)])
    params = jax.device_put(params, param_sh)
    conditioner, frozen = build_conditioner(cfg)
    shared = shared_inputs(conditioner, frozen, cfg.sampler.negative_prompt, text_len=cfg.model.text_len)
    b = 8
    latent = frozen["black_grid"].shape
    key = jax.random.key(1)
    k_ref, k_grid, k_noise = jax.random.split(key, 3)
    cond = {"ref": jax.random.normal(k_ref, (b, 1) + latent[1:]), "grid": jax.random.normal(k_grid, (b,) + latent),
            "text": jnp.asarray(np.random.default_rng(0).normal(size=(b, cfg.model.text_len, cfg.model.text_dim)),
                                jnp.float32),
            "text_mask": jnp.ones((b, cfg.model.text_len), bool)}
    noise = jax.random.normal(k_noise, (b,) + latent)

    sampler = Sampler(model_apply(graphdef), cfg.sampler, mesh=mesh, rules=cfg.mesh.rules, param_shardings=param_sh)
    out = sampler(params, cond, shared, noise)
    assert out.shape == noise.shape and bool(jnp.isfinite(out).all()) and not np.allclose(out, noise, atol=1e-2)
    assert out.sharding.spec[0] == "fsdp"  # split over the batch axis
    again = sampler(params, cond, shared, noise * 0.5)
    assert sampler.compilations == 1 and not np.allclose(out, again)
    with pytest.raises(OmniDirectorError, match="divisible"):
        sampler(params, {k: v[:3] for k, v in cond.items()}, shared, noise[:3])

    # Guidance at scale 1 gives the conditional half's velocity: plain(1) == none on the same model.
    plain1 = Sampler(model_apply(graphdef), dataclasses.replace(cfg.sampler, guidance="plain", grid_scale=1.0),
                     mesh=mesh, rules=cfg.mesh.rules, param_shardings=param_sh)
    none = Sampler(model_apply(graphdef), dataclasses.replace(cfg.sampler, guidance="none"), mesh=mesh,
                   rules=cfg.mesh.rules)  # replicated weights: the fsdp-placed params are moved, not refused
    unguided = none(params, cond, None, noise)
    np.testing.assert_allclose(plain1(params, cond, shared, noise), unguided, atol=2e-4)
    assert not np.allclose(out, unguided, atol=1e-3)  # adaptive(5) moves the result
    # The training previews' entry point is the same unguided Euler loop.
    preview = jax.jit(lambda p, c, n: sample_euler(graphdef, p, c["ref"], c["grid"], c["text"], c["text_mask"], n,
                                                   steps=cfg.sampler.steps, shift=cfg.sampler.shift))
    np.testing.assert_allclose(preview(params, cond, noise), unguided, atol=2e-4)


def test_x0_prediction_becomes_a_velocity_in_the_loss_and_the_sampler():
    """model.prediction = x0: velocity = (x_t - out) / max(t, 0.05) per frame (float64 reference), the same
    function in the sampler's apply; a velocity model's output passes through unchanged."""
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "tiny_cpu.yaml", ["model.prediction=x0", "model.hidden_size=32",
                                                            "model.num_heads=2", "model.depth=1",
                                                            "model.single_depth=0"], num_devices=None)
    graphdef, state = nnx.split(create_model(cfg.model, 0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(p.dtype), state.to_pure_dict())
    model = nnx.merge(graphdef, params)  # non-zero output layer (a fresh one is zero-initialised)
    b, f = 2, 1 + 2 * cfg.shape.latent_frames
    latents = jnp.asarray(rng.standard_normal((b, f, 16, 16, 48)), jnp.float32)
    frame_t = jnp.asarray(np.concatenate([np.zeros((b, f - 5)), np.tile([[0.9, 0.5, 0.2, 0.04, 0.0]], (b, 1))], 1),
                          jnp.float32)
    text = jnp.asarray(rng.standard_normal((b, cfg.model.text_len, cfg.model.text_dim)), jnp.float32)
    mask = jnp.ones((b, cfg.model.text_len), bool)
    out = np.asarray(model(latents, frame_t, text, mask), np.float64)
    want = (np.asarray(latents, np.float64) - out) / np.maximum(np.asarray(frame_t, np.float64), 0.05)[..., None,
                                                                                                       None, None]
    got = flow.model_velocity(model, latents, frame_t, text, mask)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model_apply(graphdef)(params, latents, frame_t, text, mask)),
                               want, rtol=1e-5, atol=1e-5)
    plain = nnx.merge(nnx.graphdef(create_model(dataclasses.replace(cfg.model, prediction="velocity"), 0)), params)
    np.testing.assert_array_equal(np.asarray(flow.model_velocity(plain, latents, frame_t, text, mask)),
                                  np.asarray(plain(latents, frame_t, text, mask)))
    residual = nnx.merge(nnx.graphdef(create_model(dataclasses.replace(cfg.model, prediction="x0_residual"), 0)),
                         params)
    x, r = np.asarray(latents, np.float64), np.asarray(latents[:, :1], np.float64)
    t = np.asarray(frame_t, np.float64)[..., None, None, None]
    v = cfg.model.residual_var
    skip = r + (1 - t) * v / ((1 - t) ** 2 * v + t ** 2) * (x - (1 - t) * r)  # least-squares x0 from x_t and r
    np.testing.assert_allclose(skip[:, :1], x[:, :1], atol=1e-6)  # t = 0: x_t itself
    scale = t * np.sqrt(v) / np.sqrt((1 - t) ** 2 * v + t ** 2)  # the posterior std of x0: 0 at t = 0
    want = (x - skip - scale * out) / np.maximum(t, 0.05)
    np.testing.assert_allclose(np.asarray(flow.model_velocity(residual, latents, frame_t, text, mask)), want,
                               rtol=1e-4, atol=1e-4)  # float32 against float64, divided by t >= 0.05
    with pytest.raises(Exception, match="model.prediction"):
        load_config(root / "configs" / "tiny_cpu.yaml", ["model.prediction=eps"], num_devices=None)
