"""A procedural world renderer in JAX: textured rooms with boxes and spheres, seen from a given trajectory.

It makes videos whose cameras are known exactly (the input trajectory), to measure the pose estimators
(design §7), feed the CPU demo data set, and close the generate → estimate → compare loop.

The world of each shot is built on the host (NumPy, seeded) from that shot's cameras:

* a room: an axis-aligned box around the shot's camera centres, ``margin = max(1.5 · L, 2)`` on every side
  (``L``: diagonal of the centres' bounding box; world units are taken as metres, as in the camera grid);
* objects: axis-aligned boxes and spheres, mostly placed in front of randomly chosen cameras (so they are
  in view and give parallax at several depths), never closer than a clearance to any camera centre;
* materials: every surface (each room wall, each object) gets two colours around the room's dominant hue,
  a checker or stripe pattern and multi-octave 3D value noise. The noise's finest octave is about 4 px at
  the typical viewing distance for a 256-px-wide image (walls: the margin; objects: a few times their
  size), which gives SIFT/ORB plenty of corners and blobs to match.

Rendering ray-casts every pixel (pinhole ``K``, ``w2c`` in the OpenCV convention), ``supersample²`` rays
per pixel averaged (box filter) so textures do not shimmer, with Lambert shading from one light per room.
Frames go through ``lax.map`` in small batches (XLA:CPU materialises per-pixel × per-surface
intermediates; whole-video ``vmap`` would need gigabytes). Multi-shot trajectories get a differently
seeded room per shot; a cut frame shows the next shot (a hard switch on that frame), so a shot detector
sees real cuts at exactly the trajectory's cut indices.
"""

from __future__ import annotations

import colorsys
import dataclasses
import logging
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory
from omnidirector_jax.errors import OmniDirectorError

log = logging.getLogger(__name__)

_ROOM_FACES = 6
_EPS = 1e-4


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Knobs of the procedural world (defaults tuned for 256×144 videos and feature matching)."""

    num_boxes: int = 8
    num_spheres: int = 6
    margin_scale: float = 1.5  # room margin = max(margin_scale · L, min_margin) around the camera centres
    min_margin: float = 2.0
    clearance: float = 0.2  # object surfaces stay ≥ clearance · margin from every camera centre
    in_view_share: float = 0.75  # share of objects placed in front of a camera (the rest anywhere)
    noise_octaves: int = 4
    finest_wavelength: float = 0.02  # finest noise octave, in units of the room margin
    supersample: int = 2  # rays per pixel along each axis
    frames_per_call: int = 8  # frames per jitted call (padded: one compile per size)
    batch_size: int = 2  # frames per lax.map step inside a call


@dataclasses.dataclass(frozen=True)
class World:
    """One room with its objects and materials (NumPy float32; fixed shapes for a given config)."""

    room_lo: np.ndarray  # (3,)
    room_hi: np.ndarray  # (3,)
    box_lo: np.ndarray  # (Nb, 3)
    box_hi: np.ndarray  # (Nb, 3)
    spheres: np.ndarray  # (Ns, 4): centre, radius
    color_a: np.ndarray  # (M, 3) per material (6 walls, then boxes, then spheres)
    color_b: np.ndarray  # (M, 3)
    pattern: np.ndarray  # (M, 4): pattern frequency, checker(1)/stripes(0), noise weight, noise frequency
    stripe_dir: np.ndarray  # (M, 3)
    light: np.ndarray  # (3,) unit direction towards the light
    seed: int

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.room_lo, self.room_hi, self.box_lo, self.box_hi, self.spheres, self.color_a, self.color_b,
                self.pattern, self.stripe_dir, self.light)


# ------------------------------------------------------------------------------------------ world building
def build_world(w2c: np.ndarray, rng: np.random.Generator, config: WorldConfig = WorldConfig(),
                hue: float | None = None) -> World:
    """A random room around the cameras ``w2c (N,3,4)`` with objects in their views.

    ``hue`` (0–1) is the room's dominant hue (random when None): materials vary around it, so rooms of
    consecutive shots, given well-separated hues, differ at a glance, as different scenes do.
    """
    w2c = np.asarray(w2c, dtype=np.float64)
    centers = poses.camera_centers(w2c)
    forwards = w2c[:, 2, :3]  # third row of R: the optical axis in world coordinates
    lo, hi = centers.min(0), centers.max(0)
    diag = float(np.linalg.norm(hi - lo))
    margin = max(config.margin_scale * diag, config.min_margin)
    room_lo, room_hi = lo - margin, hi + margin
    clearance = config.clearance * margin

    def fits(center: np.ndarray, half: np.ndarray, is_sphere: bool) -> bool:
        if np.any(center - half < room_lo + 0.05 * margin) or np.any(center + half > room_hi - 0.05 * margin):
            return False
        if is_sphere:
            dist = np.linalg.norm(centers - center, axis=1) - half[0]
        else:  # distance from each camera centre to the box
            dist = np.linalg.norm(np.maximum(np.abs(centers - center) - half, 0.0), axis=1)
        return bool(dist.min() > clearance)

    def place(is_sphere: bool) -> tuple[np.ndarray, np.ndarray]:
        for attempt in range(200):
            if rng.random() < config.in_view_share and attempt < 150:
                i = rng.integers(len(centers))
                depth = _exit_distance(centers[i], forwards[i], room_lo, room_hi) * rng.uniform(0.25, 0.85)
                right, down = w2c[i, 0, :3], w2c[i, 1, :3]
                center = (centers[i] + depth * forwards[i] + depth * 0.45 * rng.uniform(-1, 1) * right
                          + depth * 0.3 * rng.uniform(-1, 1) * down)
                size = depth * rng.uniform(0.08, 0.22)
            else:
                center = rng.uniform(room_lo, room_hi)
                size = margin * rng.uniform(0.1, 0.3)
            half = np.full(3, size) if is_sphere else size * rng.uniform(0.5, 1.5, size=3)
            if fits(center, half, is_sphere):
                return center, half
        # No room left (a tiny room crowded by cameras): park a small object in a far corner, out of the way.
        return room_hi - 0.1 * margin, np.full(3, 0.02 * margin)

    boxes = [place(False) for _ in range(config.num_boxes)]
    spheres = [place(True) for _ in range(config.num_spheres)]
    num_mat = _ROOM_FACES + config.num_boxes + config.num_spheres
    hue = rng.random() if hue is None else hue
    hues = (hue + rng.normal(0.0, 0.05, size=(num_mat, 2))) % 1.0
    # A few objects get an accent colour; the walls, most of every frame, keep the room's hue.
    accent = rng.random(num_mat) < 0.2
    accent[:_ROOM_FACES] = False
    hues[accent, 1] = rng.random(accent.sum())
    sat = rng.uniform(0.35, 0.9, size=(num_mat, 2))
    color_a = np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in
                        zip(hues[:, 0], sat[:, 0], rng.uniform(0.05, 0.4, num_mat), strict=True)])
    color_b = np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in
                        zip(hues[:, 1], sat[:, 1], rng.uniform(0.65, 1.0, num_mat), strict=True)])
    # Pattern cells of 0.06–0.25 margins; the noise's base octave is 2^(octaves-1) finest wavelengths.
    # Texture scale per material: walls are seen from about a margin away; an object from about
    # 1 / 0.15 of its size (see place()), often closer: scale its texture with its size so that
    # near objects keep fine detail instead of showing magnified noise.
    sizes = np.array([h.max() for _, h in boxes + spheres])
    scale = np.concatenate([np.full(_ROOM_FACES, margin), np.minimum(margin, 5.0 * sizes)])
    base_noise = 1.0 / (config.finest_wavelength * scale * 2 ** (config.noise_octaves - 1))
    pattern = np.stack([
        1.0 / (scale * rng.uniform(0.06, 0.25, size=num_mat)),
        (rng.random(num_mat) < 0.6).astype(np.float64),
        rng.uniform(0.35, 0.7, size=num_mat),
        base_noise * rng.uniform(0.8, 1.25, size=num_mat),
    ], axis=1)
    stripe_dir = rng.normal(size=(num_mat, 3))
    stripe_dir /= np.linalg.norm(stripe_dir, axis=1, keepdims=True)
    light = rng.normal(size=3) + np.array([0.0, -1.5, 0.0])  # mostly from above (−Y is up)
    light /= np.linalg.norm(light)
    f32 = partial(np.asarray, dtype=np.float32)
    return World(f32(room_lo), f32(room_hi), f32([c - h for c, h in boxes]), f32([c + h for c, h in boxes]),
                 f32([[*c, h[0]] for c, h in spheres]), f32(color_a), f32(color_b), f32(pattern), f32(stripe_dir),
                 f32(light), int(rng.integers(2**31)))


def _exit_distance(origin: np.ndarray, direction: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Distance along a ray from inside a box to its wall."""
    d = np.where(np.abs(direction) < 1e-9, 1e-9, direction)
    t = np.where(d > 0, (hi - origin) / d, (lo - origin) / d)
    return float(t.min())


# ------------------------------------------------------------------------------------------- JAX shading
def _hash(ix: jax.Array, iy: jax.Array, iz: jax.Array, seed: jax.Array) -> jax.Array:
    """Integer lattice → uniform [0, 1) (spatial hash + murmur3 finaliser; uint32 arithmetic wraps)."""
    u32 = jnp.uint32
    h = (ix.astype(u32) * u32(73856093)) ^ (iy.astype(u32) * u32(19349663)) ^ (iz.astype(u32) * u32(83492791))
    h = h ^ seed.astype(u32)
    h = h ^ (h >> 16)
    h = h * u32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * u32(0xC2B2AE35)
    h = h ^ (h >> 16)
    return (h >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def _value_noise(p: jax.Array, seed: jax.Array) -> jax.Array:
    """Trilinear value noise with smoothstep weights at points ``p (..., 3)``, in [0, 1]."""
    cell = jnp.floor(p)
    frac = p - cell
    w = frac * frac * (3.0 - 2.0 * frac)
    ci = cell.astype(jnp.int32)
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corner = _hash(ci[..., 0] + dx, ci[..., 1] + dy, ci[..., 2] + dz, seed)
                weight = ((w[..., 0] if dx else 1 - w[..., 0]) * (w[..., 1] if dy else 1 - w[..., 1])
                          * (w[..., 2] if dz else 1 - w[..., 2]))
                out = out + weight * corner
    return out


def _fbm(p: jax.Array, freq: jax.Array, seed: jax.Array, octaves: int) -> jax.Array:
    """Fractal sum of value-noise octaves (lacunarity 2, gain 0.6), normalised to about [0, 1]."""
    total, amp, norm = 0.0, 1.0, 0.0
    for octave in range(octaves):
        total = total + amp * _value_noise(p * (freq * 2.0**octave)[..., None], seed + octave * 7919)
        norm += amp
        amp *= 0.6
    return total / norm


def _intersect(origin: jax.Array, dirs: jax.Array, world: tuple) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Nearest hit of rays (P,3) from one origin: distance (P,), material (P,), unit normal (P,3)."""
    room_lo, room_hi, box_lo, box_hi, spheres = world[:5]
    safe = jnp.where(jnp.abs(dirs) < 1e-9, jnp.where(dirs < 0, -1e-9, 1e-9), dirs)
    inv = 1.0 / safe
    # Room (seen from inside): exit distance per axis, the nearest axis is the wall hit.
    t_axis = jnp.where(safe > 0, (room_hi - origin) * inv, (room_lo - origin) * inv)  # (P,3)
    wall_axis = jnp.argmin(t_axis, axis=-1)
    t_room = jnp.min(t_axis, axis=-1)
    wall_pos = jnp.take_along_axis(safe, wall_axis[:, None], axis=-1)[:, 0] > 0
    wall_mat = wall_axis * 2 + wall_pos.astype(jnp.int32)
    wall_normal = -jax.nn.one_hot(wall_axis, 3) * jnp.where(wall_pos, 1.0, -1.0)[:, None]
    # Boxes (slab method, seen from outside).
    t1 = (box_lo[None] - origin) * inv[:, None]  # (P,Nb,3)
    t2 = (box_hi[None] - origin) * inv[:, None]
    t_near3 = jnp.minimum(t1, t2)
    t_near = jnp.max(t_near3, axis=-1)
    t_far = jnp.min(jnp.maximum(t1, t2), axis=-1)
    box_hit = (t_far >= t_near) & (t_near > _EPS)
    t_box = jnp.where(box_hit, t_near, jnp.inf)
    box_axis = jnp.argmax(t_near3, axis=-1)  # (P,Nb): the slab entered last is the face hit
    # Spheres (dirs are unit vectors).
    oc = origin - spheres[:, :3]  # (Ns,3)
    b = dirs @ oc.T  # (P,Ns)
    c = jnp.sum(oc * oc, axis=-1) - spheres[:, 3] ** 2
    disc = b * b - c
    t_sph = -b - jnp.sqrt(jnp.maximum(disc, 0.0))
    t_sph = jnp.where((disc > 0) & (t_sph > _EPS), t_sph, jnp.inf)

    t_all = jnp.concatenate([t_room[:, None], t_box, t_sph], axis=-1)
    which = jnp.argmin(t_all, axis=-1)
    t_hit = jnp.min(t_all, axis=-1)
    num_boxes = box_lo.shape[0]
    box_idx = jnp.clip(which - 1, 0, max(num_boxes - 1, 0))
    sph_idx = jnp.clip(which - 1 - num_boxes, 0, max(spheres.shape[0] - 1, 0))
    point = origin + t_hit[:, None] * dirs
    hit_axis = jnp.take_along_axis(box_axis, box_idx[:, None], axis=-1)[:, 0]
    box_normal = jax.nn.one_hot(hit_axis, 3) * -jnp.sign(jnp.take_along_axis(safe, hit_axis[:, None], -1))
    sph_normal = point - spheres[sph_idx, :3]
    sph_normal = sph_normal / jnp.maximum(jnp.linalg.norm(sph_normal, axis=-1, keepdims=True), 1e-9)
    is_room, is_box = which == 0, (which >= 1) & (which <= num_boxes)
    normal = jnp.where(is_room[:, None], wall_normal, jnp.where(is_box[:, None], box_normal, sph_normal))
    material = jnp.where(is_room, wall_mat, _ROOM_FACES + which - 1)
    return t_hit, material, normal


def _shade_frame(w2c: jax.Array, K: jax.Array, world: tuple, seed: jax.Array, *, height: int, width: int,
                 supersample: int, octaves: int) -> jax.Array:
    """One frame (H, W, 3) float32 in [0, 1]."""
    color_a, color_b, pattern, stripe_dir, light = world[5:]
    s = supersample
    # Sub-pixel sample positions: pixel centres are integers, so a pixel covers [x − ½, x + ½].
    offs = (jnp.arange(s, dtype=jnp.float32) + 0.5) / s - 0.5
    xs = (jnp.arange(width, dtype=jnp.float32)[:, None] + offs[None]).reshape(-1)
    ys = (jnp.arange(height, dtype=jnp.float32)[:, None] + offs[None]).reshape(-1)
    u, v = jnp.meshgrid(xs, ys)  # (H·s, W·s)
    pix = jnp.stack([u, v, jnp.ones_like(u)], axis=-1).reshape(-1, 3)
    rot, trans = w2c[:, :3], w2c[:, 3]
    dirs_cam = pix @ jnp.linalg.inv(K).T
    dirs = dirs_cam @ rot  # Rᵀ · d for each row
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    origin = -rot.T @ trans
    t_hit, mat, normal = _intersect(origin, dirs, world)
    point = origin + t_hit[:, None] * dirs

    params = pattern[mat]  # (P,4)
    freq, is_checker, noise_w, noise_freq = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
    mat_seed = seed + mat.astype(jnp.uint32) * jnp.uint32(1013)
    # Offset by half a cell so axis-aligned walls never sit exactly on a checker boundary.
    cells = jnp.floor(point * freq[:, None] + 0.5).astype(jnp.int32)
    checker = (jnp.sum(cells, axis=-1) % 2).astype(jnp.float32)
    stripes = (jnp.floor(jnp.sum(point * stripe_dir[mat], -1) * freq * 2.0) % 2).astype(jnp.float32)
    pat = jnp.where(is_checker > 0.5, checker, stripes)
    # fBm values cluster around ½ (std ≈ 0.1): stretch them so the noise carries real contrast.
    noise = jnp.clip((_fbm(point, noise_freq, mat_seed, octaves) - 0.5) * 3.0 + 0.5, 0.0, 1.0)
    mix = jnp.clip((1 - noise_w) * pat + noise_w * noise, 0.0, 1.0)
    albedo = color_a[mat] * (1 - mix[:, None]) + color_b[mat] * mix[:, None]
    grain = _fbm(point, noise_freq * 4.0, mat_seed + 77, 2)  # fine grain: texture even inside cells
    albedo = albedo * jnp.clip(0.6 + 2.0 * (grain - 0.5), 0.25, 1.4)[:, None]
    facing = -jnp.sign(jnp.sum(normal * dirs, -1, keepdims=True))  # normals towards the viewer
    lambert = jnp.maximum(jnp.sum(normal * facing * light, -1), 0.0)
    color = albedo * (0.45 + 0.55 * lambert)[:, None]
    img = color.reshape(height, s, width, s, 3).mean(axis=(1, 3))
    return jnp.clip(img, 0.0, 1.0) ** (1.0 / 1.5)  # display gamma: the linear shading looks dark


@partial(jax.jit, static_argnames=("height", "width", "supersample", "octaves", "batch_size"))
def _render_batch(w2c: jax.Array, K: jax.Array, world: tuple, seed: jax.Array, *, height: int, width: int,
                  supersample: int, octaves: int, batch_size: int) -> jax.Array:
    def one(args):
        pose, intr = args
        img = _shade_frame(pose, intr, world, seed, height=height, width=width, supersample=supersample,
                           octaves=octaves)
        return jnp.round(img * 255.0).astype(jnp.uint8)

    return jax.lax.map(one, (w2c, K), batch_size=batch_size)


@partial(jax.jit, static_argnames=("height", "width"))
def _depth_batch(w2c: jax.Array, K: jax.Array, world: tuple, *, height: int, width: int) -> jax.Array:
    """Camera-z depth (world units) of the surface seen through every pixel centre, (N, H, W) float32."""
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                          indexing="ij")
    pix = jnp.stack([xs, ys, jnp.ones_like(xs)], -1).reshape(-1, 3)

    def one(args):
        pose, intr = args
        rot, trans = pose[:, :3], pose[:, 3]
        dirs = pix @ jnp.linalg.inv(intr).T @ rot  # camera z = 1, turned to the world
        norm = jnp.linalg.norm(dirs, axis=-1)
        t_hit, _, _ = _intersect(-rot.T @ trans, dirs / norm[:, None], world)
        return (t_hit / norm).reshape(height, width)  # distance along the unit ray -> camera z

    return jax.lax.map(one, (w2c, K), batch_size=2)


def render_world_frames(world: World, w2c: np.ndarray, K: np.ndarray, height: int, width: int,
                        config: WorldConfig = WorldConfig()) -> np.ndarray:
    """Render ``w2c (N,3,4)`` with ``K (N,3,3)`` in one world → (N, H, W, 3) uint8."""
    num = w2c.shape[0]
    chunk = config.frames_per_call
    arrays = tuple(jnp.asarray(a) for a in world.arrays())
    seed = jnp.uint32(world.seed)
    out = []
    for start in range(0, num, chunk):
        stop = min(start + chunk, num)
        pad = chunk - (stop - start)  # pad to a fixed size: one compile for every chunk
        pw = np.concatenate([w2c[start:stop], np.repeat(w2c[stop - 1:stop], pad, 0)]).astype(np.float32)
        pk = np.concatenate([K[start:stop], np.repeat(K[stop - 1:stop], pad, 0)]).astype(np.float32)
        frames = _render_batch(pw, pk, arrays, seed, height=height, width=width, supersample=config.supersample,
                               octaves=config.noise_octaves, batch_size=config.batch_size)
        out.append(np.asarray(frames)[: stop - start])
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------ trajectories
def shot_worlds(traj: Trajectory, seed: int = 0, config: WorldConfig = WorldConfig()) -> list[World]:
    """One world per shot, seeded by (seed, shot index): different rooms, reproducible.

    Dominant hues step by the golden ratio from shot to shot (≈ 137° apart on the colour wheel), so a
    cut always changes the colours of the whole frame.
    """
    base_hue = float(np.random.default_rng([seed]).random())
    worlds = []
    for i, (a, b) in enumerate(traj.shots()):
        rng = np.random.default_rng([seed, i])
        hue = (base_hue + 0.381966 * i) % 1.0
        worlds.append(build_world(traj.w2c[a:b], rng, config, hue=hue))
    return worlds


def frame_sources(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """For every frame: (shot whose world it shows, frame whose camera renders it).

    A cut frame shows the first frame of the next shot (a hard switch on the cut frame itself), or the
    last frame of the previous shot when the video ends with cuts.
    """
    shots = traj.shots()
    shot_of = np.empty(traj.num_frames, dtype=np.int64)
    cam_of = np.arange(traj.num_frames)
    ranges_start = np.array([a for a, _ in shots])
    for f in range(traj.num_frames):
        later = np.flatnonzero(ranges_start > f) if f in traj.cuts else np.array([], dtype=np.int64)
        if f not in traj.cuts:
            shot_of[f] = next(i for i, (a, b) in enumerate(shots) if a <= f < b)
        elif later.size:
            shot_of[f] = later[0]
            cam_of[f] = shots[later[0]][0]
        else:
            shot_of[f] = len(shots) - 1
            cam_of[f] = shots[-1][1] - 1
    return shot_of, cam_of


def render_world_depth(world: World, w2c: np.ndarray, K: np.ndarray, height: int, width: int,
                       config: WorldConfig = WorldConfig()) -> np.ndarray:
    """Camera-z depth (world units) of ``w2c (N,3,4)`` / ``K (N,3,3)`` in one world at pixel centres, (N, H, W)
    float32: what :func:`render_world_frames` draws is at that depth (its supersampled rays average around it)."""
    num, chunk = w2c.shape[0], config.frames_per_call
    arrays = tuple(jnp.asarray(a) for a in world.arrays())
    out = []
    for start in range(0, num, chunk):
        stop = min(start + chunk, num)
        pad = chunk - (stop - start)
        pw = np.concatenate([w2c[start:stop], np.repeat(w2c[stop - 1:stop], pad, 0)]).astype(np.float32)
        pk = np.concatenate([K[start:stop], np.repeat(K[stop - 1:stop], pad, 0)]).astype(np.float32)
        out.append(np.asarray(_depth_batch(pw, pk, arrays, height=height, width=width))[: stop - start])
    return np.concatenate(out)


def render_trajectory(traj: Trajectory, *, seed: int = 0, size: tuple[int, int] | None = None,
                      config: WorldConfig = WorldConfig(), progress: bool = False, with_depth: bool = False
                      ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render the procedural world along ``traj`` → (T, H, W, 3) uint8 RGB frames, and with ``with_depth`` also
    their camera-z depth maps (T, H, W) float32 (:func:`render_world_depth`).

    ``size`` (H, W) resizes the trajectory's intrinsics first. The cameras of the video are exactly the
    trajectory's (cut frames: see :func:`frame_sources`).
    """
    if traj.is_fisheye:
        raise OmniDirectorError("the world renderer draws pinhole cameras only; this trajectory has fisheye "
                                "distortion ('dist')")
    if size is not None:
        traj = traj.resized(*size)
    worlds = shot_worlds(traj, seed, config)
    K = traj.intrinsics()
    shot_of, cam_of = frame_sources(traj)
    frames = np.zeros((traj.num_frames, traj.height, traj.width, 3), dtype=np.uint8)
    depth = np.zeros((traj.num_frames, traj.height, traj.width), dtype=np.float32) if with_depth else None
    iterator = range(len(worlds))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="rendering shots", unit="shot")
    for s in iterator:
        idx = np.flatnonzero(shot_of == s)
        log.info("shot %d: rendering %d frames at %dx%d", s, idx.size, traj.width, traj.height)
        frames[idx] = render_world_frames(worlds[s], traj.w2c[cam_of[idx]], K[cam_of[idx]], traj.height,
                                          traj.width, config)
        if with_depth:
            depth[idx] = render_world_depth(worlds[s], traj.w2c[cam_of[idx]], K[cam_of[idx]], traj.height,
                                            traj.width, config)
    return (frames, depth) if with_depth else frames
