"""Grid reader: homography maths against OpenCV, the plane supervision against a float64 ray-plane intersection,
the warp against cv2.warpPerspective, and its wiring into the MMDiT and the x0_residual skip; model.reader_depth:
the two-plane warp with parallax against OpenCV's warp by the exact plane homography (float64), the depth net's
start, the photometric loss that teaches it, and the warm start from a one-plane model."""

import dataclasses
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.config import ModelConfig, load_config
from omnidirector_jax.diffusion import flow
from omnidirector_jax.models import grid_reader as gr
from omnidirector_jax.models import mmdit
from omnidirector_jax.train.conditions import pixel_decode, pixel_encode
from omnidirector_jax.train.step import depth_photometric_loss

ROOT = Path(__file__).resolve().parents[2]


def _rot(axis, deg):
    v = np.asarray(axis, np.float64) / np.linalg.norm(axis) * np.deg2rad(deg)
    return cv2.Rodrigues(v)[0]


def _to_norm(p, h, w):
    return np.stack([(2 * p[..., 0] + 1) / w - 1, (2 * p[..., 1] + 1) / h - 1], -1)


def test_corners_to_homography_matches_opencv():
    rng = np.random.default_rng(0)
    dst = np.asarray(gr.CORNERS) + rng.uniform(-0.3, 0.3, (4, 2))
    got = np.asarray(gr.corners_to_homography(jnp.asarray(dst, jnp.float32)))
    want = cv2.getPerspectiveTransform(np.asarray(gr.CORNERS, np.float32), dst.astype(np.float32))
    np.testing.assert_allclose(got, want / want[2, 2], atol=1e-4)
    np.testing.assert_allclose(np.asarray(gr.apply_homography(jnp.asarray(got), jnp.asarray(gr.CORNERS))), dst,
                               atol=1e-5)


def test_warp_matches_cv2_warp_perspective():
    """Backward warp with bilinear sampling = cv2.warpPerspective(WARP_INVERSE_MAP, INTER_LINEAR) inside the
    image (borders differ: we repeat edge pixels, OpenCV's BORDER_REPLICATE agrees up to its 5-bit weights)."""
    rng = np.random.default_rng(1)
    h, w = 24, 32
    image = cv2.GaussianBlur(rng.uniform(0, 1, (h, w, 3)).astype(np.float32), (5, 5), 1.0)
    dst = np.asarray(gr.CORNERS) + rng.uniform(-0.15, 0.15, (4, 2))
    hn = np.asarray(gr.corners_to_homography(jnp.asarray(dst, jnp.float32)), np.float64)
    n = np.asarray(gr.normaliser(h, w), np.float64)
    h_pix = np.linalg.inv(n) @ hn @ n  # output pixel -> input pixel
    want = cv2.warpPerspective(image, h_pix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
    got = np.asarray(gr.warp(jnp.asarray(image), jnp.asarray(hn, jnp.float32)))
    np.testing.assert_allclose(got[2:-2, 2:-2], want[2:-2, 2:-2], atol=2e-2)
    assert np.abs(got - image).mean() > 0.02  # it moved
    identity = np.asarray(gr.warp(jnp.asarray(image), jnp.eye(3)))
    np.testing.assert_allclose(identity, image, atol=1e-5)


def test_plane_corners_against_a_ray_plane_intersection():
    """Each frame's corner pixels, cast as rays from camera i, hit the plane z = d·spacing of camera 0; their
    projections into camera 0 (float64 NumPy) are where `plane_corners` says the corners lie."""
    h, w, spacing, depth = 48, 64, 0.7, 3.0
    K0 = np.array([[50.0, 0, 31.5], [0, 52.0, 23.5], [0, 0, 1]])
    K1 = np.array([[60.0, 0, 31.5], [0, 62.4, 23.5], [0, 0, 1]])  # a zoom
    r0, t0 = _rot([0.2, 1, 0.1], 10), np.array([0.1, -0.2, 0.3])
    r1 = _rot([0.3, -0.2, 1], 7) @ r0
    t1 = np.array([0.4, 0.1, -0.5])
    w2c = np.stack([np.hstack([r0, t0[:, None]]), np.hstack([r1, t1[:, None]])])
    got = np.asarray(gr.plane_corners(jnp.asarray(w2c, jnp.float32), jnp.asarray(np.stack([K0, K1]), jnp.float32),
                                      jnp.float32(spacing), depth, height=h, width=w))
    corners_px = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    c1 = -r1.T @ t1  # camera 1 centre, world
    for i, (x, y) in enumerate(corners_px):
        ray = r1.T @ np.linalg.solve(K1, [x, y, 1.0])  # world direction
        # camera-0 coordinates along the ray: X0(s) = r0 (c1 + s·ray) + t0; solve z = depth·spacing
        a, b = r0 @ c1 + t0, r0 @ ray
        point = a + (depth * spacing - a[2]) / b[2] * b
        p = K0 @ point
        np.testing.assert_allclose(got[1, i], _to_norm(p[:2] / p[2], h, w), atol=1e-4)
    np.testing.assert_allclose(got[0], np.asarray(gr.CORNERS), atol=1e-5)  # frame 0 in itself


def test_plane_depth_does_not_matter_for_a_rotation():
    K = np.array([[40.0, 0, 31.5], [0, 40.0, 31.5], [0, 0, 1]])
    w2c = np.stack([np.eye(3, 4), np.hstack([_rot([0, 1, 0], 5), np.zeros((3, 1))])])
    args = (jnp.asarray(w2c, jnp.float32), jnp.asarray(np.stack([K, K]), jnp.float32), jnp.float32(1.0))
    near = np.asarray(gr.plane_corners(*args, 1.0, height=64, width=64))
    far = np.asarray(gr.plane_corners(*args, 50.0, height=64, width=64))
    np.testing.assert_allclose(near, far, atol=1e-5)
    assert np.abs(near[1] - np.asarray(gr.CORNERS)).max() > 0.05


def test_unshuffle_is_the_pixel_decoders_layout():
    frames = jax.random.uniform(jax.random.key(0), (2, 3, 16, 12, 3))
    lat = pixel_encode(frames, 4)
    np.testing.assert_array_equal(np.asarray(gr.unshuffle(lat, 4)), np.asarray(pixel_decode(lat, 4)))
    np.testing.assert_array_equal(np.asarray(gr.shuffle(gr.unshuffle(lat, 4), 4)), np.asarray(lat))


SMALL = ModelConfig(latent_channels=12, hidden_size=48, num_heads=4, depth=1, single_depth=0, text_dim=24,
                    text_len=6, freq_dim=32, grid_inject=True, prediction="x0_residual", grid_reader=True,
                    reader_channels=(8, 16), reader_hidden=16, reader_unshuffle=2)


def _inputs(cfg, v=3, h=8, w=8, b=2):
    latents = jax.random.normal(jax.random.key(3), (b, 1 + 2 * v, h, w, cfg.latent_channels))
    frame_t = jnp.concatenate([jnp.zeros((b, 1 + v)), jnp.ones((b, v))], 1)
    text = jnp.zeros((b, cfg.text_len, cfg.text_dim))
    return latents, frame_t, text, jnp.ones((b, cfg.text_len), bool)


def test_untrained_reader_reads_no_motion_and_the_skip_is_the_reference():
    """Zero-initialised head: corners = the image corners, base = the reference; at t = 1 the x0 estimate of
    every video frame is its base."""
    model = mmdit.create_model(SMALL)
    latents, frame_t, text, mask = _inputs(SMALL)
    v, aux = flow.model_prediction(model, latents, frame_t, text, mask)
    np.testing.assert_allclose(np.asarray(aux["corners"]), np.broadcast_to(np.asarray(gr.CORNERS), (2, 3, 4, 2)))
    ref = np.asarray(latents[:, :1])
    np.testing.assert_allclose(np.asarray(aux["base"]), np.broadcast_to(ref, aux["base"].shape), atol=1e-5)
    x0 = np.asarray(latents) - np.asarray(v)  # x0 = x_t - t·v at t = 1
    np.testing.assert_allclose(x0[:, -3:], np.asarray(aux["base"]), atol=1e-4)


def test_the_skip_follows_the_reader():
    """A reader that reports motion moves the x0 estimate at t = 1 to the reference warped by that motion."""
    model = mmdit.create_model(SMALL)
    model.grid_reader.head[...] = 0.05 * jax.random.normal(jax.random.key(5), model.grid_reader.head.shape)
    latents, frame_t, text, mask = _inputs(SMALL)
    v, aux = flow.model_prediction(model, latents, frame_t, text, mask)
    assert np.abs(np.asarray(aux["corners"]) - np.asarray(gr.CORNERS)).max() > 1e-3
    want = gr.warp_reference(latents[:, 0], aux["corners"], 2)
    np.testing.assert_allclose(np.asarray(aux["base"]), np.asarray(want), atol=1e-5)
    x0 = np.asarray(latents) - np.asarray(v)
    np.testing.assert_allclose(x0[:, -3:], np.asarray(want), atol=1e-4)
    # the reader sees only the grid frames: changing the reference or the noisy video leaves its corners alone
    other = latents.at[:, 0].set(0.0).at[:, -3:].set(1.0)
    np.testing.assert_array_equal(np.asarray(model.read_grid(other)["corners"]), np.asarray(aux["corners"]))


def test_grid_reader_config_is_checked():
    with pytest.raises(Exception, match="grid_reader"):
        load_config(ROOT / "configs" / "tiny_cpu.yaml", ["model.grid_reader=true"])
    cfg = load_config(ROOT / "configs" / "demo_cpu.yaml", ["model.reader_channels=[8, 16, 32]"])
    assert cfg.model.reader_channels == (8, 16, 32)
    with pytest.raises(Exception, match="reader_unshuffle"):
        load_config(ROOT / "configs" / "demo_cpu.yaml", ["model.reader_unshuffle=2"])
    small = dataclasses.replace(SMALL, reader_channels=(8,))
    assert mmdit.create_model(small).grid_reader is not None


def test_same_shot_is_the_product_of_no_cut_chances():
    logits = np.array([[-3.0, 2.0, -1.0, 0.5], [-9.0, -9.0, 9.0, -9.0]])
    p = 1.0 / (1.0 + np.exp(-logits))
    want = np.cumprod(1.0 - p, axis=1)  # float64 reference
    np.testing.assert_allclose(np.asarray(gr.same_shot(jnp.asarray(logits, jnp.float32))), want, rtol=1e-5)


def test_shot_gate_fades_the_skip_after_a_cut():
    """model.reader_shot_gate: frames after a frame the reader calls a cut get base 0 (no reference); before it,
    the plain reader's warped reference. At init the head calls no cut (logit CUT_PRIOR)."""
    gated = dataclasses.replace(SMALL, reader_shot_gate=True)
    model = mmdit.create_model(gated)
    plain = mmdit.create_model(SMALL)  # same seed: the same weights but for the cut head
    latents, frame_t, text, mask = _inputs(gated, v=4)
    aux = model.read_grid(latents)
    np.testing.assert_allclose(np.asarray(aux["cut_logits"]), gr.GridReader.CUT_PRIOR, atol=1e-6)
    # a cut on the third video frame: it and every later frame leave the reference's shot
    logits = jnp.asarray([[-30.0, -30.0, 30.0, -30.0]] * 2)
    gate = np.asarray(gr.same_shot(logits))
    np.testing.assert_allclose(gate, [[1, 1, 0, 0]] * 2, atol=1e-6)
    model.grid_reader.cut_bias[...] = jnp.asarray([30.0])  # every frame a cut: no reference anywhere
    v, aux = flow.model_prediction(model, latents, frame_t, text, mask)
    np.testing.assert_allclose(np.asarray(aux["base"]), 0.0, atol=1e-6)
    x0 = np.asarray(latents) - np.asarray(v)  # at t = 1 the x0 estimate is the base: zero
    np.testing.assert_allclose(x0[:, -4:], 0.0, atol=1e-4)
    model.grid_reader.cut_bias[...] = jnp.asarray([-30.0])  # no cut: the plain reader's skip
    np.testing.assert_allclose(np.asarray(model.read_grid(latents)["base"]),
                               np.asarray(plain.read_grid(latents)["base"]), atol=1e-6)


def test_shot_gate_needs_the_reader():
    with pytest.raises(Exception, match="reader_shot_gate"):
        load_config(ROOT / "configs" / "tiny_cpu.yaml", ["model.reader_shot_gate=true"])


# model.reader_depth

DH, DW, SPACING, NEAR = 48, 64, 1.0, 3.0
K = np.array([[55.0, 0, 31.5], [0, 55.0, 23.5], [0, 0, 1]])


def _cameras(t=(0.25, -0.1, 0.2), deg=3.0):
    """Camera 0 at the origin; camera 1 turned `deg` about a tilted axis and moved by `t` (camera-0 units)."""
    r1 = _rot([0.2, 1, 0.1], deg)
    return np.stack([np.eye(3, 4), np.hstack([r1, r1 @ -np.asarray(t)[:, None]])])


def _corners(w2c, depth):
    """[2, 4, 2]: where frames 0 and 1's corners lie in frame 0, for the plane `depth` spacings ahead."""
    args = (jnp.asarray(w2c, jnp.float32), jnp.asarray(np.stack([K, K]), jnp.float32), jnp.float32(SPACING))
    return gr.plane_corners(*args, depth, height=DH, width=DW)


def _homography(w2c, depth):
    return gr.corners_to_homography(_corners(w2c, depth))[1]


def _plane_truth(image, w2c, z):
    """Frame 1 of a fronto-parallel plane at depth z (camera 0) textured with `image`: OpenCV's backward warp
    by the exact float64 homography K (R + t nᵀ / z) K⁻¹ (frame 0 -> frame 1)."""
    r, t = w2c[1, :, :3], w2c[1, :, 3]
    h01 = K @ (r + np.outer(t, [0.0, 0.0, 1.0]) / z) @ np.linalg.inv(K)
    return cv2.warpPerspective(image, np.linalg.inv(h01), (DW, DH), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)


def _texture(seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.uniform(0, 1, (DH, DW, 3)).astype(np.float32), (7, 7), 1.5)


def test_a_plane_at_any_depth_warps_like_its_exact_homography():
    """A plane at depth z has inverse-depth scale NEAR / z: the two-plane warp with that scale matches OpenCV's
    warp by the plane's exact homography (first order: much closer than either plane alone), and scales 1 and
    0 are the near plane's and the rotation's warps exactly."""
    image, w2c = _texture(), _cameras()
    near, far = _homography(w2c, NEAR), _homography(w2c, jnp.inf)
    img = jnp.asarray(image)
    for z in (1.5, 6.0, 30.0):
        want = _plane_truth(image, w2c, z)
        got, inside = gr.warp_depth(img, near, far, jnp.full((DH, DW), NEAR / z))
        got, inside = np.asarray(got), np.asarray(inside)
        assert inside[4:-4, 4:-4].mean() > 0.7
        m = np.zeros((DH, DW), bool)
        m[4:-4, 4:-4] = inside[4:-4, 4:-4]
        err = np.abs(got - want)[m].mean()
        one_plane = min(np.abs(np.asarray(gr.warp(img, h)) - want)[m].mean() for h in (near, far))
        assert err < 0.01 and err < 0.25 * one_plane, (z, err, one_plane)
    for scale, h in ((1.0, near), (0.0, far)):
        got, _ = gr.warp_depth(img, near, far, jnp.full((DH, DW), scale))
        np.testing.assert_allclose(np.asarray(got), np.asarray(gr.warp(img, h)), atol=1e-5)


def test_depth_net_starts_at_the_near_plane_and_stays_bounded():
    with nnx.use_eager_sharding(False):
        net = gr.DepthNet(3, 8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 16, 12, 3))
    np.testing.assert_allclose(np.asarray(net(x)), 1.0)
    net.out[...] = 100.0 * jax.random.normal(jax.random.key(1), net.out.shape)
    s = np.asarray(net(x))
    assert s.shape == (2, 16, 12)
    assert s.min() >= np.exp(-gr.DepthNet.BOUND) - 1e-6 and s.max() <= np.exp(gr.DepthNet.BOUND) + 1e-4
    assert s.std() > 0.1  # it varies over the image


def test_depth_reader_starts_as_the_one_plane_reader():
    """reader_depth adds a far head (a change of the near corners, zero at init) and a depth net (scale 1 at
    init): a model that gains them reads and warps as before, so it can be fine-tuned from one without."""
    depth_cfg = dataclasses.replace(SMALL, reader_depth=True, depth_channels=8)
    plain, deep = mmdit.create_model(SMALL), mmdit.create_model(depth_cfg)
    latents, *_ = _inputs(SMALL)
    a, b = plain.read_grid(latents), deep.read_grid(latents)
    np.testing.assert_array_equal(np.asarray(b["far_corners"]), np.asarray(b["corners"]))
    np.testing.assert_allclose(np.asarray(b["depth_scale"]), 1.0)
    np.testing.assert_allclose(np.asarray(b["base"]), np.asarray(a["base"]), atol=1e-5)
    # a trained far head and depth net: the base is the two-plane warp by what they read, not the one-plane warp
    deep.grid_reader.far_head[...] = 0.05 * jax.random.normal(jax.random.key(2), deep.grid_reader.far_head.shape)
    deep.depth_net.out[...] = jax.random.normal(jax.random.key(4), deep.depth_net.out.shape)
    b = deep.read_grid(latents)
    assert np.asarray(b["depth_scale"]).std() > 0.05
    want = gr.warp_reference(latents[:, 0], b["corners"], 2, b["far_corners"], b["depth_scale"])
    np.testing.assert_allclose(np.asarray(b["base"]), np.asarray(want), atol=1e-5)
    assert np.abs(np.asarray(b["base"]) - np.asarray(a["base"])).max() > 1e-2


def test_photometric_loss_is_lowest_at_the_true_depth():
    """The loss that teaches the depth: for a plane at depth 6 (scale 0.5) it is lowest near 0.5 and its
    gradient at the near plane's scale points there."""
    image, w2c = _texture(1), _cameras(t=(0.3, 0.05, 0.25))
    frames = np.stack([image, _plane_truth(image, w2c, 6.0)])
    corners_near, corners_far = _corners(w2c, NEAR)[None], _corners(w2c, jnp.inf)[None]
    valid = jnp.ones((1, 2))

    def loss(scale):
        return depth_photometric_loss(jnp.asarray(image)[None], jnp.asarray(frames)[None], corners_near,
                                      corners_far, jnp.full((1, DH, DW), scale), valid, 1)

    values = {s: float(loss(s)) for s in (0.0, 0.25, 0.5, 0.75, 1.0, 2.0)}
    assert min(values, key=values.get) == 0.5, values
    assert values[0.5] < 0.3 * values[1.0]
    assert float(jax.grad(loss)(1.0)) > 0  # descending lowers the scale toward 0.5


def test_reader_depth_config_is_checked():
    with pytest.raises(Exception, match="reader_depth"):
        load_config(ROOT / "configs" / "tiny_cpu.yaml", ["model.reader_depth=true"])
    cfg = load_config(ROOT / "configs" / "demo_cpu.yaml", ["model.reader_depth=true"])
    assert cfg.model.reader_depth and cfg.train.depth_weight == 1.0
