"""What the pipeline reads of a clip record, without decoding the frames it does not need.

`read_clip(raw)` turns the bytes of one record (layout: `omnidirector_jax.data.records`, a JSON header of
fields and `[offset, nbytes]` spans over a payload) into a :class:`ClipView`: cameras, texts and the
reference image decoded, the frames left as views of their stored JPEG/PNG/raw bytes, so the pipeline
decodes only the frames of its crop, at the scale it needs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from omnidirector_jax.data import records
from omnidirector_jax.errors import OmniDirectorError


@dataclasses.dataclass(frozen=True)
class ClipView:
    """One clip: T frames as compressed bytes, per-frame cameras, texts.

    `frame(i)`: the stored bytes of frame i, a `frame_hw` image in `image_format` ("jpeg" | "png" | "raw");
    w2c (T,3,4); K (T,3,3) in pixels of `frame_hw`; dist (T,4); cuts: transition frame indices; valid (T,) bool;
    ref_image: its stored bytes (`ref_is_frame0`: the same bytes as frame 0); latents / ref_latent or None;
    depth: camera-z depth (T, H, W) of `frame_hw` where the builder knew it (synthetic clips), else None.
    """

    id: str
    num_frames: int
    payload: memoryview
    frame_spans: Sequence[Sequence[int]]
    frame_hw: tuple[int, int]
    image_format: str
    w2c: np.ndarray
    K: np.ndarray
    dist: np.ndarray
    cuts: Sequence[int]
    valid: np.ndarray
    ref_image: memoryview
    ref_is_frame0: bool
    caption: str
    camera_prompt: str
    latents: np.ndarray | None = None
    ref_latent: np.ndarray | None = None
    depth: np.ndarray | None = None

    def frame(self, i: int) -> memoryview:
        return _span(self.payload, self.frame_spans[i])


def _span(payload: memoryview, span: Sequence[int]) -> memoryview:
    start, size = int(span[0]), int(span[1])
    if start < 0 or size < 0 or start + size > len(payload):
        raise records.RecordError("truncated record (a field runs past the end)")
    return payload[start:start + size]


def _array(payload: memoryview, spec: dict[str, Any]) -> np.ndarray:
    dtype = records._np_dtype(spec["dtype"])  # bfloat16 via ml_dtypes, unknown names refused
    shape = tuple(spec["shape"])
    raw = _span(payload, spec["span"])
    if len(raw) != dtype.itemsize * math.prod(shape):
        raise records.RecordError(f"record array has {len(raw)} bytes, inconsistent with {shape} {dtype}")
    return np.frombuffer(raw, dtype).reshape(shape)  # read-only view: the pipeline copies what it keeps


def read_clip(raw: bytes) -> ClipView:
    """Record bytes -> ClipView (frames not decoded). A damaged record raises `RecordError` (one line)."""
    header, payload = records.read_header(raw)
    try:
        shape = header["frame_shape"]
        arrays = header["arrays"]
        spans = header["frames"]
        num = int(shape[0])
        if len(spans) != num:
            raise records.RecordError(f"record lists {len(spans)} frames for a {num}-frame shape")
        valid_spec = header["meta_arrays"].get("valid")
        valid = _array(payload, valid_spec) if valid_spec else np.ones(num, bool)
        ref = header["ref_image"]
        return ClipView(
            id=header["id"], num_frames=num, payload=payload, frame_spans=spans,
            frame_hw=(int(shape[1]), int(shape[2])),
            image_format=header["image_format"], w2c=_array(payload, arrays["w2c"]),
            K=_array(payload, arrays["K"]), dist=_array(payload, arrays["dist"]),
            cuts=[int(c) for c in header["cuts"]], valid=valid,
            ref_image=_span(payload, spans[0] if ref == "frame0" else ref), ref_is_frame0=ref == "frame0",
            caption=header["caption"], camera_prompt=header["camera_prompt"],
            latents=_array(payload, arrays["latents"]) if "latents" in arrays else None,
            ref_latent=_array(payload, arrays["ref_latent"]) if "ref_latent" in arrays else None,
            depth=_array(payload, header["meta_arrays"]["depth"]) if "depth" in header["meta_arrays"] else None)
    except OmniDirectorError:
        raise
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise records.RecordError(f"corrupt record header (missing or malformed field {err})") from None
