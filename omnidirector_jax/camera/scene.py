"""The camera grid's empty room (design §3), as a fixed-size array of 3D line segments.

Each shot gets its own room, built from that shot's camera centres:

* grid spacing ``g = max(10 · step_med, 0.5)`` (``step_med``: median distance between consecutive
  camera centres, ignoring steps under 1e-5), view distance ``v = max(15 · g, 15)``;
* floor and ceiling at ``y = median(cam_y) ± max(3g, 2)`` (+Y is down: the floor is the larger y);
* lattice nodes every ``g`` on X and Z (aligned to world multiples of ``g``); a node is *kept* when its
  X–Z distance to the trajectory (every 5th camera, and the last) is ``< max(8g, 8)``; an X- or
  Z-segment between neighbouring nodes is drawn, on floor and ceiling, when either end is kept;
* tunnel walls: vertical floor→ceiling segments at nodes with ``r_in < d < r_in + max(1.2g, 1)``,
  ``r_in = max(3.5g, 4)``.

Two builders produce the same segments: :func:`build_scene` on the host (NumPy + a SciPy KD-tree; compact
output, used by the CLI and the data pipeline) and :func:`build_scene_jax`, a jittable version over a
static, bounded lattice with brute-force distances, used inside the train step after pose jitter.
Segments are ordered by family (X, then Z, then vertical) — the order in which they are composited.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.camera.trajectory import Trajectory
from omnidirector_jax.config import GridConfig  # noqa: F401  (re-exported: the room constants)

FAMILIES = ("x", "z", "vertical")
FAMILY_X, FAMILY_Z, FAMILY_VERTICAL = 0, 1, 2
DEFAULT_COLORS = np.array([[0, 255, 255], [255, 0, 255], [255, 255, 0]], dtype=np.float32) / 255.0


def default_line_width(width: int) -> float:
    """Line width at full fog: ``max(4, W/320)`` at the model's 832-px width and above (design §3); narrower
    renders scale it down with the image (a 160-px grid gets ~0.8 px, not 4-px bars), drawn ≥ 1 px."""
    return max(4.0 * min(1.0, width / 832.0), width / 320.0)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Room segments for every shot of a trajectory (host arrays, padded to ``max_segments``).

    segments (S, 2, 3) float32 world endpoints; family (S,) int32 (0 X, 1 Z, 2 vertical);
    shot (S,) int32; valid (S,) bool; spacing / view (num_shots,) per-shot g and v.
    """

    segments: np.ndarray
    family: np.ndarray
    shot: np.ndarray
    valid: np.ndarray
    spacing: np.ndarray
    view: np.ndarray

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())

    def to_json(self) -> list[dict]:
        """The valid segments as ``[{"start", "end", "family", "shot"}, ...]`` (the --segments file)."""
        out = []
        for i in np.flatnonzero(self.valid):
            out.append({"start": [round(float(v), 6) for v in self.segments[i, 0]],
                        "end": [round(float(v), 6) for v in self.segments[i, 1]],
                        "family": FAMILIES[int(self.family[i])], "shot": int(self.shot[i])})
        return out


@dataclasses.dataclass(frozen=True)
class ShotRoom:
    """Per-shot scalars of the room (host floats)."""

    spacing: float
    view: float
    floor_y: float
    ceiling_y: float
    support: float
    tunnel_inner: float
    tunnel_outer: float


def median_step(centers: np.ndarray) -> float:
    """Median distance between consecutive camera centres, ignoring steps < 1e-5 (0 if none)."""
    if len(centers) < 2:
        return 0.0
    steps = np.linalg.norm(np.diff(centers, axis=0), axis=-1)
    steps = steps[steps >= 1e-5]
    return float(np.median(steps)) if steps.size else 0.0


def shot_room(centers: np.ndarray, cfg: GridConfig, subject: np.ndarray | None = None) -> ShotRoom:
    """Spacing, view distance, floor/ceiling heights and radii of one shot's room."""
    g = max(cfg.spacing_steps * median_step(centers), cfg.min_spacing)
    v = max(cfg.view_steps * g, cfg.min_view)
    if subject is not None:
        v = max(v, cfg.dolly_view_factor * float(np.linalg.norm(centers - subject, axis=-1).max()))
    half = max(cfg.floor_steps * g, cfg.floor_min)
    y_mid = float(np.median(centers[:, 1]))
    r_in = max(cfg.tunnel_inner_steps * g, cfg.tunnel_inner_min)
    return ShotRoom(spacing=g, view=v, floor_y=y_mid + half, ceiling_y=y_mid - half,
                    support=max(cfg.support_steps * g, cfg.support_min), tunnel_inner=r_in,
                    tunnel_outer=r_in + max(cfg.tunnel_width_steps * g, cfg.tunnel_width_min))


def _subsample(centers: np.ndarray, every: int) -> np.ndarray:
    idx = np.unique(np.append(np.arange(0, len(centers), every), len(centers) - 1))
    return centers[idx]


def _room_segments(centers: np.ndarray, room: ShotRoom, cfg: GridConfig,
                   subject: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 3) segments and (N,) families of one shot's room (NumPy, KD-tree distances)."""
    from scipy.spatial import cKDTree

    g = room.spacing
    xz = centers[:, [0, 2]]
    pts = xz if subject is None else np.vstack([xz, subject[[0, 2]]])
    pad = max(room.view, cfg.extent_min)
    # Only nodes within support + g of the cameras can be kept or neighbour a kept node; the design's
    # extent (bbox ± max(v, 10)) is never smaller, so this bound drops nothing.
    reach = min(pad, room.support + 2 * g)
    lo = np.floor((pts.min(0) - reach) / g).astype(int)
    hi = np.ceil((pts.max(0) + reach) / g).astype(int)
    ix, iz = np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1)
    nx, nz = np.meshgrid(ix * g, iz * g, indexing="ij")  # (X, Z) node coordinates
    nodes = np.stack([nx.ravel(), nz.ravel()], -1)
    dist, _ = cKDTree(_subsample(xz, cfg.camera_subsample)).query(nodes)
    dist = dist.reshape(nx.shape)
    keep = dist < room.support
    segs, fams = [], []
    for y in (room.floor_y, room.ceiling_y):
        for family, axis in ((FAMILY_X, 0), (FAMILY_Z, 1)):
            a = [slice(None), slice(None)]
            b = [slice(None), slice(None)]
            a[axis], b[axis] = slice(0, -1), slice(1, None)
            draw = keep[tuple(a)] | keep[tuple(b)]
            start = np.stack([nx[tuple(a)][draw], np.full(draw.sum(), y), nz[tuple(a)][draw]], -1)
            end = np.stack([nx[tuple(b)][draw], np.full(draw.sum(), y), nz[tuple(b)][draw]], -1)
            segs.append(np.stack([start, end], 1))
            fams.append(np.full(draw.sum(), family))
    wall = (dist > room.tunnel_inner) & (dist < room.tunnel_outer)
    n = int(wall.sum())
    start = np.stack([nx[wall], np.full(n, room.ceiling_y), nz[wall]], -1)
    end = np.stack([nx[wall], np.full(n, room.floor_y), nz[wall]], -1)
    segs.append(np.stack([start, end], 1))
    fams.append(np.full(n, FAMILY_VERTICAL))
    if subject is not None:
        cube, cube_fam = subject_cube(subject, cfg.cube_edge * float(np.linalg.norm(centers[0] - subject)))
        segs.append(cube)
        fams.append(cube_fam)
    return np.concatenate(segs).reshape(-1, 2, 3), np.concatenate(fams).astype(np.int32)


def subject_cube(center: np.ndarray, edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Wireframe cube (12 edges) centred on the subject; each edge takes the family of its axis."""
    h = edge / 2.0
    corners = np.array([[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)]) + center
    segs, fams = [], []
    for i in range(8):
        for j in range(i + 1, 8):
            diff = np.abs(corners[i] - corners[j]) > 1e-12
            if diff.sum() == 1:
                axis = int(np.argmax(diff))
                segs.append([corners[i], corners[j]])
                fams.append({0: FAMILY_X, 1: FAMILY_VERTICAL, 2: FAMILY_Z}[axis])
    return np.array(segs), np.array(fams, dtype=np.int32)


def build_scene(traj: Trajectory, cfg: GridConfig = GridConfig(), pad_to: int = 256) -> Scene:
    """Build every shot's room on the host; segments padded to a multiple of ``pad_to`` (jit cache)."""
    centers = traj.centers()
    subject = None if traj.effect is None else np.asarray(traj.effect.subject, dtype=np.float64)
    segs, fams, shots, spacing, view = [], [], [], [], []
    for i, (a, b) in enumerate(traj.shots()):
        room = shot_room(centers[a:b], cfg, subject)
        s, f = _room_segments(centers[a:b], room, cfg, subject)
        segs.append(s)
        fams.append(f)
        shots.append(np.full(len(f), i, dtype=np.int32))
        spacing.append(room.spacing)
        view.append(room.view)
    seg, fam, shot = np.concatenate(segs), np.concatenate(fams), np.concatenate(shots)
    order = np.lexsort((shot, fam))  # family-major: the compositing order
    seg, fam, shot = seg[order], fam[order], shot[order]
    total = max(pad_to, int(math.ceil(len(fam) / pad_to)) * pad_to)
    pad = total - len(fam)
    return Scene(
        segments=np.concatenate([seg, np.zeros((pad, 2, 3))]).astype(np.float32),
        family=np.concatenate([fam, np.zeros(pad, np.int32)]),
        shot=np.concatenate([shot, np.full(pad, -1, np.int32)]),
        valid=np.concatenate([np.ones(len(fam), bool), np.zeros(pad, bool)]),
        spacing=np.array(spacing, np.float32), view=np.array(view, np.float32))


# --------------------------------------------------------------------------------------- jittable
def _masked_median(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Median of x[mask] (0 when the mask is empty); jittable (sort with +inf padding)."""
    n = mask.sum()
    xs = jnp.sort(jnp.where(mask, x, jnp.inf))
    lo = xs[jnp.clip((n - 1) // 2, 0, x.shape[0] - 1)]
    hi = xs[jnp.clip(n // 2, 0, x.shape[0] - 1)]
    return jnp.where(n > 0, 0.5 * (lo + hi), 0.0)


@partial(jax.jit, static_argnames=("cfg", "lattice", "max_segments", "max_shots"))
def build_scene_jax(w2c: jax.Array, frame_shot: jax.Array, cfg: GridConfig = GridConfig(), *,
                    lattice: int = 48, max_segments: int = 2048, max_shots: int = 1) -> dict[str, jax.Array]:
    """Jittable room construction from (possibly jittered) poses.

    Args: w2c (T, 3, 4); frame_shot (T,) int32 shot id per frame, −1 for cut frames.
    Static: ``lattice`` nodes per axis around each shot's cameras (bounded node set), ``max_segments``
    output size, ``max_shots``. Returns dict with segments (max_segments, 2, 3), family, shot, valid,
    spacing / view (max_shots,), and ``overflow`` (count of segments that did not fit, plus nodes that
    fell outside the lattice; 0 when the result equals :func:`build_scene`).
    """
    rot, trans = w2c[:, :3, :3], w2c[:, :3, 3]
    centers = -jnp.einsum("tji,tj->ti", rot, trans)
    num = centers.shape[0]

    def one_shot(shot_id):
        in_shot = frame_shot == shot_id
        step = jnp.linalg.norm(jnp.diff(centers, axis=0), axis=-1)
        step_ok = in_shot[1:] & in_shot[:-1] & (step >= 1e-5)
        g = jnp.maximum(cfg.spacing_steps * _masked_median(step, step_ok), cfg.min_spacing)
        v = jnp.maximum(cfg.view_steps * g, cfg.min_view)
        half = jnp.maximum(cfg.floor_steps * g, cfg.floor_min)
        y_mid = _masked_median(centers[:, 1], in_shot)
        floor_y, ceil_y = y_mid + half, y_mid - half
        support = jnp.maximum(cfg.support_steps * g, cfg.support_min)
        r_in = jnp.maximum(cfg.tunnel_inner_steps * g, cfg.tunnel_inner_min)
        r_out = r_in + jnp.maximum(cfg.tunnel_width_steps * g, cfg.tunnel_width_min)
        xz = centers[:, jnp.array([0, 2])]
        lo = jnp.min(jnp.where(in_shot[:, None], xz, jnp.inf), axis=0)
        hi = jnp.max(jnp.where(in_shot[:, None], xz, -jnp.inf), axis=0)
        origin = jnp.round((lo + hi) / 2 / g) - lattice // 2  # lattice start, in units of g
        idx = jnp.arange(lattice, dtype=jnp.float32)
        nx = (origin[0] + idx)[:, None] * g + jnp.zeros((1, lattice))
        nz = (origin[1] + idx)[None, :] * g + jnp.zeros((lattice, 1))
        # Distances to every n-th camera of the shot (counted from its first frame) and its last one,
        # exactly the set the host builder puts in its KD-tree.
        frame = jnp.arange(num)
        first = jnp.min(jnp.where(in_shot, frame, num))
        last = jnp.max(jnp.where(in_shot, frame, -1))
        pick = (in_shot & ((frame - first) % cfg.camera_subsample == 0)) | (frame == last)
        d2 = (nx[..., None] - xz[:, 0]) ** 2 + (nz[..., None] - xz[:, 1]) ** 2
        dist = jnp.sqrt(jnp.where(pick, d2, jnp.inf).min(-1))
        keep = dist < support
        # A kept node on the lattice border may have neighbours outside it: count them as overflow.
        border = keep[0].sum() + keep[-1].sum() + keep[:, 0].sum() + keep[:, -1].sum()
        xs = jnp.stack([nx[:-1, :], nz[:-1, :]], -1), jnp.stack([nx[1:, :], nz[1:, :]], -1)
        x_draw = keep[:-1, :] | keep[1:, :]
        zs = jnp.stack([nx[:, :-1], nz[:, :-1]], -1), jnp.stack([nx[:, 1:], nz[:, 1:]], -1)
        z_draw = keep[:, :-1] | keep[:, 1:]

        def planar(ends, draw):
            a, b = (e.reshape(-1, 2) for e in ends)
            out = []
            for y in (floor_y, ceil_y):
                yy = jnp.full(a.shape[0], y)
                out.append(jnp.stack([jnp.stack([a[:, 0], yy, a[:, 1]], -1),
                                      jnp.stack([b[:, 0], yy, b[:, 1]], -1)], 1))
            return jnp.concatenate(out), jnp.concatenate([draw.ravel(), draw.ravel()])

        x_seg, x_ok = planar(xs, x_draw)
        z_seg, z_ok = planar(zs, z_draw)
        wall = ((dist > r_in) & (dist < r_out)).ravel()
        px, pz = nx.ravel(), nz.ravel()
        w_seg = jnp.stack([jnp.stack([px, jnp.full_like(px, ceil_y), pz], -1),
                           jnp.stack([px, jnp.full_like(px, floor_y), pz], -1)], 1)
        has = in_shot.any()
        return (x_seg, x_ok & has), (z_seg, z_ok & has), (w_seg, wall & has), g, v, border * has

    shot_ids = jnp.arange(max_shots)
    (xs, xo), (zs, zo), (ws, wo), g, v, border = jax.vmap(one_shot)(shot_ids)
    shot_of = lambda arr: jnp.broadcast_to(shot_ids[:, None], arr.shape[:2])  # noqa: E731
    seg = jnp.concatenate([xs.reshape(-1, 2, 3), zs.reshape(-1, 2, 3), ws.reshape(-1, 2, 3)])
    ok = jnp.concatenate([xo.ravel(), zo.ravel(), wo.ravel()])
    fam = jnp.concatenate([jnp.full(xo.size, FAMILY_X), jnp.full(zo.size, FAMILY_Z),
                           jnp.full(wo.size, FAMILY_VERTICAL)]).astype(jnp.int32)
    shot = jnp.concatenate([shot_of(xo).ravel(), shot_of(zo).ravel(), shot_of(wo).ravel()]).astype(jnp.int32)
    # The first max_segments kept ones, in order, by a stable sort: jnp.nonzero compiles to a scatter (slow on TPU).
    pick = jnp.argsort(~ok, stable=True)[:max_segments]
    pick = jnp.pad(pick, (0, max_segments - pick.shape[0]))  # fewer candidates than slots: index 0, invalid
    valid = jnp.arange(max_segments) < ok.sum()
    return {"segments": seg[pick], "family": fam[pick], "shot": jnp.where(valid, shot[pick], -1),
            "valid": valid, "spacing": g, "view": v,
            "overflow": jnp.maximum(ok.sum() - max_segments, 0) + border.sum()}


def scene_arrays(scene: Scene) -> dict[str, np.ndarray]:
    """A host :class:`Scene` as the dict of arrays that the rasterizer takes (same keys as the jax builder)."""
    return {"segments": scene.segments, "family": scene.family, "shot": scene.shot, "valid": scene.valid,
            "spacing": scene.spacing, "view": scene.view}

