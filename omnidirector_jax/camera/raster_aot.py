"""Ahead-of-time compile of the train step's grid path (tiled method) for a TPU topology, from a CPU host.

Needs the ``tpu`` extra (libtpu): ``jax.experimental.topologies`` describes the chips, the program is lowered
with inputs sharded over them (one trajectory per chip) and compiled; nothing runs. Reports each program's
per-device memory (``memory_analysis``), compile seconds, and whether its HLO has any scatter (it must not:
scatter is slow on TPU). ``python -m omnidirector_jax.camera.raster_aot --topology v5:4x8x8 --topology v6e:16x16``
"""

from __future__ import annotations

import argparse
import json
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from omnidirector_jax.camera import raster
from omnidirector_jax.camera.bench_device import train_step_frames


def compile_grid_path(topology: str, *, frames: int = 49, height: int = 480, width: int = 832,
                      per_chip: int = 1, tile_segments: int = 64, max_segments: int = 1024) -> list[dict]:
    """Forward (opencv and smooth profiles, exact lists) and gradient (smooth, static lists of
    ``tile_segments``) of ``per_chip`` trajectories per chip of ``topology`` → one row per program."""
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
    mesh = Mesh(np.array(devices), ("data",))
    batch = per_chip * len(devices)
    spec = NamedSharding(mesh, P("data"))
    args = (jax.ShapeDtypeStruct((batch, frames, 3, 4), jnp.float32, sharding=spec),
            jax.ShapeDtypeStruct((batch, frames), jnp.int32, sharding=spec),
            jax.ShapeDtypeStruct((batch, 2), jnp.uint32, sharding=spec))
    rows = []
    for profile, mode in (("opencv", "forward"), ("smooth", "forward"), ("smooth", "gradient")):
        cfg = raster.tuned(raster.RasterConfig(method="tiled", profile=profile, max_segments=max_segments,
                                               tile_segments=tile_segments if mode == "gradient" else None), "tpu")

        def render(w2c, shot, key, cfg=cfg):
            return jax.vmap(lambda w, s, k: train_step_frames(w, s, jax.random.wrap_key_data(k), height=height,
                                                              width=width, cfg=cfg, max_segments=max_segments)[0]
                            )(w2c, shot, key)

        fn = render if mode == "forward" else jax.grad(lambda w, s, k, render=render: render(w, s, k).mean())
        row = {"topology": topology, "chips": len(devices), "batch": f"{batch}x{frames}", "size": f"{height}x{width}",
               "profile": profile, "mode": mode}
        try:
            start = time.perf_counter()
            compiled = jax.jit(fn, out_shardings=spec).lower(*args).compile()
            row["compile_s"] = round(time.perf_counter() - start, 1)
            mem = compiled.memory_analysis()
            row |= {"temp_mb": mem.temp_size_in_bytes / 2**20, "output_mb": mem.output_size_in_bytes / 2**20,
                    "argument_mb": mem.argument_size_in_bytes / 2**20,
                    "scatter_ops": len(re.findall(r"\bscatter\(", compiled.as_text()))}
        except Exception as err:  # a program that does not fit reports RESOURCE_EXHAUSTED here
            row["error"] = f"{type(err).__name__}: {str(err)[:400]}"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append",
                        help="e.g. v5:4x8x8 (v5p-512), v5:2x4x4 (v5p-64), v6e:16x16 (repeatable)")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", default="480x832")
    opts = parser.parse_args()
    height, width = (int(v) for v in opts.size.split("x"))
    for topology in opts.topology or ["v5:4x8x8", "v6e:16x16"]:
        for row in compile_grid_path(topology, frames=opts.frames, height=height, width=width):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
