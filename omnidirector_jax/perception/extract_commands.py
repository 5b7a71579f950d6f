"""CLI: ``omnidirector extract`` — shots + per-shot camera poses of a video → a trajectory (and its grid)."""

from __future__ import annotations

import click

from omnidirector_jax.camera.commands import parse_size

COMMANDS: list[click.Command] = []


def extract_trajectory(video_path, *, estimator: str = "vo", poses_path=None, weights=None,
                       threshold: float = 0.5, focal: float | None = None, max_width: int = 640,
                       progress: bool = True):
    """Read a video, find its shots, estimate per-shot poses → (Trajectory, report dict).

    Poses are estimated on frames at most ``max_width`` wide; the trajectory is at the video's size.
    ``cuts`` are the detector's shot starts (the first frame of every shot after the first), which the
    trajectory marks as transition frames.
    """
    import logging
    import time

    import numpy as np

    from omnidirector_jax.camera import poses
    from omnidirector_jax.camera.trajectory import Trajectory
    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.perception.pose_estimators import make_estimator
    from omnidirector_jax.perception.shots import detect_shots
    from omnidirector_jax.perception.video import read_video, resize_frames

    log = logging.getLogger("omnidirector_jax.extract")
    timings = {}  # seconds per stage, in the report: what `bench extract` reads
    start = time.perf_counter()
    video = read_video(video_path, min_frames=2, progress=progress)
    timings["decode_s"] = time.perf_counter() - start
    frames, fps = video.frames, video.fps
    if len(frames) < 2:
        raise OmniDirectorError(f"{video_path} has only {len(frames)} frame; camera motion needs at least 2")
    height, width = frames.shape[1:3]
    log.info("read %d frames of %dx%d at %.3g fps from %s", len(frames), width, height, fps, video_path)

    log.info("detecting shots")
    start = time.perf_counter()
    shot_result = detect_shots(frames, weights_dir=weights, threshold=threshold, progress=progress)
    cuts = [int(c) for c in shot_result.cuts]
    timings["shots_s"] = time.perf_counter() - start
    log.info("shot detector (%s): %d cut(s) at %s", shot_result.method, len(cuts), cuts)
    shots = Trajectory.create(np.tile(np.eye(3, 4), (len(frames), 1, 1)), height=height, width=width,
                              cuts=cuts).shots()

    start = time.perf_counter()
    a_width = min(width, max_width)
    a_height = max(2, round(height * a_width / width))
    small = frames if (a_height, a_width) == (height, width) else resize_frames(frames, (a_width, a_height))
    K = poses.default_intrinsics(height, width, focal)
    K_small = Trajectory.create(np.tile(np.eye(3, 4), (2, 1, 1)), K, height=height, width=width) \
        .resized(a_height, a_width).K[0]
    log.info("estimating poses of %d shot(s) with '%s' at %dx%d (f = %.1f px)", len(shots), estimator,
             a_width, a_height, K_small[0, 0])
    est = make_estimator(estimator, poses_path=poses_path)
    result = est.estimate(small, K_small, shots=shots, progress=progress)
    traj = Trajectory.create(result.w2c, result.K, height=a_height, width=a_width, fps=fps, cuts=cuts)
    if (a_height, a_width) != (height, width):
        traj = traj.resized(height, width)
    timings[f"poses_{estimator}_s"] = time.perf_counter() - start
    report = {"video": str(video_path), "num_frames": len(frames), "fps": fps, "estimator": estimator,
              "shot_method": shot_result.method, "cuts": cuts, "probabilities":
              [round(float(p), 6) for p in shot_result.probabilities]} | result.report() \
        | {"timings": {k: round(v, 4) for k, v in timings.items()}}
    return traj, report


@click.command("extract")
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Trajectory to write (.json or .npz); a side-car OUT.extract.json gets shots and validity.")
@click.option("--estimator", type=click.Choice(["vo", "colmap", "npz"]), default="vo", show_default=True,
              help="Pose back end: OpenCV visual odometry, pycolmap SfM, or poses from --poses.")
@click.option("--poses", "poses_path", type=click.Path(dir_okay=False), default=None,
              help="Poses estimated elsewhere (.npz: extrinsics, intrinsics, stride) for --estimator npz.")
@click.option("--weights", type=click.Path(file_okay=False), default=None,
              help="TransNetV2 checkpoint folder (else $OMNIDIRECTOR_TRANSNETV2_WEIGHTS, else the classical "
                   "detector).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Shot transition threshold.")
@click.option("--focal", type=float, default=None, help="Focal length in pixels (default 0.8 · max(W, H)).")
@click.option("--max-width", type=int, default=640, show_default=True,
              help="Estimate poses on frames downscaled to at most this width.")
@click.option("--grid", "grid_out", type=click.Path(dir_okay=False), default=None,
              help="Also render the camera-grid video of the trajectory (.mp4, .npz or .png contact sheet).")
@click.option("--grid-size", default=None, help="Grid video size HxW (default: the video's size).")
@click.option("-v", "--verbose", is_flag=True, help="Log every step.")
def extract_command(video, out, estimator, poses_path, weights, threshold, focal, max_width, grid_out, grid_size,
                    verbose):
    """Shots and per-shot camera poses of VIDEO → a trajectory file (cuts from the shot detector)."""
    import json
    import logging
    import warnings
    from pathlib import Path

    from omnidirector_jax.camera.trajectory import save_trajectory
    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.perception.logs import setup_logging

    setup_logging(verbose)
    if estimator == "npz" and poses_path is None:
        raise OmniDirectorError("--estimator npz needs --poses POSES.npz")
    if max_width < 16:
        raise OmniDirectorError(f"--max-width must be at least 16, got {max_width}")
    with warnings.catch_warnings():
        # Every warning the estimators raise is also logged: print it once, as a log line.
        warnings.simplefilter("ignore", UserWarning)
        traj, report = extract_trajectory(video, estimator=estimator, poses_path=poses_path, weights=weights,
                                          threshold=threshold, focal=focal, max_width=max_width)
    save_trajectory(traj, out)
    side = Path(out).with_suffix(".extract.json")
    side.write_text(json.dumps(report, indent=1))
    click.echo(f"wrote {out} ({traj.num_frames} frames, {len(traj.shots())} shot(s), cuts {list(traj.cuts)}) "
               f"and {side}")
    counts, total = report["model_counts"], max(len(report["shots"]), 1)
    click.echo("camera model per shot: " + ", ".join(
        f"{label} {counts[key]} ({counts[key] / total:.0%})"
        for key, label in (("6dof", "6-DoF"), ("rotation", "rotation-only"), ("failed", "failed")))
        + f" of {len(report['shots'])} shot(s)")
    failed = report["failed_shots"]
    if failed:
        listed = ", ".join(map(str, failed[:30])) + (", …" if len(failed) > 30 else "")
        click.echo(f"warning: pose estimation failed for {len(failed)} of {len(report['shots'])} shot(s) "
                   f"[{listed}]; their frames are marked invalid (reasons per shot in {side})", err=True)
    if grid_out:
        from omnidirector_jax.camera.render import render_grid
        from omnidirector_jax.media import write_frames

        size = parse_size(grid_size)
        grid_traj = traj.resized(*size) if size else traj
        logging.getLogger("omnidirector_jax.extract").info("rendering the camera grid (%d frames, %dx%d)",
                                                           grid_traj.num_frames, grid_traj.width,
                                                           grid_traj.height)
        write_frames(grid_out, render_grid(grid_traj), fps=traj.fps, cuts=grid_traj.cuts)
        click.echo(f"wrote {grid_out}")


COMMANDS.append(extract_command)


@click.command("extract")
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--estimator", "estimators", type=click.Choice(["vo", "colmap"]), multiple=True,
              help="Pose back end(s) to time (repeat the option; default vo).")
@click.option("--weights", type=click.Path(file_okay=False), default=None,
              help="TransNetV2 checkpoint folder (else $OMNIDIRECTOR_TRANSNETV2_WEIGHTS, else the classical "
                   "detector).")
@click.option("--max-width", type=int, default=640, show_default=True, help="As for `extract`.")
@click.option("--grid-size", default="90x160", show_default=True,
              help="Size HxW of the camera-grid video to time ('none' to skip the grid).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_extract(video, estimators, weights, max_width, grid_size, as_json):
    """Per-stage time of `extract` on VIDEO (decode, shots, poses per back end, grid) and videos/hour per core.

    Videos/hour per core divides by the CPU time the process used (all its threads), so it plans a
    dataset build on N cores as N × that figure, whatever else the machine runs; the wall-clock figure
    is for this run only.
    """
    import json
    import logging
    import os
    import time
    import warnings

    from omnidirector_jax.perception.logs import setup_logging

    setup_logging(False)
    # The estimators' per-shot lines (and failed-shot warnings) would drown the figures.
    logging.getLogger("omnidirector_jax").setLevel(logging.ERROR)
    estimators = estimators or ("vo",)
    size = None if grid_size.lower() == "none" else parse_size(grid_size)
    stages: dict[str, float] = {}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    report = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i, estimator in enumerate(estimators):
            traj, report = extract_trajectory(video, estimator=estimator, weights=weights, max_width=max_width,
                                              progress=False)
            timings = report["timings"]
            if i == 0:  # decoding and shot detection do not depend on the pose back end: count them once
                stages["decode"], stages["shots"] = timings["decode_s"], timings["shots_s"]
            stages[f"poses ({estimator})"] = timings[f"poses_{estimator}_s"]
        if size is not None:
            from omnidirector_jax.camera.render import render_grid

            start = time.perf_counter()
            render_grid(traj.resized(*size))
            stages["grid"] = time.perf_counter() - start
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    out = {"video": str(video), "frames": report["num_frames"], "shots": len(report["shots"]),
           "stages_s": {k: round(v, 3) for k, v in stages.items()}, "wall_s": round(wall, 3),
           "cpu_s": round(cpu, 3), "cores": cores, "videos_per_hour_per_core": round(3600.0 / cpu, 2),
           "videos_per_hour_wall": round(3600.0 / wall, 2), "model_counts": report["model_counts"]}
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"extract on {video}: {out['frames']} frames, {out['shots']} shot(s)")
    for name, seconds in stages.items():
        click.echo(f"  {name:<16}{seconds:>9.2f} s{100 * seconds / wall:>6.1f} %")
    click.echo(f"  {'total (wall)':<16}{wall:>9.2f} s; CPU {cpu:.2f} s on {cores} core(s)")
    click.echo(f"videos/hour per core: {out['videos_per_hour_per_core']:.1f} (CPU time); this run: "
               f"{out['videos_per_hour_wall']:.1f} videos/hour wall")


BENCH_COMMANDS: list[click.Command] = [bench_extract]
