"""Shot detection: TransNetV2 when weights are configured, a classical adaptive content detector otherwise.

Both paths give a per-frame transition probability; frames above the threshold are transitions, and the
shots are built from them the way TransNetV2's scene list is: a shot runs from the frame after a run of
transition frames up to and including the first frame of the next run. For a hard cut between frames
k−1 and k, frame k−1 is the transition frame and frame k starts the next shot (``cuts`` lists such k).

The fallback scores each frame pair by its mean HSV change and divides it by the average change of the
frames around it (the idea of PySceneDetect's adaptive content detector): a cut is a change several times
larger than the local motion, which keeps fast camera motion from reading as cuts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from omnidirector_jax.errors import OmniDirectorError

log = logging.getLogger(__name__)

WEIGHTS_ENV = "OMNIDIRECTOR_TRANSNETV2_WEIGHTS"  # default checkpoint folder when none is passed
FALLBACK_WIDTH = 128  # analysis width of the classical detector (frames keep their aspect ratio)


@dataclass(frozen=True)
class ShotResult:
    """Per-frame transition probabilities and the shots they imply.

    ``probabilities`` (T,) float32 is TransNetV2's single-frame head (or the fallback's score mapped to
    [0, 1) with 0.5 at its decision boundary); ``many_hot`` (T,) is TransNetV2's second head, None for the
    fallback.
    """

    probabilities: np.ndarray
    threshold: float
    method: str
    many_hot: np.ndarray | None = None
    fps: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.probabilities)

    @property
    def transitions(self) -> np.ndarray:
        """(K,) int: frames whose probability is above the threshold."""
        return np.flatnonzero(self.probabilities > self.threshold)

    @property
    def shots(self) -> np.ndarray:
        """(S, 2) int32: inclusive [first, last] frame of each shot (TransNetV2's scene list)."""
        return predictions_to_shots(self.probabilities, self.threshold)

    @property
    def cuts(self) -> np.ndarray:
        """(S − 1,) int: the first frame of every shot after the first."""
        return self.shots[1:, 0].copy()

    def to_json(self) -> dict:
        data = {
            "method": self.method, "threshold": self.threshold, "num_frames": self.num_frames,
            "fps": self.fps, "cuts": self.cuts.tolist(), "transitions": self.transitions.tolist(),
            "shots": self.shots.tolist(),
            "probabilities": [round(float(p), 6) for p in self.probabilities],
        }
        if self.many_hot is not None:
            data["many_hot"] = [round(float(p), 6) for p in self.many_hot]
        return data | self.extra


def predictions_to_shots(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Shots from per-frame probabilities, with the same rule as TransNetV2's ``predictions_to_scenes``.

    A shot starts at frame 0 (unless it is a transition) or right after a run of transition frames, and
    ends at the first frame of the next run (inclusive) or at the last frame. With no shot at all (every
    frame a transition) the whole video is one shot. (T,) → (S, 2) int32.
    """
    hot = np.asarray(probabilities) > threshold
    n = len(hot)
    if n == 0:
        return np.zeros((0, 2), np.int32)
    rises = np.flatnonzero(~hot[:-1] & hot[1:]) + 1  # a shot ends on the first frame of a transition
    falls = np.flatnonzero(hot[:-1] & ~hot[1:]) + 1  # the next one starts after its last frame
    starts = np.concatenate([[0] if not hot[0] else [], falls])
    ends = np.concatenate([rises, [n - 1] if not hot[-1] else []])
    if len(starts) == 0:
        return np.array([[0, n - 1]], np.int32)
    return np.stack([starts, ends], axis=1).astype(np.int32)


# ----------------------------------------------------------------------------------------------------------
# Classical fallback
# ----------------------------------------------------------------------------------------------------------


FLASH_SCORE = 0.99  # the probability a flash frame's entering pair gets (above any content score's cap)


@dataclass(frozen=True)
class AdaptiveContentDetector:
    """Cuts where the HSV change between two frames stands out from the change around it.

    ``content``: mean absolute change of hue (circular), saturation and value, 0–255 scale, between frames
    t and t+1. ``ratio``: content divided by the mean content of the ``window`` frame pairs on each side.
    A cut needs ``ratio ≥ adaptive_threshold`` and ``content ≥ min_content``; cuts closer than
    ``min_shot_length`` frames to a stronger one are dropped. ``gap``: pairs this close to the pair itself are
    left out of its neighbours, so the two edges of a one-frame transition (gap 1: a white cut frame, as
    generated videos and camera grids mark cuts) do not hide each other; the neighbours then lie ``gap + 1``
    to ``gap + window`` pairs away.
    """

    adaptive_threshold: float = 3.0
    min_content: float = 15.0
    window: int = 2
    min_shot_length: int = 15
    gap: int = 0
    # A uniform white or black frame entered from one that is not (a flash, a one-frame fade, the white frame that
    # camera grids and generated videos put on a cut) is a transition whatever the change around it: in busy
    # video its two edges need not stand out from their neighbours. The cut is put on that frame.
    flash_frames: bool = False
    flash_std: float = 8.0  # grey-level std (0-255) under which a frame is uniform
    flash_level: float = 40.0  # ... and a mean this close to 255 (white) or 0 (black)

    @staticmethod
    def content_scores(frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) RGB uint8 → (T − 1,) float: mean HSV change from frame t to t + 1."""
        import cv2

        hsv = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV) for f in frames]).astype(np.float32)
        delta = np.abs(np.diff(hsv, axis=0))
        # OpenCV hue spans 0..179 and wraps around; scale it to 0..255 like the other channels.
        delta[..., 0] = np.minimum(delta[..., 0], 180.0 - delta[..., 0]) * (255.0 / 90.0)
        return delta.mean(axis=(1, 2, 3))

    def flash_indices(self, frames: np.ndarray) -> list[int]:
        """Frames c ≥ 1 that are uniform white or black while frame c − 1 is not (see `flash_frames`)."""
        grey = np.asarray(frames, np.float32).mean(-1)
        mean, std = grey.mean(axis=(1, 2)), grey.std(axis=(1, 2))
        flat = (std < self.flash_std) & ((mean > 255.0 - self.flash_level) | (mean < self.flash_level))
        return [c for c in range(1, len(frames)) if flat[c] and not flat[c - 1]]

    def probabilities(self, frames: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, dict]:
        """(T, H, W, 3) → (T,) scores in [0, 1), above 0.5 exactly where this detector sees a cut.

        The score of the change from frame t to t+1 goes to frame t (the last frame of the old shot), as
        TransNetV2 marks hard cuts.
        """
        content = self.content_scores(frames)
        n = len(content)
        reach = self.window + self.gap
        padded = np.pad(content, reach, mode="constant")
        counts = np.pad(np.ones(n), reach, mode="constant")
        kernel = np.ones(2 * reach + 1)
        kernel[self.window:self.window + 2 * self.gap + 1] = 0.0  # the neighbours only, not the pair (± gap)
        local = np.convolve(padded, kernel, "valid") / np.maximum(np.convolve(counts, kernel, "valid"), 1.0)
        ratio = content / np.maximum(local, 1e-3)
        # Both conditions as one score: s ≥ 1 iff ratio and content both pass; s / (1 + s) puts that at 0.5.
        strength = np.minimum(ratio / self.adaptive_threshold, content / self.min_content)
        probs = np.append(strength / (1.0 + strength), 0.0).astype(np.float32)  # last frame: no pair after it
        if self.flash_frames:
            for c in self.flash_indices(frames):  # the pair entering frame c: the next shot starts at c
                probs[c - 1] = max(probs[c - 1], FLASH_SCORE)
        # Minimum shot length: keep the strongest cuts first, cap the others at the threshold.
        kept: list[int] = []
        for t in np.argsort(-probs, kind="stable"):
            if probs[t] <= threshold:
                break
            if any(abs(int(t) - k) < self.min_shot_length for k in kept):
                probs[t] = min(probs[t], threshold)
            else:
                kept.append(int(t))
        return probs, {"content": content, "ratio": ratio}


# ----------------------------------------------------------------------------------------------------------
# Shared entry point
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _predictor(weights_dir: str, mtime: float, window_batch: int | None):
    from omnidirector_jax.perception.transnetv2 import TransNetV2Predictor, load_transnetv2

    return TransNetV2Predictor(load_transnetv2(weights_dir), window_batch=window_batch)


def transnetv2_predictor(weights_dir: str | Path, window_batch: int | None = None):
    """A cached ``TransNetV2Predictor`` for a checkpoint folder (reloaded when its params file changes)."""
    from omnidirector_jax.perception.transnetv2 import PARAMS_FILE, read_manifest

    info = read_manifest(weights_dir)
    params = info.path / PARAMS_FILE
    mtime = params.stat().st_mtime if params.exists() else 0.0
    return _predictor(str(info.path.resolve()), mtime, window_batch)


def detect_shots(frames_or_video_path: np.ndarray | str | Path, weights_dir: str | Path | None = None,
                 threshold: float = 0.5, *, progress: bool = False,
                 detector: AdaptiveContentDetector | None = None) -> ShotResult:
    """Detect shot transitions in a video file or in (T, H, W, 3) RGB uint8 frames.

    With ``weights_dir`` (or the ``OMNIDIRECTOR_TRANSNETV2_WEIGHTS`` environment variable) TransNetV2 runs
    on frames resized to 48×27; without, the classical ``AdaptiveContentDetector`` does, with a warning.
    Needs at least two frames.
    """
    from omnidirector_jax.perception.transnetv2 import INPUT_HEIGHT, INPUT_WIDTH
    from omnidirector_jax.perception.video import read_video, resize_frames

    if not 0.0 < threshold < 1.0:
        raise OmniDirectorError(f"threshold must be between 0 and 1, got {threshold}")
    weights_dir = weights_dir or os.environ.get(WEIGHTS_ENV) or None
    use_network = weights_dir is not None
    # Load the checkpoint before decoding: a bad weights folder should fail fast, not after a long read.
    predictor = transnetv2_predictor(weights_dir) if use_network else None
    fps = None
    if isinstance(frames_or_video_path, str | Path):
        if use_network:
            size = (INPUT_WIDTH, INPUT_HEIGHT)
        else:  # probe the size first: the fallback keeps the aspect ratio at FALLBACK_WIDTH
            size = _fallback_size(frames_or_video_path)
        video = read_video(frames_or_video_path, size, min_frames=2, progress=progress)
        frames, fps = video.frames, video.fps
    else:
        frames = np.asarray(frames_or_video_path)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise OmniDirectorError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
        if len(frames) < 2:
            raise OmniDirectorError(f"shot detection needs at least 2 frames, got {len(frames)}")
        if use_network:
            frames = resize_frames(frames, (INPUT_WIDTH, INPUT_HEIGHT))
        elif frames.shape[2] > FALLBACK_WIDTH:
            h, w = frames.shape[1:3]
            frames = resize_frames(frames, (FALLBACK_WIDTH, max(1, round(h * FALLBACK_WIDTH / w))))

    if use_network:
        single, many = predictor.predict(frames, progress=progress)
        return ShotResult(single, threshold, "transnetv2", many_hot=many, fps=fps)
    log.warning("no TransNetV2 weights configured (--weights DIR or %s): using the classical adaptive "
                "content detector, which misses gradual transitions more often", WEIGHTS_ENV)
    probs, _ = (detector or AdaptiveContentDetector()).probabilities(frames, threshold)
    return ShotResult(probs, threshold, "adaptive-content", fps=fps)


def _fallback_size(path: str | Path) -> tuple[int, int] | None:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        w, h = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    if w <= FALLBACK_WIDTH or h <= 0:
        return None  # small enough, or unknown: read_video reports unreadable files
    return FALLBACK_WIDTH, max(1, round(h * FALLBACK_WIDTH / w))


def synthetic_shots(num_frames: int, shot_length: int, height: int = 90, width: int = 160,
                    seed: int = 0) -> np.ndarray:
    """A test clip with known hard cuts: (T, H, W, 3) RGB uint8, a new shot every ``shot_length`` frames.

    Each shot is its own colour and texture (a few random plane waves per channel) sliding at its own
    speed of up to 2.5 px per frame, so consecutive frames of a shot differ by motion only.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        if t % shot_length == 0:
            waves = rng.uniform(0.03, 0.3, (4, 2)) * rng.choice([-1.0, 1.0], (4, 2))  # (kx, ky) per wave
            phases = rng.uniform(0, 2 * np.pi, (4, 3, 1, 1))
            base, amplitude, velocity = rng.uniform(50, 205, 3), rng.uniform(30, 50), rng.uniform(-2.5, 2.5, 2)
        dx, dy = velocity * (t % shot_length)
        arg = waves[:, 0, None, None] * (x + dx) + waves[:, 1, None, None] * (y + dy)  # (4, H, W)
        texture = np.sin(arg[:, None] + phases).mean(axis=0).transpose(1, 2, 0)  # (H, W, 3)
        frames[t] = np.clip(base + 2 * amplitude * texture, 0, 255).astype(np.uint8)
    return frames
