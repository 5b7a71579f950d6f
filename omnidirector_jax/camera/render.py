"""From a :class:`Trajectory` to camera-grid frames: the host-side entry point of the JAX rasterizer."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from omnidirector_jax.camera import raster
from omnidirector_jax.camera.scene import DEFAULT_COLORS, GridConfig, Scene, build_scene
from omnidirector_jax.camera.trajectory import Trajectory


def camera_arrays(traj: Trajectory, scene: Scene) -> dict[str, np.ndarray]:
    """Per-frame camera inputs of :func:`raster.render_frames` (float32 / int32 host arrays)."""
    shot = traj.shot_index()
    safe = np.maximum(shot, 0)
    dist = traj.dist if traj.dist is not None else np.zeros((traj.num_frames, 4))
    return {"w2c": traj.w2c.astype(np.float32), "K": traj.intrinsics().astype(np.float32),
            "dist": dist.astype(np.float32), "shot": shot.astype(np.int32),
            "spacing": scene.spacing[safe].astype(np.float32), "view": scene.view[safe].astype(np.float32)}


def _bucket(n: int, floor: int) -> int:
    """Next power of two ≥ n (and ≥ floor): few distinct shapes, so few compilations."""
    return max(floor, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def fit_config(scene: dict, cams: dict, cfg: raster.RasterConfig, *, height: int, width: int,
               fisheye: bool = False, devices=None) -> raster.RasterConfig:
    """``cfg`` with ``max_segments`` set (when it is None) to the most segments any frame sees, rounded up to a
    power of two: a cheap culling pre-pass that lets the rasterizer skip the rest of the room. The pre-pass
    splits the frames over ``devices`` like :func:`render_frames_sharded` (default: all local devices)."""
    if cfg.max_segments is not None:
        return cfg
    devices = tuple(jax.local_devices() if devices is None else devices)
    n_frames = len(cams["shot"])
    if len(devices) < 2 or n_frames < len(devices):
        seen = raster.visible_segments(scene, cams, height=height, width=width, cfg=cfg, fisheye=fisheye)
    else:
        fn = _sharded_visible(devices, height, width, cfg, fisheye)
        seen = fn(scene, {k: np.asarray(v)[_padded(n_frames, len(devices))] for k, v in cams.items()})
    n_segments = len(scene["valid"]) * (cfg.fisheye_pieces if fisheye else 1)
    return dataclasses.replace(cfg, max_segments=min(_bucket(int(np.max(seen)), 64), n_segments))


def _padded(n_frames: int, n_devices: int) -> np.ndarray:
    """Frame indices padded (with the last frame) to a multiple of the device count."""
    return np.minimum(np.arange(-(-n_frames // n_devices) * n_devices), n_frames - 1)


def _dealt(n_frames: int, n_devices: int) -> np.ndarray:
    """Frame indices dealt round-robin over the devices (device d: frames d, d + n, …), each device's share
    contiguous and padded with its own last frame. Neighbouring frames cost about the same, so every device
    gets a like share of the work (a trace of contiguous halves of a dolly showed one device idle for the last
    ~15%)."""
    per = -(-n_frames // n_devices)
    own = [np.arange(d, n_frames, n_devices) for d in range(n_devices)]
    return np.concatenate([np.concatenate([f, np.full(per - len(f), f[-1] if len(f) else n_frames - 1)])
                           for f in own]).astype(np.int64)


@functools.lru_cache(maxsize=64)
def _sharded_visible(devices: tuple, height: int, width: int, cfg: raster.RasterConfig, fisheye: bool):
    mesh = Mesh(np.array(devices), ("frames",))

    def local(scene, cams):
        return raster.visible_segments(scene, cams, height=height, width=width, cfg=cfg, fisheye=fisheye)

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("frames")), out_specs=P("frames")))


@functools.lru_cache(maxsize=64)
def _sharded_renderer(devices: tuple, height: int, width: int, cfg: raster.RasterConfig, fisheye: bool):
    """:func:`raster.render_frames_into` with frames split over ``devices`` (scene and colours replicated; each
    device has its own frames and scratch memory, both donated), compiled once."""
    mesh = Mesh(np.array(devices), ("frames",))

    def local(scene, cams, colors, out, scratch):
        frames, overflow, scratch = raster.render_frames_into(scene, cams, colors, out, scratch[0], height=height,
                                                              width=width, cfg=cfg, fisheye=fisheye)
        return frames, overflow, scratch[None]

    # check_vma=False: the rasterizer's loops start from fresh (unvarying) accumulators in every shard.
    split = P("frames")
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), split, P(), split, split),
                                 out_specs=(split, split, split), check_vma=False), donate_argnums=(3, 4))


# Device memory of the last few frame shapes, handed back to the renderer on the next call of the same shape:
# on CPU, fresh frame-sized buffers cost page faults on every call (about as much as drawing the frames).
_BUFFERS: dict = {}
_MAX_BUFFERS = 2


def _take_buffers(key: tuple, make):
    buffers = _BUFFERS.pop(key, None)
    return buffers if buffers is not None else make()


def _keep_buffers(key: tuple, buffers) -> None:
    _BUFFERS[key] = buffers
    while len(_BUFFERS) > _MAX_BUFFERS:
        _BUFFERS.pop(next(iter(_BUFFERS)))


def render_frames_sharded(scene: dict, cams: dict, colors, *, height: int, width: int, cfg: raster.RasterConfig,
                          fisheye: bool = False, uint8: bool = True, devices=None):
    """:func:`raster.render_frames` with the frames split over ``devices`` (default: all local devices of the
    default backend — on a CPU host split with ``--xla_force_host_platform_device_count``, its cores), each
    device rendering its share in parallel. Frames are padded to a multiple of the device count. Returns host
    (NumPy) frames and overflow; the device memory is kept for the next call of the same shape."""
    devices = tuple(jax.local_devices() if devices is None else devices)
    n_frames = len(cams["shot"])
    n_dev = len(devices) if n_frames >= 2 else 1
    pick = _dealt(n_frames, n_dev)
    dtype = jnp.uint8 if uint8 else jnp.float32
    scratch_size = raster.scratch_size(height, width, cfg)
    key = (devices[:n_dev], len(pick), height, width, np.dtype(dtype).name, scratch_size)

    def make():
        out = jnp.zeros((len(pick), height, width, 3), dtype)
        scratch = jnp.zeros((n_dev, scratch_size), jnp.complex64)
        if n_dev == 1:
            return jax.device_put(out, devices[0]), jax.device_put(scratch, devices[0])
        sharding = NamedSharding(Mesh(np.array(devices), ("frames",)), P("frames"))
        return jax.device_put(out, sharding), jax.device_put(scratch, sharding)

    out, scratch = _take_buffers(key, make)
    cams = {k: np.asarray(v)[pick] for k, v in cams.items()}
    if n_dev == 1:
        frames, overflow, scratch = raster.render_frames_into(scene, cams, colors, out, scratch[0], height=height,
                                                              width=width, cfg=cfg, fisheye=fisheye)
        scratch = scratch[None]
    else:
        frames, overflow, scratch = _sharded_renderer(devices, height, width, cfg, fisheye)(scene, cams, colors,
                                                                                            out, scratch)
    host = _undealt(frames, n_frames), _undealt(overflow, n_frames)
    _keep_buffers(key, (frames, scratch))
    return host


def _undealt(array: jax.Array, n_frames: int) -> np.ndarray:
    """Host copy, in frame order, of a frame-sharded array laid out by :func:`_dealt` (shard d holds frames
    d, d + n, … and then padding): each shard is copied once, straight to its frames' places, the shards in
    parallel threads (NumPy copies without the GIL; one thread copies ~11 GB/s here)."""
    host = np.empty((n_frames,) + array.shape[1:], array.dtype)
    shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
    n_dev = len(shards)

    def copy(d: int) -> None:  # a shard with only padding (more devices than frames) has nothing to copy
        own = host[d::n_dev]
        own[...] = np.asarray(shards[d].data)[:len(own)]

    if n_dev == 1:
        copy(0)
    else:
        list(_copy_pool().map(copy, range(n_dev)))
    return host


@functools.lru_cache(maxsize=1)
def _copy_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="frames-copy")


# Frames per rasterizer call in render_grid: a shot's frames go 64 at a time, its last piece rounded up to a
# multiple of 16. With one segment count and one max_segments for all shots, a trajectory of any length and
# any number of shots needs at most four compiled programs (compiling dominated multi-shot videos otherwise).
_PIECE, _PIECE_STEP = 64, 16


def _shot_pieces(start: int, end: int) -> list[np.ndarray]:
    """A shot's frame indices in pieces of _PIECE (the last rounded up to _PIECE_STEP, padded with its last frame)."""
    pieces = []
    for first in range(start, end, _PIECE):
        frames = np.arange(first, min(first + _PIECE, end))
        size = -(-len(frames) // _PIECE_STEP) * _PIECE_STEP
        pieces.append(np.concatenate([frames, np.full(size - len(frames), frames[-1])]))
    return pieces


def render_grid(traj: Trajectory, *, grid: GridConfig = GridConfig(), cfg: raster.RasterConfig | None = None,
                colors: np.ndarray | None = None, scene: Scene | None = None,
                return_overflow: bool = False):
    """Render the camera grid of ``traj`` at its own size → (T, H, W, 3) uint8 (JAX rasterizer).

    Shots are rendered against their own room only (a long multi-shot video would otherwise cull every shot's
    segments in every frame), in pieces of at most 64 frames; every shot's room is padded to one segment count
    and one ``max_segments`` (the most any frame sees) serves all pieces, so the whole trajectory compiles a
    few programs. Use ``traj.resized(h, w)`` for another size. Dolly-zoom overlays are added by
    :func:`render_trajectory`, not here.
    """
    cfg = cfg or raster.RasterConfig()
    scene = scene or build_scene(traj, grid)
    colors = DEFAULT_COLORS if colors is None else np.asarray(colors, np.float32)
    cams = camera_arrays(traj, scene)
    kw = {"height": traj.height, "width": traj.width, "fisheye": traj.is_fisheye}
    out = np.full((traj.num_frames, traj.height, traj.width, 3), 255, np.uint8)  # cut frames stay white
    overflow = np.zeros(traj.num_frames, np.int64)
    shots = traj.shots()
    keeps = [np.flatnonzero(scene.valid & (scene.shot == shot)) for shot in range(len(shots))]
    size = _bucket(max((len(k) for k in keeps), default=1), 256)
    work = []  # (room, cameras, frame indices) of every piece
    for keep, (start, end) in zip(keeps, shots, strict=True):
        pick = np.concatenate([keep, np.zeros(size - len(keep), np.int64)])
        room = {"segments": scene.segments[pick], "family": scene.family[pick], "shot": scene.shot[pick],
                "valid": np.arange(size) < len(keep)}
        work += [(room, {k: v[frames] for k, v in cams.items()}, frames) for frames in _shot_pieces(start, end)]
    if cfg.max_segments is None and work:
        cfg = max((fit_config(room, piece_cams, cfg, **kw) for room, piece_cams, _ in work),
                  key=lambda fitted: fitted.max_segments)
    for room, piece_cams, frames in work:
        rendered, over = render_frames_sharded(room, piece_cams, colors, cfg=cfg, uint8=True, **kw)
        out[frames] = rendered  # padding repeats the last frame: it writes the same image again
        overflow[frames] = over
    return (out, overflow) if return_overflow else out


def render_trajectory(traj: Trajectory, *, backend: str = "jax", grid: GridConfig = GridConfig(),
                      cfg: raster.RasterConfig | None = None, scene: Scene | None = None) -> np.ndarray:
    """Camera-grid video of ``traj`` with its effect overlays: (T, H, W, 3) uint8.

    ``backend``: ``jax`` (the rasterizer) or ``opencv`` (the NumPy/OpenCV reference renderer).
    """
    scene = scene or build_scene(traj, grid)
    if backend == "jax":
        frames = render_grid(traj, cfg=cfg, scene=scene)
    elif backend == "opencv":
        from omnidirector_jax.camera.reference import render_grid_reference

        line_width = None if cfg is None else cfg.line_width
        frames = render_grid_reference(traj, scene=scene, line_width=line_width)
    else:
        raise ValueError(f"unknown backend {backend!r} (expected 'jax' or 'opencv')")
    if traj.effect is None:
        return frames
    from omnidirector_jax.camera import effects

    pip = effects.tracking_trajectory(traj)
    pip_frames = render_grid(pip, scene=scene) if backend == "jax" else render_trajectory(
        pip, backend=backend, scene=scene)
    return effects.draw_dolly_overlays(frames, traj, pip_frames)
