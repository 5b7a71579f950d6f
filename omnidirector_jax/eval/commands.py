"""CLI: ``omnidirector eval-camera`` — RRE, RTE, R-Pre, T-Pre and Tem-Pre between two trajectories."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []


@click.command("eval-camera")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("generated", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
@click.option("--rre-threshold", type=float, default=5.0, show_default=True, help="R-Pre threshold (degrees).")
@click.option("--rte-threshold", type=float, default=15.0, show_default=True, help="T-Pre threshold (degrees).")
@click.option("--tem-tolerance", type=int, default=3, show_default=True,
              help="Tem-Pre: a transition matches within this many frames.")
def eval_camera_command(reference, generated, as_json, rre_threshold, rte_threshold, tem_tolerance):
    """Compare the cameras of GENERATED against REFERENCE (trajectory .json or .npz files)."""
    import json

    from omnidirector_jax.camera.trajectory import load_trajectory
    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.eval.camera_metrics import MetricConfig, camera_metrics

    if rre_threshold <= 0 or rte_threshold <= 0 or tem_tolerance < 0:
        raise OmniDirectorError("thresholds must be positive and the tolerance non-negative")
    ref = load_trajectory(reference)
    gen = load_trajectory(generated, size=(ref.height, ref.width))
    metrics = camera_metrics(ref, gen, MetricConfig(rre_threshold=rre_threshold, rte_threshold=rte_threshold,
                                                    tem_tolerance=tem_tolerance))
    if as_json:
        click.echo(json.dumps(metrics.to_json(), indent=1))
    else:
        click.echo(metrics.table())


COMMANDS.append(eval_camera_command)


BENCH_COMMANDS: list[click.Command] = []


@click.command("poses")
@click.option("--estimator", "estimators", multiple=True, type=click.Choice(["vo", "colmap"]),
              default=("vo",), show_default=True, help="Back end(s) to measure (repeat the option).")
@click.option("--move", "moves", multiple=True, default=("dolly", "pan", "orbit", "three_shot"), show_default=True,
              help="Standard moves to render (dolly, pan, orbit, truck, three_shot).")
@click.option("--size", default="144x256", show_default=True, help="Video size HxW.")
@click.option("--frames", "num", type=int, default=49, show_default=True,
              help="Frames per video (three_shot: three shots of about a third each).")
@click.option("--seed", type=int, default=0, show_default=True, help="World seed.")
@click.option("--weights", type=click.Path(file_okay=False), default=None, help="TransNetV2 checkpoint folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def bench_poses_command(estimators, moves, size, num, seed, weights, as_json):
    """Pose accuracy on synthetic videos: render → mp4 → extract (shots + poses) → RRE/RTE, cut recovery."""
    import json
    import tempfile

    from omnidirector_jax.camera.commands import parse_size
    from omnidirector_jax.eval.pose_benchmark import benchmark_move, format_rows

    rows = []
    with tempfile.TemporaryDirectory(prefix="omnidirector-bench-") as workdir:
        for move in moves:
            for estimator in estimators:  # the same rendered video for every estimator
                rows.append(benchmark_move(move, estimator, size=parse_size(size), num=num, seed=seed,
                                           workdir=workdir, weights=weights))
                if not as_json:
                    click.echo(format_rows(rows[-1:]).splitlines()[-1] if len(rows) > 1 else format_rows(rows))
    if as_json:
        click.echo(json.dumps(rows, indent=1))


BENCH_COMMANDS.append(bench_poses_command)
