"""The room of design §3: constants on hand-checked cases, degenerate input, host and jittable builders agree."""

import jax.numpy as jnp
import numpy as np
import pytest

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.scene import FAMILY_VERTICAL, GridConfig, build_scene, build_scene_jax, shot_room
from omnidirector_jax.camera.trajectory import Trajectory


def _line_traj(n, step, offset=(0.013, 0.0, 0.021), cuts=()):
    w2c = np.tile(np.eye(4)[:3], (n, 1, 1))
    w2c[:, :3, 3] = -(np.asarray(offset) + np.stack([np.zeros(n), np.zeros(n), np.arange(n) * step], -1))
    return Trajectory.create(w2c, height=48, width=64, cuts=cuts)


def test_constants_for_a_straight_dolly():
    traj = _line_traj(20, 0.2)  # median step 0.2 → g = 2, v = 30, floor/ceiling ± 6
    room = shot_room(traj.centers(), GridConfig())
    assert room.spacing == pytest.approx(2.0) and room.view == pytest.approx(30.0)
    assert room.floor_y == pytest.approx(6.0) and room.ceiling_y == pytest.approx(-6.0)
    assert room.support == pytest.approx(16.0)
    assert room.tunnel_inner == pytest.approx(7.0) and room.tunnel_outer == pytest.approx(9.4)


def test_static_camera_uses_lower_bounds_and_hand_counted_room():
    scene = build_scene(_line_traj(5, 0.0, offset=(0.0, 0.0, 0.0)))
    assert scene.spacing[0] == pytest.approx(0.5) and scene.view[0] == pytest.approx(15.0)
    seg = scene.segments[scene.valid]
    fam = scene.family[scene.valid]
    # Floor at y = +2, ceiling at y = -2 (max(3g, 2) = 2); verticals span them.
    planar = seg[fam != FAMILY_VERTICAL]
    assert set(np.unique(planar[:, :, 1]).round(6)) == {-2.0, 2.0}
    vert = seg[fam == FAMILY_VERTICAL]
    assert np.allclose(vert[:, 0, 1], -2.0) and np.allclose(vert[:, 1, 1], 2.0)
    # Walls: nodes on the 0.5 lattice with 4 < r < 5 around the origin, counted by hand here.
    ij = np.arange(-12, 13) * 0.5
    r = np.hypot(*np.meshgrid(ij, ij))
    assert len(vert) == int(((r > 4) & (r < 5)).sum())
    # Planar support: nodes with r < 8; an X-segment is drawn when either end is kept (floor and ceiling).
    ij = np.arange(-20, 21) * 0.5
    x, z = np.meshgrid(ij, ij, indexing="ij")
    keep = np.hypot(x, z) < 8
    expected_x = int((keep[:-1] | keep[1:]).sum())
    assert (fam == 0).sum() == 2 * expected_x and (fam == 1).sum() == 2 * expected_x
    # Every node of a drawn segment lies on the grid of spacing 0.5.
    assert np.allclose(np.round(planar[:, :, [0, 2]] / 0.5) * 0.5, planar[:, :, [0, 2]], atol=1e-5)


@pytest.mark.parametrize("traj", [
    _line_traj(2, 0.3),  # a 2-frame shot
    _line_traj(6, 0.1, cuts=[4]),  # a 1-frame shot after the cut
    Trajectory.create(np.stack([np.concatenate([poses.rotation_from_euler_deg(0, a, 0), np.zeros((3, 1))], 1)
                                for a in range(0, 40, 5)]), height=48, width=64),  # pure rotation
])
def test_degenerate_trajectories_build(traj):
    scene = build_scene(traj)
    assert scene.num_valid > 0 and np.isfinite(scene.segments).all()
    assert len(scene.spacing) == len(traj.shots())
    assert set(np.unique(scene.shot[scene.valid])) == set(range(len(traj.shots())))


def test_jittable_builder_matches_host_builder():
    ang = np.linspace(0, 1.2, 30)
    eye = np.stack([3 * np.sin(ang) + 0.123, 0.05 * np.cos(ang * 3) + 0.031, 3 * np.cos(ang) - 0.077], -1)
    w2c = np.stack([poses.look_at_w2c(e, [0.1, 0, 0.2]) for e in eye])
    traj = Trajectory.create(w2c, height=48, width=64, cuts=[12])
    host = build_scene(traj)
    dev = build_scene_jax(jnp.asarray(w2c, jnp.float32), jnp.asarray(traj.shot_index()), max_shots=2,
                          max_segments=4096)
    assert int(dev["overflow"]) == 0
    np.testing.assert_allclose(np.asarray(dev["spacing"]), host.spacing, rtol=1e-5)
    a = np.round(host.segments[host.valid].reshape(-1, 6), 3)
    b = np.round(np.asarray(dev["segments"])[np.asarray(dev["valid"])].reshape(-1, 6), 3)
    assert sorted(map(tuple, a)) == sorted(map(tuple, b))


def test_default_line_width_follows_the_design_and_scales_down():
    from omnidirector_jax.camera.scene import default_line_width

    assert default_line_width(832) == 4.0  # max(4, W/320) at the model's width
    assert default_line_width(1920) == 6.0
    assert default_line_width(416) == 2.0  # half the width, half the line
    assert abs(default_line_width(160) - 4.0 * 160 / 832) < 1e-12
