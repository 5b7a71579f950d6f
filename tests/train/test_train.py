"""The train step and loop on 8 virtual CPU devices: sharding, the on-device grid, resume, preemption, NaN stops,
restore onto another mesh. A small model (width 64, one block, 32x32 frames) keeps each compile short."""

import os
import signal
from pathlib import Path

import grain
import jax
import memory_data
import numpy as np
import pytest

from omnidirector_jax.camera import augment, raster
from omnidirector_jax.camera.render import camera_arrays, render_grid
from omnidirector_jax.camera.scene import DEFAULT_COLORS, build_scene, build_scene_jax, scene_arrays
from omnidirector_jax.camera.trajectory import Trajectory
from omnidirector_jax.config import load_config
from omnidirector_jax.parallel.mesh import make_mesh
from omnidirector_jax.train import conditions, loop
from omnidirector_jax.train.checkpoint import Checkpointer, CheckpointError
from omnidirector_jax.train.conditions import build_conditioner
from omnidirector_jax.train.state import init_state, make_layout
from omnidirector_jax.train.step import make_train_step

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model.hidden_size=64", "model.depth=1", "model.single_depth=0", "model.num_heads=2", "shape.height=32",
         "shape.width=32", "train.log_every=1", "checkpoint.every=2",
         "train.warmup_steps=2", "train.preview_every=0", "train.learning_rate=1e-3", "train.steps=10"]
# One train.steps for every test (runs stop early with max_steps): the schedule is part of the compiled step, so
# equal configs share one program through the persistent compilation cache.


def small_cfg(*overrides, devices=8):
    return load_config(ROOT / "configs" / "tiny_cpu.yaml", SMALL + list(overrides), num_devices=devices)


def _run(cfg, devices, steps=2):
    """Losses and final params of `steps` train steps on a mesh over `devices` (same data, same init)."""
    mesh = make_mesh(cfg.mesh, devices)
    layout = make_layout(cfg, mesh)
    state = init_state(layout)
    conditioner, frozen = build_conditioner(cfg)
    it = memory_data.iterator(cfg)
    batch = {k: v for k, v in next(it).items() if k in ("frames", "ref_image", "w2c", "K", "frame_shot",
                                                         "text_ids", "text_mask")}
    step = make_train_step(cfg, layout, conditioner, batch, frozen)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, frozen)
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state["params"]), metrics


def test_sharded_step_equals_single_device():
    one, params_one, _ = _run(small_cfg("mesh.data=1", devices=1), jax.devices()[:1])
    eight, params_eight, metrics = _run(small_cfg("mesh=fsdp"), jax.devices())
    np.testing.assert_allclose(eight, one, rtol=2e-5)
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params_one)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params_eight)])
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-5
    assert int(metrics["grid_overflow"]) == 0 and bool(metrics["finite"])


def test_grid_in_step_equals_renderer_and_jitter_moves_it():
    cfg = small_cfg("conditions.random_colors=false")
    ex = memory_data.examples(cfg, count=2)
    w2c = np.stack([e["w2c"] for e in ex])
    K = np.stack([e["K"] for e in ex])
    shot = np.zeros(w2c.shape[:2], np.int32)
    shot[1, 2] = -1  # a cut in the second clip: frame 2 white, frames 3-4 a new shot with its own room
    shot[1, 3:] = 1
    c, s = cfg.conditions, cfg.shape
    frames, overflow = conditions.render_grids(jax.random.key(3), w2c, K, shot, height=s.height, width=s.width,
                                               c=c, jitter=False)
    assert np.all(np.asarray(overflow) == 0)
    got = np.asarray(jax.numpy.round(frames * 255)).astype(np.uint8)
    for i in range(2):
        cuts = [2] if i == 1 else []
        traj = Trajectory.create(w2c[i].astype(np.float64), height=s.height, width=s.width, K=K[i], cuts=cuts)
        want = render_grid(traj)
        diff = np.abs(got[i].astype(int) - want.astype(int))
        assert diff.mean() < 0.05 and diff.max() <= 2, (i, diff.mean(), diff.max())
    assert np.all(got[1, 2] == 255)

    # Jitter: the step's picture is the renderer's picture of the jittered cameras, and the cameras move by the
    # configured amount (rotation noise of std rotation_deg per axis).
    jittered, _ = conditions.render_grids(jax.random.key(3), w2c, K, shot, height=s.height, width=s.width, c=c)
    assert np.abs(np.asarray(jittered) - np.asarray(frames)).mean() > 1e-3
    key0 = jax.random.split(jax.random.key(3), 2)[0]
    k_jitter, _ = jax.random.split(key0)

    room = build_scene_jax(w2c[0], shot[0], lattice=c.lattice, max_segments=c.room_segments, max_shots=c.max_shots)
    moved = np.asarray(augment.jitter_poses(k_jitter, w2c[0], room["spacing"][0], rotation_deg=c.jitter_rotation_deg,
                                            translation=c.jitter_translation, knot_frames=c.jitter_knot_frames))
    # The room stays where the clean cameras put it; only the cameras move.
    clean = Trajectory.create(w2c[0].astype(np.float64), height=s.height, width=s.width, K=K[0])
    scene = build_scene(clean)
    moved_traj = Trajectory.create(moved.astype(np.float64), height=s.height, width=s.width, K=K[0])
    want, _ = raster.render_frames(scene_arrays(scene), camera_arrays(moved_traj, scene), DEFAULT_COLORS,
                                   height=s.height, width=s.width, uint8=True)
    want = np.asarray(want)
    got_j = np.asarray(jax.numpy.round(jittered[0] * 255)).astype(np.uint8)
    assert np.abs(got_j.astype(int) - want.astype(int)).mean() < 0.05
    angles = []
    for k in jax.random.split(jax.random.key(7), 64):
        m = np.asarray(augment.jitter_poses(k, w2c[0], room["spacing"][0], rotation_deg=1.0, translation=0.0))
        rel = m[:, :, :3] @ np.swapaxes(w2c[0][:, :, :3], 1, 2)
        angles.append(np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))))
    rms = float(np.sqrt(np.mean(np.square(angles))))
    assert 0.6 * np.sqrt(3) < rms < 1.4 * np.sqrt(3), rms


def test_step_grid_follows_the_configured_room():
    """`room` reaches the train step: its grid is the renderer's picture of that room, not the design's."""
    cfg = small_cfg("conditions.random_colors=false", "room.view_steps=6", "room.min_view=6", "room.floor_min=1.0",
                    "room.floor_steps=1.5")
    ex = memory_data.examples(cfg, count=1)
    w2c, K = ex[0]["w2c"][None], ex[0]["K"][None]
    shot = np.zeros(w2c.shape[:2], np.int32)
    s = cfg.shape
    frames, overflow = conditions.render_grids(jax.random.key(3), w2c, K, shot, height=s.height, width=s.width,
                                               c=cfg.conditions, jitter=False, grid=cfg.room)
    assert int(np.asarray(overflow).sum()) == 0
    got = np.asarray(jax.numpy.round(frames[0] * 255)).astype(int)
    traj = Trajectory.create(w2c[0].astype(np.float64), height=s.height, width=s.width, K=K[0])
    assert np.abs(got - render_grid(traj, grid=cfg.room).astype(int)).mean() < 0.05
    assert np.abs(got - render_grid(traj).astype(int)).mean() > 1.0
    with pytest.raises(Exception, match="room"):
        small_cfg("room.view_step=6")  # misspelt key
    with pytest.raises(Exception, match="room"):
        small_cfg("room.min_view=0")


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    cfg = small_cfg("mesh=fsdp")
    full = loop.train(cfg, tmp_path / "full", data=memory_data.iterator(cfg), progress=False, max_steps=4)
    first = loop.train(cfg, tmp_path / "split", data=memory_data.iterator(cfg), progress=False, max_steps=2)
    assert first.reason == "max_steps" and first.last_checkpoint == 2
    second = loop.train(cfg, tmp_path / "split", data=memory_data.iterator(cfg), progress=False, max_steps=2)
    assert second.start_step == 2 and second.final_step == 4
    resumed = {**first.losses, **second.losses}
    assert resumed == full.losses  # bit for bit
    rows = [r for r in map(eval_json, (tmp_path / "full" / "metrics.jsonl").read_text().splitlines())]
    assert {"step", "loss", "grad_norm", "lr", "step_s", "data_wait_s", "tflops_per_device", "mfu"} <= set(rows[0])
    assert (tmp_path / "full" / "loss.png").is_file() and list((tmp_path / "full" / "tb").iterdir())


def eval_json(line):
    import json

    return json.loads(line)


class _SigtermAt(grain.DatasetIterator):
    """Data iterator that sends this process a real SIGTERM when batch `at` is drawn."""

    def __init__(self, inner, at):
        super().__init__(inner)
        self.inner, self.at, self.count = inner, at, 0

    def __next__(self):
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def test_sigterm_saves_and_next_run_resumes(tmp_path):
    cfg = small_cfg("checkpoint.every=100", "mesh=fsdp")
    first = loop.train(cfg, tmp_path, data=_SigtermAt(memory_data.iterator(cfg), 3), progress=False)
    assert first.reason == "sigterm" and first.final_step == 3 and first.last_checkpoint == 3
    assert Checkpointer(tmp_path / "checkpoints", cfg.checkpoint, read_only=True).latest_step() == 3
    second = loop.train(cfg, tmp_path, data=memory_data.iterator(cfg), progress=False, max_steps=3)
    assert second.start_step == 3 and second.final_step == 6


def test_non_finite_steps_stop_with_last_good_checkpoint(tmp_path):
    # lr 0 at step 1 (warm-up), then an absurd one: step 2's update makes the parameters overflow the
    # forward pass, so steps 3 and 4 are non-finite and skipped, and the run stops after max_bad_steps = 2.
    cfg = small_cfg("train.max_bad_steps=2", "train.learning_rate=1e30", "mesh=fsdp")
    summary = loop.train(cfg, tmp_path, data=memory_data.iterator(cfg), progress=False)
    assert summary.reason == "non_finite"
    assert summary.last_checkpoint == 2
    assert Checkpointer(tmp_path / "checkpoints", cfg.checkpoint, read_only=True).all_steps() == [2]
    assert np.isfinite(summary.losses[1]) and np.isfinite(summary.losses[2])
    assert not np.isfinite(summary.losses[3]) and not np.isfinite(summary.losses[4])
    assert max(summary.losses) == 4
    rows = [eval_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["bad_steps"] for r in rows if r["step"] >= 3] == [1.0, 2.0]


def test_restore_onto_another_mesh_gives_the_same_loss(tmp_path):
    cfg = small_cfg("mesh=data")
    loop.train(cfg, tmp_path, data=memory_data.iterator(cfg), progress=False, max_steps=2)
    losses = {}
    for preset in ("data", "fsdp_tensor"):
        other = small_cfg(f"mesh={preset}")
        mesh = make_mesh(other.mesh)
        layout = make_layout(other, mesh)
        ckpt = Checkpointer(tmp_path / "checkpoints", other.checkpoint, read_only=True)
        it = memory_data.iterator(other)
        state = ckpt.restore(2, layout.abstract, it)
        conditioner, frozen = build_conditioner(other)
        batch = {k: v for k, v in next(it).items() if k not in ("dist", "valid", "index")}
        step = make_train_step(other, layout, conditioner, batch, frozen)
        _, metrics = step(state, batch, frozen)
        losses[preset] = float(metrics["loss"])
        specs = [sh.spec for sh in jax.tree.leaves(layout.shardings["params"])]
        assert any(any(spec) for spec in specs) == (preset != "data")  # really sharded differently
    np.testing.assert_allclose(losses["fsdp_tensor"], losses["data"], rtol=1e-5)


def test_incompatible_checkpoint_is_refused(tmp_path):
    cfg = small_cfg("mesh=fsdp")
    loop.train(cfg, tmp_path, data=memory_data.iterator(cfg), progress=False, max_steps=2)
    bigger = small_cfg("mesh=fsdp", "model.hidden_size=128")
    with pytest.raises(CheckpointError, match="model.hidden_size"):
        loop.train(bigger, tmp_path, data=memory_data.iterator(bigger), progress=False)


def test_wrong_data_shape_fails_at_start(tmp_path):
    cfg = small_cfg()
    data_cfg = small_cfg("shape.height=64", "shape.width=64")
    with pytest.raises(loop.TrainingError, match="frames"):
        loop.train(cfg, tmp_path, data=memory_data.iterator(data_cfg), progress=False)


READER = ["model.prediction=x0_residual", "model.grid_inject=true", "model.grid_reader=true",
          "model.reader_unshuffle=4", "model.reader_channels=[16, 32, 32]", "model.reader_hidden=64"]


def test_reader_targets_are_the_cameras_plane_homography():
    """The grid reader's supervision: the true cameras' corners in frame 0 (grid_reader.plane_corners with the
    room spacing the step rendered with); no motion where the grid is blanked; no weight across a cut."""
    from omnidirector_jax.models import grid_reader
    from omnidirector_jax.train.step import reader_targets

    cfg = small_cfg(*READER)
    ex = memory_data.examples(cfg, count=2)
    batch = {"w2c": np.stack([e["w2c"] for e in ex]), "K": np.stack([e["K"] for e in ex]),
             "frame_shot": np.zeros((2, cfg.shape.frames), np.int32)}
    batch["frame_shot"][0, 3] = -1
    batch["frame_shot"][0, 4] = 1
    s = cfg.shape
    _, _, spacing = conditions.render_grids(jax.random.key(0), batch["w2c"], batch["K"], batch["frame_shot"],
                                            height=s.height, width=s.width, c=cfg.conditions, jitter=False,
                                            grid=cfg.room, with_spacing=True)
    got = reader_targets(cfg, batch, spacing, np.array([False, True]))
    want = grid_reader.plane_corners(batch["w2c"][0], batch["K"][0], spacing[0], cfg.model.reader_plane_depth,
                                     height=s.height, width=s.width)
    np.testing.assert_allclose(np.asarray(got["reader_corners"][0]), np.asarray(want), atol=1e-6)
    assert np.abs(np.asarray(want[1:]) - np.asarray(grid_reader.CORNERS)).max() > 1e-3  # the camera moves
    np.testing.assert_array_equal(np.asarray(got["reader_corners"][1]),
                                  np.broadcast_to(np.asarray(grid_reader.CORNERS), (s.frames, 4, 2)))
    np.testing.assert_array_equal(np.asarray(got["reader_weight"]), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(np.asarray(got["reader_cut"]), [[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])  # drawn cuts


def test_the_grid_reader_learns_in_the_step():
    """model.grid_reader in the train step: its corner loss is reported and falls while the model trains."""
    cfg = small_cfg(*READER, "mesh.data=1", "train.self_recon_prob=0", "train.drop_grid_prob=0",
                    "train.learning_rate=3e-3", devices=1)
    first, last = _reader_losses(cfg)
    assert last < 0.7 * first, (first, last)


def test_the_shot_gate_learns_to_see_cuts_in_the_step():
    """model.reader_shot_gate: the cut loss (white grid frames of the clip's cuts) is reported and falls."""
    cfg = small_cfg(*READER, "model.reader_shot_gate=true", "mesh.data=1", "train.self_recon_prob=0",
                    "train.drop_grid_prob=0", "train.learning_rate=3e-3", devices=1)
    first, last = _reader_losses(cfg, "loss_cut", cut_at=2, steps=100)
    prior = 0.5 / cfg.shape.frames  # share of cut frames in the batch
    blind = -(prior * np.log(prior) + (1 - prior) * np.log(1 - prior))  # best loss without looking at the grid
    assert last < 0.5 * blind < first, (first, last, blind)


def _reader_losses(cfg, metric="loss_reader", cut_at=None, steps=40):
    mesh = make_mesh(cfg.mesh, jax.devices()[:1])
    layout = make_layout(cfg, mesh)
    state = init_state(layout)
    conditioner, frozen = build_conditioner(cfg)
    batch = {k: v for k, v in next(memory_data.iterator(cfg)).items()
             if k in ("frames", "ref_image", "w2c", "K", "frame_shot", "text_ids", "text_mask")}
    if cut_at is not None:  # half the clips cut at `cut_at`: a white grid frame, then shot 1
        shots = np.array(batch["frame_shot"])
        half = shots.shape[0] // 2
        shots[:half, cut_at], shots[:half, cut_at + 1:] = -1, 1
        batch["frame_shot"] = shots
    step = make_train_step(cfg, layout, conditioner, batch, frozen)
    seen = []
    for _ in range(steps):
        state, metrics = step(state, batch, frozen)
        assert bool(metrics["finite"])
        seen.append(float(metrics[metric]))
    return np.mean(seen[:3]), np.mean(seen[-3:])


def test_reader_depth_targets_and_loss_in_the_step():
    """model.reader_depth: the far plane's target is the rotation's homography (plane at infinity, unmoved where
    the grid is blanked); the true cameras' corners feed the photometric loss whatever the grid; one step
    reports loss_depth and moves the depth net."""
    from omnidirector_jax.models import grid_reader
    from omnidirector_jax.train.step import reader_targets

    cfg = small_cfg(*READER, "model.reader_depth=true", "model.depth_channels=8", "mesh.data=1",
                    "train.self_recon_prob=0", devices=1)
    ex = memory_data.examples(cfg, count=2)
    batch = {"w2c": np.stack([e["w2c"] for e in ex]), "K": np.stack([e["K"] for e in ex]),
             "frame_shot": np.zeros((2, cfg.shape.frames), np.int32)}
    s = cfg.shape
    spacing = np.array([0.5, 0.5], np.float32)
    got = reader_targets(cfg, batch, spacing, np.array([False, True]))
    for i in range(2):
        far = grid_reader.plane_corners(batch["w2c"][i], batch["K"][i], spacing[i], np.inf, height=s.height,
                                        width=s.width)
        np.testing.assert_allclose(np.asarray(got["depth_far"][i]), np.asarray(far), atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["reader_far"][0]), np.asarray(got["depth_far"][0]))
    np.testing.assert_array_equal(np.asarray(got["reader_far"][1]),
                                  np.broadcast_to(np.asarray(grid_reader.CORNERS), (s.frames, 4, 2)))
    assert np.abs(np.asarray(got["depth_near"][0]) - np.asarray(got["depth_far"][0])).max() > 1e-3  # a dolly
    np.testing.assert_allclose(np.asarray(got["depth_near"][1]), np.asarray(got["depth_far"][1]), atol=1e-5)  # pan
    np.testing.assert_array_equal(np.asarray(got["depth_valid"]), 1.0)
    assert "depth_label" not in got  # no depth in the batch: the photometric loss alone
    z = np.full((2, s.height, s.width), 2.0, np.float32)
    z[0, :4] = np.nan  # unknown rows
    z[1] *= 3.0
    got = reader_targets(cfg, {**batch, "ref_depth": z}, spacing, np.array([False, True]))
    want = np.log(cfg.model.reader_plane_depth * spacing[:, None, None] / z)  # near plane z over the true z
    mask = np.isfinite(z)
    np.testing.assert_array_equal(np.asarray(got["depth_label_mask"]), mask.astype(np.float32))
    np.testing.assert_allclose(np.asarray(got["depth_label"])[mask], want[mask], rtol=1e-6)

    mesh = make_mesh(cfg.mesh, jax.devices()[:1])
    layout = make_layout(cfg, mesh)
    state = init_state(layout)
    before = np.array(state["params"]["depth_net"]["out"], copy=True)
    conditioner, frozen = build_conditioner(cfg)
    batch = {k: v for k, v in next(memory_data.iterator(cfg)).items()
             if k in ("frames", "ref_image", "w2c", "K", "frame_shot", "text_ids", "text_mask")}
    batch["ref_depth"] = np.full((cfg.shape.batch_size, s.height, s.width), 1.5, np.float32)
    step = make_train_step(cfg, layout, conditioner, batch, frozen)
    for _ in range(2):  # the first step's learning rate is 0 (warm-up)
        state, metrics = step(state, batch, frozen)
    assert bool(metrics["finite"]) and float(metrics["loss_depth"]) > 0 and float(metrics["loss_depth_label"]) > 0
    assert np.abs(np.asarray(state["params"]["depth_net"]["out"]) - before).max() > 0


def test_init_from_a_model_export_fine_tunes_what_the_config_adds(tmp_path):
    """init.from an export (params.npz): the export's parameters where the model has them, a fresh init for the
    parts the config adds; parameters the model lacks or of another shape are refused by name."""
    from flax import nnx

    from omnidirector_jax.train.export import flatten_params, write_export
    from omnidirector_jax.train.state import create_model

    plain = small_cfg(*READER, devices=1)
    params = nnx.state(create_model(plain.model, seed=3)).to_pure_dict()
    write_export(plain, params, tmp_path / "plain", dtype="float32")
    deep = small_cfg(*READER, "model.reader_depth=true", "model.depth_channels=8", f"init.from={tmp_path / 'plain'}",
                     devices=1)
    got = flatten_params(loop.load_init_params(deep, None))
    want, fresh = flatten_params(params), flatten_params(nnx.state(create_model(deep.model)).to_pure_dict())
    assert set(got) == set(fresh) and set(got) - set(want) == {k for k in fresh if k.startswith("depth_net/")} | {
        "grid_reader/far_head"}
    for k, v in got.items():
        np.testing.assert_array_equal(v, want[k] if k in want else fresh[k])
    write_export(deep, nnx.state(create_model(deep.model)).to_pure_dict(), tmp_path / "deep", dtype="float32")
    with pytest.raises(loop.TrainingError, match="does not have: .*depth_net"):
        loop.load_init_params(small_cfg(*READER, f"init.from={tmp_path / 'deep'}", devices=1), None)
    with pytest.raises(loop.TrainingError, match="another shape"):
        loop.load_init_params(small_cfg(*READER, "model.reader_hidden=32", f"init.from={tmp_path / 'plain'}",
                                        devices=1), None)
