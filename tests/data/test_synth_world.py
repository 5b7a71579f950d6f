"""The procedural world renderer: camera geometry, determinism, cuts, texture detail, CLI."""

import cv2
import numpy as np
import pytest

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory, save_trajectory
from omnidirector_jax.cli import main
from omnidirector_jax.data import sample_trajectories as st
from omnidirector_jax.data.synth_world import build_world, frame_sources, render_trajectory, render_world_frames
from omnidirector_jax.errors import OmniDirectorError

H, W = 72, 128


def test_rotation_about_the_centre_is_a_homography_of_the_image():
    """A camera that only rotates sees K R K⁻¹-warped images: checks K, w2c and pixel-centre conventions."""
    K = poses.default_intrinsics(H, W)
    rel = poses.rotation_from_euler_deg(3.0, 6.0, 2.0)
    w2c = np.stack([np.eye(3, 4), np.concatenate([rel, np.zeros((3, 1))], axis=1)])
    world = build_world(w2c, np.random.default_rng(3))
    a, b = render_world_frames(world, w2c, np.stack([K, K]), H, W)
    homography = K @ rel @ np.linalg.inv(K)
    warped = cv2.warpPerspective(a, homography, (W, H), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.full((H, W), 255, np.uint8), homography, (W, H)) == 255
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    err_warped = np.abs(warped.astype(float) - b)[inside].mean()
    err_plain = np.abs(a.astype(float) - b)[inside].mean()
    # The same rotation the other way round (a wrong convention) must not explain the image.
    wrong = cv2.warpPerspective(a, K @ rel.T @ np.linalg.inv(K), (W, H))
    err_wrong = np.abs(wrong.astype(float) - b)[inside].mean()
    assert inside.mean() > 0.5
    assert err_warped < 0.3 * err_plain and err_warped < 0.3 * err_wrong, (err_warped, err_plain, err_wrong)


def test_render_is_deterministic_and_seeded():
    traj = st.named("dolly", height=H, width=W, num=6)
    a = render_trajectory(traj, seed=1)
    assert a.shape == (6, H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, render_trajectory(traj, seed=1))
    assert np.abs(a.astype(int) - render_trajectory(traj, seed=2)).mean() > 10  # another room
    assert 30 < a.mean() < 220 and a.std() > 25  # neither black nor washed out


def test_multi_shot_cuts_are_hard_switches_to_a_new_room():
    traj = st.multi_shot([st.dolly(5, 0.5), st.truck(5, 0.5)], height=H, width=W)
    assert traj.cuts == (5,)
    shot_of, cam_of = frame_sources(traj)
    np.testing.assert_array_equal(shot_of, [0] * 5 + [1] * 6)
    assert cam_of[5] == 6  # the cut frame shows the next shot's first camera
    frames = render_trajectory(traj, seed=0)
    np.testing.assert_array_equal(frames[5], frames[6])  # same room, same camera
    # Rooms of consecutive shots have different dominant colours: the switch dwarfs in-shot changes.
    mean_rgb = frames.reshape(len(frames), -1, 3).mean(axis=1)
    change = np.linalg.norm(np.diff(mean_rgb, axis=0), axis=1)
    assert change[4] > 4 * max(change[:4].max(), change[5:].max()), change
    # A trajectory that ends with a cut shows the last shot's last camera there.
    tail = Trajectory.create(traj.w2c, height=H, width=W, cuts=[5, 10])
    shot_of, cam_of = frame_sources(tail)
    assert shot_of[10] == 1 and cam_of[10] == 9


def test_textures_have_detail_for_feature_matching():
    traj = st.named("orbit", height=144, width=256, num=2)
    frame = render_trajectory(traj, seed=0)[0]
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    sift = cv2.SIFT_create(contrastThreshold=0.01).detect(gray, None)  # the VO's setting
    corners = cv2.goodFeaturesToTrack(gray, 1000, 0.01, 5)
    orb = cv2.ORB_create(1000).detect(gray, None)
    assert len(sift) > 400 and len(corners) > 300 and len(orb) > 150, (len(sift), len(corners), len(orb))


def test_objects_keep_clear_of_the_cameras():
    w2c = st.dolly(20, 2.0)
    world = build_world(w2c, np.random.default_rng(0))
    centers = poses.camera_centers(w2c)
    assert np.all(world.room_lo < centers.min(0)) and np.all(world.room_hi > centers.max(0))
    d_box = np.linalg.norm(np.maximum(np.maximum(world.box_lo[:, None] - centers, centers - world.box_hi[:, None]),
                                      0.0), axis=-1)
    d_sph = np.linalg.norm(world.spheres[:, None, :3] - centers, axis=-1) - world.spheres[:, None, 3]
    assert d_box.min() > 0.1 and d_sph.min() > 0.1


def test_fisheye_is_refused():
    traj = st.named("dolly", height=H, width=W, num=3).with_fisheye([0.1, 0.0, 0.0, 0.0])
    with pytest.raises(OmniDirectorError, match="pinhole"):
        render_trajectory(traj)


def test_synth_cli(tmp_path, capsys):
    traj = st.multi_shot([st.dolly(4, 0.4), st.pan(4, 10.0)], height=H, width=W)
    save_trajectory(traj, tmp_path / "t.json")
    assert main(["synth", str(tmp_path / "t.json"), "--out", str(tmp_path / "v.npz"), "--seed", "3"]) == 0
    frames = np.load(tmp_path / "v.npz")["frames"]
    assert frames.shape == (9, H, W, 3)
    np.testing.assert_array_equal(frames, render_trajectory(traj, seed=3))
    assert main(["synth", str(tmp_path / "t.json"), "--out", str(tmp_path / "v.mp4"), "--size", "36x64"]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 9 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 64
    cap.release()
    assert "cuts [4]" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "t.json"), "--out", str(tmp_path / "v.mp4"), "--size", "big"]) == 2
    assert main(["synth", str(tmp_path / "missing.json"), "--out", str(tmp_path / "v.mp4")]) == 2


def test_depth_maps_carry_one_view_onto_another():
    """render_world_depth: each pixel of view 1 lifted to 3D by its depth and projected into view 0 (float64
    NumPy, cv2.remap) finds its own colour there; the scene's median depth as one plane explains it far worse."""
    from omnidirector_jax.data.synth_world import render_world_depth

    K = poses.default_intrinsics(H, W)
    rel = poses.rotation_from_euler_deg(2.0, -4.0, 1.0)
    t = np.array([0.35, -0.1, 0.25])
    w2c = np.stack([np.eye(3, 4), np.concatenate([rel, (rel @ -t)[:, None]], axis=1)])
    world = build_world(w2c, np.random.default_rng(5))
    frames = render_world_frames(world, w2c, np.stack([K, K]), H, W)
    depth = render_world_depth(world, w2c, np.stack([K, K]), H, W)
    assert depth.shape == (2, H, W) and depth.dtype == np.float32 and np.all(depth > 0)

    def into_view0(z):
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
        rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T  # camera-1 rays, z = 1
        points = rays * z[..., None]  # camera 1
        world_pts = (points - w2c[1, :, 3]) @ w2c[1, :, :3]  # Rᵀ (p − t)
        p0 = world_pts @ K.T  # camera 0 is the world frame
        uv = (p0[..., :2] / p0[..., 2:]).astype(np.float32)
        warped = cv2.remap(frames[0], uv[..., 0], uv[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=(-1, -1, -1))
        inside = (uv[..., 0] >= 0) & (uv[..., 0] <= W - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= H - 1)
        return warped.astype(float), inside

    true_warp, inside = into_view0(depth[1].astype(np.float64))
    flat_warp, flat_inside = into_view0(np.full((H, W), float(np.median(depth[1]))))
    both = inside & flat_inside
    assert both.mean() > 0.5
    err_true = np.median(np.abs(true_warp - frames[1]).mean(-1)[both])
    err_flat = np.median(np.abs(flat_warp - frames[1]).mean(-1)[both])
    assert err_true < 0.5 * err_flat, (err_true, err_flat)
    depth_again = render_trajectory(Trajectory.create(w2c, np.stack([K, K]), height=H, width=W), seed=0,
                                    with_depth=True)[1]
    assert depth_again.shape == (2, H, W) and np.isfinite(depth_again).all()
