"""Attention registry: XLA against NumPy with a text padding mask; splash (Pallas interpret mode on CPU, also
under shard_map with batch/context/tensor sharding); cuDNN and compiled splash as device tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnidirector_jax.config import DEFAULT_RULES, MeshConfig
from omnidirector_jax.models import attention as attn
from omnidirector_jax.parallel.mesh import make_mesh
from omnidirector_jax.parallel.rules import activation_sharding


def _inputs(b=2, s=40, h=4, d=32, valid=(40, 31), seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((b, s, h, d)).astype(np.float32) for _ in range(3))
    mask = np.arange(s)[None] < np.asarray(valid)[:, None]  # suffix padding, as in [visual | text]
    return q, k, v, mask


def _np_attention(q, k, v, mask):
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None, None], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), v)


def test_xla_matches_numpy_with_padding_mask():
    q, k, v, mask = _inputs()
    got = attn.attention(q, k, v, mask, "xla")
    np.testing.assert_allclose(got, _np_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)
    # Padded keys are ignored: changing them changes nothing.
    k2 = np.where(mask[..., None, None], k, 50.0)
    np.testing.assert_allclose(attn.attention(q, k2, v, mask, "xla"), got, rtol=1e-6, atol=1e-6)


def test_registry_names():
    assert {"xla", "cudnn", "splash"} <= set(attn._REGISTRY)
    with pytest.raises(KeyError, match="unknown attention implementation 'flash'"):
        attn.get_attention("flash")


def test_splash_interpret_matches_numpy_on_valid_rows():
    q, k, v, mask = _inputs(s=200, h=2, d=64, valid=(200, 150))
    got = jax.jit(lambda *a: attn.splash_attention(*a, block=128, interpret=True))(q, k, v, mask)
    ref = _np_attention(q, k, v, mask)
    for i, n in enumerate((200, 150)):  # padded query rows are don't-care (the model drops them)
        np.testing.assert_allclose(got[i, :n], ref[i, :n], rtol=2e-5, atol=2e-5)


def test_splash_under_shard_map_with_context_and_tensor_axes():
    assert jax.device_count() == 8
    mesh = make_mesh(MeshConfig(data=-1, context=2, tensor=2))  # data 2 x context 2 x tensor 2
    q, k, v, mask = _inputs(b=2, s=256, h=2, d=64, valid=(256, 230))

    @jax.jit
    def run(q, k, v, mask):
        with activation_sharding(mesh, DEFAULT_RULES):
            return attn.splash_attention(q, k, v, mask, block=128, interpret=True)

    got = run(q, k, v, mask)
    ref = _np_attention(q, k, v, mask)
    np.testing.assert_allclose(got[0], ref[0], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got[1, :230], ref[1, :230], rtol=2e-5, atol=2e-5)


@pytest.mark.device
def test_cudnn_matches_xla_on_gpu():
    if jax.devices()[0].platform != "gpu":
        pytest.skip("cuDNN attention needs an NVIDIA GPU")
    q, k, v, mask = (jnp.asarray(a) for a in _inputs(s=256, h=4, d=64, valid=(256, 200)))
    q, k, v = (a.astype(jnp.bfloat16) for a in (q, k, v))
    got = jax.jit(lambda *a: attn.attention(*a, "cudnn"))(q, k, v, mask).astype(jnp.float32)
    ref = attn.attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), mask, "xla")
    for i, n in enumerate((256, 200)):
        np.testing.assert_allclose(got[i, :n], ref[i, :n], rtol=3e-2, atol=3e-2)


@pytest.mark.device
def test_splash_compiled_on_tpu():
    if jax.devices()[0].platform != "tpu":
        pytest.skip("splash attention is a TPU kernel")
    q, k, v, mask = (jnp.asarray(a) for a in _inputs(s=1024, h=4, d=128, valid=(1024, 900)))
    got = jax.jit(lambda *a: attn.attention(*a, "splash"))(q, k, v, mask)
    ref = _np_attention(*(np.asarray(a) for a in (q, k, v, mask)))
    for i, n in enumerate((1024, 900)):
        np.testing.assert_allclose(got[i, :n], ref[i, :n], rtol=2e-3, atol=2e-3)
