"""Accuracy of the pose estimators on synthetic videos with exact cameras (design §7).

For each standard move (:mod:`omnidirector_jax.data.sample_trajectories`): render the procedural world
along it, encode it as H.264 mp4 (so compression artefacts are part of the test), run the whole
``extract`` pipeline on the file (shot detection + per-shot poses) and compare with the trajectory it
was rendered from: cut recovery (exact or not, Tem-Pre) and RRE / RTE / R-Pre / T-Pre.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MOVES = ("dolly", "pan", "orbit", "three_shot")


def benchmark_move(name: str, estimator: str = "vo", *, size: tuple[int, int] = (144, 256), num: int = 49,
                   seed: int = 0, workdir: str | Path | None = None, weights=None) -> dict:
    """Render → mp4 → extract → metrics for one move; returns one result row."""
    from omnidirector_jax.data import sample_trajectories
    from omnidirector_jax.data.synth_world import render_trajectory
    from omnidirector_jax.eval.camera_metrics import camera_metrics
    from omnidirector_jax.media import write_video
    from omnidirector_jax.perception.extract_commands import extract_trajectory

    ref = sample_trajectories.named(name, height=size[0], width=size[1], num=num)
    with tempfile.TemporaryDirectory(prefix="omnidirector-bench-") as tmp:
        video = Path(workdir or tmp) / f"{name}_seed{seed}.mp4"
        if not video.exists():
            write_video(video, render_trajectory(ref, seed=seed), fps=ref.fps)
        start = time.perf_counter()
        est, report = extract_trajectory(video, estimator=estimator, weights=weights, progress=False)
        seconds = time.perf_counter() - start
    metrics = camera_metrics(ref, est)
    return {"move": name, "estimator": estimator, "frames": ref.num_frames, "ref_cuts": list(ref.cuts),
            "est_cuts": list(est.cuts), "cuts_exact": list(ref.cuts) == list(est.cuts), "RRE": metrics.rre,
            "RTE": metrics.rte, "R-Pre": metrics.r_pre, "T-Pre": metrics.t_pre, "Tem-Pre": metrics.tem_pre,
            "methods": report["methods"], "failed_shots": report["failed_shots"], "seconds": seconds}


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'move':<11} {'estimator':<9} {'frames':>6} {'cuts ref → est':<22} {'RRE °':>7} {'RTE °':>7} "
             f"{'R-Pre':>6} {'T-Pre':>6} {'s':>6}  methods"]
    for r in rows:
        cuts = f"{r['ref_cuts']}→{r['est_cuts']}" + ("" if r["cuts_exact"] else " ✗")
        lines.append(f"{r['move']:<11} {r['estimator']:<9} {r['frames']:>6} {cuts:<22} {r['RRE']:>7.3f} "
                     f"{r['RTE']:>7.3f} {r['R-Pre']:>6.2f} {r['T-Pre']:>6.2f} {r['seconds']:>6.1f}  "
                     f"{','.join(r['methods'])}")
    return "\n".join(lines)
