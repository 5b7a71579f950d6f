"""Camera prompts from poses by rules (design §6): what the camera does, in words, and nothing else.

Per shot, the frames are split into sub-clips of about ``subclip_frames``; each sub-clip is judged by the pose of
its last frame relative to its first, in the first camera's frame (OpenCV: +X right, +Y down, +Z forward):

* translation ``d = R_a (c_b − c_a)``: dominant axis → dolly in/out (Z), truck right/left (X),
  pedestal up/down (−Y/+Y); speed = ``|d| / scene_scale`` per second → slowly / (normal) / quickly;
* rotation ``R_a R_bᵀ`` as (tilt, pan, roll) (`poses.euler_xyz_deg`): dominant angle → tilt up/down,
  pan right/left, roll clockwise/counter-clockwise; speed in degrees per second;
* translation along X while the camera yaws the other way (toward what it passes) → an **arc shot**;
* neither above its static threshold → static; both → "X while Y-ing".

Consecutive sub-clips with the same label and speed merge. Between shots, the pose of the first frame of the next
shot relative to the last frame of the previous one names the cut ("cut to a closer view"). Speeds are in scene
units: ``scene_scale`` world units count as one (1 for metric poses such as the procedural world's). The output
only uses the fixed vocabulary of this module: the camera prompt can carry no content of the reference video.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omnidirector_jax.camera import poses
from omnidirector_jax.camera.trajectory import Trajectory
from omnidirector_jax.errors import OmniDirectorError


@dataclasses.dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the rules (ours; speeds per second of video, translations in scene units)."""

    subclip_frames: int = 16  # sub-clip length the shots are split into (≥ 2 frames)
    scene_scale: float = 1.0  # world units per scene unit
    static_speed: float = 0.08  # translation below this (units/s) does not count
    static_rotation: float = 3.0  # rotation below this (deg/s) does not count
    slow_speed: float = 0.35  # translation: below → "slowly"
    fast_speed: float = 1.2  # translation: at or above → "quickly"
    slow_rotation: float = 10.0  # rotation (deg/s): below → "slowly"
    fast_rotation: float = 30.0  # rotation (deg/s): at or above → "quickly"
    arc_min_pan: float = 5.0  # deg of opposite yaw over a sub-clip that turn a truck into an arc
    cut_translation: float = 0.3  # scene units between shots: a closer/wider/side view
    cut_rotation: float = 15.0  # degrees between shots: a turned view
    reverse_angle: float = 120.0  # degrees between shots: a reverse angle

    def __post_init__(self) -> None:
        if self.subclip_frames < 2 or self.scene_scale <= 0:
            raise OmniDirectorError(f"prompt rules: subclip_frames must be >= 2 and scene_scale > 0, got "
                                    f"{self.subclip_frames} and {self.scene_scale}")
        if not (0 <= self.static_speed <= self.slow_speed <= self.fast_speed and
                0 <= self.static_rotation <= self.slow_rotation <= self.fast_rotation):
            raise OmniDirectorError("prompt rules: need static <= slow <= fast for speeds and rotations")


@dataclasses.dataclass(frozen=True)
class Segment:
    """One merged run of sub-clips: frames [start, end] (inclusive), a motion label and its speed."""

    start: int
    end: int
    motion: str  # e.g. "dolly in", "pan left", "arc left", "truck right + pan left", "static"
    speed: str  # slow | normal | fast ("" when static)
    phrase: str  # "slowly dollies in"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CameraPrompt:
    """Camera description of a trajectory: per shot segments, per cut a transition, and the text."""

    shots: list[list[Segment]]
    shot_ranges: list[tuple[int, int]]
    transitions: list[dict]  # {"frame": cut frame, "label": "a closer view"}
    text: str

    def to_json(self) -> dict:
        return {"text": self.text, "transitions": self.transitions,
                "shots": [{"start": a, "end": b, "segments": [s.to_json() for s in segs]}
                          for (a, b), segs in zip(self.shot_ranges, self.shots, strict=True)]}


_TRANSLATION = {(0, 1): ("truck right", "trucks right"), (0, -1): ("truck left", "trucks left"),
                (1, -1): ("pedestal up", "pedestals up"), (1, 1): ("pedestal down", "pedestals down"),
                (2, 1): ("dolly in", "dollies in"), (2, -1): ("dolly out", "dollies out")}
_ROTATION = {(0, 1): ("tilt up", "tilts up", "tilting up"), (0, -1): ("tilt down", "tilts down", "tilting down"),
             (1, 1): ("pan right", "pans right", "panning right"), (1, -1): ("pan left", "pans left", "panning left"),
             (2, 1): ("roll clockwise", "rolls clockwise", "rolling clockwise"),
             (2, -1): ("roll counter-clockwise", "rolls counter-clockwise", "rolling counter-clockwise")}
_ADVERB = {"slow": "slowly ", "normal": "", "fast": "quickly "}


def _relative(w2c_a: np.ndarray, w2c_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(translation of b in a's camera frame (3,), (tilt, pan, roll) of b relative to a in degrees, angle)."""
    rot_a, rot_b = w2c_a[:3, :3], w2c_b[:3, :3]
    d = rot_a @ (poses.camera_centers(w2c_b) - poses.camera_centers(w2c_a))
    rel = rot_a @ rot_b.T  # b's camera axes in a's frame: pan > 0 turns right, tilt > 0 up, roll > 0 clockwise
    return d, poses.euler_xyz_deg(rel), float(poses.rotation_angle_deg(rel))


def _speed(value: float, slow: float, fast: float) -> str:
    return "slow" if value < slow else "fast" if value >= fast else "normal"


def classify(w2c_a: np.ndarray, w2c_b: np.ndarray, seconds: float, cfg: RuleConfig) -> tuple[str, str, str]:
    """Motion label, speed and verb phrase of the move from pose a to pose b taking ``seconds``."""
    d, euler, _ = _relative(w2c_a, w2c_b)
    seconds = max(seconds, 1e-6)
    speed_t = float(np.linalg.norm(d)) / cfg.scene_scale / seconds
    speed_r = float(np.abs(euler).max()) / seconds
    moves, turns = speed_t >= cfg.static_speed, speed_r >= cfg.static_rotation
    if not moves and not turns:
        return "static", "", "holds still"
    axis_t, axis_r = int(np.argmax(np.abs(d))), int(np.argmax(np.abs(euler)))
    t_label, t_verb = _TRANSLATION[(axis_t, 1 if d[axis_t] >= 0 else -1)]
    r_label, r_verb, r_ing = _ROTATION[(axis_r, 1 if euler[axis_r] >= 0 else -1)]
    if moves and axis_t == 0 and d[0] * euler[1] < 0 and abs(euler[1]) >= cfg.arc_min_pan:
        side = "right" if d[0] > 0 else "left"  # travels sideways while turning toward what it passes
        speed = _speed(speed_t, cfg.slow_speed, cfg.fast_speed)
        return f"arc {side}", speed, f"{_ADVERB[speed]}arcs {side} around the subject"
    if moves:
        speed = _speed(speed_t, cfg.slow_speed, cfg.fast_speed)
        if turns:
            return f"{t_label} + {r_label}", speed, f"{_ADVERB[speed]}{t_verb} while {r_ing}"
        return t_label, speed, f"{_ADVERB[speed]}{t_verb}"
    speed = _speed(speed_r, cfg.slow_rotation, cfg.fast_rotation)
    return r_label, speed, f"{_ADVERB[speed]}{r_verb}"


def describe_shot(w2c: np.ndarray, start: int, fps: float, cfg: RuleConfig) -> list[Segment]:
    """Merged segments of one shot: w2c (N, 3, 4) of its frames, ``start`` its first frame index."""
    n = w2c.shape[0]
    if n < 2:
        return [Segment(start, start, "static", "", "holds still")]
    parts = max(1, round((n - 1) / (cfg.subclip_frames - 1)))
    bounds = np.linspace(0, n - 1, parts + 1).round().astype(int)
    segments: list[Segment] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        motion, speed, phrase = classify(w2c[a], w2c[b], (b - a) / fps, cfg)
        last = segments[-1] if segments else None
        if last is not None and (last.motion, last.speed) == (motion, speed):
            segments[-1] = dataclasses.replace(last, end=start + int(b))
        else:
            segments.append(Segment(start + int(a), start + int(b), motion, speed, phrase))
    return segments


def transition(w2c_a: np.ndarray, w2c_b: np.ndarray, cfg: RuleConfig) -> str:
    """What a cut from pose a (last frame of a shot) to pose b (first of the next) shows: "a closer view"..."""
    d, euler, angle = _relative(w2c_a, w2c_b)
    if angle >= cfg.reverse_angle:
        return "a reverse angle"
    if np.linalg.norm(d) / cfg.scene_scale >= cfg.cut_translation:
        axis = int(np.argmax(np.abs(d)))
        positive = d[axis] > 0
        return [("a view from the left", "a view from the right"), ("a higher view", "a lower view"),
                ("a wider view", "a closer view")][axis][int(positive)]
    if angle >= cfg.cut_rotation:
        axis = int(np.argmax(np.abs(euler)))
        positive = euler[axis] > 0
        return [("a view tilted down", "a view tilted up"), ("a view turned left", "a view turned right"),
                ("a canted view", "a canted view")][axis][int(positive)]
    return "the same framing"


def describe(traj: Trajectory, cfg: RuleConfig = RuleConfig()) -> CameraPrompt:
    """The camera prompt of a trajectory (poses and cuts only)."""
    ranges = traj.shots()
    shots = [describe_shot(traj.w2c[a:b], a, traj.fps, cfg) for a, b in ranges]
    transitions = [{"frame": int(ranges[i][1]), "label": transition(traj.w2c[ranges[i][1] - 1],
                                                                     traj.w2c[ranges[i + 1][0]], cfg)}
                   for i in range(len(ranges) - 1)]
    sentences = []
    for i, segs in enumerate(shots):
        body = "the camera " + ", then ".join(s.phrase for s in segs) + "."
        if len(shots) == 1:
            sentences.append(body[0].upper() + body[1:])
            continue
        lead = f"Shot {i + 1}: " if i == 0 else f"Cut to {transitions[i - 1]['label']}. Shot {i + 1}: "
        sentences.append(lead + body)
    if traj.effect is not None:  # the focal follows the subject distance: name it, it is part of the camera
        sentences.append("The zoom keeps the subject the same size: a dolly zoom.")
    return CameraPrompt(shots, [(int(a), int(b)) for a, b in ranges], transitions, " ".join(sentences))


VOCABULARY = frozenset(
    " ".join([*(v for pair in _TRANSLATION.values() for v in pair),
              *(v for triple in _ROTATION.values() for v in triple),
              "slowly quickly arcs left right around the subject holds still while then camera shot cut to a",
              "closer wider view from higher lower reverse angle tilted turned canted same framing",
              "zoom keeps size dolly"]).split())
"""Every word (lower case, punctuation and digits stripped) a camera prompt can contain."""
