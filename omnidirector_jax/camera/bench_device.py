"""``omnidirector bench raster --device-path`` and ``--parity``: the train step's grid path on the default backend.

The device path is what the train step runs for every batch: a batch of trajectories under ``vmap``, the room
built on device (``build_scene_jax``), pose jitter and random colours (``camera.augment``), the rasterizer —
both methods and profiles, forward and (smooth profile) the gradient w.r.t. the poses. Reported per row:
frames/s, compile seconds, the compiled program's memory (``memory_analysis``) and, where the backend keeps
them, the device's peak bytes in use; and overflow (0: every frame exact).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.camera import poses, raster
from omnidirector_jax.camera.augment import jitter_poses, random_colors
from omnidirector_jax.camera.scene import build_scene_jax


def batch_inputs(batch: int, frames: int, seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``batch`` trajectories of ``frames`` frames (dollies and orbits at different offsets), their shot ids
    (one shot each) and per-trajectory keys."""
    t = np.arange(frames) / max(frames - 1, 1)
    w2c = np.zeros((batch, frames, 3, 4), np.float32)
    for b in range(batch):
        if b % 2 == 0:  # a dolly that drifts sideways
            w2c[b] = np.eye(4)[:3]
            w2c[b, :, 0, 3], w2c[b, :, 2, 3] = 0.03 + 0.2 * b * t, -4.9 * t - 0.017 * b
        else:  # an orbit around a point ahead
            ang = 0.2 * b + t
            eye = np.stack([4 * np.sin(ang) + 0.07, 0.03 + 0.05 * b + 0 * t, -4 * np.cos(ang) + 0.05], -1)
            w2c[b] = np.stack([poses.look_at_w2c(e, [0.0, 0.0, 0.0]) for e in eye])
    return jnp.asarray(w2c), jnp.zeros((batch, frames), jnp.int32), jax.random.split(jax.random.key(seed), batch)


def train_step_frames(w2c: jax.Array, frame_shot: jax.Array, key: jax.Array, *, height: int, width: int,
                      cfg: raster.RasterConfig, max_segments: int = 1024) -> tuple[jax.Array, jax.Array]:
    """One trajectory's grid as the train step renders it: room on device, jittered poses, random colours."""
    scene = build_scene_jax(w2c, frame_shot, lattice=40, max_segments=max_segments)
    shot = jnp.maximum(frame_shot, 0)
    k_pose, k_col = jax.random.split(key)
    w2c = jitter_poses(k_pose, w2c, scene["spacing"][shot])
    K = jnp.broadcast_to(jnp.asarray(poses.default_intrinsics(height, width), jnp.float32), (w2c.shape[0], 3, 3))
    cams = {"w2c": w2c, "K": K, "dist": jnp.zeros((w2c.shape[0], 4)), "shot": frame_shot,
            "spacing": scene["spacing"][shot], "view": scene["view"][shot]}
    return raster.render_frames(scene, cams, random_colors(k_col), height=height, width=width, cfg=cfg)


def _sized(cfg: raster.RasterConfig, inputs: tuple, height: int, width: int) -> raster.RasterConfig:
    """The static lists a gradient needs (``pixel_budget`` / ``tile_segments``), sized from this batch's frames
    by the rasterizer's own pre-passes (the train step would size them once from a sample of its data)."""

    def need(w2c, frame_shot, key):
        scene = build_scene_jax(w2c, frame_shot, lattice=40, max_segments=1024)
        shot = jnp.maximum(frame_shot, 0)
        w2c = jitter_poses(jax.random.split(key)[0], w2c, scene["spacing"][shot])
        K = jnp.broadcast_to(jnp.asarray(poses.default_intrinsics(height, width), jnp.float32),
                             (w2c.shape[0], 3, 3))
        cams = {"w2c": w2c, "K": K, "dist": jnp.zeros((w2c.shape[0], 4)), "shot": frame_shot,
                "spacing": scene["spacing"][shot], "view": scene["view"][shot]}
        fn = raster.required_budget if cfg.method == "scatter" else raster.required_tile_segments
        return fn(scene, cams, height=height, width=width, cfg=cfg)

    most = int(np.max(jax.jit(jax.vmap(need))(*inputs)))
    rounded = 1 << max(0, (most - 1).bit_length())  # a power of two: one program for similar batches
    if cfg.method == "scatter":
        return dataclasses.replace(cfg, pixel_budget=max(rounded, 1 << 12))
    return dataclasses.replace(cfg, tile_segments=max(rounded, 8))


def _peak_bytes() -> float:
    stats = jax.local_devices()[0].memory_stats() or {}
    return float(stats.get("peak_bytes_in_use", float("nan")))


def _time_best(fn, args, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def run_device_path_bench(batch: int = 8, frames: int = 49, height: int = 480, width: int = 832,
                          methods=raster.METHODS, profiles=raster.PROFILES, grad: bool = True,
                          repeats: int = 3, max_segments: int = 1024) -> list[dict]:
    """One row per (method, profile, forward | gradient) of the train-step grid path on the default backend,
    with the per-backend chunking of :func:`raster.tuned`."""
    backend = jax.default_backend()
    inputs = batch_inputs(batch, frames)
    n = batch * frames
    rows = []
    for method in methods:
        for profile in profiles:
            base = raster.tuned(raster.RasterConfig(method=method, profile=profile, max_segments=max_segments),
                                backend)
            modes = [("forward", base)] + ([("gradient", None)] if grad and profile == "smooth" else [])
            for mode, cfg in modes:
                row = {"method": method, "profile": profile, "mode": mode, "backend": backend,
                       "batch": f"{batch}x{frames}", "size": f"{height}x{width}"}
                try:
                    cfg = cfg or _sized(base, inputs, height, width)
                    render = jax.vmap(lambda w, s, k, cfg=cfg: train_step_frames(
                        w, s, k, height=height, width=width, cfg=cfg, max_segments=max_segments))
                    if mode == "forward":
                        fn = jax.jit(render)
                    else:
                        weights = jax.random.uniform(jax.random.key(1), (batch, frames, height, width, 3))

                        def loss(w, s, k, render=render, weights=weights):
                            return jnp.mean(render(w, s, k)[0] * weights)

                        fn = jax.jit(jax.grad(loss))
                    start = time.perf_counter()
                    compiled = fn.lower(*inputs).compile()
                    row["compile_s"] = time.perf_counter() - start
                    out = jax.block_until_ready(compiled(*inputs))  # warm-up
                    seconds = _time_best(compiled, inputs, repeats)
                    mem = compiled.memory_analysis()
                    row |= {"fps": n / seconds, "seconds": seconds, "peak_device_mb": _peak_bytes() / 2**20,
                            "program_mb": ((mem.temp_size_in_bytes + mem.output_size_in_bytes
                                            + mem.argument_size_in_bytes) / 2**20) if mem is not None else None,
                            "pixel_budget": cfg.pixel_budget, "tile_segments": cfg.tile_segments}
                    if mode == "forward":
                        row["overflow_frames"] = int((np.asarray(out[1]) > 0).sum())
                    else:
                        row["grad_finite"] = bool(np.isfinite(np.asarray(out)).all())
                except Exception as err:  # keep going: one failing row (e.g. out of memory) must not hide the rest
                    row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                rows.append(row)
    return rows


def run_parity(step: int = 4, methods=raster.METHODS) -> list[dict]:
    """Mean grey-level difference, opencv profile against the OpenCV reference, on every sample trajectory
    (every ``step``-th frame at its own size; the fisheye one at 120×208 with 4-px lines, as in the tests)."""
    from pathlib import Path

    from omnidirector_jax.camera.reference import render_grid_reference
    from omnidirector_jax.camera.render import render_grid
    from omnidirector_jax.camera.scene import build_scene
    from omnidirector_jax.camera.trajectory import Trajectory, load_trajectory

    rows = []
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("data", "trajectories").glob("*.json")):
        traj = load_trajectory(path)
        kw = {}
        if traj.is_fisheye:
            traj = traj.resized(120, 208)
            traj = Trajectory.create(traj.w2c[::12], traj.K[::12], height=120, width=208, dist=traj.dist[::12])
            kw = {"line_width": 4.0}
        else:
            traj = Trajectory.create(traj.w2c[::step], traj.K[::step], height=traj.height, width=traj.width,
                                     cuts=[c // step for c in traj.cuts if c % step == 0])
        scene = build_scene(traj)
        ref = render_grid_reference(traj, scene=scene, **kw).astype(float)
        for method in methods:
            cfg = raster.RasterConfig(method=method, line_width=kw.get("line_width"))
            got, overflow = render_grid(traj, scene=scene, cfg=cfg, return_overflow=True)
            rows.append({"scene": path.stem, "method": method, "size": f"{traj.height}x{traj.width}",
                         "frames": traj.num_frames, "mean_abs_grey": float(np.abs(got - ref).mean()),
                         "overflow": int(np.max(overflow)), "backend": jax.default_backend()})
    return rows
