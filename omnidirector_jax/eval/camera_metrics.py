"""Camera metrics between a reference and a generated (or estimated) trajectory (design §7).

Both trajectories must have the same number of frames. They are compared on *segments*: maximal runs of
frames that are not cuts in either trajectory and lie in one shot of each (when the cuts agree, the
segments are the shots). Each segment is aligned to its own first frame, in each trajectory separately:
for frame ``i`` of a segment starting at ``a``,

* relative rotation ``R_rel,i = R_a · R_iᵀ`` (camera ``i``'s orientation in camera ``a``'s frame),
* relative translation ``p_i = R_a (C_i − C_a)`` (camera ``i``'s centre in camera ``a``'s frame).

Per frame (the segment's first frame is identity by construction and is not counted):

* **RRE** (deg): the rotation angle of ``R_ref_rel · R_gen_relᵀ``;
* **RTE** (deg): the angle between ``p_ref`` and ``p_gen``, which ignores scale. A translation is *static*
  when ``‖p‖ ≤ static_tol · max_j ‖p_j‖`` over its segment (default 1 %), or when the whole segment moves
  less than ``abs_tol`` (1e-7 world units; a pure pan). Static in both → 0°; static in exactly one → 90°
  (one camera moves where the other does not, the direction cannot agree);
* **R-Pre** / **T-Pre**: share of counted frames with RRE < ``rre_threshold`` (default 5°) and
  RTE < ``rte_threshold`` (default 15°).

Means are over all counted frames of the video (frame-weighted); per-segment means are reported too.

**Tem-Pre**: the share of reference transitions matched one-to-one by a generated transition at most
``tem_tolerance`` (3) frames away (greedy, closest pairs first). A run of consecutive cut frames is one
transition, located at its first frame. With no reference transition, Tem-Pre is 1 when the generated
trajectory has none either, else 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory
from omnidirector_jax.errors import TrajectoryError

DEFAULT_RRE_THRESHOLD = 5.0
DEFAULT_RTE_THRESHOLD = 15.0
DEFAULT_TEM_TOLERANCE = 3
DEFAULT_STATIC_TOL = 0.01
DEFAULT_ABS_TOL = 1e-7


@dataclasses.dataclass(frozen=True)
class MetricConfig:
    rre_threshold: float = DEFAULT_RRE_THRESHOLD
    rte_threshold: float = DEFAULT_RTE_THRESHOLD
    tem_tolerance: int = DEFAULT_TEM_TOLERANCE
    static_tol: float = DEFAULT_STATIC_TOL
    abs_tol: float = DEFAULT_ABS_TOL


@dataclasses.dataclass
class CameraMetrics:
    """Scores of one comparison; per-frame arrays hold NaN on frames that are not counted."""

    rre: float
    rte: float
    r_pre: float
    t_pre: float
    tem_pre: float
    rre_per_frame: np.ndarray
    rte_per_frame: np.ndarray
    segments: list[dict]
    ref_transitions: list[int]
    gen_transitions: list[int]
    config: MetricConfig

    def to_json(self) -> dict:
        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 6)

        return {
            "RRE": num(self.rre), "RTE": num(self.rte), "R-Pre": num(self.r_pre), "T-Pre": num(self.t_pre),
            "Tem-Pre": num(self.tem_pre), "segments": self.segments,
            "ref_transitions": self.ref_transitions, "gen_transitions": self.gen_transitions,
            "thresholds": {"rre_deg": self.config.rre_threshold, "rte_deg": self.config.rte_threshold,
                           "tem_frames": self.config.tem_tolerance},
            "rre_per_frame": [num(v) for v in self.rre_per_frame],
            "rte_per_frame": [num(v) for v in self.rte_per_frame],
        }

    def table(self) -> str:
        """A plain-text table: one row per segment, then the totals."""
        c = self.config
        lines = [f"{'segment':>8} {'frames':>11} {'ref shot':>8} {'gen shot':>8} {'RRE °':>8} {'RTE °':>8}"]
        for i, s in enumerate(self.segments):
            lines.append(f"{i:>8} {s['start']:>5}–{s['end'] - 1:<5} {s['ref_shot']:>8} {s['gen_shot']:>8} "
                         f"{_fmt(s['rre'])} {_fmt(s['rte'])}")
        lines += [
            f"{'all':>8} {sum(s['counted'] for s in self.segments):>5} fr {'':>15} {_fmt(self.rre)} {_fmt(self.rte)}",
            "",
            f"RRE {self.rre:.3f}°   RTE {self.rte:.3f}°   R-Pre(<{c.rre_threshold:g}°) {self.r_pre:.3f}   "
            f"T-Pre(<{c.rte_threshold:g}°) {self.t_pre:.3f}   Tem-Pre(±{c.tem_tolerance}) {self.tem_pre:.3f}",
            f"transitions: reference {self.ref_transitions}, generated {self.gen_transitions}",
        ]
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return f"{'n/a':>8}" if x is None or not np.isfinite(x) else f"{x:>8.3f}"


# ------------------------------------------------------------------------------------------- pieces
def relative_to_first(w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``R_0 R_iᵀ`` (N,3,3) and positions ``R_0 (C_i − C_0)`` (N,3) relative to frame 0."""
    w2c = np.asarray(w2c, dtype=np.float64)
    rot = w2c[:, :, :3]
    centers = poses.camera_centers(w2c)
    rel_rot = rot[0] @ np.swapaxes(rot, -1, -2)
    rel_pos = (centers - centers[0]) @ rot[0].T
    return rel_rot, rel_pos


def rotation_errors(rot_ref: np.ndarray, rot_gen: np.ndarray) -> np.ndarray:
    """Angle (deg) of ``R_ref · R_genᵀ`` per frame."""
    return poses.rotation_angle_deg(rot_ref @ np.swapaxes(rot_gen, -1, -2))


def translation_errors(pos_ref: np.ndarray, pos_gen: np.ndarray, static_tol: float = DEFAULT_STATIC_TOL,
                       abs_tol: float = DEFAULT_ABS_TOL) -> np.ndarray:
    """Angle (deg) between translation directions per frame, with the static rules of the module doc."""

    def static(pos: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(pos, axis=1)
        scale = float(norm.max(initial=0.0))
        return np.ones_like(norm, dtype=bool) if scale <= abs_tol else norm <= static_tol * scale

    s_ref, s_gen = static(pos_ref), static(pos_gen)
    nr = np.linalg.norm(pos_ref, axis=1)
    ng = np.linalg.norm(pos_gen, axis=1)
    cos = np.sum(pos_ref * pos_gen, axis=1) / np.maximum(nr * ng, 1e-300)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return np.where(s_ref & s_gen, 0.0, np.where(s_ref ^ s_gen, 90.0, angle))


def transitions(traj: Trajectory) -> list[int]:
    """Transition positions: the first frame of each run of consecutive cut frames."""
    cuts = list(traj.cuts)
    return [c for i, c in enumerate(cuts) if i == 0 or cuts[i - 1] != c - 1]


def temporal_precision(ref: Sequence[int], gen: Sequence[int], tolerance: int = DEFAULT_TEM_TOLERANCE) -> float:
    """Share of reference transitions matched one-to-one by a generated one within ``tolerance`` frames."""
    if not len(ref):
        return 1.0 if not len(gen) else 0.0
    pairs = sorted((abs(r - g), i, j) for i, r in enumerate(ref) for j, g in enumerate(gen)
                   if abs(r - g) <= tolerance)
    used_r, used_g = set(), set()
    for _, i, j in pairs:
        if i not in used_r and j not in used_g:
            used_r.add(i)
            used_g.add(j)
    return len(used_r) / len(ref)


def segments(ref: Trajectory, gen: Trajectory) -> list[tuple[int, int, int, int]]:
    """(start, end, ref shot, gen shot) of the maximal runs of frames in one shot of each trajectory."""
    si, sg = ref.shot_index(), gen.shot_index()
    out, start = [], None
    for f in range(ref.num_frames + 1):
        same = f < ref.num_frames and si[f] >= 0 and sg[f] >= 0
        if start is not None and (not same or (si[f], sg[f]) != (si[start], sg[start])):
            out.append((start, f, int(si[start]), int(sg[start])))
            start = None
        if same and start is None:
            start = f
    return out


# ------------------------------------------------------------------------------------------- metrics
def camera_metrics(ref: Trajectory, gen: Trajectory, config: MetricConfig = MetricConfig()) -> CameraMetrics:
    """RRE, RTE, R-Pre, T-Pre and Tem-Pre of ``gen`` against ``ref`` (see the module documentation)."""
    if ref.num_frames != gen.num_frames:
        raise TrajectoryError(f"the trajectories have different lengths: reference {ref.num_frames} frames, "
                              f"generated {gen.num_frames}")
    num = ref.num_frames
    rre = np.full(num, np.nan)
    rte = np.full(num, np.nan)
    segs = []
    for a, b, rs, gs in segments(ref, gen):
        rot_r, pos_r = relative_to_first(ref.w2c[a:b])
        rot_g, pos_g = relative_to_first(gen.w2c[a:b])
        e_rot = rotation_errors(rot_r, rot_g)
        e_tr = translation_errors(pos_r, pos_g, config.static_tol, config.abs_tol)
        rre[a + 1:b], rte[a + 1:b] = e_rot[1:], e_tr[1:]
        counted = b - a - 1
        segs.append({"start": a, "end": b, "ref_shot": rs, "gen_shot": gs, "counted": counted,
                     "rre": float(e_rot[1:].mean()) if counted else None,
                     "rte": float(e_tr[1:].mean()) if counted else None,
                     "rre_max": float(e_rot.max()), "rte_max": float(e_tr.max())})
    counted = ~np.isnan(rre)
    if counted.any():
        r_mean, t_mean = float(rre[counted].mean()), float(rte[counted].mean())
        r_pre = float((rre[counted] < config.rre_threshold).mean())
        t_pre = float((rte[counted] < config.rte_threshold).mean())
    else:
        r_mean = t_mean = r_pre = t_pre = float("nan")
    ref_tr, gen_tr = transitions(ref), transitions(gen)
    return CameraMetrics(r_mean, t_mean, r_pre, t_pre, temporal_precision(ref_tr, gen_tr, config.tem_tolerance),
                         rre, rte, segs, ref_tr, gen_tr, config)
