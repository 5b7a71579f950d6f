"""Generation from a trajectory: export round trip, windows compiled once, cut frames white, CLI outputs and
bad input. A small randomly initialised model (nothing here says it follows cameras: the demo measures that)."""

from pathlib import Path

import jax
import numpy as np
import pytest

from omnidirector_jax.camera.trajectory import Trajectory
from omnidirector_jax.cli import main
from omnidirector_jax.data import sample_trajectories as samples
from omnidirector_jax.diffusion.generate import Job, generate_batch, generate_video, load_model
from omnidirector_jax.media import write_png
from omnidirector_jax.train.export import load_export

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def export(tiny_export):
    return tiny_export


def test_export_round_trip(export):
    path, params = export
    cfg, loaded = load_export(path)
    assert cfg.model.hidden_size == 64
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), b)


def test_generate_windows_cuts_and_one_compilation(export):
    path, _ = export
    model = load_model(path)
    traj = samples.multi_shot([samples.dolly(6, 1.0), samples.pan(5, 20.0)], 32, 32)  # 12 frames, cut at 6
    image = np.random.default_rng(1).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    result = generate_video(model, traj, image, "a room", seed=3)
    frames = result["frames"]
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8
    assert np.all(frames[6] == 255) and not np.all(frames[5] == 255)
    assert result["windows"] == [(0, 5), (5, 6), (7, 12)]  # shot by shot: no window holds the cut frame
    assert result["compilations"] == 1  # three windows, one program
    again = generate_video(model, traj, image, "a room", seed=3)["frames"]
    np.testing.assert_array_equal(again, frames)  # seeded


def test_each_shot_starts_from_the_reference_image(export):
    """A shot does not chain from the one before it: another camera in shot 1 leaves shot 2's frames as they
    were (both start from the reference image, and shot 2's grid is drawn in its own room)."""
    path, _ = export
    model = load_model(path)
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = samples.multi_shot([samples.dolly(7, 1.0), samples.pan(6, 20.0)], 32, 32)  # 14 frames, cut at 7
    b = samples.multi_shot([samples.pan(7, -30.0), samples.pan(6, 20.0)], 32, 32)
    ra = generate_video(model, a, image, "a room", seed=3)
    rb = generate_video(model, b, image, "a room", seed=3)
    assert ra["windows"] == rb["windows"] == [(0, 5), (5, 7), (8, 13), (13, 14)]
    np.testing.assert_array_equal(ra["grid"][8:], rb["grid"][8:])
    assert not np.array_equal(ra["frames"][:7], rb["frames"][:7])  # shot 1 did change
    np.testing.assert_array_equal(ra["frames"][8:], rb["frames"][8:])


def test_overlap_windows_share_a_frame_and_keep_it(export):
    """data.reference = overlap: each window starts at the previous one's last frame, which it takes as its
    reference and does not make again (the first window's frames are those of a one-window run)."""
    import dataclasses

    path, _ = export
    model = load_model(path)
    cfg = model.cfg
    model = dataclasses.replace(model, cfg=dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                                             reference="overlap")))
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    traj = samples.named("truck", 32, 32, num=12)
    long = generate_video(model, traj, image, "a room", seed=3)
    assert long["windows"] == [(0, 5), (4, 9), (8, 12)]
    assert long["compilations"] == 1
    first = Trajectory.create(traj.w2c[:5], traj.K[:5], height=32, width=32)
    short = generate_video(model, first, image, "a room", seed=3, grid_frames=long["grid"][:5])
    np.testing.assert_array_equal(long["frames"][:5], short["frames"])
    np.testing.assert_array_equal(long["frames"][0], image)  # the first frame is the reference, held while sampling


def test_generate_draws_the_models_room(export):
    """The grid a model is conditioned on is drawn with the room it was trained with (its config's `room`)."""
    import dataclasses

    from omnidirector_jax.camera.render import render_grid

    path, _ = export
    model = load_model(path)
    room = dataclasses.replace(model.cfg.room, view_steps=6.0, min_view=6.0, floor_steps=1.5, floor_min=1.0)
    model = dataclasses.replace(model, cfg=dataclasses.replace(model.cfg, room=room))
    traj = samples.named("pan", 32, 32, num=5)
    image = np.zeros((32, 32, 3), np.uint8)
    got = generate_video(model, traj, image, "a room", seed=0)["grid"]
    np.testing.assert_array_equal(got, render_grid(traj, grid=room))
    assert np.abs(got.astype(int) - render_grid(traj).astype(int)).mean() > 1.0  # not the design's room


def test_generate_batch_matches_single_jobs_and_compiles_once(export):
    path, _ = export
    model = load_model(path)
    rng = np.random.default_rng(2)
    trajs = [samples.multi_shot([samples.dolly(6, 1.0), samples.pan(5, 20.0)], 32, 32),
             samples.named("truck", 32, 32, num=7), samples.named("pan", 32, 32, num=4)]
    jobs = [Job(t, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), f"room {i}", seed=10 + i)
            for i, t in enumerate(trajs)]
    jobs[2].grid_frames = np.zeros((4, 32, 32, 3), np.uint8)  # a blanked grid
    together = generate_batch(model, jobs, batch_size=2)  # windows: 3, 2 and 1 per job -> padded batches of 2
    assert together[0]["compilations"] == 1
    for job, result in zip(jobs, together, strict=True):
        alone = generate_batch(model, [job])[0]
        assert result["frames"].shape == (job.traj.num_frames, 32, 32, 3)
        # Same job, same seed: the same video whatever shares its batch (up to float reassociation).
        np.testing.assert_allclose(result["frames"].astype(int), alone["frames"].astype(int), atol=2)
    np.testing.assert_array_equal(together[2]["grid"], 0)
    assert not np.array_equal(together[0]["frames"][:5], together[1]["frames"][:5])


def test_generate_cli_writes_outputs_and_refuses_bad_input(export, tmp_path, capsys):
    path, _ = export
    image = tmp_path / "ref.png"
    write_png(image, np.full((32, 32, 3), 90, np.uint8))
    traj = ROOT / "data" / "trajectories" / "pan_right.json"
    out = tmp_path / "out.mp4"
    args = ["generate", "--trajectory", str(traj), "--image", str(image), "--prompt", "a hall", "--checkpoint",
            str(path), "--out", str(out), "--steps", "1"]
    assert main(args) == 0
    assert out.is_file() and out.with_suffix(".preview.mp4").is_file() and out.with_suffix(".json").is_file()
    capsys.readouterr()
    assert main(["generate", "--trajectory", str(traj), "--image", str(image), "--checkpoint",
                 str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", "--trajectory", str(traj), "--image", str(tmp_path / "nope.png"), "--checkpoint",
                 str(path), "--out", str(out)]) == 2
    assert "cannot read the image" in capsys.readouterr().err


def test_generate_jobs_file_runs_one_program(export, tmp_path, capsys):
    path, _ = export
    write_png(tmp_path / "a.png", np.full((32, 32, 3), 60, np.uint8))
    write_png(tmp_path / "b.png", np.full((40, 30, 3), 200, np.uint8))
    traj = ROOT / "data" / "trajectories" / "pan_right.json"
    lines = [{"trajectory": str(traj), "image": "a.png", "prompt": "a hall", "out": "one.mp4", "seed": 1},
             {"trajectory": str(traj), "image": "b.png", "out": "two.mp4"}]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(map(__import__("json").dumps, lines)) + "\n")
    assert main(["generate", "--jobs", str(jobs), "--checkpoint", str(path), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 jobs, 1 compiled sampler program(s)" in out
    assert (tmp_path / "one.mp4").is_file() and (tmp_path / "two.preview.mp4").is_file()
    jobs.write_text('{"trajectory": "x.json"}\n')
    assert main(["generate", "--jobs", str(jobs), "--checkpoint", str(path)]) == 2
    assert "missing image, out" in capsys.readouterr().err
    assert main(["generate", "--image", "a.png", "--checkpoint", str(path)]) == 2
    assert "generate needs --trajectory, --out" in capsys.readouterr().err
