"""CLI commands of the models package: `omnidirector bench model`, `omnidirector convert-wan`."""

from __future__ import annotations

import click


@click.command("model")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="YAML config (e.g. configs/bench_cpu.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override, repeatable (e.g. --set model.depth=2 --set mesh=fsdp).")
@click.option("--steps", type=int, default=None, help="Timed steps (default: bench.steps).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench_model(config_path: str, overrides: tuple[str, ...], steps: int | None, as_json: bool) -> None:
    """Parameters, tokens, analytic FLOPs, step time, TFLOP/s and MFU of the model's (`model.backbone`: MMDiT or
    Wan) forward and train step."""
    import json
    import time

    import jax

    from omnidirector_jax.config import load_config
    from omnidirector_jax.models import flops as flops_lib
    from omnidirector_jax.models import mmdit
    from omnidirector_jax.parallel.mesh import make_mesh
    from omnidirector_jax.train.partition import ShardedModel, make_optimizer

    cfg = load_config(config_path, overrides)
    steps = cfg.bench.steps if steps is None else steps
    mesh = make_mesh(cfg.mesh)
    n_dev = mesh.devices.size
    t0 = time.perf_counter()
    sharded = ShardedModel.create(cfg, mesh)
    jax.block_until_ready(sharded.state)
    init_s = time.perf_counter() - t0
    batch = mmdit.dummy_batch(cfg.model, cfg.shape, 1)
    batch = jax.device_put(batch, sharded.batch_shardings(batch))
    count = flops_lib.count_flops(cfg)
    peak, peak_source = flops_lib.peak_tflops(cfg.model.dtype)

    def timed(fn, *args, donate: bool = False):
        """(compile seconds, best-of-steps seconds, outputs) for a jitted fn."""
        t = time.perf_counter()
        compiled = fn.lower(*args).compile()
        compile_s = time.perf_counter() - t
        out = None
        times = []
        for i in range(cfg.bench.warmup + steps):
            t = time.perf_counter()
            out = compiled(*args)
            jax.block_until_ready(out)
            if i >= cfg.bench.warmup:
                times.append(time.perf_counter() - t)
            if donate:  # train step: feed the updated (donated) state back in
                args = (out[0], out[1], *args[2:])
        return compile_s, min(times), sorted(times)[len(times) // 2]

    fwd_compile, fwd_best, fwd_median = timed(sharded.forward(batch), sharded.state, batch)
    tx = make_optimizer(cfg)
    opt_state = sharded.init_optimizer(tx)
    train_compile, train_best, train_median = timed(sharded.train_step(tx, batch), sharded.state, opt_state, batch,
                                                    donate=True)

    def rates(total: float, seconds: float) -> dict[str, float]:
        return {"step_s": seconds, "tflops_per_s": total / seconds / 1e12,
                "tflops_per_s_per_device": total / seconds / 1e12 / n_dev,
                "mfu": flops_lib.mfu(total, seconds, peak, n_dev)}

    report = {
        "config": cfg.name,
        "devices": n_dev,
        "device_kind": jax.devices()[0].device_kind,
        "mesh": dict(mesh.shape),
        "params": flops_lib.count_params(cfg),
        "batch": cfg.shape.batch_size,
        "tokens_per_sample": {"visual": count.visual_tokens, "text": count.text_tokens},
        "flops": count.to_dict(),
        "peak_tflops_per_device": peak,
        "peak_source": peak_source,
        "init_s": init_s,
        "forward": {"compile_s": fwd_compile, "median_s": fwd_median, **rates(count.forward_total, fwd_best)},
        "train_step": {"compile_s": train_compile, "median_s": train_median,
                       **rates(count.train_model, train_best)},
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{cfg.name}: {report['params'] / 1e6:.2f} M params, {n_dev} x {report['device_kind']}, "
               f"mesh {report['mesh']}, peak {peak:.3f} TFLOP/s/device ({peak_source})")
    click.echo(f"tokens/sample: {count.visual_tokens} visual + {count.text_tokens} text, batch {cfg.shape.batch_size}")
    for name, total in (("forward", count.forward_total), ("train_step", count.train_model)):
        r = report[name]
        click.echo(f"{name:>10}: {total / 1e9:10.2f} GFLOP  compile {r['compile_s']:6.1f} s  step {r['step_s']:.3f} s "
                   f"{r['tflops_per_s']:.3f} TFLOP/s  MFU {100 * r['mfu']:.1f}%")


BENCH_COMMANDS: list[click.Command] = [bench_model]


@click.command("convert-wan")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(), help="Checkpoint folder to write (must not exist).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="ModelConfig field override, repeatable (e.g. --set segment_embed=true --set dtype=bfloat16).")
def convert_wan(folder: str, out: str, overrides: tuple[str, ...]) -> None:
    """Converts a diffusers Wan 2.1 T2V `transformer/` FOLDER (safetensors) into an Orbax checkpoint:
    OUT/params (the NNX parameters) and OUT/model_config.json; `omnidirector train --set init.from=OUT`
    starts from it."""
    import os

    import yaml

    from omnidirector_jax.errors import ConfigError
    from omnidirector_jax.models import backbones, flops, wan

    if os.path.exists(out):
        raise click.ClickException(f"{out} exists; choose a new --out folder")
    fields = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        fields[key.strip().removeprefix("model.")] = yaml.safe_load(raw)
    model = wan.load_wan_transformer(folder, **fields)
    backbones.save_converted(model, model.cfg, out)
    from omnidirector_jax.config import Config

    n = flops.count_params(Config(model=model.cfg))
    m = model.cfg
    click.echo(f"{folder} -> {out}: Wan {m.depth} layers, width {m.hidden_size}, {n / 1e9:.3f} B params")


COMMANDS: list[click.Command] = [convert_wan]
