"""`omnidirector render-grid`, `render-samples` and `bench raster` from the command line, including bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from omnidirector_jax.cli import main

SAMPLES = sorted(Path("data/trajectories").glob("*.json"))


def test_every_sample_trajectory_is_present():
    names = {p.stem for p in SAMPLES}
    assert {"dolly_in", "pan_right", "orbit_arc", "static", "three_shots", "fisheye_walk", "dolly_zoom"} <= names


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_render_grid_writes_mp4_npz_png(tmp_path, path):
    for ext in ("npz", "png", "mp4"):
        out = tmp_path / f"{path.stem}.{ext}"
        assert main(["render-grid", str(path), "--out", str(out), "--size", "60x104"]) == 0
        assert out.stat().st_size > 0
    frames = np.load(tmp_path / f"{path.stem}.npz")["frames"]
    assert frames.dtype == np.uint8 and frames.shape[1:] == (60, 104, 3) and frames.max() > 0
    assert frames.shape[0] == len(json.loads(path.read_text())["w2c"])


def test_segments_file_and_opencv_backend(tmp_path):
    seg_path = tmp_path / "seg.json"
    assert main(["render-grid", "data/trajectories/three_shots.json", "--out", str(tmp_path / "a.npz"),
                 "--size", "48x80", "--backend", "opencv", "--segments", str(seg_path)]) == 0
    segments = json.loads(seg_path.read_text())
    assert {s["family"] for s in segments} == {"x", "z", "vertical"}
    assert {s["shot"] for s in segments} == {0, 1, 2}
    assert all(len(s["start"]) == 3 and len(s["end"]) == 3 for s in segments)


def test_fisheye_option_bends_lines(tmp_path):
    args = ["render-grid", "data/trajectories/dolly_in.json", "--size", "48x80"]
    assert main(args + ["--out", str(tmp_path / "p.npz")]) == 0
    assert main(args + ["--out", str(tmp_path / "f.npz"), "--fisheye", "0.1,0,0,0"]) == 0
    assert not np.array_equal(np.load(tmp_path / "p.npz")["frames"], np.load(tmp_path / "f.npz")["frames"])


@pytest.mark.parametrize("content, message", [
    ('{"version": 1, "height": 10, "width": 10, "w2c": [[[1,0,0,0],[0,1,0,0],[0,0,1,0]]]}', "at least 2 frames"),
    ('{"version": 1, "height": 10, "width": 10, "w2c": [[[1,0,0,0],[0,1,0,0],[0,0,1,0]],'
     '[[1,0,0,0],[0,1,0,0],[0,0,1,NaN]]]}', "non-finite"),
    ("not json", "not valid JSON"),
    ('{"version": 1, "height": 10, "width": 10, "cuts": [5], "w2c": [[[1,0,0,0],[0,1,0,0],[0,0,1,0]],'
     '[[1,0,0,0],[0,1,0,0],[0,0,1,0]]]}', "out of range"),
])
def test_bad_trajectory_gives_one_error_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["render-grid", str(path), "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_bad_options_are_rejected(tmp_path, capsys):
    traj = "data/trajectories/static.json"
    assert main(["render-grid", traj, "--out", str(tmp_path / "x.gif")]) == 2
    assert main(["render-grid", traj, "--out", str(tmp_path / "x.png"), "--size", "big"]) == 2
    assert main(["render-grid", traj, "--out", str(tmp_path / "x.png"), "--fisheye", "1,2"]) == 2
    assert main(["render-grid", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.png")]) == 2
    assert "not found" in capsys.readouterr().err


def test_bench_raster_reports_ratio(capsys):
    assert main(["bench", "raster", "--frames", "2", "--repeats", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["size"] for r in rows} == {"480x832", "256x256"}
    for r in rows:
        assert r["jax_fps"] > 0 and r["opencv_fps"] > 0
        assert r["ratio"] == pytest.approx(r["jax_fps"] / r["opencv_fps"])


def test_host_flags_add_devices_and_vector_width_but_keep_the_users():
    from omnidirector_jax.camera.commands import host_flags

    assert host_flags("", 4, False) == "--xla_force_host_platform_device_count=4"
    assert host_flags("", 2, True) == ("--xla_force_host_platform_device_count=2 "
                                       "--xla_cpu_prefer_vector_width=512")
    mine = "--xla_force_host_platform_device_count=1 --xla_cpu_prefer_vector_width=256"
    assert host_flags(mine, 8, True) == mine
