"""MMDiT: a dual-stream block against float64 NumPy, patch embedding against a real 3D conv, RoPE frame
indexing, frame-concatenated conditions, text padding, scan/unroll/remat equivalence."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.config import ModelConfig, load_config
from omnidirector_jax.models import mmdit

ROOT = Path(__file__).resolve().parents[2]
SMALL = ModelConfig(latent_channels=4, hidden_size=48, num_heads=4, depth=2, single_depth=1, text_dim=24,
                    text_len=6, freq_dim=32)


def _np_block(p, x, c, x_cond, c_cond, angles, kv_mask, eps, heads):
    """Float64 NumPy dual-stream block (the spec): AdaLN-Zero, QK-RMSNorm, RoPE on visual, joint attention."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    gelu = lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))  # noqa: E731

    def lin(z, w, n_in=1):
        return np.tensordot(z, w["kernel"], axes=n_in) + w["bias"]

    def ln(z):
        return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + eps)

    def rms(z, s):
        return z / np.sqrt((z * z).mean(-1, keepdims=True) + eps) * s

    b, n, d = x.shape
    f = x_cond.shape[1]
    per_frame = lambda a: np.repeat(a, n // f, axis=1)  # noqa: E731  [B, F, D] -> [B, N, D]
    xm = [per_frame(m) for m in np.moveaxis(lin(silu(x_cond), p["x_mod"]), -2, 0)]
    cm = list(np.moveaxis(lin(silu(c_cond[:, None]), p["c_mod"]), -2, 0))
    xqkv = lin(ln(x) * (1 + xm[1]) + xm[0], p["x_qkv"])  # [B, N, 3, H, Dh]
    cqkv = lin(ln(c) * (1 + cm[1]) + cm[0], p["c_qkv"])
    xq, xk, xv = (xqkv[:, :, i] for i in range(3))
    cq, ck, cv = (cqkv[:, :, i] for i in range(3))
    xq, xk = rms(xq, p["x_q_norm"]["scale"]), rms(xk, p["x_k_norm"]["scale"])
    cq, ck = rms(cq, p["c_q_norm"]["scale"]), rms(ck, p["c_k_norm"]["scale"])

    def rope(z):
        cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
        z1, z2 = z[..., 0::2], z[..., 1::2]
        out = np.empty_like(z)
        out[..., 0::2], out[..., 1::2] = z1 * cos - z2 * sin, z1 * sin + z2 * cos
        return out

    q = np.concatenate([rope(xq), cq], 1)
    k = np.concatenate([rope(xk), ck], 1)
    v = np.concatenate([xv, cv], 1)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(kv_mask[:, None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    o = np.einsum("bhqk,bkhd->bqhd", w / w.sum(-1, keepdims=True), v)
    x = x + xm[2] * lin(o[:, :n], p["x_out"], 2)
    c = c + cm[2] * lin(o[:, n:], p["c_out"], 2)

    def mlp(z, w):
        return lin(gelu(lin(z, w["fc1"])), w["fc2"])

    x = x + xm[5] * mlp(ln(x) * (1 + xm[4]) + xm[3], p["x_mlp"])
    c = c + cm[5] * mlp(ln(c) * (1 + cm[4]) + cm[3], p["c_mlp"])
    return x, c


def test_dual_stream_block_matches_float64_numpy():
    cfg = SMALL
    with nnx.use_eager_sharding(False):
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: mmdit.DualStreamBlock(cfg, rngs=nnx.Rngs(0))))
    block = nnx.merge(graphdef, mmdit.random_state(abstract, 0.3))
    b, f, hw, l_txt, d = 2, 3, 4, 5, cfg.hidden_size
    ks = jax.random.split(jax.random.key(1), 4)
    x = jax.random.normal(ks[0], (b, f * hw, d))
    c = jax.random.normal(ks[1], (b, l_txt, d))
    x_cond = jax.random.normal(ks[2], (b, f, d))
    c_cond = jax.random.normal(ks[3], (b, d))
    angles = mmdit.rope_angles((f, 2, 2), cfg.head_dim, cfg.rope_theta)
    kv_mask = jnp.concatenate([jnp.ones((b, f * hw), bool), jnp.arange(l_txt)[None].repeat(b, 0) < 3], 1)
    got_x, got_c = jax.jit(lambda *a: block(*a))(x, c, x_cond, c_cond, angles, kv_mask)
    ref_x, ref_c = _np_block(nnx.to_pure_dict(nnx.state(block)), *(np.asarray(a, np.float64) for a in (
        x, c, x_cond, c_cond, angles)), np.asarray(kv_mask), cfg.norm_eps, cfg.num_heads)
    for got, ref in ((got_x, ref_x), (got_c, ref_c)):
        err = np.linalg.norm(np.asarray(got, np.float64) - ref) / np.linalg.norm(ref)
        assert err < 1e-5, err


def test_patch_embed_is_a_strided_3d_conv():
    cfg = dataclasses.replace(SMALL, patch_size=(2, 2, 2))
    with nnx.use_eager_sharding(False):
        pe = mmdit.PatchEmbed3D(cfg, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 4, 6, 8, cfg.latent_channels))
    got = pe(x)  # [B, N, D]
    kernel = pe.proj.kernel[...]  # [pt, ph, pw, C, D] = DHWIO
    conv = jax.lax.conv_general_dilated(x, kernel, window_strides=(2, 2, 2), padding="VALID",
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) + pe.proj.bias[...]
    np.testing.assert_allclose(got, conv.reshape(2, -1, cfg.hidden_size), rtol=1e-5, atol=1e-5)


def test_rope_frame_indices_are_contiguous_over_conditions():
    dh = 48
    grid = (5, 2, 3)
    angles = np.asarray(mmdit.rope_angles(grid, dh, 10000.0)).reshape(*grid, dh // 2)
    dt, _, _ = mmdit.rope_dims(dh)
    # The frame part grows linearly with the global frame index (ref=0, grid=1.., video=..), no restart.
    frame_part = angles[:, 0, 0, : dt // 2]
    np.testing.assert_allclose(frame_part, np.arange(5)[:, None] * frame_part[1][None], rtol=1e-6)
    # Rows/cols parts do not depend on the frame.
    np.testing.assert_allclose(angles[0, :, :, dt // 2:], angles[4, :, :, dt // 2:])
    # Rotation preserves norms and q·k depends on relative positions only.
    q = jax.random.normal(jax.random.key(0), (1, 30, 1, dh))
    rq = mmdit.apply_rope(q, jnp.asarray(angles.reshape(30, -1)))
    np.testing.assert_allclose(jnp.linalg.norm(rq, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)


def test_assemble_inputs_condition_frames_are_clean():
    b, h, w, c = 2, 4, 4, 3
    ref, grid, noisy = jnp.zeros((b, 1, h, w, c)), jnp.ones((b, 3, h, w, c)), 2 * jnp.ones((b, 3, h, w, c))
    latents, frame_t, target = mmdit.assemble_inputs(ref, grid, noisy, jnp.array([0.3, 0.9]))
    assert latents.shape == (b, 7, h, w, c)
    np.testing.assert_array_equal(latents[:, :, 0, 0, 0], [[0, 1, 1, 1, 2, 2, 2]] * 2)
    np.testing.assert_allclose(frame_t, [[0, 0, 0, 0, 0.3, 0.3, 0.3], [0, 0, 0, 0, 0.9, 0.9, 0.9]])
    np.testing.assert_array_equal(target, [[False] * 4 + [True] * 3] * 2)


@pytest.fixture(scope="module")
def tiny():
    overrides = ["shape.batch_size=2", "model.hidden_size=48", "model.text_len=8", "shape.height=32"]
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", overrides, num_devices=None)
    graphdef, abstract = mmdit.abstract_model(cfg.model)
    state = mmdit.random_state(abstract, 0.05)
    batch = mmdit.dummy_batch(cfg.model, cfg.shape, 3)
    return cfg, graphdef, state, batch


def _forward(graphdef, state, batch):
    latents, frame_t, _ = mmdit.assemble_inputs(batch["ref"], batch.get("grid"), batch["video"], batch["t"])
    return nnx.merge(graphdef, state)(latents, frame_t, batch["text"], batch["text_mask"])


def test_padded_text_tokens_do_not_matter_and_output_shape(tiny):
    cfg, graphdef, state, batch = tiny
    fwd = jax.jit(_forward, static_argnums=0)
    out = fwd(graphdef, state, batch)
    assert out.shape == (2, cfg.shape.total_frames, *cfg.shape.latent_hw, cfg.model.latent_channels)
    pad = ~batch["text_mask"][..., None]
    changed = dict(batch, text=jnp.where(pad, 100.0, batch["text"]))
    np.testing.assert_allclose(fwd(graphdef, state, changed), out, rtol=1e-5, atol=1e-5)
    # ...while a valid text token does change the output.
    moved = dict(batch, text=batch["text"] + (np.arange(batch["text"].shape[1]) == 0)[None, :, None])
    assert float(jnp.max(jnp.abs(fwd(graphdef, state, moved) - out))) > 1e-4


def test_loss_is_taken_on_target_frames_only(tiny):
    cfg, graphdef, state, batch = tiny
    tb = batch["t"][:, None, None, None, None]
    noisy = dict(batch, video=(1 - tb) * batch["video"] + tb * batch["noise"])
    pred = jax.jit(_forward, static_argnums=0)(graphdef, state, noisy)
    n_cond = pred.shape[1] - batch["video"].shape[1]
    expected = jnp.mean(jnp.square(pred[:, n_cond:] - (batch["noise"] - batch["video"])))
    loss = jax.jit(lambda s, b: mmdit.flow_loss(nnx.merge(graphdef, s), b))(state, batch)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_scan_unrolled_and_remat_agree(tiny):
    cfg, _, _, batch = tiny
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, single_depth=0))
    state = mmdit.random_state(mmdit.abstract_model(cfg.model)[1], 0.05)
    grads = {}
    variants = {"scan": {}, "unrolled_remat_full": {"scan_layers": False, "remat": "full"},
                "scan_save_dots": {"remat": "save_dots"}, "scan_offload": {"remat": "offload"}}
    for name, overrides in variants.items():
        mcfg = dataclasses.replace(cfg.model, **overrides)
        gdef, _ = mmdit.abstract_model(mcfg)
        loss = jax.jit(jax.value_and_grad(lambda s, b, g=gdef: mmdit.flow_loss(nnx.merge(g, s), b)))
        grads[name] = loss(state, batch)
    ref = grads.pop("scan")
    for name, (value, g) in grads.items():
        np.testing.assert_allclose(value, ref[0], rtol=1e-5, err_msg=name)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref[1]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)


def test_grid_inject_adds_each_grid_frame_to_its_video_frame():
    """model.grid_inject: zero at initialisation (the model is the plain one), and with trained weights grid
    frame i's patches, projected, land on exactly the tokens of video frame i (float64 NumPy reference)."""
    cfg = dataclasses.replace(SMALL, grid_inject=True, patch_size=(1, 2, 2))
    gdef, abstract = mmdit.abstract_model(dataclasses.replace(cfg, grid_inject=False))
    plain = nnx.merge(gdef, mmdit.random_state(abstract, 0.1))  # non-zero heads: the output depends on the input
    model = mmdit.create_model(cfg)
    nnx.update(model, nnx.state(plain))  # the same weights, grid_embed as initialised
    r, v, h, w, c = 1, 3, 4, 6, cfg.latent_channels
    key = jax.random.key(3)
    latents = jax.random.normal(key, (2, r + 2 * v, h, w, c))
    frame_t = jnp.concatenate([jnp.zeros((2, r + v)), jnp.full((2, v), 0.7)], 1)
    text, mask = jnp.ones((2, cfg.text_len, cfg.text_dim)), jnp.ones((2, cfg.text_len), bool)
    np.testing.assert_array_equal(model(latents, frame_t, text, mask), plain(latents, frame_t, text, mask))

    kernel = jax.random.normal(jax.random.key(4), model.grid_embed.proj.kernel.shape)
    model.grid_embed.proj.kernel[...] = kernel
    model.grid_embed.proj.bias[...] = jnp.arange(cfg.hidden_size, dtype=jnp.float32) / 10
    got = np.asarray(model._grid_tokens(latents), np.float64)
    lat, k = np.asarray(latents, np.float64), np.asarray(kernel, np.float64)
    bias = np.arange(cfg.hidden_size) / 10
    tokens_per_frame = (h // 2) * (w // 2)
    assert got.shape == (2, (r + 2 * v) * tokens_per_frame, cfg.hidden_size)
    np.testing.assert_array_equal(got[:, :(r + v) * tokens_per_frame], 0.0)
    for i in range(v):
        for y in range(h // 2):
            for x in range(w // 2):
                patch = lat[:, r + i, 2 * y:2 * y + 2, 2 * x:2 * x + 2][:, None]  # [B, pt=1, 2, 2, C]
                want = np.tensordot(patch, k, axes=4) + bias
                n = (r + v + i) * tokens_per_frame + y * (w // 2) + x
                np.testing.assert_allclose(got[:, n], want, rtol=1e-5, atol=1e-5)
    # the grid now changes the prediction; a layout without equal grid and video frames is refused
    moved = latents.at[:, r:r + v].add(1.0)
    assert not np.allclose(model(latents, frame_t, text, mask), model(moved, frame_t, text, mask))
    with pytest.raises(Exception, match="grid_inject"):
        model(latents[:, :-1], frame_t[:, :-1], text, mask)


def test_grid_inject_ref_puts_grid_frame_0_on_the_reference_tokens():
    """model.grid_inject_ref: the reference tokens get grid frame 0's projected patches (the reference camera's
    grid), the video tokens keep their own frames', the grid tokens none."""
    cfg = dataclasses.replace(SMALL, grid_inject=True, grid_inject_ref=True, patch_size=(1, 2, 2))
    model = mmdit.create_model(cfg)
    model.grid_embed.proj.kernel[...] = jax.random.normal(jax.random.key(4), model.grid_embed.proj.kernel.shape)
    plain = dataclasses.replace(cfg, grid_inject_ref=False)
    without = mmdit.create_model(plain)
    nnx.update(without, nnx.state(model))
    r, v, h, w = 1, 3, 4, 6
    latents = jax.random.normal(jax.random.key(3), (2, r + 2 * v, h, w, cfg.latent_channels))
    got, base = np.asarray(model._grid_tokens(latents)), np.asarray(without._grid_tokens(latents))
    n = (h // 2) * (w // 2)
    np.testing.assert_array_equal(got[:, n:], base[:, n:])  # grid and video tokens unchanged
    np.testing.assert_array_equal(got[:, :n], base[:, (r + v) * n:(r + v + 1) * n])  # = video frame 0's
    assert np.abs(got[:, :n]).max() > 0
    with pytest.raises(Exception, match="grid_inject_ref"):
        load_config(ROOT / "configs" / "tiny_cpu.yaml", ["model.grid_inject_ref=true"])


def test_grid_inject_config_is_checked():
    with pytest.raises(Exception, match="grid_inject"):
        load_config(ROOT / "configs" / "tiny_cpu.yaml", ["model.grid_inject=true", "shape.grid=false"])
    cfg = load_config(ROOT / "configs" / "tiny_cpu.yaml", ["model.grid_inject=true"])
    assert cfg.model.grid_inject
