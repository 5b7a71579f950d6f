"""Writing what people look at: mp4 videos, PNG contact sheets, and ``.npz`` frame arrays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from omnidirector_jax.errors import OmniDirectorError


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise OmniDirectorError(f"frames must have shape (T, H, W, 3) with T ≥ 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise OmniDirectorError(f"frames must be uint8, got {frames.dtype}")
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """Write RGB uint8 frames (T, H, W, 3) as an H.264 mp4 (the ffmpeg binary ships in imageio-ffmpeg).

    Odd sizes are padded by one black pixel, since yuv420p needs even dimensions.
    """
    import imageio_ffmpeg

    frames = _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    writer = imageio_ffmpeg.write_frames(
        str(path), (pw, ph), fps=float(fps), codec="libx264", pix_fmt_out="yuv420p", quality=8,
        macro_block_size=1, output_params=["-loglevel", "error"])
    writer.send(None)
    try:
        for frame in frames:
            if (ph, pw) != (h, w):
                frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)))
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


def contact_sheet(frames: np.ndarray, columns: int = 7, max_tiles: int = 28, tile_width: int = 320,
                  labels: bool = True) -> np.ndarray:
    """Tile evenly spaced frames into one image (with frame numbers) for a quick look at a video."""
    import cv2

    frames = _check_frames(frames)
    t, h, w, _ = frames.shape
    picks = np.unique(np.linspace(0, t - 1, min(t, max_tiles)).round().astype(int))
    tw = min(tile_width, w)
    th = max(1, round(h * tw / w))
    cols = min(columns, len(picks))
    rows = math.ceil(len(picks) / cols)
    gap = 4
    sheet = np.full((rows * (th + gap) + gap, cols * (tw + gap) + gap, 3), 40, dtype=np.uint8)
    for n, idx in enumerate(picks):
        tile = cv2.resize(frames[idx], (tw, th), interpolation=cv2.INTER_AREA)
        if labels:
            cv2.putText(tile, str(idx), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, str(idx), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(n, cols)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        sheet[y:y + th, x:x + tw] = tile
    return sheet


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise OmniDirectorError(f"could not write {path}")
    return path


def write_frames(path: str | Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """Write frames by extension: ``.mp4`` video, ``.npz`` (array ``frames``), ``.png`` contact sheet."""
    path = Path(path)
    suffix = path.suffix.lower()
    frames = _check_frames(frames)
    if suffix == ".mp4":
        return write_video(path, frames, fps)
    if suffix == ".npz":
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, frames=frames, fps=np.array(fps))
        return path
    if suffix == ".png":
        return write_png(path, contact_sheet(frames))
    raise OmniDirectorError(f"unknown output kind '{suffix}' for {path} (expected .mp4, .npz or .png)")
