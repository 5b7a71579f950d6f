"""CLI: ``omnidirector synth`` — render the procedural world along a trajectory (exact ground truth)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []


@click.command("synth")
@click.argument("trajectory", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Video to write: .mp4, .npz (frames array) or .png (contact sheet).")
@click.option("--size", default=None, help="Render size HxW (default: the trajectory's size).")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed (each shot gets its own room).")
@click.option("--supersample", type=int, default=2, show_default=True, help="Rays per pixel along each axis.")
def synth_command(trajectory, out, size, seed, supersample):
    """Render textured rooms seen from TRAJECTORY's cameras (a new room per shot, hard cuts)."""
    import dataclasses
    import logging
    import time

    from omnidirector_jax.camera.commands import parse_size
    from omnidirector_jax.camera.trajectory import load_trajectory
    from omnidirector_jax.data.synth_world import WorldConfig, render_trajectory
    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.media import write_frames

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not 1 <= supersample <= 8:
        raise OmniDirectorError(f"--supersample must be between 1 and 8, got {supersample}")
    traj = load_trajectory(trajectory)
    config = dataclasses.replace(WorldConfig(), supersample=supersample)
    start = time.perf_counter()
    frames = render_trajectory(traj, seed=seed, size=parse_size(size), config=config, progress=True)
    elapsed = time.perf_counter() - start
    write_frames(out, frames, fps=traj.fps, cuts=traj.cuts)
    click.echo(f"wrote {out}: {frames.shape[0]} frames at {frames.shape[2]}x{frames.shape[1]}, "
               f"{len(traj.shots())} shot(s), cuts {list(traj.cuts)} ({frames.shape[0] / elapsed:.1f} frames/s)")


COMMANDS.append(synth_command)


@click.command("build-dataset")
@click.argument("videos_dir", required=False, type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Dataset folder to write.")
@click.option("--synthetic", "num_synthetic", type=int, default=None,
              help="Render this many examples of the procedural world instead of reading VIDEOS_DIR.")
@click.option("--size", default="64x64", show_default=True, help="Frame size HxW of the records.")
@click.option("--frames", "num_frames", type=int, default=17, show_default=True, help="Frames per clip.")
@click.option("--fps", type=float, default=None,
              help="Videos: resample to about this rate (every round(video fps / fps)-th frame); default: as is.")
@click.option("--stride", type=int, default=None, help="Videos: clip start-to-start distance in sampled frames "
              "(default --frames: no overlap).")
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic: base seed of the examples.")
@click.option("--image-format", type=click.Choice(["jpeg", "png", "raw"]), default="jpeg", show_default=True)
@click.option("--quality", type=int, default=95, show_default=True, help="JPEG quality.")
@click.option("--per-shard", type=int, default=8, show_default=True, help="Synthetic examples per shard.")
@click.option("--supersample", type=int, default=2, show_default=True, help="Synthetic: rays per pixel per axis.")
@click.option("--estimator", type=click.Choice(["vo", "colmap", "npz"]), default="vo", show_default=True,
              help="Pose back end as in `extract` (npz: VIDEO.npz next to each video).")
@click.option("--weights", type=click.Path(file_okay=False), default=None,
              help="TransNetV2 checkpoint folder (else the classical shot detector).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Shot transition threshold.")
@click.option("--max-width", type=int, default=640, show_default=True, help="Estimate poses at most this wide.")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes (local runner).")
@click.option("--shard", "shard", default=None, help="i/N: build only every N-th input from the i-th (N machines).")
@click.option("--runner", type=click.Choice(["local", "beam"]), default="local", show_default=True)
@click.option("--beam-arg", "beam_args", multiple=True,
              help="Beam pipeline option, repeatable (default --runner=DirectRunner).")
@click.option("-v", "--verbose", is_flag=True, help="Log every input.")
def build_dataset_command(videos_dir, out, num_synthetic, size, num_frames, fps, stride, seed, image_format,
                          quality, per_shard, supersample, estimator, weights, threshold, max_width, workers,
                          shard, runner, beam_args, verbose):
    """Build (or resume) a dataset of clip records from VIDEOS_DIR or the procedural world (--synthetic N).

    Killed builds resume where they stopped when run again with the same command; a finished build run
    again writes nothing. Writes OUT/manifest.json, OUT/shards/*.array_record and OUT/report.json.
    """
    import logging
    import time
    from pathlib import Path

    from omnidirector_jax.camera.commands import parse_size
    from omnidirector_jax.data.builder import BuildConfig, BuildError, build_dataset, parse_shard, summary_table

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    if (videos_dir is None) == (num_synthetic is None):
        raise BuildError("give either VIDEOS_DIR or --synthetic N (not both)")
    if not verbose:
        # Per-shot lines of the renderer, the shot detector and the estimators, once per video: the bar and
        # report.json say what happened to each input.
        for name in ("omnidirector_jax.data.synth_world", "jax", "apache_beam"):
            logging.getLogger(name).setLevel(logging.WARNING)
        for name in ("omnidirector_jax.extract", "omnidirector_jax.perception"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if videos_dir is not None and weights is None:
            logging.getLogger("omnidirector").warning(
                "no --weights: shots come from the classical detector (TransNetV2 needs converted weights)")
    height, width = parse_size(size)
    source = "synthetic" if num_synthetic is not None else str(Path(videos_dir).resolve())
    config = BuildConfig(source=source, num_synthetic=num_synthetic or 0, height=height, width=width,
                         frames=num_frames, fps=fps, stride=stride, seed=seed, image_format=image_format,
                         quality=quality, per_shard=per_shard, supersample=supersample, estimator=estimator,
                         weights=None if weights is None else str(Path(weights).resolve()), threshold=threshold,
                         max_width=max_width)
    start = time.perf_counter()
    manifest, report = build_dataset(config, out, workers=workers, shard=parse_shard(shard), runner=runner,
                                     beam_args=beam_args)
    click.echo(summary_table(report))
    state = "complete" if report["complete"] else "partial (other --shard parts pending)"
    click.echo(f"{out}: {manifest['num_records']} records in {len(manifest['shards'])} shard(s), {state} "
               f"({time.perf_counter() - start:.1f} s); report in {Path(out) / 'report.json'}")


COMMANDS.append(build_dataset_command)


@click.group("data")
def data_group() -> None:
    """Inspect datasets written by `omnidirector build-dataset`."""


@data_group.command("info")
@click.argument("directory", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (with every id).")
@click.option("--sheet", "sheet", type=click.Path(dir_okay=False), default=None,
              help="Write a contact sheet PNG: a few clips, each above its camera grid.")
@click.option("--examples", type=int, default=4, show_default=True, help="Clips on the contact sheet.")
@click.option("--verify", is_flag=True, help="Also check every shard's checksum and decode every record.")
def data_info_command(directory, as_json, sheet, examples, verify):
    """Record count, shards, ids, frame size and trajectory classes of the dataset in DIRECTORY."""
    import json

    from omnidirector_jax.data.info import dataset_info, write_sheet

    info = dataset_info(directory, verify=verify)
    if sheet:
        write_sheet(directory, sheet, examples=examples)
        info["sheet"] = str(sheet)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    click.echo(f"{directory}: {info['num_records']} records in {info['num_shards']} shard(s), "
               f"{info['num_frames']} frames of {info['frame_size'][0]}x{info['frame_size'][1]} "
               f"({info['image_format']}, {info['fps'] or 'source'} fps), schema {info['schema_version']}")
    click.echo("classes: " + (", ".join(f"{k} {v}" for k, v in info["classes"].items()) or "-"))
    if info["skipped_by_reason"]:
        click.echo("skipped while building: " + ", ".join(f"{k} {v}" for k, v in info["skipped_by_reason"].items())
                   + " (details in report.json)")
    ids = info["ids"]
    click.echo(f"ids: {', '.join(ids[:8])}{', …' if len(ids) > 8 else ''}")
    if not info["complete"]:
        click.echo("partial: some inputs are not built yet (other --shard parts, or an unfinished build)")
    if verify:
        click.echo("verified: every shard matches its checksum and every record decodes")
    if sheet:
        click.echo(f"wrote {sheet}")


COMMANDS.append(data_group)
