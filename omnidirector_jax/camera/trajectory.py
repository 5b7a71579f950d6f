"""Camera trajectories: the data model, validation, and the JSON / ``.npz`` file forms.

JSON (version 1, human-editable)::

    {"version": 1, "height": 480, "width": 832, "fps": 25,
     "w2c": [T × 3×4], "K": 3×3 shared or T × 3×3, "dist": optional [k1..k4] or T × 4 (Kannala–Brandt),
     "cuts": optional sorted transition frame indices (rendered white; their w2c is ignored),
     "effect": optional {"type": "dolly_zoom", "subject": [x, y, z], "f_ref": f}}

``.npz`` (the form feed-forward estimators such as Depth Anything 3 export): ``extrinsics (N,3,4)`` w2c,
optional ``intrinsics (N,3,3)``, ``distortion (N,4)`` and ``stride`` (poses every stride-th frame,
densified by SLERP). Our own writer adds ``image_size (2,)`` (H, W), ``fps`` and ``cuts``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.errors import TrajectoryError

SCHEMA_VERSION = 1
_ROTATION_TOL = 1e-3  # max |RᵀR − I| entry; estimators export float32, so allow a little slack


@dataclasses.dataclass(frozen=True)
class DollyZoom:
    """Dolly zoom: focal ∝ subject distance, ``f_t = f_ref · d_t / d_0``, so the subject keeps its size."""

    subject: tuple[float, float, float]
    f_ref: float

    def to_json(self) -> dict:
        return {"type": "dolly_zoom", "subject": list(self.subject), "f_ref": self.f_ref}


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectory:
    """One camera trajectory: per-frame ``w2c (T,3,4)``, ``K (T,3,3)``, optional fisheye ``dist (T,4)``.

    ``cuts`` are transition frames (rendered pure white); the frames between them form the shots.
    Construct through :meth:`create` (or the loaders), which validates and normalises shapes.
    """

    w2c: np.ndarray
    K: np.ndarray
    height: int
    width: int
    fps: float = 25.0
    dist: np.ndarray | None = None
    cuts: tuple[int, ...] = ()
    effect: DollyZoom | None = None

    # ----------------------------------------------------------------------------------------- build
    @classmethod
    def create(cls, w2c, K=None, *, height: int, width: int, fps: float = 25.0, dist=None, cuts=(),
               effect: DollyZoom | None = None) -> Trajectory:
        """Validate and normalise: K/dist may be shared (one for all frames) or per frame."""
        if not isinstance(height, int | np.integer) or not isinstance(width, int | np.integer) or \
                height <= 0 or width <= 0:
            raise TrajectoryError(f"image size must be positive integers, got height={height} width={width}")
        w2c = _as_array("w2c", w2c)
        if w2c.ndim != 3 or w2c.shape[1:] not in ((3, 4), (4, 4)):
            raise TrajectoryError(f"w2c must have shape (T, 3, 4) or (T, 4, 4), got {w2c.shape}")
        w2c = w2c[:, :3, :]
        num = w2c.shape[0]
        if num < 2:
            raise TrajectoryError(f"a trajectory needs at least 2 frames, got {num}")
        K = poses.default_intrinsics(height, width) if K is None else _as_array("K", K)
        if K.shape == (3, 3):
            K = np.broadcast_to(K, (num, 3, 3))
        if K.shape != (num, 3, 3):
            raise TrajectoryError(f"K must have shape (3, 3) or ({num}, 3, 3), got {K.shape}")
        if np.any(K[:, 0, 0] <= 0) or np.any(K[:, 1, 1] <= 0):
            raise TrajectoryError("K must have positive focal lengths (K[0,0] and K[1,1])")
        if dist is not None:
            dist = _as_array("dist", dist)
            if dist.shape == (4,):
                dist = np.broadcast_to(dist, (num, 4))
            if dist.shape != (num, 4):
                raise TrajectoryError(f"dist must have shape (4,) or ({num}, 4), got {dist.shape}")
        cuts = _check_cuts(cuts, num)
        if len(cuts) == num:
            raise TrajectoryError("every frame is a cut: the trajectory has no camera to render")
        live = np.setdiff1d(np.arange(num), np.asarray(cuts, dtype=int))
        _check_rotations(w2c[live, :, :3], live)
        if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
            raise TrajectoryError(f"fps must be a positive number, got {fps!r}")
        if effect is not None:
            subject = np.asarray(effect.subject, dtype=np.float64)
            if subject.shape != (3,) or not np.all(np.isfinite(subject)) or not effect.f_ref > 0:
                raise TrajectoryError("dolly_zoom needs a finite 3-vector 'subject' and a positive 'f_ref'")
        return cls(np.ascontiguousarray(w2c), np.ascontiguousarray(K), int(height), int(width), float(fps),
                   None if dist is None else np.ascontiguousarray(dist), cuts, effect)

    # -------------------------------------------------------------------------------------- queries
    @property
    def num_frames(self) -> int:
        return int(self.w2c.shape[0])

    @property
    def is_fisheye(self) -> bool:
        return self.dist is not None

    def shots(self) -> list[tuple[int, int]]:
        """Half-open frame ranges [start, end) of the shots: maximal runs of frames that are not cuts."""
        cut = np.zeros(self.num_frames, dtype=bool)
        cut[list(self.cuts)] = True
        ranges, start = [], None
        for i, is_cut in enumerate(cut):
            if not is_cut and start is None:
                start = i
            if is_cut and start is not None:
                ranges.append((start, i))
                start = None
        if start is not None:
            ranges.append((start, self.num_frames))
        return ranges

    def shot_index(self) -> np.ndarray:
        """(T,) int32: the shot of each frame, −1 on cut frames."""
        out = np.full(self.num_frames, -1, dtype=np.int32)
        for i, (a, b) in enumerate(self.shots()):
            out[a:b] = i
        return out

    def centers(self) -> np.ndarray:
        """(T, 3) camera centres in world coordinates."""
        return poses.camera_centers(self.w2c)

    def intrinsics(self) -> np.ndarray:
        """(T, 3, 3) intrinsics with the effect applied (dolly zoom changes the focal per frame)."""
        if self.effect is None:
            return self.K.copy()
        from omnidirector_jax.camera.effects import dolly_zoom_intrinsics

        return dolly_zoom_intrinsics(self)

    # ------------------------------------------------------------------------------------ transforms
    def resized(self, height: int, width: int) -> Trajectory:
        """The same cameras at another resolution (intrinsics scaled about pixel centres)."""
        sx, sy = width / self.width, height / self.height
        scale = np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1.0]])
        # Pixel centres sit at integers: shift by 0.5 so the image edges map onto each other.
        K = scale @ self.K
        K[:, 0, 2] = (self.K[:, 0, 2] + 0.5) * sx - 0.5
        K[:, 1, 2] = (self.K[:, 1, 2] + 0.5) * sy - 0.5
        effect = self.effect
        if effect is not None:
            effect = DollyZoom(effect.subject, effect.f_ref * sx)
        return dataclasses.replace(self, K=K, height=height, width=width, effect=effect)

    def with_fisheye(self, dist) -> Trajectory:
        return Trajectory.create(self.w2c, self.K, height=self.height, width=self.width, fps=self.fps,
                                 dist=dist, cuts=self.cuts, effect=self.effect)

    # -------------------------------------------------------------------------------------------- I/O
    def to_json(self) -> dict:
        K = self.K[0] if np.allclose(self.K, self.K[0]) else self.K
        data = {"version": SCHEMA_VERSION, "height": self.height, "width": self.width, "fps": self.fps,
                "w2c": np.round(self.w2c, 9).tolist(), "K": np.round(K, 6).tolist()}
        if self.dist is not None:
            dist = self.dist[0] if np.allclose(self.dist, self.dist[0]) else self.dist
            data["dist"] = np.asarray(dist).tolist()
        if self.cuts:
            data["cuts"] = list(self.cuts)
        if self.effect is not None:
            data["effect"] = self.effect.to_json()
        return data


def _as_array(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TrajectoryError(f"{name} is not a numeric array ({err})") from None
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise TrajectoryError(f"{name} contains a non-finite value (NaN or inf) at index {bad}")
    return arr


def _check_cuts(cuts, num: int) -> tuple[int, ...]:
    try:
        values = [int(c) for c in cuts]
    except (TypeError, ValueError):
        raise TrajectoryError(f"cuts must be a list of frame indices, got {cuts!r}") from None
    if any(float(c) != int(c) for c in cuts):
        raise TrajectoryError(f"cuts must be integer frame indices, got {list(cuts)}")
    for c in values:
        if not 0 <= c < num:
            raise TrajectoryError(f"cut index {c} is out of range for a trajectory of {num} frames")
    if values != sorted(set(values)):
        raise TrajectoryError(f"cuts must be sorted and unique, got {values}")
    return tuple(values)


def _check_rotations(rot: np.ndarray, frames: np.ndarray) -> None:
    err = np.abs(np.swapaxes(rot, -1, -2) @ rot - np.eye(3)).max(axis=(-2, -1))
    det = np.linalg.det(rot)
    bad = np.flatnonzero((err > _ROTATION_TOL) | (det <= 0))
    if bad.size:
        i = bad[0]
        raise TrajectoryError(
            f"w2c of frame {int(frames[i])} is not a rotation (|RᵀR−I| = {err[i]:.3g}, det = {det[i]:.3g}); "
            "expected an orthonormal 3×3 block with determinant +1")


# ----------------------------------------------------------------------------------------------- files
def load_trajectory(path: str | Path, size: tuple[int, int] | None = None) -> Trajectory:
    """Read a trajectory from ``.json`` or ``.npz``; ``size`` (H, W) fills in a size the file lacks."""
    path = Path(path)
    if not path.exists():
        raise TrajectoryError(f"trajectory file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _from_json(path, size)
    if suffix == ".npz":
        return _from_npz(path, size)
    raise TrajectoryError(f"unknown trajectory format '{suffix}' for {path} (expected .json or .npz)")


def save_trajectory(traj: Trajectory, path: str | Path) -> None:
    """Write ``.json`` (schema version 1) or ``.npz`` (estimator form plus image size, fps, cuts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(traj.to_json(), indent=1))
    elif path.suffix.lower() == ".npz":
        extra = {} if traj.dist is None else {"distortion": traj.dist}
        np.savez(path, extrinsics=traj.w2c, intrinsics=traj.K, image_size=np.array([traj.height, traj.width]),
                 fps=np.array(traj.fps), cuts=np.array(traj.cuts, dtype=np.int64), **extra)
    else:
        raise TrajectoryError(f"cannot write trajectory as '{path.suffix}' (use .json or .npz)")


def _from_json(path: Path, size) -> Trajectory:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TrajectoryError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise TrajectoryError(f"{path}: expected a JSON object at the top level")
    version = data.get("version")
    if version != SCHEMA_VERSION:
        raise TrajectoryError(f"{path}: unsupported trajectory version {version!r} (expected {SCHEMA_VERSION})")
    known = {"version", "height", "width", "fps", "w2c", "K", "dist", "cuts", "effect", "name", "description"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TrajectoryError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    if "w2c" not in data:
        raise TrajectoryError(f"{path}: missing required key 'w2c'")
    height, width = data.get("height"), data.get("width")
    if height is None or width is None:
        if size is None:
            raise TrajectoryError(f"{path}: missing 'height'/'width' (or pass an image size)")
        height, width = size
    effect = None
    if data.get("effect") is not None:
        eff = data["effect"]
        if not isinstance(eff, dict) or eff.get("type") != "dolly_zoom":
            raise TrajectoryError(f"{path}: unknown effect {eff!r} (supported: type 'dolly_zoom')")
        if "subject" not in eff or "f_ref" not in eff:
            raise TrajectoryError(f"{path}: effect 'dolly_zoom' needs 'subject' and 'f_ref'")
        effect = DollyZoom(tuple(float(v) for v in eff["subject"]), float(eff["f_ref"]))
    try:
        return Trajectory.create(data["w2c"], data.get("K"), height=height, width=width,
                                 fps=data.get("fps", 25.0), dist=data.get("dist"), cuts=data.get("cuts", ()),
                                 effect=effect)
    except TrajectoryError as err:
        raise TrajectoryError(f"{path}: {err}") from None


def _from_npz(path: Path, size) -> Trajectory:
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as err:  # numpy raises several types for a corrupt archive
        raise TrajectoryError(f"{path} is not a readable .npz archive: {err}") from None
    if "extrinsics" not in data:
        raise TrajectoryError(f"{path}: missing array 'extrinsics' (N, 3, 4) world-to-camera poses")
    try:
        w2c = _as_array("extrinsics", data["extrinsics"])
        if w2c.ndim != 3 or w2c.shape[1:] not in ((3, 4), (4, 4)):
            raise TrajectoryError(f"extrinsics must have shape (N, 3, 4), got {w2c.shape}")
        K = _as_array("intrinsics", data["intrinsics"]) if "intrinsics" in data else None
        dist = _as_array("distortion", data["distortion"]) if "distortion" in data else None
        if K is not None and K.ndim == 3 and K.shape[0] != w2c.shape[0]:
            raise TrajectoryError(f"intrinsics has {K.shape[0]} entries but extrinsics has {w2c.shape[0]}")
        if size is not None:
            height, width = size
        elif "image_size" in data:
            height, width = (int(v) for v in data["image_size"])
        elif K is not None:  # principal point at the centre: W = 2·cx + 1
            k0 = K if K.ndim == 2 else K[0]
            height, width = int(round(2 * k0[1, 2] + 1)), int(round(2 * k0[0, 2] + 1))
        else:
            raise TrajectoryError("no image size: the archive has neither 'image_size' nor 'intrinsics'")
        stride = int(data["stride"]) if "stride" in data else 1
        if stride < 1:
            raise TrajectoryError(f"stride must be ≥ 1, got {stride}")
        if stride > 1:
            if w2c.shape[0] < 2:
                raise TrajectoryError("a strided trajectory needs at least 2 key poses")
            _check_rotations(w2c[:, :3, :3], np.arange(w2c.shape[0]))
            K_keys = None if K is None else np.broadcast_to(K, (w2c.shape[0], 3, 3))
            w2c, K = poses.densify(w2c[:, :3], stride, intrinsics=K_keys)
            if dist is not None and dist.ndim == 2:
                dist = dist[np.minimum(np.arange(w2c.shape[0]) // stride, dist.shape[0] - 1)]
        cuts = tuple(int(c) for c in data.get("cuts", ()))
        fps = float(data["fps"]) if "fps" in data else 25.0
        return Trajectory.create(w2c, K, height=height, width=width, fps=fps, dist=dist, cuts=cuts)
    except TrajectoryError as err:
        raise TrajectoryError(f"{path}: {err}") from None
