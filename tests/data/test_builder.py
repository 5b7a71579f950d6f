"""build-dataset: resumable after SIGKILL, idempotent, --shard splits, Beam = local, videos with bad inputs,
clear errors; data info and its contact sheet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from omnidirector_jax.cli import main
from omnidirector_jax.data import records as R
from omnidirector_jax.data.builder import BuildConfig, build_dataset

ROOT = Path(__file__).resolve().parents[2]
# Tiny synthetic builds: one example per shard, so a build has many resumable steps.
SYNTH = {"num_synthetic": 12, "height": 32, "width": 32, "frames": 6, "per_shard": 1, "supersample": 1, "seed": 5}
SYNTH_ARGS = ["--synthetic", "12", "--size", "32x32", "--frames", "6", "--per-shard", "1", "--supersample", "1",
              "--seed", "5"]


def _records(directory: Path) -> list[tuple[str, bytes]]:
    ds = R.open_dataset(directory)
    return [(ds.ids[i], ds[i]) for i in range(len(ds))]


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(directory.rglob("*"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted synthetic build every other build is compared with."""
    out = tmp_path_factory.mktemp("reference")
    manifest, report = build_dataset(BuildConfig(source="synthetic", **SYNTH), out, progress=False)
    assert manifest["num_records"] == 12 and report["complete"] and not report["skipped"]
    return out


def test_synthetic_records_follow_the_contract(reference):
    ds = R.open_dataset(reference)
    classes = set()
    for i in range(len(ds)):
        rec = ds.record(i)
        assert rec.id == ds.ids[i] and rec.frames.shape == (6, 32, 32, 3)
        assert rec.K[0, 0, 0] == pytest.approx(0.8 * 32) and rec.K[0, 0, 2] == pytest.approx(15.5)
        np.testing.assert_array_equal(rec.valid, rec.shot_index() >= 0)  # only cut frames lack a pose
        assert rec.caption.startswith("a procedurally generated room") and rec.meta["estimator"] == "ground-truth"
        depth = rec.meta["depth"]  # camera z per pixel: inside the room, in front of the camera
        assert depth.shape == (6, 32, 32) and depth.dtype == np.float16
        assert np.all(depth > 0) and np.isfinite(depth).all()
        if rec.meta["class"] == "multi_shot":
            assert len(rec.cuts) == len(rec.meta["shot_classes"]) - 1 >= 1
        else:
            assert rec.cuts == ()
        classes.add(rec.meta["class"])
    assert len(classes) >= 4  # the draws cover several moves
    assert len(set(ds.ids)) == len(ds)


def test_killed_build_restarts_to_identical_records(reference, tmp_path):
    """SIGKILL a CLI build at three random points of its progress, restart, and compare with the reference."""
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "omnidirector_jax.cli", "build-dataset", *SYNTH_ARGS, "--out", str(out)]
    rng = np.random.default_rng()
    targets = sorted(rng.choice(np.arange(1, 9), 3, replace=False).tolist())  # ≥ 4 inputs left to kill in
    killed_mid_build = 0
    for target in targets:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while proc.poll() is None and len(list((out / "done").glob("*.json"))) < target:
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed_mid_build += 1
            proc.wait()
        done = list((out / "done").glob("*.json"))
        assert len(done) < 12 or proc.returncode == 0
        for marker in done:  # a marker only ever names a complete shard
            shard = json.loads(marker.read_text())["shard"]
            assert R.file_sha256(out / shard["path"]) == shard["sha256"]
    assert killed_mid_build == 3
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _records(out) == _records(reference)
    assert R.read_manifest(out) == R.read_manifest(reference)
    assert not [p for p in out.rglob(".*.tmp")]


def test_finished_build_run_again_writes_nothing(reference, capsys):
    before = _snapshot(reference)
    assert main(["build-dataset", *SYNTH_ARGS, "--out", str(reference)]) == 0
    assert "12 records" in capsys.readouterr().out
    assert _snapshot(reference) == before


def test_shard_splits_are_disjoint_and_cover_the_set(reference, tmp_path):
    config = BuildConfig(source="synthetic", **SYNTH)
    parts = []
    for i in range(3):
        manifest, report = build_dataset(config, tmp_path / f"part{i}", shard=(i, 3), progress=False)
        assert not report["complete"] and report["inputs_done"] == 4
        parts.append(set(R.open_dataset(tmp_path / f"part{i}").ids))
    assert all(not (a & b) for k, a in enumerate(parts) for b in parts[k + 1:])
    assert set.union(*parts) == set(R.open_dataset(reference).ids)
    # Machines sharing one folder: the last one to finish writes the complete manifest.
    shared = tmp_path / "shared"
    for i in range(3):
        manifest, report = build_dataset(config, shared, shard=(i, 3), progress=False)
    assert report["complete"] and _records(shared) == _records(reference)


def test_beam_runner_matches_local(reference, tmp_path):
    pytest.importorskip("apache_beam")
    out = tmp_path / "beam"
    config = BuildConfig(source="synthetic", **SYNTH)
    build_dataset(config, out, runner="beam", progress=False)
    assert _records(out) == _records(reference)


def _write_videos(folder: Path) -> None:
    from omnidirector_jax.camera.trajectory import Trajectory
    from omnidirector_jax.data import sample_trajectories as st
    from omnidirector_jax.data.synth_world import WorldConfig, render_trajectory
    from omnidirector_jax.media import write_video

    folder.mkdir(parents=True)
    world = WorldConfig(supersample=1)
    two_shots = st.multi_shot([st.dolly(14, 1.5), st.truck(14, 1.2)], 72, 128)
    write_video(folder / "good.mp4", render_trajectory(two_shots, seed=3, config=world), fps=25)
    (folder / "sub").mkdir()
    single = Trajectory.create(st.pan(17, 25.0), height=72, width=128)
    write_video(folder / "sub" / "pan.MOV", render_trajectory(single, seed=4, config=world), fps=25)
    write_video(folder / "blank.mp4", np.full((20, 72, 128, 3), 128, np.uint8), fps=25)
    write_video(folder / "one_frame.mp4", render_trajectory(single, seed=1, config=world)[:1], fps=25)
    (folder / "broken.mkv").write_bytes(b"\x00not a video" * 100)
    (folder / "notes.txt").write_text("not a video: ignored")


def test_videos_folder_with_bad_inputs(tmp_path, capsys):
    videos, out = tmp_path / "videos", tmp_path / "out"
    _write_videos(videos)
    assert main(["build-dataset", str(videos), "--out", str(out), "--frames", "8", "--size", "32x48"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    reasons = {s["input"]: s["reason"] for s in report["skipped"]}
    assert reasons == {"blank.mp4": "pose estimation failed", "broken.mkv": "unreadable",
                       "one_frame.mp4": "too short"}
    assert all(name in printed for name in reasons)
    ds = R.open_dataset(out)
    sources = [ds.record(i, frames=False).meta["source"] for i in range(len(ds))]
    assert sources == ["good.mp4"] * 3 + ["sub/pan.MOV"] * 2  # 29 and 17 frames → 3 and 2 clips of 8
    rec = ds.record(1)
    assert rec.frames.shape == (8, 32, 48, 3) and rec.meta["frame_range"] == [8, 16]
    assert rec.cuts == (6,) and not rec.valid[6]  # the cut at source frame 14
    np.testing.assert_array_equal(rec.shot_index(), [0] * 6 + [-1, 1])


def test_bad_input_gives_one_error_line(reference, tmp_path, capsys):
    def error(args) -> str:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    assert "does not exist" in error(["build-dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    assert "no videos" in error(["build-dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    assert "other settings" in error(["build-dataset", *SYNTH_ARGS[:-1], "6", "--out", str(reference)])
    assert "either VIDEOS_DIR or --synthetic" in error(["build-dataset", "--out", str(tmp_path / "o")])
    assert "does not exist" in error(["data", "info", str(tmp_path / "missing")])

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(reference), str(copy)], check=True)
    manifest = json.loads((copy / R.MANIFEST_NAME).read_text())
    newer = {**manifest, "schema_version": R.SCHEMA_VERSION + 1}
    (copy / R.MANIFEST_NAME).write_text(json.dumps(newer))
    assert "newer than this code" in error(["data", "info", str(copy)])
    before = _snapshot(copy)
    assert "newer than this code" in error(["build-dataset", *SYNTH_ARGS, "--out", str(copy)])
    assert _snapshot(copy) == before
    (copy / R.MANIFEST_NAME).write_text(json.dumps(manifest))
    shard = copy / manifest["shards"][3]["path"]
    shard.write_bytes(shard.read_bytes()[:1000])
    assert "corrupt" in error(["data", "info", str(copy), "--verify"])
    assert json.loads((copy / R.MANIFEST_NAME).read_text()) == manifest  # nothing already written is lost
    before = _snapshot(reference)
    error(["build-dataset", *SYNTH_ARGS[:-1], "6", "--out", str(reference)])
    assert _snapshot(reference) == before


def test_data_info_and_contact_sheet(reference, tmp_path, capsys):
    import cv2

    sheet = tmp_path / "sheet.png"
    assert main(["data", "info", str(reference), "--json", "--sheet", str(sheet), "--examples", "1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_records"] == 12 and len(info["ids"]) == 12 and info["frame_size"] == [32, 32]
    assert sum(info["classes"].values()) == 12
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] > 2 * 128 and image.shape[1] >= 6 * 128
    # Each clip's lower row is its camera grid: black background with coloured lines (or white cut frames).
    grid_row = image[16 + 4 + 128: 16 + 4 + 2 * 128]
    assert (grid_row.max(axis=2) < 30).mean() > 0.3 and (grid_row.max(axis=2) > 150).mean() > 0.02


def test_sampled_timeline_moves_cuts_to_the_next_kept_frame():
    from omnidirector_jax.data.builder import sampled_timeline

    kept, is_cut = sampled_timeline(12, 3, [4, 6, 9])
    np.testing.assert_array_equal(kept, [0, 3, 6, 9])
    np.testing.assert_array_equal(is_cut, [False, False, True, True])  # 4 and 6 both land on 6


def test_real_multi_shot_video_matches_extract(tmp_path, wheel_test_video):
    """The first 300 frames of the wheel's music video (10 cuts, some shots without poses): every record's
    poses, intrinsics, cuts and validity are `omnidirector extract`'s on the same frames."""
    from omnidirector_jax.camera.trajectory import load_trajectory
    from omnidirector_jax.media import write_video
    from omnidirector_jax.perception.video import read_video

    video = read_video(wheel_test_video)
    (tmp_path / "videos").mkdir()
    clip = tmp_path / "videos" / "music.mp4"
    write_video(clip, video.frames[:300], fps=video.fps)
    assert main(["extract", str(clip), "--out", str(tmp_path / "traj.json")]) == 0
    traj = load_trajectory(tmp_path / "traj.json")
    side = json.loads((tmp_path / "traj.extract.json").read_text())
    valid, failed, shot_of = np.asarray(side["valid"], bool), set(side["failed_shots"]), traj.shot_index()
    assert len(traj.cuts) >= 5 and failed

    out = tmp_path / "out"
    assert main(["build-dataset", str(tmp_path / "videos"), "--out", str(out), "--frames", "9", "--fps", "12.5",
                 "--size", "36x64"]) == 0  # every 2nd frame; 36x64 keeps the 16:9 frame uncropped
    ds = R.open_dataset(out)
    expected_K = traj.resized(36, 64).K
    starts = []
    for i in range(len(ds)):
        rec = ds.record(i)
        a, b = rec.meta["frame_range"]
        idx = list(range(a, b, 2))
        assert len(idx) == 9 and rec.meta["frame_step"] == 2 and rec.meta["fps"] == pytest.approx(12.5)
        cuts = tuple(j for j in range(9) if any((idx[j - 1] if j else idx[0] - 1) < c <= idx[j] for c in traj.cuts))
        assert rec.cuts == cuts
        live = [j for j in range(9) if j not in cuts]
        np.testing.assert_allclose(rec.w2c[live], traj.w2c[idx][live], atol=2e-6)
        np.testing.assert_allclose(rec.K, expected_K[idx], rtol=1e-5)
        np.testing.assert_array_equal(rec.valid, valid[idx] & ~np.isin(np.arange(9), cuts))
        assert not {int(s) for s in shot_of[np.asarray(idx)[live]]} & failed  # no frame of a failed shot
        starts.append(a)
    assert starts == sorted(starts) and len(starts) >= 3
    report = json.loads((out / "report.json").read_text())
    skipped = [s for s in report["skipped"] if s["reason"] == "pose estimation failed for a shot"]
    assert len(skipped) + len(ds) == len(range(0, 150 - 9 + 1, 9))  # every 9-frame window: written or reported
