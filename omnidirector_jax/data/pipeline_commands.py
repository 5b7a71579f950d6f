"""CLI: ``omnidirector bench data`` — the Grain pipeline's throughput against what the train step consumes."""

from __future__ import annotations

import click

BENCH_COMMANDS: list[click.Command] = []


def train_step_seconds(cfg) -> float:
    """Median seconds of one real train step of the config (grid render, encoders, forward, backward, AdamW)
    at its global batch, on synthetic clips: what `bench data` compares the loader with."""
    from omnidirector_jax.train.bench import measure_train_step

    return measure_train_step(cfg)["median_s"]


def loader_rate(cfg, data_dir: str, workers: int, batches: int, warmup: int) -> dict[str, float]:
    """Examples/s and frames/s of `make_pipeline` with `workers` processes, timed after `warmup` batches
    (which include starting the workers); the batch arrays are touched so nothing is left lazy."""
    import time

    from omnidirector_jax.data.pipeline import make_pipeline

    it = make_pipeline(cfg, data_dir, workers=workers, process_index=0, process_count=1)
    try:
        t0 = time.perf_counter()
        for _ in range(warmup):
            next(it)
        first_s = time.perf_counter() - t0
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        examples = 0
        for _ in range(batches):
            batch = next(it)
            examples += int(batch["frames"].shape[0])
            batch["frames"].max()  # noqa: B018 (reads every byte once; a uint8 max costs the consumer little)
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    finally:
        it.close()
    frames = examples * cfg.shape.frames
    return {"workers": workers, "warmup_s": first_s, "seconds": seconds, "examples": examples,
            "examples_per_s": examples / seconds, "frames_per_s": frames / seconds,
            "cpu_us_per_frame": 1e6 * cpu / frames}


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its live children (the Grain workers). On a shared
    machine this separates what the loader costs from how much CPU it was given."""
    import psutil  # a dependency of tensorflow-datasets

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


@click.command("data")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML config (its shape and model fix the batch and the train step).")
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Dataset folder (build-dataset --out).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override, repeatable.")
@click.option("--workers", "workers_list", default="0,1,2", show_default=True,
              help="Comma-separated Grain worker counts to measure.")
@click.option("--batches", type=int, default=40, show_default=True, help="Timed batches per worker count.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed batches first (worker start-up).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench_data(config_path: str, data_dir: str, overrides: tuple[str, ...], workers_list: str, batches: int,
               warmup: int, as_json: bool) -> None:
    """Pipeline examples/s and frames/s per worker count, against the train step's consumption."""
    import json
    import os
    from pathlib import Path

    from omnidirector_jax.config import load_config
    from omnidirector_jax.data.pipeline import open_dataset
    from omnidirector_jax.errors import OmniDirectorError

    if not Path(config_path).is_file():
        raise OmniDirectorError(f"config {config_path!r} does not exist")
    try:
        workers = [int(w) for w in workers_list.split(",") if w.strip()]
    except ValueError:
        raise OmniDirectorError(f"--workers must be comma-separated integers, got {workers_list!r}") from None
    if not workers or min(workers) < 0 or batches < 1 or warmup < 0:
        raise OmniDirectorError("--workers needs counts >= 0, --batches >= 1 and --warmup >= 0")
    cfg = load_config(config_path, overrides)
    info = open_dataset(data_dir)  # fail on a bad folder before compiling anything

    step_s = train_step_seconds(cfg)
    b, t = cfg.shape.batch_size, cfg.shape.frames
    consume = {"step_s": step_s, "examples_per_s": b / step_s, "frames_per_s": b * t / step_s}
    rows = [loader_rate(cfg, data_dir, w, batches, warmup) for w in workers]
    for row in rows:
        row["ratio"] = row["examples_per_s"] / consume["examples_per_s"]
    report = {"config": cfg.name, "data": str(data_dir), "records": info.num_records, "cpus": os.cpu_count(),
              "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              "batch": b, "frames": t, "size": [cfg.shape.height, cfg.shape.width],
              "train_step": consume, "loader": rows}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{cfg.name}: batch {b} x {t} frames at {cfg.shape.height}x{cfg.shape.width}, "
               f"{info.num_records} records, {os.cpu_count()} CPUs")
    click.echo(f"train step {step_s * 1e3:.1f} ms -> consumes {consume['examples_per_s']:.1f} examples/s "
               f"({consume['frames_per_s']:.0f} frames/s)")
    click.echo(f"{'workers':>7} {'examples/s':>11} {'frames/s':>10} {'x train step':>13} {'CPU us/frame':>13} "
               f"{'warm-up s':>10}")
    for row in rows:
        click.echo(f"{row['workers']:>7} {row['examples_per_s']:>11.1f} {row['frames_per_s']:>10.0f} "
                   f"{row['ratio']:>12.1f}x {row['cpu_us_per_frame']:>13.1f} {row['warmup_s']:>10.2f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    click.echo(f"load average {load:.1f} on {os.cpu_count()} CPUs during the run (other jobs slow every figure)")


BENCH_COMMANDS.append(bench_data)
