"""Ahead-of-time compilation of the train step for a TPU topology, on a machine without TPUs.

With the `tpu` extra installed (libtpu), JAX describes a TPU topology's devices without owning them; the real
train step (grid render, encoders, MMDiT forward and backward, AdamW) is traced with abstract inputs carrying
their shardings on a mesh over those devices, lowered and compiled by the TPU compiler. `memory_analysis()`
then gives each device's bytes, so a pod config is known to fit before anyone books the pod; a program that
does not fit fails to compile with RESOURCE_EXHAUSTED, which is reported as `fits: false`.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from omnidirector_jax.config import Config, load_config
from omnidirector_jax.errors import OmniDirectorError

# HBM per chip (GiB), by the topology name's generation prefix.
HBM_GIB = {"v4": 32, "v5e": 16, "v5": 95, "v5p": 95, "v6e": 32}


TPU_DEFAULTS = ("conditions.raster_method=tiled", "conditions.raster_backend=tpu", "model.attention=splash")


def hbm_bytes(topology: str) -> int:
    gen = topology.split(":")[0].lower()
    if gen not in HBM_GIB:
        raise OmniDirectorError(f"unknown TPU generation in topology {topology!r}; known: {', '.join(HBM_GIB)}")
    return HBM_GIB[gen] * 1024**3


def topology_devices(topology: str, num_slices: int = 1) -> list:
    try:
        from jax.experimental import topologies
    except ImportError as err:  # pragma: no cover - depends on the jax build
        raise OmniDirectorError(f"this jax has no topology support ({err})") from None
    try:
        desc = topologies.get_topology_desc(topology_name=topology, platform="tpu", num_slices=num_slices)
    except Exception as err:  # libtpu missing or an unknown topology: both arrive as runtime errors
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not _has_libtpu():
            raise OmniDirectorError(f"cannot describe TPU topology {topology!r}: {msg} (install the tpu extra: "
                                    f"pip install -e '.[tpu]')") from None
        raise OmniDirectorError(f"cannot describe TPU topology {topology!r}: {msg}") from None
    return list(desc.devices)


def _has_libtpu() -> bool:
    import importlib.util

    return importlib.util.find_spec("libtpu") is not None


def abstract_batch(cfg: Config, shardings_of: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """The step's inputs as ShapeDtypeStructs with their shardings (global batch)."""
    s, b = cfg.shape, cfg.shape.batch_size
    shapes = {"frames": ((b, s.frames, s.height, s.width, 3), np.uint8), "ref_image": ((b, s.height, s.width, 3),
                                                                                     np.uint8),
              "w2c": ((b, s.frames, 3, 4), np.float32), "K": ((b, s.frames, 3, 3), np.float32),
              "frame_shot": ((b, s.frames), np.int32), "text_ids": ((b, cfg.model.text_len), np.int32),
              "text_mask": ((b, cfg.model.text_len), np.bool_)}
    plain = {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in shapes.items()}
    sh = shardings_of(plain)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sh[k]) for k, v in plain.items()}


def compile_for_topology(config_path: str, topology: str, overrides: list[str], *,
                         num_slices: int = 1) -> dict[str, Any]:
    """Compiles the train step of `config_path` for `topology`; returns the memory/FLOP report."""
    from omnidirector_jax.parallel.mesh import make_mesh
    from omnidirector_jax.train.conditions import build_conditioner
    from omnidirector_jax.train.state import make_layout
    from omnidirector_jax.train.step import batch_shardings, make_train_step

    devices = topology_devices(topology, num_slices)
    # On TPU: the tiled rasterizer (scatter is slow there) and splash attention (XLA's materialises the full
    # score matrix), unless the overrides choose otherwise.
    defaults = [d for d in TPU_DEFAULTS if not any(o.startswith(d.split("=")[0] + "=") for o in overrides)]
    cfg = load_config(config_path, [*defaults, *overrides], num_devices=len(devices))
    mesh = make_mesh(cfg.mesh, devices)
    layout = make_layout(cfg, mesh)
    conditioner, frozen_abs = build_conditioner(cfg, cfg.train.seed, abstract=True)
    frozen = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=layout.replicated), frozen_abs)
    batch = abstract_batch(cfg, lambda b: batch_shardings(layout, b))
    report: dict[str, Any] = {"config": cfg.name, "topology": topology, "num_slices": num_slices,
                              "devices": len(devices), "device_kind": devices[0].device_kind,
                              "mesh": dict(mesh.shape), "batch": cfg.shape.batch_size,
                              "raster_method": cfg.conditions.raster_method, "attention": cfg.model.attention,
                              "hbm_per_device": hbm_bytes(topology)}
    t0 = time.perf_counter()
    step = make_train_step(cfg, layout, conditioner, batch, frozen)
    try:
        compiled = step.lower(layout.abstract, batch, frozen).compile()
    except Exception as err:  # XLA reports "does not fit" as a runtime error at compile time
        text = str(err)
        if "RESOURCE_EXHAUSTED" not in text and "exceeds" not in text:
            raise
        report.update(compile_s=time.perf_counter() - t0, fits=False,
                      error=next((ln for ln in text.splitlines() if "RESOURCE_EXHAUSTED" in ln or "exceeds" in ln),
                                 text.splitlines()[0])[:300],
                      memory_per_device={"arguments": 0, "outputs": 0, "temporaries": 0, "total": 0})
        return report
    report["compile_s"] = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    args, outs = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
    temps, alias = int(mem.temp_size_in_bytes), int(getattr(mem, "alias_size_in_bytes", 0))
    total = args + outs + temps - alias  # donated state: outputs alias the arguments
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    report.update(memory_per_device={"arguments": args, "outputs": outs, "temporaries": temps, "aliased": alias,
                                     "total": total},
                  fits=total <= report["hbm_per_device"], xla_flops_per_device=float((cost or {}).get("flops", 0.0)))
    from omnidirector_jax.models import flops as flops_lib

    report["params"] = flops_lib.count_params(cfg)
    report["model_flops_per_step"] = flops_lib.count_flops(cfg).train_model
    return report
