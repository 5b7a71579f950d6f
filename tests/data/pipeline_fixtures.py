"""Tiny clip datasets for the pipeline tests: synthetic arrays written with `records` (no renderer: fast)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from omnidirector_jax.data import records


def tiny_record(i: int, frames: int = 9, hw: tuple[int, int] = (32, 32), smooth: bool = False) -> records.ClipRecord:
    """Clip `i`: random frames (blurred when `smooth`, which JPEG-compresses like rendered video), camera x
    position = frame + 100 i (so a batch tells its crop start), a cut at frame 4 for odd i."""
    rng = np.random.default_rng(i)
    h, w = hw
    pixels = rng.integers(0, 255, (frames, h, w, 3), np.uint8)
    if smooth:
        pixels = np.stack([cv2.GaussianBlur(p, (0, 0), 2.0) for p in pixels])
    w2c = np.tile(np.eye(4, dtype=np.float32)[:3], (frames, 1, 1))
    w2c[:, 0, 3] = np.arange(frames, dtype=np.float32) + 100 * i
    f = 0.8 * max(h, w)
    K = np.tile(np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.float32), (frames, 1, 1))
    valid = np.ones(frames, bool)
    valid[-1] = i % 3 != 0
    return records.ClipRecord(
        id=records.clip_id("tiny", i, i + frames), w2c=w2c, K=K, dist=np.zeros((frames, 4), np.float32),
        cuts=(4,) if i % 2 else (), frames=pixels, ref_image=pixels[0], caption=f"clip number {i}",
        camera_prompt="pan left" if i % 2 else "", meta={"valid": valid})


def write_dataset(root: Path, n: int, shards: int = 2, image_format: str = "png", **kw) -> list[records.ClipRecord]:
    """n tiny clips over `shards` contiguous ArrayRecord shards + manifest; returns them in dataset order."""
    recs = [tiny_record(i, **kw) for i in range(n)]
    entries = []
    for s in range(shards):
        part = recs[s * n // shards:(s + 1) * n // shards]
        path = f"shards/clips-{s:05d}.array_record"
        summary = records.write_shard(root / path, [records.encode_record(r, image_format) for r in part])
        entries.append({"path": path, "ids": [r.id for r in part], **summary})
    first = recs[0].frames.shape
    records.write_manifest(root, records.make_manifest(entries, frame_size=first[1:3], num_frames=first[0], fps=None,
                                                       image_format=image_format, config={"fixture": "tiny"}))
    return recs
