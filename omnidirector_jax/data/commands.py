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
