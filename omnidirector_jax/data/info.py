"""What a dataset folder holds (``omnidirector data info``) and a contact sheet of clips beside their grids."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from omnidirector_jax.config import GridConfig
from omnidirector_jax.data import records as R

_SHEET_TILES = 8  # frames shown per clip
_MIN_TILE = 128  # small records are enlarged on the sheet


def dataset_info(directory: str | Path, verify: bool = False) -> dict:
    """Summary of a dataset: counts, shards, ids, frame size, trajectory classes (JSON-ready).

    Classes come from the manifest when the builder stored them, else from the record headers.
    ``verify`` checks every shard's checksum and decodes every record (slow on large datasets).
    """
    manifest = R.read_manifest(directory, verify=verify)
    ds = R.open_dataset(directory)
    classes = manifest.get("classes")
    if classes is None or verify:
        counts: Counter = Counter()
        for i in range(len(ds)):
            data = ds[i]
            if verify:
                rec = R.decode_record(data)
                if rec.id != ds.ids[i]:
                    raise R.RecordError(f"record {i} has id {rec.id}, the manifest says {ds.ids[i]}")
                counts[str(rec.meta.get("class", "unknown"))] += 1
            else:
                header, _ = R.read_header(data)
                counts[str(header["meta"].get("class", "unknown"))] += 1
        classes = dict(sorted(counts.items()))
    report_path = Path(directory) / "report.json"  # written by build-dataset: what was skipped and why
    try:
        skipped = json.loads(report_path.read_text(encoding="utf-8")).get("skipped_by_reason", {}) \
            if report_path.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        skipped = {}
    return {"directory": str(directory), "schema_version": manifest["schema_version"],
            "num_records": manifest["num_records"], "num_shards": len(manifest["shards"]),
            "complete": manifest.get("complete", True), "frame_size": manifest.get("frame_size"),
            "num_frames": manifest.get("num_frames"), "fps": manifest.get("fps"),
            "image_format": manifest.get("image_format"), "classes": classes,
            "shards": [{"path": s["path"], "num_records": s["num_records"], "bytes": s["bytes"]}
                       for s in manifest["shards"]],
            "skipped_by_reason": skipped, "ids": list(ds.ids), "config": manifest.get("config", {})}


def record_grid(rec: R.ClipRecord, height: int, width: int, room: GridConfig | None = None) -> np.ndarray:
    """The camera-grid video of a record's poses at (height, width), as the train step draws it with the room
    `room` (default: the design's)."""
    from omnidirector_jax.camera.render import render_grid
    from omnidirector_jax.camera.trajectory import Trajectory

    dist = None if not np.any(rec.dist) else rec.dist
    traj = Trajectory.create(rec.w2c.astype(np.float64), rec.K.astype(np.float64), height=rec.frames.shape[1],
                             width=rec.frames.shape[2], fps=float(rec.meta.get("fps", 25.0)), dist=dist,
                             cuts=rec.cuts)
    return render_grid(traj.resized(height, width), grid=room or GridConfig())


def _label(tile: np.ndarray, text: str) -> None:
    import cv2

    cv2.putText(tile, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)


def clip_panel(rec: R.ClipRecord, tiles: int = _SHEET_TILES) -> np.ndarray:
    """One clip: a row of its frames above the same frames of its camera grid, with a caption line."""
    import cv2

    from omnidirector_jax.media import sheet_frames

    t, h, w = rec.frames.shape[:3]
    scale = max(1, -(-_MIN_TILE // max(h, w)))
    th, tw = h * scale, w * scale
    grid = record_grid(rec, th, tw)
    picks = sheet_frames(t, tiles, rec.cuts)
    gap = 2
    panel = np.full((16 + 2 * th + 3 * gap, len(picks) * (tw + gap) + gap, 3), 30, np.uint8)
    text = f"{rec.id}  {rec.meta.get('class', '')}  {rec.meta.get('source', '')}"
    cv2.putText(panel, text[:120], (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (230, 230, 230), 1, cv2.LINE_AA)
    for n, f in enumerate(picks):
        x = gap + n * (tw + gap)
        tile = cv2.resize(rec.frames[f], (tw, th), interpolation=cv2.INTER_NEAREST)
        _label(tile, f"{f} cut" if f in rec.cuts else str(f))
        panel[16 + gap:16 + gap + th, x:x + tw] = tile
        panel[16 + 2 * gap + th:16 + 2 * gap + 2 * th, x:x + tw] = grid[f]
    return panel


def write_sheet(directory: str | Path, out: str | Path, examples: int = 4) -> Path:
    """Contact sheet of ``examples`` clips spread over the dataset, each above its camera grid (PNG)."""
    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.media import write_png

    if examples < 1:
        raise OmniDirectorError(f"--examples must be at least 1, got {examples}")
    ds = R.open_dataset(directory)
    if len(ds) == 0:
        raise OmniDirectorError(f"{directory} holds no records: nothing to show")
    picks = np.unique(np.linspace(0, len(ds) - 1, min(examples, len(ds))).round().astype(int))
    panels = [clip_panel(ds.record(int(i))) for i in picks]
    width = max(p.shape[1] for p in panels)
    sheet = np.concatenate([np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0))) for p in panels])
    return write_png(out, sheet)
