"""Tiny clip datasets for the pipeline tests: synthetic arrays, no renderer (fast)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
from array_record.python import array_record_module


def tiny_clip(i: int, frames: int = 9, hw: tuple[int, int] = (32, 32), fmt: str = ".png") -> dict:
    """Clip `i`: frame t is filled with a pattern encoding (i, t), a cut at frame 4 for odd i."""
    rng = np.random.default_rng(i)
    h, w = hw
    imgs = []
    for t in range(frames):
        img = rng.integers(0, 255, (h, w, 3), np.uint8)
        img[0, 0] = (i % 256, t, 7)  # identifiable pixel (lossless formats only)
        imgs.append(img)
    enc = [cv2.imencode(fmt, cv2.cvtColor(im, cv2.COLOR_RGB2BGR))[1].tobytes() for im in imgs]
    w2c = np.tile(np.eye(4, dtype=np.float32)[:3], (frames, 1, 1))
    w2c[:, 0, 3] = np.arange(frames, dtype=np.float32) + 100 * i
    f = 0.8 * max(h, w)
    K = np.tile(np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.float32), (frames, 1, 1))
    valid = np.ones(frames, bool)
    valid[-1] = i % 3 != 0
    return {"id": f"clip{i:03d}", "frames": enc, "frame_hw": hw, "w2c": w2c, "K": K,
            "dist": np.zeros((frames, 4), np.float32), "cuts": [4] if i % 2 else [], "valid": valid,
            "ref_image": imgs[0], "caption": f"clip number {i}", "camera_prompt": "pan left" if i % 2 else "",
            "pixels": np.stack(imgs)}


def write_dataset(root: Path, n: int, shards: int = 2, **kw) -> list[dict]:
    """Writes n tiny clips over `shards` ArrayRecord files + manifest; returns the clips (with decoded pixels)."""
    root.mkdir(parents=True, exist_ok=True)
    clips = [tiny_clip(i, **kw) for i in range(n)]
    entries = []
    for s in range(shards):
        part = clips[s::shards] if False else clips[s * n // shards:(s + 1) * n // shards]
        name = f"clips-{s:05d}.array_record"
        writer = array_record_module.ArrayRecordWriter(str(root / name), "group_size:1")
        for c in part:
            writer.write(pickle.dumps({k: v for k, v in c.items() if k != "pixels"}))
        writer.close()
        entries.append({"path": name, "count": len(part)})
    (root / "manifest.json").write_text(json.dumps({"shards": entries}))
    return clips
