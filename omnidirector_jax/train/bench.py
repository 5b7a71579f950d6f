"""`omnidirector bench train`: the real train step on synthetic clips, timed in its steady state."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from omnidirector_jax.config import Config, load_config
from omnidirector_jax.models import flops as flops_lib
from omnidirector_jax.parallel.mesh import make_mesh


def synthetic_batch(cfg: Config, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Host clips of the config's shape: random frames, dolly / orbit / truck cameras, a two-shot clip with a cut."""
    from omnidirector_jax.data import sample_trajectories as samples
    from omnidirector_jax.models.tokenizer import load_tokenizer

    s = cfg.shape
    rng = np.random.default_rng(seed)
    names = ("dolly", "orbit", "truck", "pan")
    trajs = [samples.named(names[i % len(names)], s.height, s.width, s.frames) for i in range(batch)]
    frame_shot = np.zeros((batch, s.frames), np.int32)
    if batch > 1 and s.frames >= 5:  # a cut in the second clip: shot 0, cut frame, shot 1
        cut = s.frames // 2
        frame_shot[1, cut] = -1
        frame_shot[1, cut + 1:] = 1
    ids, mask = load_tokenizer(cfg.data.tokenizer or None)(["a slow dolly in through a room"] * batch,
                                                            cfg.model.text_len)
    frames = rng.integers(0, 256, (batch, s.frames, s.height, s.width, 3), dtype=np.uint8)
    return {"frames": frames, "ref_image": frames[:, 0].copy(),
            "w2c": np.stack([t.w2c[: s.frames] for t in trajs]).astype(np.float32),
            "K": np.stack([t.K[: s.frames] for t in trajs]).astype(np.float32),
            "frame_shot": frame_shot, "text_ids": ids, "text_mask": mask}


def encode_flops(cfg: Config, conditioner: Any, frozen: Any, batch: int) -> float:
    """FLOPs of encoding one step's grid, target video and reference image (XLA's count; 0 for pixels)."""
    if conditioner.kind == "pixel":
        return 0.0
    from flax import nnx

    s = cfg.shape

    def encode(frozen, video, image):  # unchunked: XLA counts a scan body once
        vae = nnx.merge(conditioner.vae_graphdef, frozen["vae"])
        return vae.encode_latents(video, chunked=False), vae.encode_latents(image, chunked=False)

    video = jax.ShapeDtypeStruct((2 * batch, s.frames, s.height, s.width, 3), np.float32)
    image = jax.ShapeDtypeStruct((batch, 1, s.height, s.width, 3), np.float32)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), frozen)
    lowered = jax.jit(encode).lower(abstract, video, image)
    cost = lowered.cost_analysis() or lowered.compile().cost_analysis()  # some backends count only compiled
    cost = cost[0] if isinstance(cost, list) else cost
    return float((cost or {}).get("flops", 0.0))


def run_train_bench(config_path: str, overrides: list[str], *, batch: int | None = None,
                    steps: int | None = None) -> dict[str, Any]:
    """`bench train`: the config at `batch` clips (default: one per device)."""
    batch = jax.device_count() if batch is None else batch
    return measure_train_step(load_config(config_path, [*overrides, f"shape.batch_size={batch}"]), steps)


def measure_train_step(cfg: Config, steps: int | None = None) -> dict[str, Any]:
    """Times the real train step of `cfg` (its `shape.batch_size`) after compile and warm-up."""
    from omnidirector_jax.train.conditions import build_conditioner
    from omnidirector_jax.train.state import init_state, make_layout
    from omnidirector_jax.train.step import batch_shardings, make_train_step, model_inputs

    batch = cfg.shape.batch_size
    steps = cfg.bench.steps if steps is None else steps
    mesh = make_mesh(cfg.mesh)
    layout = make_layout(cfg, mesh)
    state = init_state(layout)
    conditioner, frozen = build_conditioner(cfg, cfg.train.seed)
    frozen = jax.device_put(frozen, layout.replicated)
    host = synthetic_batch(cfg, batch)
    shardings = batch_shardings(layout, host)
    data = jax.device_put(host, shardings)
    t0 = time.perf_counter()
    step = make_train_step(cfg, layout, conditioner, data, frozen).lower(state, data, frozen).compile()
    compile_s = time.perf_counter() - t0

    def inputs_only(frozen, data):  # the conditions alone: grid render + encoders, as inside the step
        out = model_inputs(cfg, conditioner, frozen, data, jax.random.key(0))
        return out["ref"], out["grid"], out["target"], out["text"]

    conditions = jax.jit(inputs_only).lower(frozen, data).compile()
    times, cond_times = [], []
    for i in range(cfg.bench.warmup + steps):
        t = time.perf_counter()
        state, metrics = step(state, data, frozen)
        jax.block_until_ready(metrics)
        if i >= cfg.bench.warmup:
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        jax.block_until_ready(conditions(frozen, data))
        if i >= cfg.bench.warmup:
            cond_times.append(time.perf_counter() - t)
    best, median, cond = min(times), float(np.median(times)), min(cond_times)
    model_flops = flops_lib.count_flops(cfg).train_model
    enc = encode_flops(cfg, conditioner, frozen, batch)
    total = model_flops + enc
    peak, source = flops_lib.peak_tflops(cfg.model.dtype)
    n_dev = mesh.devices.size
    return {"config": cfg.name, "batch": batch, "devices": n_dev, "device_kind": jax.devices()[0].device_kind,
            "mesh": dict(mesh.shape), "params": flops_lib.count_params(cfg), "compile_s": compile_s,
            "step_s": best, "median_s": median, "model_flops": model_flops, "encode_flops": enc,
            "flops_per_step": total, "tflops_per_device": total / best / 1e12 / n_dev,
            "peak_tflops_per_device": peak, "peak_source": source, "mfu": flops_lib.mfu(total, best, peak, n_dev),
            "conditions_s": cond, "conditions_share": cond / best, "loss": float(metrics["loss"])}
