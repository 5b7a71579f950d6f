"""What the pipeline reads of a clip record, without decoding the frames it does not need.

`read_clip(raw)` turns the bytes of one ArrayRecord entry into a :class:`ClipView`: the cameras and texts
decoded, the frames left as their stored JPEG/PNG bytes. It is the only place that knows the record layout of
`omnidirector_jax.data.records`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from omnidirector_jax.errors import OmniDirectorError


@dataclasses.dataclass(frozen=True)
class ClipView:
    """One clip: T frames as compressed bytes, per-frame cameras, texts.

    frames: T JPEG/PNG byte strings of `frame_hw`; w2c (T,3,4); K (T,3,3) in pixels of `frame_hw`; dist (T,4);
    cuts: transition frame indices; valid (T,) bool; ref_image (H,W,3) uint8 RGB; latents / ref_latent or None.
    """

    id: str
    frames: Sequence[bytes]
    frame_hw: tuple[int, int]
    w2c: np.ndarray
    K: np.ndarray
    dist: np.ndarray
    cuts: Sequence[int]
    valid: np.ndarray
    ref_image: np.ndarray
    caption: str
    camera_prompt: str
    latents: np.ndarray | None = None
    ref_latent: np.ndarray | None = None


def read_clip(raw: bytes) -> ClipView:
    """Record bytes -> ClipView (frames not decoded)."""
    import pickle  # PROVISIONAL until records.py lands: the test fixture pickles a dict of fields

    try:
        f = pickle.loads(raw)
        return ClipView(f["id"], f["frames"], tuple(f["frame_hw"]), f["w2c"], f["K"], f["dist"], f["cuts"],
                        f["valid"], f["ref_image"], f["caption"], f["camera_prompt"], f.get("latents"),
                        f.get("ref_latent"))
    except OmniDirectorError:
        raise
    except Exception as err:  # noqa: BLE001 (any parse failure of stored bytes means a damaged record)
        raise OmniDirectorError(f"a record could not be parsed: {type(err).__name__}: {err}") from None
