"""Reading videos with OpenCV into RGB uint8 frames, resized on the fly, with clear errors for bad files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnidirector_jax.errors import OmniDirectorError


@dataclass(frozen=True)
class Video:
    """Decoded frames (T, H, W, 3) RGB uint8, the stream's frame rate and its original (height, width)."""

    frames: np.ndarray
    fps: float
    source_size: tuple[int, int]


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 frames to ``size`` = (width, height) with area averaging (OpenCV INTER_AREA)."""
    import cv2

    frames = np.asarray(frames)
    if frames.shape[2:0:-1] == tuple(size):
        return frames
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def read_video(path: str | Path, size: tuple[int, int] | None = None, *, min_frames: int = 1,
               progress: bool = False) -> Video:
    """Decode every frame of ``path`` as RGB uint8, resized to ``size`` = (width, height) when given.

    Resizing frame by frame keeps memory small for long, large videos. Raises ``OmniDirectorError`` for a
    missing or undecodable file and for fewer than ``min_frames`` frames.
    """
    import cv2
    from tqdm import tqdm

    path = Path(path)
    if not path.is_file():
        raise OmniDirectorError(f"video {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise OmniDirectorError(f"cannot read {path} as a video (not a video file, or a codec OpenCV lacks)")
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # container metadata: a hint for the bar only
        source_size = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
        frames = []
        with tqdm(total=expected if expected > 0 else None, desc=f"reading {path.name}", unit="frame",
                  disable=not progress) as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if size is not None and frame.shape[1::-1] != tuple(size):
                    frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                bar.update(1)
    finally:
        capture.release()
    if not frames:
        raise OmniDirectorError(f"{path} has no decodable video frames (empty or truncated file)")
    if len(frames) < min_frames:
        raise OmniDirectorError(f"{path} has only {len(frames)} frame{'s' * (len(frames) != 1)}; "
                                f"at least {min_frames} are needed")
    return Video(np.stack(frames), fps, source_size)
