"""The JAX rasterizer against independent references: OpenCV projection and cv2.line(LINE_AA)."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnidirector_jax.camera import poses, raster
from omnidirector_jax.camera.augment import jitter_poses, random_colors
from omnidirector_jax.camera.raster import composite, primitives, scatter
from omnidirector_jax.camera.reference import render_grid_reference
from omnidirector_jax.camera.render import camera_arrays, render_grid
from omnidirector_jax.camera.scene import DEFAULT_COLORS, build_scene, build_scene_jax, scene_arrays
from omnidirector_jax.camera.trajectory import Trajectory, load_trajectory

TRAJ_DIR = "data/trajectories"


def _points(rng, n=500):
    return np.stack([rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(0.2, 8, n)], -1)


def test_pinhole_projection_matches_opencv():
    rng = np.random.default_rng(0)
    pts = _points(rng)
    K = np.array([[600.0, 0.0, 415.5], [0.0, 580.0, 239.5], [0, 0, 1]])
    ref, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, None)
    got = raster.project_points(jnp.asarray(pts, jnp.float32), jnp.asarray(K, jnp.float32), None)
    assert np.abs(np.asarray(got, np.float64) - ref.reshape(-1, 2)).max() < 1e-3


@pytest.mark.parametrize("dist", [[0.05, -0.01, 0.002, 0.0], [-0.2, 0.05, -0.01, 0.003]])
def test_fisheye_projection_matches_opencv(dist):
    rng = np.random.default_rng(1)
    pts = _points(rng)
    K = np.array([[300.0, 0.0, 415.5], [0.0, 300.0, 239.5], [0, 0, 1]])
    ref, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, np.array(dist))
    with jax.enable_x64(True):  # θ-polynomial in float64: the float32 path is checked on images below
        got = raster.project_points(jnp.asarray(pts), jnp.asarray(K), jnp.asarray(dist, jnp.float64))
    assert np.abs(np.asarray(got) - ref.reshape(-1, 2)).max() < 1e-3
    got32 = raster.project_points(jnp.asarray(pts, jnp.float32), jnp.asarray(K, jnp.float32),
                                  jnp.asarray(dist, jnp.float32))
    assert np.abs(np.asarray(got32, np.float64) - ref.reshape(-1, 2)).max() < 2e-2


def _draw_pair(a, b, thickness, h=120, w=160):
    """JAX 'opencv' profile vs cv2.line on the same white segments; both uint8 grey images."""
    n = len(a)
    cfg = raster.RasterConfig()
    seg = {"a": jnp.asarray(np.round(a * 16) / 16, jnp.float32), "b": jnp.asarray(np.round(b * 16) / 16, jnp.float32),
           "family": jnp.zeros(n, jnp.int32), "fog": jnp.ones(n), "thickness": jnp.asarray(thickness, jnp.float32),
           "keep": jnp.ones(n, bool)}
    acc, _ = scatter._raster_scatter(raster.make_primitives(seg, cfg)[None], h, w, cfg)
    got = np.asarray(raster.to_uint8(composite._composite(acc[0], jnp.ones((3, 3)))))[..., 0]
    ref = np.zeros((h, w, 3), np.uint8)
    for p, q, t in zip(a, b, thickness, strict=True):
        cv2.line(ref, tuple(int(v) for v in np.round(p * 16)), tuple(int(v) for v in np.round(q * 16)),
                 (255, 255, 255), int(t), cv2.LINE_AA, 4)
    return got.astype(float), ref[..., 0].astype(float)


@pytest.mark.parametrize("thickness", [1, 2, 3, 4])
def test_opencv_profile_matches_cv2_line_on_random_segments(thickness):
    rng = np.random.default_rng(thickness)
    n = 24  # dense enough that a quarter of the image is covered by lines
    a = rng.uniform([5, 5], [155, 115], (n, 2))
    b = a + rng.normal(0, 40, (n, 2))
    got, ref = _draw_pair(a, b, np.full(n, thickness))
    assert (ref > 0).mean() > 0.1
    # Mean over the whole image, in grey levels (these images are ~4x denser than a grid scene, whose
    # bound of 0.25 is checked below).
    assert np.abs(got - ref).mean() < 1.0
    # Per lit pixel the error stays small: the profile, not just the background, matches.
    lit = ref > 0
    assert np.abs(got - ref)[lit].mean() < 4.0


@pytest.mark.parametrize("name", ["dolly_in", "orbit_arc", "three_shots", "pan_right"])
def test_opencv_profile_matches_reference_on_grid_scenes(name):
    traj = load_trajectory(f"{TRAJ_DIR}/{name}.json")
    traj = Trajectory.create(traj.w2c[::4], traj.K[::4], height=traj.height, width=traj.width,
                             cuts=[c // 4 for c in traj.cuts if c % 4 == 0])
    scene = build_scene(traj)
    # The integer line centres (GPU/TPU default) here too: the same bound on every backend's formulation.
    assert np.abs(render_grid(traj, scene=scene, cfg=raster.RasterConfig(exact_centres=True)).astype(float)
                  - render_grid_reference(traj, scene=scene).astype(float)).mean() < 0.25
    got = render_grid(traj, scene=scene).astype(float)
    ref = render_grid_reference(traj, scene=scene).astype(float)
    assert (ref > 0).any(-1).mean() > 0.02
    assert np.abs(got - ref).mean() < 0.25


def test_fisheye_scene_matches_reference():
    traj = load_trajectory(f"{TRAJ_DIR}/fisheye_walk.json").resized(120, 208)
    traj = Trajectory.create(traj.w2c[::12], traj.K[::12], height=120, width=208, dist=traj.dist[::12])
    scene = build_scene(traj)
    # 4-px lines, as at full resolution (this small size would default to ~1-px lines).
    got = render_grid(traj, scene=scene, cfg=raster.RasterConfig(line_width=4.0)).astype(float)
    ref = render_grid_reference(traj, scene=scene, line_width=4.0).astype(float)
    assert (ref > 0).any(-1).mean() > 0.05
    # Float32 Kannala–Brandt differs from OpenCV's float64 by up to ~0.02 px, which shifts anti-aliasing
    # weights on these dense 16-piece curves: measured 1.46 grey levels at this size.
    assert np.abs(got - ref).mean() < 2.0


def test_cut_frames_are_pure_white_and_others_are_not():
    traj = load_trajectory(f"{TRAJ_DIR}/three_shots.json").resized(60, 104)
    frames = render_grid(traj)
    for t in range(traj.num_frames):
        if t in traj.cuts:
            assert (frames[t] == 255).all()
        else:
            assert (frames[t] == 255).all(-1).mean() < 0.01 and frames[t].max() > 0


def test_tiled_method_matches_scatter():
    traj = load_trajectory(f"{TRAJ_DIR}/orbit_arc.json").resized(96, 160)
    traj = Trajectory.create(traj.w2c[::8], traj.K[::8], height=96, width=160)
    scene = build_scene(traj)
    a = render_grid(traj, scene=scene).astype(float)
    b, overflow = render_grid(traj, scene=scene, cfg=raster.RasterConfig(method="tiled", tile_segments=96),
                              return_overflow=True)
    assert int(overflow.max()) == 0
    assert np.abs(a - b).mean() < 0.05 and np.abs(a - b).max() <= 2


@pytest.mark.parametrize("thickness,exact", [(1, None), (2, None), (4, None), (2, True)])
def test_scatter_passes_equal_the_per_pixel_formulas(thickness, exact):
    """The scatter method (edges by columns, fills by row spans) adds exactly what every primitive's per-pixel
    weight gives over the whole image, with nothing missed at span ends, line ends or the image border
    (line centres in floats, CPU's default, and in exact integers, the GPU/TPU default)."""
    h, w, n = 64, 96, 16
    rng = np.random.default_rng(10 + thickness)
    a = rng.uniform([-6, -6], [w + 6, h + 6], (n, 2))
    b = a + rng.normal(0, 30, (n, 2))
    cfg = raster.RasterConfig(exact_centres=exact)
    seg = {"a": jnp.asarray(np.round(a * 16) / 16, jnp.float32), "b": jnp.asarray(np.round(b * 16) / 16, jnp.float32),
           "family": jnp.asarray(rng.integers(0, 3, n), jnp.int32), "fog": jnp.ones(n),
           "thickness": jnp.full(n, float(thickness)), "keep": jnp.ones(n, bool)}
    prims = raster.make_primitives(seg, cfg)
    acc, overflow = scatter._raster_scatter(prims[None], h, w, cfg)
    yy, xx = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    live = np.flatnonzero(np.asarray(prims[:, primitives._F["live"]]) > 0.5)
    dense = np.zeros((h, w, 3))
    for i in live:
        fam = int(prims[i, primitives._F["family"]])
        dense[..., fam] += np.asarray(raster.primitive_weight(prims[i], xx, yy, cfg))
    assert int(overflow[0]) == 0 and (dense > 0).any(-1).mean() > 0.03
    np.testing.assert_allclose(np.moveaxis(np.asarray(acc[0].real), 0, -1), dense, atol=1e-3)  # (3, H, W) planes


def _subsampled(name, height, width, step):
    """A sample trajectory every ``step`` frames at ``height``×``width``: its scene and rasterizer inputs."""
    traj = load_trajectory(f"{TRAJ_DIR}/{name}.json").resized(height, width)
    traj = Trajectory.create(traj.w2c[::step], traj.K[::step], height=height, width=width)
    scene = build_scene(traj)
    return scene, scene_arrays(scene), camera_arrays(traj, scene)


def test_compaction_and_frame_groups_change_nothing():
    scene, arrays, cams = _subsampled("orbit_arc", 72, 128, 10)
    seen = np.asarray(raster.visible_segments(arrays, cams, height=72, width=128))
    assert 0 < seen.max() < scene.num_valid

    def render(**kw):
        return raster.render_frames(arrays, cams, DEFAULT_COLORS, height=72, width=128,
                                    cfg=raster.RasterConfig(**kw), uint8=True)

    full, over = render()
    for kw in ({"max_segments": int(seen.max())}, {"frame_batch": 3}, {"frame_batch": 2, "max_segments": 512}):
        got, got_over = render(**kw)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(full))
        assert int(np.asarray(got_over).max()) == 0
    # Into donated memory, reused across calls (the second call gets the first one's buffers back).
    cfg = raster.RasterConfig(max_segments=int(seen.max()), frame_batch=2)  # 2 frames per group, one padded
    out, scratch = jnp.zeros_like(full), raster.frame_scratch(72, 128, cfg)
    for _ in range(2):
        out, into_over, scratch = raster.render_frames_into(arrays, cams, DEFAULT_COLORS, out, scratch,
                                                            height=72, width=128, cfg=cfg)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(full))
        assert int(np.asarray(into_over).max()) == 0
    cut, cut_over = render(max_segments=int(seen.max()) - 5)  # too few: the rest is counted, not hidden
    np.testing.assert_array_equal(np.asarray(cut_over), np.maximum(seen - (seen.max() - 5), 0))
    assert int(np.asarray(over).max()) == 0


def test_pixel_budget_from_required_budget_is_exact_and_a_smaller_one_reports_overflow():
    _, arrays, cams = _subsampled("three_shots", 60, 104, 6)
    need = np.asarray(raster.required_budget(arrays, cams, height=60, width=104))
    assert need.max() > 0

    def render(budget):
        return raster.render_frames(arrays, cams, DEFAULT_COLORS, height=60, width=104, uint8=True,
                                    cfg=raster.RasterConfig(pixel_budget=budget, chunk=1 << 10))

    exact, _ = render(None)
    fitted, over = render(int(need.max()))
    np.testing.assert_array_equal(np.asarray(fitted), np.asarray(exact))
    assert int(np.asarray(over).max()) == 0
    _, over = render(int(need.max()) // 4)
    assert int(np.asarray(over).max()) > 0


def test_frames_split_over_devices_match_one_device():
    from omnidirector_jax.camera.render import fit_config, render_frames_sharded

    traj = load_trajectory(f"{TRAJ_DIR}/dolly_in.json").resized(48, 80)
    traj = Trajectory.create(traj.w2c[:11], traj.K[:11], height=48, width=80)  # 11 frames: padded per device
    scene = build_scene(traj)
    arrays, cams = scene_arrays(scene), camera_arrays(traj, scene)
    cfg = raster.RasterConfig(max_segments=256)
    assert len(jax.local_devices()) > 1  # the test session runs on 8 virtual CPU devices
    one, _ = raster.render_frames(arrays, cams, DEFAULT_COLORS, height=48, width=80, cfg=cfg, uint8=True)
    split, overflow = render_frames_sharded(arrays, cams, DEFAULT_COLORS, height=48, width=80, cfg=cfg)
    assert split.shape == (11, 48, 80, 3) and overflow.shape == (11,)
    np.testing.assert_array_equal(split, np.asarray(one))
    # Later calls render into the device memory the earlier ones kept: other frames in between, on one device
    # and on all, then the first frames again — each result is that call's own and stays intact after the next.
    rev = {k: v[::-1] for k, v in cams.items()}
    first_rev, _ = render_frames_sharded(arrays, rev, DEFAULT_COLORS, height=48, width=80, cfg=cfg)
    single, _ = render_frames_sharded(arrays, cams, DEFAULT_COLORS, height=48, width=80, cfg=cfg,
                                      devices=jax.local_devices()[:1])
    again, _ = render_frames_sharded(arrays, cams, DEFAULT_COLORS, height=48, width=80, cfg=cfg)
    np.testing.assert_array_equal(first_rev, np.asarray(one)[::-1])
    np.testing.assert_array_equal(single, np.asarray(one))
    np.testing.assert_array_equal(again, np.asarray(one))
    # Fewer frames than devices: the frames are dealt one per device, the rest of the devices repeat the last one.
    few, few_overflow = render_frames_sharded(arrays, {k: v[:3] for k, v in cams.items()}, DEFAULT_COLORS,
                                              height=48, width=80, cfg=cfg)
    assert few.shape == (3, 48, 80, 3) and few_overflow.shape == (3,)
    np.testing.assert_array_equal(few, np.asarray(one)[:3])
    # The culling pre-pass split over the devices sizes max_segments like the one-device pre-pass.
    base = raster.RasterConfig()
    assert (fit_config(arrays, cams, base, height=48, width=80)
            == fit_config(arrays, cams, base, height=48, width=80, devices=jax.local_devices()[:1]))


def _train_step_render(w2c, frame_shot, key, cfg, height=48, width=80):
    """What the train step does: jitter on device, build the room, random colours, rasterize."""
    scene = build_scene_jax(w2c, frame_shot, lattice=40, max_segments=1024)
    shot = jnp.maximum(frame_shot, 0)
    k_pose, k_col = jax.random.split(key)
    w2c = jitter_poses(k_pose, w2c, scene["spacing"][shot])
    K = jnp.broadcast_to(jnp.asarray(poses.default_intrinsics(height, width), jnp.float32), (w2c.shape[0], 3, 3))
    cams = {"w2c": w2c, "K": K, "dist": jnp.zeros((w2c.shape[0], 4)), "shot": frame_shot,
            "spacing": scene["spacing"][shot], "view": scene["view"][shot]}
    frames, _ = raster.render_frames(scene, cams, random_colors(k_col), height=height, width=width, cfg=cfg)
    return frames


def _batch(n=2, frames=6):
    w2c = np.tile(np.eye(4)[:3], (n, frames, 1, 1)).astype(np.float32)
    w2c[:, :, 2, 3] = -np.arange(frames) * 0.1 - 0.03
    w2c[1:, :, 0, 3] = 0.5
    return jnp.asarray(w2c), jnp.zeros((n, frames), jnp.int32)


def test_jit_and_vmap_over_a_batch_of_trajectories():
    w2c, shots = _batch()
    cfg = raster.RasterConfig(profile="smooth", pixel_budget=1 << 14, chunk=1 << 12)
    keys = jax.random.split(jax.random.key(0), 2)
    batched = jax.jit(jax.vmap(lambda w, s, k: _train_step_render(w, s, k, cfg)))(w2c, shots, keys)
    single = jax.jit(lambda w, s, k: _train_step_render(w, s, k, cfg))(w2c[1], shots[1], keys[1])
    assert batched.shape == (2, 6, 48, 80, 3)
    np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(single), atol=1e-5)
    assert float(batched.max()) > 0.2


def test_smooth_profile_gradient_wrt_camera_translation():
    traj = load_trajectory(f"{TRAJ_DIR}/dolly_in.json").resized(48, 80)
    traj = Trajectory.create(traj.w2c[:3], traj.K[:3], height=48, width=80)
    scene = build_scene(traj)
    cams = camera_arrays(traj, scene)
    cfg = raster.RasterConfig(profile="smooth", pixel_budget=1 << 14, chunk=1 << 12)
    target = np.asarray(render_grid(traj, scene=scene, cfg=cfg), np.float32) / 255.0

    def loss(shift):
        moved = dict(cams, w2c=jnp.asarray(cams["w2c"]).at[:, :, 3].add(shift))
        frames, _ = raster.render_frames(scene_arrays(scene), moved, DEFAULT_COLORS, height=48, width=80, cfg=cfg)
        return jnp.mean((frames - target) ** 2)

    grad = jax.grad(loss)(jnp.array([0.05, -0.03, 0.02]))
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).max()) > 0
    # The gradient points back towards the true pose: a small step along −grad lowers the loss.
    start = jnp.array([0.05, -0.03, 0.02])
    assert float(loss(start - 0.1 * grad / jnp.linalg.norm(grad) * 0.02)) < float(loss(start))


def test_augmentation_is_keyed_and_bounded():
    w2c, _ = _batch(1, 10)
    a = jitter_poses(jax.random.key(1), w2c[0], jnp.ones(10))
    b = jitter_poses(jax.random.key(1), w2c[0], jnp.ones(10))
    c = jitter_poses(jax.random.key(2), w2c[0], jnp.ones(10))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    rot = np.asarray(a[:, :, :3])
    np.testing.assert_allclose(np.swapaxes(rot, 1, 2) @ rot, np.tile(np.eye(3), (10, 1, 1)), atol=1e-5)
    assert np.abs(np.asarray(a) - np.asarray(w2c[0])).max() < 0.5
    cols = np.asarray(random_colors(jax.random.key(3)))
    assert cols.shape == (3, 3) and np.allclose(cols.max(1), 1.0) and cols.min() >= 0


def test_jitter_knot_frames_keeps_a_short_window_smooth():
    """knot_frames: a 5-frame window drifts as slowly as a long clip does (its frames lie in the first knot
    interval); spreading 4 knots over the same window shakes it. Against the noise drawn by hand."""
    w2c, _ = _batch(1, 5)
    key = jax.random.key(5)

    def angle_steps(m):  # degrees between consecutive frames' jitter rotations
        rel = np.asarray(m[:, :, :3]) @ np.swapaxes(np.asarray(w2c[0, :, :, :3]), 1, 2)
        d = np.swapaxes(rel[:-1], 1, 2) @ rel[1:]
        return np.degrees(np.arccos(np.clip((np.trace(d, axis1=1, axis2=2) - 1) / 2, -1, 1)))

    slow = jitter_poses(key, w2c[0], jnp.ones(5), translation=0.0, knot_frames=16)
    ctrl = np.asarray(jax.random.normal(jax.random.split(key)[0], (2, 3)), np.float64)  # 2 knots for 5 frames
    step = np.deg2rad(1.0) * np.linalg.norm(ctrl[1] - ctrl[0]) / 16  # rotation-vector change per frame
    np.testing.assert_allclose(angle_steps(slow), np.degrees(step), rtol=0.05, atol=1e-3)
    shaky = jitter_poses(key, w2c[0], jnp.ones(5), translation=0.0, knots=4)
    assert angle_steps(shaky).mean() > 3 * angle_steps(slow).mean()
    long = jitter_poses(key, jnp.tile(w2c[0, :1], (49, 1, 1)), jnp.ones(49), knot_frames=16)
    assert np.isfinite(np.asarray(long)).all()


def test_render_grid_pieces_many_shots_into_few_programs(monkeypatch):
    """Shots of any length render in pieces of ≤ 64 frames with one segment count and one max_segments, so a
    long multi-shot trajectory compiles at most four programs; the frames equal the whole trajectory rendered
    in one call against the full scene (no pieces, padding or compaction)."""
    from omnidirector_jax.camera import render

    lengths = [2, 9, 17, 40, 70, 130]
    t = np.arange(sum(lengths) + len(lengths) - 1)
    w2c = np.tile(np.eye(4)[:3], (len(t), 1, 1))
    w2c[:, 0, 3], w2c[:, 2, 3] = 0.3 * np.sin(t / 9.0), -0.05 * t
    cuts = np.cumsum(np.array(lengths[:-1]) + 1) - 1  # one transition frame between shots
    traj = Trajectory.create(w2c, height=24, width=40, cuts=cuts.tolist())
    assert [e - s for s, e in traj.shots()] == lengths
    scene = build_scene(traj)
    arrays, cams = scene_arrays(scene), camera_arrays(traj, scene)
    sizes = {len(p) for s, e in traj.shots() for p in render._shot_pieces(s, e)}
    assert sizes <= {16, 32, 48, 64}

    made = []  # the compiled renderers render_grid uses, to count their programs
    original = render._sharded_renderer

    def recording(*args):
        made.append(original(*args))
        return made[-1]

    monkeypatch.setattr(render, "_sharded_renderer", recording)
    frames = render_grid(traj, scene=scene)
    assert len(jax.local_devices()) > 1 and made
    assert sum(fn._cache_size() for fn in {id(f): f for f in made}.values()) <= len(sizes) <= 4
    whole, _ = raster.render_frames(arrays, cams, DEFAULT_COLORS, height=24, width=40, uint8=True)
    np.testing.assert_array_equal(frames, np.asarray(whole))
    assert (frames[cuts] == 255).all() and (frames[cuts + 1] < 255).any()


def test_fast_exponential_and_reciprocal_against_float64():
    """The composite's polynomial e^(−x) and Newton 1/x against NumPy float64, with their derivatives."""
    x = np.concatenate([[0.0, 1e-7, 1e-3], np.linspace(0.0, 90.0, 20001)]).astype(np.float32)
    got = np.asarray(composite._exp_neg(jnp.asarray(x)), np.float64)
    want = np.exp(-x.astype(np.float64))
    normal = x < 87.0  # below that e^(−x) is a normal float; beyond, it stays near 2^-126
    assert np.abs(got[normal] / want[normal] - 1.0).max() < 1.1e-4 and got[~normal].max() < 2.4e-38
    assert got[0] == 1.0 and float(composite._exp_neg(jnp.float32(200.0))) < 1e-37  # clamped at 2^-126, finite
    y = np.exp(np.random.default_rng(0).uniform(np.log(1e-6), np.log(1e12), 20000)).astype(np.float32)
    rec = np.asarray(composite._reciprocal(jnp.asarray(y)), np.float64)
    assert np.abs(rec * y.astype(np.float64) - 1.0).max() < 1e-5
    dexp = np.asarray(jax.vmap(jax.grad(composite._exp_neg))(jnp.asarray(x[:50])))
    np.testing.assert_allclose(dexp, -np.exp(-x[:50].astype(np.float64)), rtol=2e-4)
    drec = np.asarray(jax.vmap(jax.grad(composite._reciprocal))(jnp.asarray(y[:50])))
    np.testing.assert_allclose(drec, -1.0 / y[:50].astype(np.float64) ** 2, rtol=3e-5)


def test_composite_matches_float64_formula():
    """One fused pass with the fast functions gives the float64 compositing of the module docstring."""
    rng = np.random.default_rng(3)
    total = np.where(rng.random((3, 24, 40)) < 0.4, rng.exponential(2.0, (3, 24, 40)), 0.0)
    total[:, 0, :3] = [[1e-7, 30.0, 0.0]] * 3  # faint, saturated and empty pixels
    fogged = total * rng.uniform(0.05, 1.0, total.shape)
    colors = rng.random((3, 3))
    got = np.asarray(composite._composite(jnp.asarray(total + 1j * fogged, jnp.complex64), jnp.asarray(colors)))
    trans = np.exp(-total)
    paint = np.divide((1 - trans) * fogged, total, out=np.zeros_like(total), where=total > 0)
    x, z, v = (paint[f][..., None] * colors[f] for f in range(3))
    want = (x * trans[1][..., None] + z) * trans[2][..., None] + v
    assert np.abs(got - want).max() < 2e-4  # < 0.05 grey levels
