"""Writing what people look at: mp4 videos, PNG contact sheets, and ``.npz`` frame arrays."""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Sequence
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
    with warnings.catch_warnings():  # ffmpeg is fork+exec'd at once: JAX's warning about threads after fork is moot
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        writer.send(None)
    try:
        for frame in frames:
            if (ph, pw) != (h, w):
                frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)))
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


SHEET_GAP = 4  # pixels between contact-sheet tiles (and around them)


def _check_cuts(cuts: Sequence[int] | None, num_frames: int) -> list[int]:
    """``cuts`` as a list of ints, checked to be sorted, unique frame indices in [0, num_frames)."""
    if cuts is None:
        return []
    try:
        values = [operator.index(c) for c in cuts]
    except TypeError:
        raise OmniDirectorError(f"cuts must be a list of integer frame indices, got {cuts!r}") from None
    if any(c < 0 or c >= num_frames for c in values):
        raise OmniDirectorError(f"cuts must be frame indices in [0, {num_frames}), got {values}")
    if values != sorted(set(values)):
        raise OmniDirectorError(f"cuts must be sorted and unique, got {values}")
    return values


def sheet_frames(num_frames: int, max_tiles: int = 28, cuts: Sequence[int] | None = None) -> list[int]:
    """Frame indices a contact sheet shows, in order: evenly spaced, or cut-aware when ``cuts`` is given.

    With cuts, as many cuts as fit (``max_tiles // 3``, evenly chosen among them) are shown each with the
    frames before and after it (shot → cut → shot); when all cuts fit, evenly spaced frames fill the rest.
    """
    if max_tiles < 1:
        raise OmniDirectorError(f"max_tiles must be at least 1, got {max_tiles}")
    even = np.unique(np.linspace(0, num_frames - 1, min(num_frames, max_tiles)).round().astype(int)).tolist()
    cuts = _check_cuts(cuts, num_frames)
    if not cuts:
        return even
    around = (-1, 0, 1) if max_tiles >= 3 else (0,)
    k = min(len(cuts), max_tiles // len(around))
    chosen = [cuts[i] for i in np.unique(np.linspace(0, len(cuts) - 1, k).round().astype(int))]
    picks = {c + d for c in chosen for d in around if 0 <= c + d < num_frames}
    for f in even if k == len(cuts) else ():  # all cuts shown: fill the rest with evenly spaced frames
        if len(picks) >= max_tiles:
            break
        picks.add(f)
    return sorted(picks)


def _label(tile: np.ndarray, text: str) -> None:
    """Write ``text`` at the tile's top left: dark text on a light box (readable on white and on black)."""
    import cv2

    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    cv2.rectangle(tile, (1, 1), (tw + 6, th + base + 4), (225, 225, 225), -1)
    cv2.rectangle(tile, (1, 1), (tw + 6, th + base + 4), (60, 60, 60), 1)
    cv2.putText(tile, text, (4, th + 3), font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def contact_sheet(frames: np.ndarray, columns: int = 7, max_tiles: int = 28, tile_width: int = 320,
                  labels: bool = True, cuts: Sequence[int] | None = None) -> np.ndarray:
    """Tile frames into one labelled image (frame numbers) for a quick look at a video.

    Frames are chosen by :func:`sheet_frames`: evenly spaced, or, given sorted ``cuts`` (transition frame
    indices), cuts with their neighbours. With cuts, ``columns`` is rounded down to a multiple of 3 so
    the shot → cut → shot triples line up in rows.
    """
    import cv2

    frames = _check_frames(frames)
    t, h, w, _ = frames.shape
    cuts = _check_cuts(cuts, t)
    picks = sheet_frames(t, max_tiles, cuts)
    if cuts and columns >= 3:
        columns -= columns % 3
    tw = min(tile_width, w)
    th = max(1, round(h * tw / w))
    cols = min(columns, len(picks))
    rows = math.ceil(len(picks) / cols)
    gap = SHEET_GAP
    sheet = np.full((rows * (th + gap) + gap, cols * (tw + gap) + gap, 3), 40, dtype=np.uint8)
    for n, idx in enumerate(picks):
        tile = cv2.resize(frames[idx], (tw, th), interpolation=cv2.INTER_AREA)
        if labels:
            _label(tile, f"{idx} cut" if idx in cuts else str(idx))
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


def write_frames(path: str | Path, frames: np.ndarray, fps: float = 25.0,
                 cuts: Sequence[int] | None = None) -> Path:
    """Write frames by extension: ``.mp4`` video, ``.npz`` (array ``frames``), ``.png`` contact sheet.

    ``cuts`` (sorted transition frame indices) make a contact sheet show the cuts and their neighbours.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    frames = _check_frames(frames)
    cuts = _check_cuts(cuts, len(frames))
    if suffix == ".mp4":
        return write_video(path, frames, fps)
    if suffix == ".npz":
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, frames=frames, fps=np.array(fps))
        return path
    if suffix == ".png":
        return write_png(path, contact_sheet(frames, cuts=cuts))
    raise OmniDirectorError(f"unknown output kind '{suffix}' for {path} (expected .mp4, .npz or .png)")


def plot_curves(path: str | Path, curves: dict[str, tuple[Sequence[float], Sequence[float]]], *,
                title: str = "", x_label: str = "step", size: tuple[int, int] = (480, 800)) -> Path:
    """A line plot (PNG) of named curves `{label: (xs, ys)}` on shared axes, drawn with OpenCV (no plotting
    library needed): white background, axis ticks at the data range, one colour per curve, a legend."""
    import cv2

    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 40, 50
    pts = {k: (np.asarray(x, np.float64), np.asarray(y, np.float64)) for k, (x, y) in curves.items() if len(x)}
    finite = [y[np.isfinite(y)] for _, y in pts.values()]
    finite = [f for f in finite if f.size]
    black = (0, 0, 0)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), black, 1)
    if title:
        cv2.putText(img, title, (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, black, 1, cv2.LINE_AA)
    cv2.putText(img, x_label, (w // 2, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, black, 1, cv2.LINE_AA)
    if not finite:
        return write_png(path, img)
    x_lo = min(x.min() for x, _ in pts.values())
    x_hi = max(x.max() for x, _ in pts.values())
    y_lo, y_hi = min(f.min() for f in finite), max(f.max() for f in finite)
    x_hi, y_hi = max(x_hi, x_lo + 1e-9), max(y_hi, y_lo + 1e-9)

    def to_px(x, y):
        px = left + (x - x_lo) / (x_hi - x_lo) * (w - left - right)
        py = h - bottom - (y - y_lo) / (y_hi - y_lo) * (h - top - bottom)
        return np.stack([px, py], -1)

    for i in range(5):  # ticks
        fy, fx = y_lo + (y_hi - y_lo) * i / 4, x_lo + (x_hi - x_lo) * i / 4
        py, px = to_px(np.array(x_lo), np.array(fy))[1], to_px(np.array(fx), np.array(y_lo))[0]
        cv2.putText(img, f"{fy:.3g}", (4, int(py) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1, cv2.LINE_AA)
        cv2.putText(img, f"{fx:.0f}", (int(px) - 10, h - bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1,
                    cv2.LINE_AA)
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    for i, (label, (x, y)) in enumerate(pts.items()):
        color = palette[i % len(palette)]
        ok = np.isfinite(y)
        line = to_px(x[ok], y[ok])
        cv2.polylines(img, [np.round(line * 16).astype(np.int32)], False, color, 2, cv2.LINE_AA, shift=4)
        cv2.putText(img, label, (w - right - 160, top + 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1,
                    cv2.LINE_AA)
    return write_png(path, img)
