"""The Wan 2.1 VAE against diffusers' AutoencoderKLWan (random tiny config), and its weight loader."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.errors import ConfigError
from omnidirector_jax.models.vae import VAEConfig, WanVAE
from omnidirector_jax.models.vae_weights import CheckpointError, load_wan_vae, read_safetensors, wan_vae_key

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# Wan's layout (8x spatial over 4 levels, 4x temporal, 16 latent channels) at width 8.
REF_KW = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])


# Shared jitted entry points, so tests reuse compilations for equal shapes.
_encode = nnx.jit(lambda m, x, chunked: m.encode(x, chunked=chunked), static_argnames="chunked")
_decode = nnx.jit(lambda m, z, chunked: m.decode(z, chunked=chunked), static_argnames="chunked")


def encode(model, x, chunked=True):
    return _encode(model, x, chunked=chunked)  # always by keyword: one cache entry per mode


def decode(model, z, chunked=True):
    return _decode(model, z, chunked=chunked)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def to_jax(x) -> jax.Array:  # torch NCTHW -> NTHWC
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 4, 1))


def to_torch_layout(x) -> np.ndarray:  # NTHWC -> NCTHW
    return np.asarray(x).transpose(0, 4, 1, 2, 3)


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLWan(**REF_KW).eval()
    with torch.no_grad():  # norms start at gamma = 1; perturb them so a gamma mix-up shows
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return ref


@pytest.fixture(scope="module")
def model(reference):
    return load_wan_vae(reference.state_dict(), VAEConfig.tiny())


@pytest.fixture(scope="module")
def video():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 9, 16, 32, generator=g) * 2 - 1  # 1 + 4*2 frames: first alone + 2 chunks


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "whole"])
def test_vae_matches_diffusers_encode_and_decode(reference, model, video, chunked):
    with torch.no_grad():
        post = reference.encode(video).latent_dist
        z = torch.randn(2, 16, 3, 2, 4, generator=torch.Generator().manual_seed(2))
        frames = reference.decode(z).sample
    mean, logvar = encode(model, to_jax(video), chunked=chunked)
    out = decode(model, to_jax(z), chunked=chunked)

    assert mean.shape == (2, 3, 2, 4, 16)
    assert out.shape == (2, 9, 16, 32, 3)
    assert rel_err(to_torch_layout(mean), post.mean) < 1e-4
    assert rel_err(to_torch_layout(logvar), post.logvar) < 1e-4
    # Most outputs must be inside the clamp, or the decoder comparison would be vacuous.
    assert (np.abs(frames.numpy()) < 0.99).mean() > 0.9
    assert rel_err(to_torch_layout(out), frames) < 1e-4


def test_vae_is_causal_in_time(model, video):
    # Changing frames 5.. must leave latent frames 0-1 alone (they see frames 0-4) and change frame 2;
    # likewise for the decoder, latent frame 2 only reaches output frames 5... (Same shapes as the
    # parity test, so the compiled functions are reused.)
    x = to_jax(video)
    x_late = x.at[:, 5:].set(-x[:, 5:])
    mean, _ = encode(model, x)
    mean_late, _ = encode(model, x_late)
    np.testing.assert_allclose(mean_late[:, :2], mean[:, :2], rtol=1e-5, atol=1e-6)
    assert np.abs(mean_late[:, 2] - mean[:, 2]).max() > 1e-3
    z = jax.random.normal(jax.random.key(0), mean.shape)
    frames = decode(model, z)
    frames_late = decode(model, z.at[:, 2].set(0.0))
    np.testing.assert_allclose(frames_late[:, :5], frames[:, :5], rtol=1e-5, atol=1e-6)
    assert np.abs(frames_late[:, 5:] - frames[:, 5:]).max() > 1e-3


@pytest.mark.slow
def test_vae_trains_through_the_chunked_scan():
    # Chunked and whole-sequence forwards are the same function (checked above), so one gradient
    # suffices: it must reach every parameter through the cache carried by lax.scan, and be finite.
    # One level with temporal down/upsampling keeps the compile short.
    cfg = VAEConfig.tiny(base_dim=4, z_dim=4, dim_mult=(1, 2), temporal_downsample=(True,))
    assert cfg.latents_std == (1.0,) * 4
    model = WanVAE(cfg, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (1, 5, 8, 8, 3), minval=-1, maxval=1)

    def loss(m):
        mean, _ = m.encode(x)
        return jnp.mean((m.decode(mean, clamp=False) - x) ** 2)

    grads = nnx.to_flat_state(nnx.jit(nnx.grad(loss))(model))
    assert len(grads) == len(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    for path, g in grads:
        g = np.asarray(g[...])
        assert np.isfinite(g).all() and np.abs(g).max() > 0, path


def test_vae_latent_normalisation_round_trip(model, video):
    mean, logvar = encode(model, to_jax(video))
    latents = model.normalize(mean)
    expected = (mean - jnp.asarray(model.cfg.latents_mean)) / jnp.asarray(model.cfg.latents_std)
    np.testing.assert_allclose(latents, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.denormalize(latents), mean, rtol=1e-5, atol=1e-5)
    # Posterior samples: mean + sigma * eps, so their standardised deviations are unit normal.
    samples = jnp.stack([model.sample(mean, logvar, jax.random.key(i)) for i in range(64)])
    eps = (samples - mean) / jnp.exp(0.5 * logvar)
    assert abs(float(eps.mean())) < 0.05 and abs(float(eps.std()) - 1.0) < 0.05


def test_vae_rejects_bad_video_shapes(model):
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        model.encode(jnp.zeros((1, 8, 16, 16, 3)))
    with pytest.raises(ValueError, match="divisible by 8"):
        model.encode(jnp.zeros((1, 5, 12, 16, 3)))


def test_vae_loads_a_diffusers_folder(reference, model, tmp_path):
    reference.save_pretrained(tmp_path)  # config.json + diffusion_pytorch_model.safetensors
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = load_wan_vae(tmp_path)
    assert loaded.cfg == VAEConfig.tiny()  # config.json read back, Wan latent statistics included
    expected = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    got = list(nnx.to_flat_state(nnx.state(loaded, nnx.Param)))
    assert len(got) == len(expected) == len(reference.state_dict())
    for path, var in got:
        np.testing.assert_array_equal(var[...], expected[path][...], err_msg=str(path))


def test_vae_loader_names_bad_keys(reference):
    cfg = VAEConfig.tiny()
    state = dict(reference.state_dict())
    missing = {k: v for k, v in state.items() if k != "decoder.up_blocks.1.upsamplers.0.time_conv.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.up_blocks\.1\.upsamplers\.0\.time_conv\.bias"):
        load_wan_vae(missing, cfg)
    wrong = dict(state, **{"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3, 5)})
    with pytest.raises(CheckpointError, match=r"mismatches: encoder\.conv_in\.weight: checkpoint \(8, 3, 3, 3, 5\)"):
        load_wan_vae(wrong, cfg)
    extra = dict(state, **{"encoder.mid_block.attentions.1.proj.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.mid_block\.attentions\.1\.proj\.weight"):
        load_wan_vae(extra, cfg)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_wan_vae("/nonexistent-folder")
    with pytest.raises(ConfigError, match="Wan 2.2 layout"):
        VAEConfig.from_diffusers_config(dict(reference.config, is_residual=True))
    with pytest.raises(ConfigError, match="temporal_downsample has 1 entries"):
        VAEConfig.tiny(temporal_downsample=(True,))


def test_full_size_wan21_layout_matches_diffusers():
    # The published Wan 2.1 VAE's keys and shapes, from diffusers' defaults on the meta device
    # (no memory, no download), against our default config's parameters.
    with torch.device("meta"):
        ref = diffusers.AutoencoderKLWan()
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    model = nnx.eval_shape(lambda: WanVAE(VAEConfig(), rngs=nnx.Rngs(0)))
    seen = set()
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, convert = wan_vae_key(path)
        assert key in shapes, key
        assert convert(np.broadcast_to(np.float32(0), shapes[key])).shape == var.shape, key
        seen.add(key)
    assert seen == set(shapes)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 126_892_531


def test_read_safetensors_dtypes(tmp_path):
    from safetensors.torch import save_file

    tensors = {
        "a": torch.randn(3, 4, dtype=torch.float32),
        "b": torch.randn(5, dtype=torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d": torch.randn(2, 2, dtype=torch.float16),
    }
    save_file(tensors, tmp_path / "w.safetensors")
    got = read_safetensors(tmp_path / "w.safetensors")
    assert got["b"].dtype == ml_dtypes.bfloat16
    for k, t in tensors.items():
        np.testing.assert_array_equal(np.asarray(got[k], np.float64), t.double().numpy())
