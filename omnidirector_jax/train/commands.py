"""CLI: `omnidirector train`, `omnidirector aot` and `omnidirector bench train`."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []

_config_option = click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
                              help="YAML config (e.g. configs/tiny_cpu.yaml).")
_set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                           help="Config override, repeatable (e.g. --set data.dir=D --set train.steps=100).")


@click.command("train")
@_config_option
@click.option("--workdir", required=True, type=click.Path(file_okay=False),
              help="Run directory: checkpoints, metrics.jsonl, TensorBoard, previews, loss.png. Resumes from it.")
@_set_option
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps of this invocation.")
@click.option("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs without SLURM/TPU).")
@click.option("--num-processes", type=int, default=None, help="Processes in the run (with --coordinator).")
@click.option("--process-id", type=int, default=None, help="This process's index (with --coordinator).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on process 0.")
def train_command(config_path, workdir, overrides, max_steps, coordinator, num_processes, process_id, progress):
    """Train the model of CONFIG on the dataset `data.dir`, resuming from WORKDIR's latest checkpoint."""
    import logging
    from pathlib import Path

    from omnidirector_jax.parallel.distributed import maybe_initialize

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "jax._src.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    maybe_initialize(coordinator, num_processes, process_id)  # before anything touches a device

    import jax

    from omnidirector_jax.config import load_config
    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.train.loop import train

    cfg = load_config(config_path, overrides)
    if not cfg.data.dir:
        raise OmniDirectorError("data.dir is not set: pass --set data.dir=DATASET (made by omnidirector "
                                "build-dataset)")
    if not (Path(cfg.data.dir) / "manifest.json").is_file():
        raise OmniDirectorError(f"data.dir: no dataset at {cfg.data.dir} (no manifest.json); build one with "
                                f"omnidirector build-dataset")
    summary = train(cfg, workdir, progress=progress, max_steps=max_steps)
    last = summary.losses.get(summary.final_step)
    click.echo(f"process {jax.process_index()}/{jax.process_count()}: {summary.reason}: steps {summary.start_step} "
               f"-> {summary.final_step}" + (f", loss {last:.4f}" if last is not None else "")
               + f", last checkpoint {summary.last_checkpoint}, compile {summary.compile_s:.1f} s, params digest "
               f"{summary.params_digest}, workdir {Path(workdir).resolve()}")
    if summary.reason == "non_finite":
        raise OmniDirectorError(f"stopped at step {summary.final_step}: {cfg.train.max_bad_steps} non-finite steps "
                                f"in a row; the last good checkpoint is step {summary.last_checkpoint}")


COMMANDS.append(train_command)


@click.command("aot")
@_config_option
@click.option("--topology", required=True,
              help="TPU topology, e.g. v5:4x8x8 (v5p-512), v5:2x4x4 (v5p-64), v6e:16x16, v5e:16x16.")
@click.option("--num-slices", type=int, default=1, show_default=True, help="Slices (multi-slice) of the topology.")
@_set_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def aot_command(config_path, topology, num_slices, overrides, as_json):
    """Compile the real train step (grid render included) for a TPU topology on this machine, and report
    per-device memory, FLOPs and whether it fits in HBM. Needs the `tpu` extra (libtpu)."""
    import json

    from omnidirector_jax.train.aot import compile_for_topology

    report = compile_for_topology(config_path, topology, list(overrides), num_slices=num_slices)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    mem = report["memory_per_device"]
    gib = 1024**3
    click.echo(f"{report['config']} on {report['topology']} ({report['devices']} x {report['device_kind']}), "
               f"mesh {report['mesh']}, batch {report['batch']}")
    click.echo(f"compile {report['compile_s']:.1f} s; per device: arguments {mem['arguments'] / gib:.2f} GiB, "
               f"outputs {mem['outputs'] / gib:.2f}, temporaries {mem['temporaries'] / gib:.2f}, "
               f"total {mem['total'] / gib:.2f} of {report['hbm_per_device'] / gib:.0f} GiB HBM")
    click.echo(f"fits: {str(report['fits']).lower()}" + (f" ({report['error']})" if report.get("error") else ""))


COMMANDS.append(aot_command)


@click.command("train")
@_config_option
@_set_option
@click.option("--batch", type=int, default=None, help="Global batch (default: one clip per device).")
@click.option("--steps", type=int, default=None, help="Timed steps (default: bench.steps).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench_train(config_path, overrides, batch, steps, as_json):
    """Steady-state train-step time, TFLOP/s per device, MFU, the share spent rendering the grid and encoding
    the conditions, and compile time, on synthetic clips of the config's shape."""
    import json

    from omnidirector_jax.train.bench import run_train_bench

    report = run_train_bench(config_path, list(overrides), batch=batch, steps=steps)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{report['config']}: {report['params'] / 1e6:.1f} M params, batch {report['batch']}, "
               f"{report['devices']} x {report['device_kind']}, peak {report['peak_tflops_per_device']:.3f} "
               f"TFLOP/s/device ({report['peak_source']})")
    click.echo(f"compile {report['compile_s']:.1f} s; step {report['step_s']:.4f} s (median "
               f"{report['median_s']:.4f}); {report['flops_per_step'] / 1e12:.3f} TFLOP/step "
               f"(model {report['model_flops'] / 1e12:.3f} + encode {report['encode_flops'] / 1e12:.3f})")
    click.echo(f"{report['tflops_per_device']:.3f} TFLOP/s/device, MFU {100 * report['mfu']:.1f}%; grid + "
               f"encoding {report['conditions_s']:.4f} s = {100 * report['conditions_share']:.1f}% of the step")


BENCH_COMMANDS.append(bench_train)
