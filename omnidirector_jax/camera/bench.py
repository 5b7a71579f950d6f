"""``omnidirector bench raster``: the JAX rasterizer against the OpenCV reference, same scenes, same run."""

from __future__ import annotations

import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.camera import poses, raster
from omnidirector_jax.camera.reference import render_grid_reference
from omnidirector_jax.camera.render import camera_arrays, fit_config, render_frames_sharded
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


def _time_best(fns: dict, repeats: int) -> dict:
    """Best wall time of each function, their runs interleaved so that all see the same machine load."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def run_raster_bench(num_frames: int = 49, repeats: int = 5) -> list[dict]:
    """One row per (scene, size) with frames/s of the JAX rasterizer three ways — on one device into reused
    (donated) memory, the steady state of a pipeline that renders batch after batch; on one device into fresh
    memory each call; and, where the host exposes several devices (the CLI splits a CPU into its cores), with
    frames split over all of them as ``render_grid`` does (kept device memory, frames returned as NumPy) —
    against the OpenCV reference (single-threaded, as written), timed interleaved in the same run; with compile
    seconds and peak memory. JAX times include the culling pre-pass that sizes ``max_segments`` (as
    ``render_grid`` does)."""
    rows = []
    devices = jax.local_devices()
    for name, traj in bench_trajectories(num_frames).items():
        for size in ((480, 832), (256, 256)):
            tr = traj if size == (480, 832) else traj.resized(*size)
            scene = build_scene(tr)
            cams = camera_arrays(tr, scene)
            arrays = scene_arrays(scene)
            kw = {"height": tr.height, "width": tr.width}
            one = {**kw, "devices": devices[:1]}  # the one-device columns run their pre-pass on that device too
            fitted = fit_config(arrays, cams, raster.RasterConfig(), **one)
            start = time.perf_counter()
            compiled = raster.render_frames.lower(arrays, cams, DEFAULT_COLORS, cfg=fitted, uint8=True,
                                                  **kw).compile()
            compile_s = time.perf_counter() - start
            memory = {"out": jnp.zeros((num_frames, tr.height, tr.width, 3), jnp.uint8),
                      "scratch": raster.frame_scratch(tr.height, tr.width, fitted)}

            def reused(arrays=arrays, cams=cams, kw=kw, one=one, memory=memory):
                cfg = fit_config(arrays, cams, raster.RasterConfig(), **one)
                out, _, scratch = raster.render_frames_into(arrays, cams, DEFAULT_COLORS, memory["out"],
                                                            memory["scratch"], cfg=cfg, **kw)
                memory["out"], memory["scratch"] = jax.block_until_ready((out, scratch))

            def fresh(arrays=arrays, cams=cams, one=one, compiled=compiled):
                fit_config(arrays, cams, raster.RasterConfig(), **one)
                return jax.block_until_ready(compiled(arrays, cams, DEFAULT_COLORS))

            def all_devices(arrays=arrays, cams=cams, kw=kw):
                cfg = fit_config(arrays, cams, raster.RasterConfig(), **kw)
                return render_frames_sharded(arrays, cams, DEFAULT_COLORS, cfg=cfg, uint8=True, **kw)

            fns = {"jax": reused, "jax_fresh": fresh,
                   "opencv": lambda tr=tr, scene=scene: render_grid_reference(tr, scene=scene)}
            if len(devices) > 1:
                fns["jax_all"] = all_devices
            for fn in fns.values():  # warm-up (and compile the other programs)
                fn()
            best = _time_best(fns, repeats)
            cv_s = best["opencv"]
            mem = compiled.memory_analysis()
            jax_mb = (mem.temp_size_in_bytes + mem.output_size_in_bytes) / 2**20 if mem is not None else float("nan")
            tracemalloc.start()  # a separate run: tracing slows Python down, so it must not be timed
            render_grid_reference(tr, scene=scene)
            cv_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            row = {"scene": f"{name} ({num_frames} frames)", "size": f"{size[0]}x{size[1]}",
                   "segments": scene.num_valid, "jax_compile_s": compile_s, "devices": len(devices),
                   "opencv_fps": num_frames / cv_s, "jax_peak_mb": jax_mb, "opencv_peak_mb": cv_mb,
                   "device": devices[0].platform}
            for key in ("jax", "jax_fresh", "jax_all"):
                seconds = best.get(key, best["jax_fresh"])
                row[f"{key}_fps"] = num_frames / seconds
                row["ratio" + key[3:]] = cv_s / seconds
            rows.append(row)
    return rows
