"""``omnidirector bench raster``: the JAX rasterizer against the OpenCV reference, same scenes, same run."""

from __future__ import annotations

import time
import tracemalloc
from functools import partial

import jax
import numpy as np

from omnidirector_jax.camera import poses, raster
from omnidirector_jax.camera.reference import render_grid_reference
from omnidirector_jax.camera.render import camera_arrays
from omnidirector_jax.camera.scene import DEFAULT_COLORS, build_scene, scene_arrays
from omnidirector_jax.camera.trajectory import Trajectory


def bench_trajectories(num_frames: int) -> dict[str, Trajectory]:
    """A forward dolly and an orbit (the benchmark scenes), at 480×832."""
    t = np.arange(num_frames)
    dolly = np.tile(np.eye(4)[:3], (num_frames, 1, 1))
    dolly[:, 0, 3], dolly[:, 2, 3] = 0.031, -0.1 * t + 0.017
    ang = np.linspace(0.0, 1.0, num_frames)
    eye = np.stack([4 * np.sin(ang) + 0.07, 0.03 + 0 * ang, -4 * np.cos(ang) + 0.05], -1)
    orbit = np.stack([poses.look_at_w2c(e, [0.0, 0.0, 0.0]) for e in eye])
    return {"dolly": Trajectory.create(dolly, height=480, width=832),
            "orbit": Trajectory.create(orbit, height=480, width=832)}


def _time_best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run_raster_bench(num_frames: int = 49, repeats: int = 3) -> list[dict]:
    """One row per (scene, size): JAX fps (jit, after warm-up), compile seconds, OpenCV fps, ratio, memory."""
    rows = []
    for name, traj in bench_trajectories(num_frames).items():
        for size in ((480, 832), (256, 256)):
            tr = traj if size == (480, 832) else traj.resized(*size)
            scene = build_scene(tr)
            cams = camera_arrays(tr, scene)
            arrays = scene_arrays(scene)
            cfg = raster.RasterConfig()
            fn = jax.jit(partial(raster.render_frames, colors=DEFAULT_COLORS, height=tr.height, width=tr.width,
                                 cfg=cfg, uint8=True))
            start = time.perf_counter()
            compiled = fn.lower(arrays, cams).compile()
            compile_s = time.perf_counter() - start
            jax.block_until_ready(compiled(arrays, cams))  # warm-up
            jax_s = _time_best(lambda: jax.block_until_ready(compiled(arrays, cams)), repeats)  # noqa: B023
            mem = compiled.memory_analysis()
            jax_mb = (mem.temp_size_in_bytes + mem.output_size_in_bytes) / 2**20 if mem is not None else float("nan")
            cv_s = _time_best(lambda: render_grid_reference(tr, scene=scene), repeats)  # noqa: B023
            tracemalloc.start()  # a separate run: tracing slows Python down, so it must not be timed
            render_grid_reference(tr, scene=scene)
            cv_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            jax_fps, cv_fps = num_frames / jax_s, num_frames / cv_s
            rows.append({"scene": f"{name} ({num_frames} frames)", "size": f"{size[0]}x{size[1]}",
                         "segments": scene.num_valid, "jax_fps": jax_fps, "jax_compile_s": compile_s,
                         "opencv_fps": cv_fps, "ratio": jax_fps / cv_fps, "jax_peak_mb": jax_mb,
                         "opencv_peak_mb": cv_mb, "device": jax.devices()[0].platform})
    return rows
