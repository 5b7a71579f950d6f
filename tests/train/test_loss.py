"""The train step's flow loss in velocity and x0 space (train.loss), for a velocity and an x0-predicting model."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.config import load_config
from omnidirector_jax.diffusion import flow
from omnidirector_jax.models.mmdit import assemble_inputs
from omnidirector_jax.train.state import create_model
from omnidirector_jax.train.step import flow_loss

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_x0_loss_is_the_velocity_loss_weighted_by_t_squared(prediction):
    cfg = load_config(ROOT / "configs" / "tiny_cpu.yaml", [f"model.prediction={prediction}", "model.hidden_size=32",
                                                            "model.num_heads=2", "model.depth=1",
                                                            "model.single_depth=0"], num_devices=None)
    graphdef, state = nnx.split(create_model(cfg.model, 0))
    rng = np.random.default_rng(1)
    model = nnx.merge(graphdef, jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(p.dtype),
                                             state.to_pure_dict()))
    f = cfg.shape.latent_frames
    inputs = {"ref": jnp.asarray(rng.standard_normal((1, 1, 16, 16, 48)), jnp.float32),
              "grid": jnp.asarray(rng.standard_normal((1, f, 16, 16, 48)), jnp.float32),
              "target": jnp.asarray(rng.standard_normal((1, f, 16, 16, 48)), jnp.float32),
              "text": jnp.asarray(rng.standard_normal((1, cfg.model.text_len, cfg.model.text_dim)), jnp.float32),
              "text_mask": jnp.ones((1, cfg.model.text_len), bool), "recon": jnp.zeros((1,), bool)}
    key = jax.random.key(3)
    velocity_loss, _ = flow_loss(model, inputs, key, cfg)
    x0_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loss="x0"))
    x0_loss, _ = flow_loss(model, inputs, key, x0_cfg)
    t = flow.sample_timesteps(jax.random.split(key)[0], 1)
    np.testing.assert_allclose(float(x0_loss), float(velocity_loss) * float(t[0]) ** 2, rtol=1e-5)
    # In x0 space the loss is the clean-latent error of the implied x0 = x_t - t·v.
    noise = jax.random.normal(jax.random.split(key)[1], inputs["target"].shape, jnp.float32)
    xt = flow.interpolate(inputs["target"], noise, t)
    latents, frame_t, _ = assemble_inputs(inputs["ref"], inputs["grid"], xt, t)
    v = flow.model_velocity(model, latents, frame_t, inputs["text"], inputs["text_mask"])[:, -f:]
    want = np.mean((np.asarray(xt - t[0] * v, np.float64) - np.asarray(inputs["target"], np.float64)) ** 2)
    np.testing.assert_allclose(float(x0_loss), want, rtol=1e-4)
    with pytest.raises(Exception, match="train.loss"):
        load_config(ROOT / "configs" / "tiny_cpu.yaml", ["train.loss=eps"], num_devices=None)
