"""Static rasterizer settings."""

from __future__ import annotations

import dataclasses

from omnidirector_jax.camera.scene import default_line_width

PROFILES = ("opencv", "smooth")
METHODS = ("scatter", "tiled")


@dataclasses.dataclass(frozen=True)
class RasterConfig:
    """Static rasterizer settings (hashable: it is a static argument of the jitted functions)."""

    profile: str = "opencv"  # 'opencv' (matches cv2.line LINE_AA) | 'smooth' (differentiable)
    method: str = "scatter"  # 'scatter' (CPU/GPU) | 'tiled' (TPU: no scatter)
    line_width: float | None = None  # width at full fog; None → scene.default_line_width(W)
    pixel_budget: int | None = None  # candidate pixels per frame (scatter); None → as many as needed
    chunk: int = 1 << 12  # candidate pixels per scatter step (bounds memory; small: less unused tail work)
    near: float = 0.1  # near plane (camera z)
    fog_cutoff: float = 0.05  # segments dimmer than this are dropped
    fisheye_pieces: int = 16  # sub-segments per segment for fisheye lenses (≥ 12; ~32 for strong lenses)
    max_segments: int | None = None  # visible segments drawn per frame (compacted first); None → all of the scene's
    frame_batch: int = 1  # frames drawn together (one unit enumeration; accumulators of this many frames)
    tile: int = 16  # tiled method: tile side in pixels
    tile_segments: int | None = None  # tiled: static primitives per tile and pass (overflow counted); None → exact
    tile_block: int = 16  # tiled, tile_segments=None: primitives per tile per round
    tile_rows: int = 1  # tiled: tile rows per chunk (memory ∝ this; accelerators want larger chunks)
    exact_centres: bool | None = None  # line centres in exact integers (ties alike everywhere); None → not on CPU
    smooth_softness: float = 0.35  # smooth profile: sigmoid temperature in pixels

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"unknown line profile {self.profile!r}; choose from {PROFILES}")
        if self.method not in METHODS:
            raise ValueError(f"unknown raster method {self.method!r}; choose from {METHODS}")
        if min(self.fisheye_pieces, self.frame_batch, self.tile, self.tile_block, self.tile_rows) < 1:
            raise ValueError("fisheye_pieces, frame_batch, tile, tile_block and tile_rows must be ≥ 1")
        if self.tile_segments is not None and self.tile_segments < 1:
            raise ValueError(f"tile_segments must be ≥ 1 or None, got {self.tile_segments}")
        if self.max_segments is not None and self.max_segments < 1:
            raise ValueError(f"max_segments must be ≥ 1 or None, got {self.max_segments}")


def base_line_width(width: int, cfg: RasterConfig) -> float:
    return float(cfg.line_width) if cfg.line_width is not None else default_line_width(width)



# Chunking per backend. CPU: small steps that stay in cache (measured, see README). GPU: fewer, larger kernels
# (the CPU chunking is launch-bound there). TPU: larger tile chunks for the tiled method (no scatter).
_BACKEND_TUNING = {
    "gpu": {"chunk": 1 << 16, "frame_batch": 7, "tile_rows": 8, "tile_block": 32, "exact_centres": True},
    "tpu": {"tile_rows": 8, "tile_block": 32, "exact_centres": True},
}


def tuned(cfg: RasterConfig, backend: str) -> RasterConfig:
    """``cfg`` with the chunk sizes chosen for ``backend`` ('cpu' | 'gpu' | 'cuda' | 'rocm' | 'tpu'); the pictures
    do not change, only how the work is cut into steps."""
    key = "gpu" if backend in ("gpu", "cuda", "rocm") else backend
    return dataclasses.replace(cfg, **_BACKEND_TUNING.get(key, {}))
