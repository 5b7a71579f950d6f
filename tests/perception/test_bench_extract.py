"""`omnidirector bench extract`: per-stage times and videos/hour on a small synthetic video."""

import json

from omnidirector_jax.cli import main
from omnidirector_jax.data import sample_trajectories as st
from omnidirector_jax.data.synth_world import render_trajectory
from omnidirector_jax.media import write_video


def test_bench_extract_reports_every_stage(tmp_path, capsys):
    ref = st.named("pan", height=72, width=128, num=16)
    path = tmp_path / "pan.mp4"
    write_video(path, render_trajectory(ref, seed=0), fps=ref.fps)
    assert main(["bench", "extract", str(path), "--json", "--grid-size", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["stages_s"]) == {"decode", "shots", "poses (vo)"}
    assert all(v >= 0 for v in out["stages_s"].values())
    assert out["frames"] == 16 and out["cpu_s"] > 0 and out["videos_per_hour_per_core"] > 0
    assert sum(out["model_counts"].values()) == out["shots"]
    assert out["model_counts"]["rotation"] >= 1  # a pan: rotation only
