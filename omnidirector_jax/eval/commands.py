"""CLI: ``omnidirector eval-camera`` — RRE, RTE, R-Pre, T-Pre and Tem-Pre between two trajectories."""

from __future__ import annotations

import click

from omnidirector_jax.errors import OmniDirectorError

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


@click.command("eval")
@click.option("--checkpoint", default=None, type=click.Path(),
              help="Model export folder or training work directory (default: the shipped model).")
@click.option("--trajectories", "traj_dir", required=True, type=click.Path(),
              help="Folder of requested trajectories (.json/.npz; jobs.json optional), e.g. outputs/demo/trajectories.")
@click.option("--ablate-grid", is_flag=True, help="Also generate every job with the grid blanked, side by side.")
@click.option("--steps", type=int, default=None, help="Sampling steps (default: the model's sampler config).")
@click.option("--upsample", type=int, default=2, show_default=True,
              help="Estimate poses on frames upscaled this many times (feature detection in small frames).")
@click.option("--weights", default=None, type=click.Path(file_okay=False), help="TransNetV2 checkpoint folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print rows and summary as JSON.")
def eval_command(checkpoint, traj_dir, ablate_grid, steps, upsample, weights, seed, as_json):
    """Closed loop: generate for every requested trajectory, estimate the result's cameras and cuts, report RRE,
    RTE, R-Pre, T-Pre, Tem-Pre per trajectory and overall, and content leakage on synthetic pairs."""
    import dataclasses
    import json

    from omnidirector_jax.diffusion.generate import load_model
    from omnidirector_jax.eval.closed_loop import evaluate, format_summary, load_trajectory_dir

    if upsample < 1:
        raise OmniDirectorError(f"--upsample must be at least 1, got {upsample}")
    model = load_model(checkpoint)
    if steps is not None:
        model.cfg.sampler = dataclasses.replace(model.cfg.sampler, steps=steps)
    jobs = load_trajectory_dir(traj_dir, height=model.cfg.shape.height, width=model.cfg.shape.width)
    arms = ("grid", "no_grid") if ablate_grid else ("grid",)
    result = evaluate(model, jobs, arms=arms, seed=seed, upsample=upsample, weights=weights,
                      progress=not as_json)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    for row in result["rows"]:
        cells = "  ".join(f"{arm}: RRE {row[arm]['RRE']:7.2f}° RTE {row[arm]['RTE']:6.2f}° Tem-Pre "
                          f"{row[arm]['Tem-Pre']:.2f}" for arm in (*arms, "oracle"))
        click.echo(f"{row['name']:<22} {cells}")
    click.echo(format_summary(result))


@click.command("demo")
@click.option("--out", "out_dir", default="outputs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--checkpoint", default=None, type=click.Path(),
              help="Model export folder or training work directory (default: the shipped model).")
@click.option("--count", type=int, default=20, show_default=True, help="Held-out trajectories.")
@click.option("--frames", type=int, default=None,
              help="Frames per trajectory (default: the length of the model's training clips, else 17; a "
                   "trajectory spans its clip, so this sets the camera speed per frame).")
@click.option("--steps", type=int, default=None, help="Sampling steps (default: the model's sampler config).")
@click.option("--seed", type=int, default=0, show_default=True)
def demo_command(out_dir, checkpoint, count, frames, steps, seed):
    """Clone held-out cameras with the shipped model: report.html / report.json with examples, loss curve and the
    metrics with and without the camera grid."""
    from omnidirector_jax.eval.demo import paired_line, run_demo

    report = run_demo(out_dir, checkpoint=checkpoint, count=count, frames=frames, steps=steps, seed=seed)
    click.echo(report["table"])
    v = report["verdict"]
    click.echo(f"grid vs blanked: RRE {'lower' if v['rre_lower_with_grid'] else 'not lower'}, RTE "
               f"{'lower' if v['rte_lower_with_grid'] else 'not lower'}; multi-shot Tem-Pre {v['multi_shot_tem_pre']}"
               f"; {report['seconds']} s")
    click.echo(f"paired: {paired_line(v)}")
    click.echo(f"wrote {out_dir}/report.html and {out_dir}/report.json")


COMMANDS.extend([eval_command, demo_command])


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
